#![doc = include_str!("../README.md")]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use postern_core::RelayAddress;
use postern_core::consts::{FRAME_BYTES, MAX_FETCH, MAX_INVITE_BLOBS, MAX_INVITE_TTL_SECS};
use postern_core::crypto::signal::QueueSecret;
use postern_core::relay_proto::Command;
use postern_core::relay_proto::client::{Answer, ClientSession, Event};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub use postern_core::relay_proto::{Blob, ErrorCode, QueueId};

/// How long `connect` may take (TCP, TLS, WebSocket and the relay's `Hello`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a request may wait for its complete answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
pub use postern_core::relay_proto::client::MAX_PENDING_NOTIFICATIONS;
/// Largest WebSocket message or frame accepted from a relay.
pub const MAX_MESSAGE_BYTES: usize = 2 * FRAME_BYTES;
/// The WebSocket path of the relay protocol.
pub const RELAY_PATH: &str = "/v1";
/// How often a long-lived connection with nothing to say sends a `Ping`
/// (a full-size frame, like all traffic) so the relay keeps it open; well
/// under the relays' default idle timeout of 10 minutes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// How this process reaches relays: passed to every connection, never
/// kept in a process-wide static.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connector {
    /// Leave from this local address (a machine with several addresses or
    /// interfaces); the system's choice when `None`.
    pub source_address: Option<IpAddr>,
}

impl Connector {
    /// Connects to the relay at `addr` (see [`Connection::connect`]).
    pub async fn connect(&self, addr: &RelayAddress) -> Result<Connection, NetError> {
        Connection::connect_with(addr, self).await
    }
}

async fn tcp_connect(addr: &RelayAddress, via: &Connector) -> std::io::Result<TcpStream> {
    let Some(ip) = via.source_address else {
        return TcpStream::connect(addr.socket_host()).await;
    };
    let mut last = None;
    for target in tokio::net::lookup_host(addr.socket_host()).await? {
        if target.is_ipv4() != ip.is_ipv4() {
            continue;
        }
        let socket = if ip.is_ipv4() {
            TcpSocket::new_v4()?
        } else {
            TcpSocket::new_v6()?
        };
        socket.bind(SocketAddr::new(ip, 0))?;
        match socket.connect(target).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AddrNotAvailable)))
}

/// The WebSocket over TLS over TCP that carries the relay protocol.
pub type WsStream = WebSocketStream<TlsStream<TcpStream>>;

/// What went wrong talking to a relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The relay could not be reached over TCP (the OS's reason).
    #[error("cannot connect to relay {relay}: {reason}")]
    Connect {
        /// The relay as we named it (never text from the network).
        relay: String,
        /// What the operating system said.
        reason: std::io::ErrorKind,
    },
    /// The relay's host name is not a valid TLS server name.
    #[error("relay {0}: bad host name")]
    BadHostName(String),
    /// The WebSocket upgrade to the relay failed.
    #[error("relay {0}: WebSocket upgrade refused")]
    WebSocket(String),
    /// TLS failed (including a certificate that does not match the pin).
    #[error("TLS: {0}")]
    Tls(TlsFailure),
    /// The relay answered with an error code.
    #[error("relay refused: {0}")]
    Relay(ErrorCode),
    /// The relay sent something that is not a valid answer.
    #[error("relay protocol violation: {0}")]
    Protocol(postern_core::Error),
    /// The connection is closed (or broken by an earlier timeout or error).
    #[error("connection closed")]
    Closed,
    /// No answer in time.
    #[error("timed out")]
    Timeout,
    /// The call's arguments are out of the protocol's bounds.
    #[error("bad argument: {0}")]
    Usage(&'static str),
}

/// Why TLS failed, in our own words (no text from the relay).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TlsFailure {
    /// The relay's certificate does not match the pin, or is not valid
    /// under the web PKI.
    #[error("the relay's certificate is not the one expected")]
    Certificate,
    /// The relay sent a TLS alert.
    #[error("the relay sent an alert")]
    Alert,
    /// The handshake or a record was malformed or broken off.
    #[error("handshake or record failed")]
    Handshake,
    /// This build could not set up TLS (a bug).
    #[error("client configuration")]
    Config,
}

fn tls_failure(e: &std::io::Error) -> TlsFailure {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => TlsFailure::Certificate,
        Some(rustls::Error::AlertReceived(_)) => TlsFailure::Alert,
        _ => TlsFailure::Handshake,
    }
}

impl postern_core::error::HasKind for NetError {
    fn kind(&self) -> postern_core::ErrorKind {
        use postern_core::ErrorKind;
        match self {
            NetError::Protocol(_) => ErrorKind::PeerMisbehaved,
            NetError::Usage(_) | NetError::BadHostName(_) => ErrorKind::Usage,
            NetError::Tls(TlsFailure::Config) => ErrorKind::Bug,
            _ => ErrorKind::Network,
        }
    }
}

fn protocol(what: &'static str) -> NetError {
    NetError::Protocol(postern_core::Error::Malformed { what })
}

/// A recipient's two queue ids, as created by the relay.
#[derive(Clone, PartialEq, Eq)]
pub struct QueueIds {
    /// For fetch, ack, subscribe, delete and invitations (keep secret).
    pub recipient_id: QueueId,
    /// For senders (handed to contacts).
    pub sender_id: QueueId,
}

impl core::fmt::Debug for QueueIds {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Queue ids stay out of logs.
        f.write_str("QueueIds(..)")
    }
}

/// One fetched item.
#[derive(Clone, PartialEq, Eq)]
pub struct Item {
    /// The id to acknowledge.
    pub id: u64,
    /// The stored blob.
    pub blob: Blob,
}

impl core::fmt::Debug for Item {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Item({})", self.id)
    }
}

/// Accepts exactly the certificate whose SHA-256 (DER) is the pin, and
/// still checks that the server signed the TLS handshake with its key.
#[derive(Debug)]
struct PinnedVerifier {
    pin: [u8; 32],
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for PinnedVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // The pin is public: a plain comparison leaks nothing.
        if postern_core::crypto::hash::sha256(&[end_entity.as_ref()]) == self.pin {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The TLS 1.3 client configuration for a relay: the pinned certificate
/// when the address has a pin, otherwise the web PKI (Mozilla's roots).
pub fn tls_client_config(addr: &RelayAddress) -> Result<Arc<ClientConfig>, NetError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .map_err(|_| NetError::Tls(TlsFailure::Config))?;
    let config = match addr.pin() {
        Some(pin) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(PinnedVerifier {
                pin: *pin,
                provider,
            }))
            .with_no_client_auth(),
        None => {
            let roots = rustls::RootCertStore {
                roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
            };
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(Arc::new(config))
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

/// Opens TCP, TLS and the WebSocket to `wss://host:port/v1`, without
/// reading anything. For tools and tests that speak the protocol
/// themselves; [`Connection::connect`] is the normal way in.
pub async fn connect_websocket(addr: &RelayAddress) -> Result<WsStream, NetError> {
    connect_websocket_with(addr, &Connector::default()).await
}

/// [`connect_websocket`] through `via`.
pub async fn connect_websocket_with(
    addr: &RelayAddress,
    via: &Connector,
) -> Result<WsStream, NetError> {
    let config = tls_client_config(addr)?;
    let server_name = ServerName::try_from(addr.host().to_owned())
        .map_err(|_| NetError::BadHostName(addr.to_string()))?;
    let connect_err = |e: std::io::Error| NetError::Connect {
        relay: addr.to_string(),
        reason: e.kind(),
    };
    let tcp = tcp_connect(addr, via).await.map_err(connect_err)?;
    tcp.set_nodelay(true).map_err(connect_err)?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(server_name, tcp)
        .await
        .map_err(|e| NetError::Tls(tls_failure(&e)))?;
    let url = format!("wss://{}{RELAY_PATH}", addr.socket_host());
    let (ws, _) = tokio_tungstenite::client_async_with_config(url, tls, Some(ws_config()))
        .await
        .map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Io(io) => NetError::Connect {
                relay: addr.to_string(),
                reason: io.kind(),
            },
            tokio_tungstenite::tungstenite::Error::Tls(_) => NetError::Tls(TlsFailure::Handshake),
            _ => NetError::WebSocket(addr.to_string()),
        })?;
    Ok(ws)
}

/// One connection to a relay: a WebSocket carrying the frames of a
/// [`ClientSession`] (the protocol's sans-IO client half in the core).
pub struct Connection {
    ws: WsStream,
    session: ClientSession,
    broken: bool,
}

impl core::fmt::Debug for Connection {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("in_flight", &self.session.in_flight())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

async fn with_timeout<T>(
    d: Duration,
    f: impl Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    tokio::time::timeout(d, f)
        .await
        .map_err(|_| NetError::Timeout)?
}

/// The next binary message from the relay.
async fn read_frame(ws: &mut WsStream) -> Result<Vec<u8>, NetError> {
    loop {
        let msg = match ws.next().await {
            None => return Err(NetError::Closed),
            Some(Err(e)) => return Err(ws_error(e)),
            Some(Ok(m)) => m,
        };
        match msg {
            Message::Binary(b) => return Ok(b.to_vec()),
            // tungstenite answers pings itself.
            Message::Ping(_) | Message::Pong(_) => {}
            Message::Close(_) => return Err(NetError::Closed),
            Message::Text(_) | Message::Frame(_) => return Err(protocol("relay message type")),
        }
    }
}

fn ws_error(e: tokio_tungstenite::tungstenite::Error) -> NetError {
    use tokio_tungstenite::tungstenite::Error as E;
    match e {
        E::ConnectionClosed | E::AlreadyClosed => NetError::Closed,
        E::Capacity(_) => protocol("relay message size"),
        E::Tls(_) => NetError::Tls(TlsFailure::Handshake),
        E::Io(e) if e.kind() == std::io::ErrorKind::InvalidData => NetError::Tls(tls_failure(&e)),
        _ => NetError::Closed,
    }
}

fn refused_or(answer: Answer, what: &'static str) -> NetError {
    match answer {
        Answer::Refused(code) => NetError::Relay(code),
        _ => protocol(what),
    }
}

impl Connection {
    /// TLS 1.3 (pinned when the address has a pin: the SHA-256 of the
    /// relay's certificate must equal it, and the handshake signature is
    /// still verified; otherwise the web PKI) and a WebSocket to
    /// `wss://host:port/v1`, then the relay's `Hello`.
    pub async fn connect(addr: &RelayAddress) -> Result<Connection, NetError> {
        Connection::connect_with(addr, &Connector::default()).await
    }

    /// [`Connection::connect`] through `via` (source address).
    pub async fn connect_with(
        addr: &RelayAddress,
        via: &Connector,
    ) -> Result<Connection, NetError> {
        with_timeout(CONNECT_TIMEOUT, async {
            let mut ws = connect_websocket_with(addr, via).await?;
            let mut session = ClientSession::new();
            let frame = read_frame(&mut ws).await?;
            match session.receive(&frame).map_err(NetError::Protocol)? {
                Event::Ready => Ok(Connection {
                    ws,
                    session,
                    broken: false,
                }),
                _ => Err(protocol("relay hello")),
            }
        })
        .await
    }

    /// Sends one request; returns its sequence number.
    async fn send_request(
        &mut self,
        command: Command,
        key: Option<&QueueSecret>,
    ) -> Result<u64, NetError> {
        if self.broken {
            return Err(NetError::Closed);
        }
        let (seq, frame) = {
            let mut rng = rand::rng();
            self.session
                .request(command, key, &mut rng)
                .map_err(NetError::Protocol)?
        };
        if let Err(e) = self.ws.send(Message::Binary(frame.to_vec().into())).await {
            self.broken = true;
            return Err(ws_error(e));
        }
        Ok(seq)
    }

    /// The complete answer to request `seq`; notifications on the way are
    /// kept by the session.
    async fn answer_to(&mut self, seq: u64) -> Result<Answer, NetError> {
        loop {
            let frame = read_frame(&mut self.ws).await?;
            match self.session.receive(&frame).map_err(NetError::Protocol)? {
                Event::Answer { seq: s, answer } if s == seq => return Ok(answer),
                // One request at a time on this connection: an answer to
                // another is out of step.
                Event::Answer { .. } | Event::Ready => {
                    return Err(protocol("relay reply sequence"));
                }
                _ => {}
            }
        }
    }

    /// Runs `f` under the request timeout; a timeout or a broken stream
    /// leaves the connection unusable (its replies are out of step).
    async fn guarded<T>(
        &mut self,
        f: impl AsyncFnOnce(&mut Self) -> Result<T, NetError>,
    ) -> Result<T, NetError> {
        if self.broken {
            return Err(NetError::Closed);
        }
        let r = match tokio::time::timeout(REQUEST_TIMEOUT, f(self)).await {
            Ok(r) => r,
            Err(_) => Err(NetError::Timeout),
        };
        if matches!(
            r,
            Err(NetError::Timeout | NetError::Closed | NetError::Protocol(_) | NetError::Tls(_))
        ) {
            self.broken = true;
        }
        r
    }

    /// One request and its complete answer.
    async fn call(
        &mut self,
        command: Command,
        key: Option<&QueueSecret>,
    ) -> Result<Answer, NetError> {
        self.guarded(async move |c: &mut Self| {
            let seq = c.send_request(command, key).await?;
            c.answer_to(seq).await
        })
        .await
    }

    /// Any request and its complete answer (a refusal is
    /// `Answer::Refused`, not an error): what the engine's flows hand in
    /// as their step's input.
    pub async fn request(
        &mut self,
        command: Command,
        key: Option<&QueueSecret>,
    ) -> Result<Answer, NetError> {
        self.call(command, key).await
    }

    /// One request answered by `Ok`.
    async fn simple(
        &mut self,
        command: Command,
        key: Option<&QueueSecret>,
    ) -> Result<(), NetError> {
        match self.call(command, key).await? {
            Answer::Ok => Ok(()),
            a => Err(refused_or(a, "relay reply kind")),
        }
    }

    /// Creates a queue owned by `key`.
    pub async fn create_queue(&mut self, key: &QueueSecret) -> Result<QueueIds, NetError> {
        let queue_key = key.public().map_err(NetError::Protocol)?;
        match self.call(Command::Create { queue_key }, Some(key)).await? {
            Answer::Created {
                recipient_id,
                sender_id,
            } => Ok(QueueIds {
                recipient_id,
                sender_id,
            }),
            a => Err(refused_or(a, "relay reply kind")),
        }
    }

    /// Hands an onion packet built for key epoch `epoch` to this relay.
    /// `Ok` means the relay accepted it (and, when it is the packet's last
    /// hop, durably stored the blob inside).
    pub async fn forward(
        &mut self,
        epoch: u32,
        packet: &[u8; postern_core::consts::SPHINX_PACKET_BYTES],
    ) -> Result<(), NetError> {
        let command = Command::Forward {
            epoch,
            packet: Box::new(*packet),
        };
        self.simple(command, None).await
    }

    /// Tells the relay the connection is still wanted (see
    /// [`KEEPALIVE_INTERVAL`]).
    pub async fn ping(&mut self) -> Result<(), NetError> {
        self.simple(Command::Ping, None).await
    }

    /// Puts `blob` into the queue with this sender id. `Ok` means the
    /// relay has durably stored it.
    pub async fn send(&mut self, sender_id: &QueueId, blob: &Blob) -> Result<(), NetError> {
        let command = Command::Send {
            sender_id: *sender_id,
            blob: blob.clone(),
        };
        self.simple(command, None).await
    }

    /// Up to `max` items (1..=MAX_FETCH), oldest first, and whether more wait.
    pub async fn fetch(
        &mut self,
        recipient_id: &QueueId,
        key: &QueueSecret,
        max: u32,
    ) -> Result<(Vec<Item>, bool), NetError> {
        if max == 0 || max > MAX_FETCH {
            return Err(NetError::Usage("fetch max must be 1..=MAX_FETCH"));
        }
        let command = Command::Fetch {
            recipient_id: *recipient_id,
            max,
        };
        match self.call(command, Some(key)).await? {
            Answer::Items { items, more } => Ok((
                items
                    .into_iter()
                    .map(|(id, blob)| Item { id, blob })
                    .collect(),
                more,
            )),
            a => Err(refused_or(a, "relay fetch reply")),
        }
    }

    /// Deletes these items (ids the relay does not hold are ignored).
    pub async fn ack(
        &mut self,
        recipient_id: &QueueId,
        key: &QueueSecret,
        ids: &[u64],
    ) -> Result<(), NetError> {
        if ids.is_empty() || ids.len() > MAX_FETCH as usize {
            return Err(NetError::Usage("ack needs 1..=MAX_FETCH ids"));
        }
        let command = Command::Ack {
            recipient_id: *recipient_id,
            item_ids: ids.to_vec(),
        };
        self.simple(command, Some(key)).await
    }

    /// Asks the relay to notify this connection when an item arrives.
    pub async fn subscribe(
        &mut self,
        recipient_id: &QueueId,
        key: &QueueSecret,
    ) -> Result<(), NetError> {
        let command = Command::Subscribe {
            recipient_id: *recipient_id,
        };
        self.simple(command, Some(key)).await
    }

    /// Waits for the next Notify (returns its recipient id); Notifies that
    /// arrive while another call waits for its reply are queued and
    /// returned here first. Waits without a time limit: wrap it in a
    /// timeout to bound it.
    pub async fn next_notification(&mut self) -> Result<QueueId, NetError> {
        if let Some(id) = self.session.take_notification() {
            return Ok(id);
        }
        if self.broken {
            return Err(NetError::Closed);
        }
        // Cancel-safe: a dropped wait loses at most a partly read frame,
        // which tungstenite keeps buffered.
        let frame = match read_frame(&mut self.ws).await {
            Ok(f) => f,
            Err(e) => {
                self.broken = true;
                return Err(e);
            }
        };
        match self.session.receive(&frame) {
            Ok(Event::Notify(_)) => self
                .session
                .take_notification()
                .ok_or(protocol("relay notification")),
            _ => {
                self.broken = true;
                Err(protocol("relay notification"))
            }
        }
    }

    /// Deletes the queue and everything in it.
    pub async fn delete_queue(
        &mut self,
        recipient_id: &QueueId,
        key: &QueueSecret,
    ) -> Result<(), NetError> {
        let command = Command::DeleteQueue {
            recipient_id: *recipient_id,
        };
        self.simple(command, Some(key)).await
    }

    /// Puts all blobs (1..=MAX_INVITE_BLOBS) of a one-time invitation payload.
    pub async fn put_invite(
        &mut self,
        recipient_id: &QueueId,
        key: &QueueSecret,
        blobs: &[Blob],
        ttl_secs: u32,
    ) -> Result<(), NetError> {
        let total = u32::try_from(blobs.len())
            .ok()
            .filter(|n| (1..=MAX_INVITE_BLOBS).contains(n))
            .ok_or(NetError::Usage(
                "invitation needs 1..=MAX_INVITE_BLOBS blobs",
            ))?;
        if ttl_secs == 0 || ttl_secs > MAX_INVITE_TTL_SECS {
            return Err(NetError::Usage(
                "invitation ttl must be 1..=MAX_INVITE_TTL_SECS",
            ));
        }
        for (index, blob) in (0u32..).zip(blobs) {
            let command = Command::PutInvite {
                recipient_id: *recipient_id,
                index,
                total,
                ttl_secs,
                blob: blob.clone(),
            };
            self.simple(command, Some(key)).await?;
        }
        Ok(())
    }

    /// Takes (reads once; the relay deletes it) the invitation payload of
    /// the queue with this sender id.
    pub async fn take_invite(&mut self, sender_id: &QueueId) -> Result<Vec<Blob>, NetError> {
        let command = Command::TakeInvite {
            sender_id: *sender_id,
        };
        match self.call(command, None).await? {
            Answer::Items { items, .. } => Ok(items.into_iter().map(|(_, b)| b).collect()),
            a => Err(refused_or(a, "relay invitation reply")),
        }
    }

    /// The relay's copy of the network's signed directory (the
    /// `SignedDirectory` bytes, reassembled from its blobs). Not verified
    /// here: the caller checks it with `postern_core::directory::Directory::verify`
    /// and its pinned authority keys.
    pub async fn get_directory(&mut self) -> Result<Vec<u8>, NetError> {
        let blobs: Vec<Blob> = match self.call(Command::GetDirectory, None).await? {
            Answer::Items { items, .. } => items.into_iter().map(|(_, b)| b).collect(),
            a => return Err(refused_or(a, "relay directory reply")),
        };
        postern_core::directory::from_blobs(&blobs).map_err(NetError::Protocol)
    }

    /// Closes the connection politely.
    pub async fn close(mut self) -> Result<(), NetError> {
        with_timeout(REQUEST_TIMEOUT, async {
            match self.ws.close(None).await {
                Ok(()) => {}
                Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => return Ok(()),
                Err(e) => return Err(ws_error(e)),
            }
            // Drain until the relay's close arrives.
            while let Some(m) = self.ws.next().await {
                if m.is_err() {
                    break;
                }
            }
            Ok(())
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn assert_send<T: Send>(_: &T) {}

    /// Every call can run inside `tokio::spawn` (checked at compile time).
    #[allow(dead_code)]
    fn futures_are_send(
        c: &mut Connection,
        addr: &RelayAddress,
        key: &QueueSecret,
        id: &QueueId,
        blob: &Blob,
    ) {
        assert_send(&Connection::connect(addr));
        assert_send(&c.create_queue(key));
        assert_send(&c.send(id, blob));
        assert_send(&c.fetch(id, key, 1));
        assert_send(&c.ack(id, key, &[1]));
        assert_send(&c.subscribe(id, key));
        assert_send(&c.next_notification());
        assert_send(&c.delete_queue(id, key));
        assert_send(&c.put_invite(id, key, &[], 1));
        assert_send(&c.take_invite(id));
        assert_send(&c.get_directory());
    }

    #[test]
    fn debug_output_hides_ids() {
        let q = QueueIds {
            recipient_id: [0xEE; 16],
            sender_id: [0xEE; 16],
        };
        assert!(!format!("{q:?}").contains("238"));
        let addr = RelayAddress::parse("postern-relay://127.0.0.1:1").unwrap();
        assert!(tls_client_config(&addr).is_ok());
    }
}
