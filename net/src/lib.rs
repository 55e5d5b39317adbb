#![doc = include_str!("../README.md")]

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt as _, StreamExt as _};
use postern_core::RelayAddress;
use postern_link::{Link, protocol};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, SignatureScheme};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::client::TlsStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

pub mod tls;

pub use postern_link::{
    Blob, CONNECT_TIMEOUT, Connect, ErrorCode, Item, KEEPALIVE_INTERVAL, MAX_MESSAGE_BYTES,
    MAX_PENDING_NOTIFICATIONS, NetError, QueueId, QueueIds, RELAY_PATH, REQUEST_TIMEOUT, Runtime,
    RuntimeRng, TlsFailure,
};

/// A connection to a relay from a native process: the relay protocol's
/// connection (`postern-link`) over a WebSocket, TLS 1.3 and TCP, timed
/// by tokio.
pub type Connection = postern_link::Connection<WsLink, TokioRuntime>;

/// How this process reaches relays: passed to every connection, never
/// kept in a process-wide static.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Connector {
    /// Leave from this local address (a machine with several addresses or
    /// interfaces); the system's choice when `None`.
    pub source_address: Option<IpAddr>,
}

impl Connector {
    /// TLS 1.3 (pinned when the address has a pin: the SHA-256 of the
    /// relay's certificate must equal it, and the handshake signature is
    /// still verified; otherwise the web PKI) and a WebSocket to
    /// `wss://host:port/v1`, then the relay's `Hello`, all within
    /// [`CONNECT_TIMEOUT`].
    pub async fn connect(&self, addr: &RelayAddress) -> Result<Connection, NetError> {
        Connect::connect(&NativeConnector::new(*self), addr).await
    }
}

/// [`Connector::connect`] from the system's choice of local address.
pub async fn connect(addr: &RelayAddress) -> Result<Connection, NetError> {
    Connector::default().connect(addr).await
}

/// The native platform's [`Connect`]: links made by a [`Connector`],
/// timed by a [`TokioRuntime`].
#[derive(Debug, Clone, Copy)]
pub struct NativeConnector {
    /// How links are made.
    pub via: Connector,
    /// Their timers, clocks and randomness.
    pub rt: TokioRuntime,
}

impl NativeConnector {
    /// Links made by `via`, on a runtime whose monotonic clock starts now.
    pub fn new(via: Connector) -> NativeConnector {
        NativeConnector {
            via,
            rt: TokioRuntime::default(),
        }
    }
}

impl Connect for NativeConnector {
    type Link = WsLink;
    type Runtime = TokioRuntime;

    fn runtime(&self) -> &TokioRuntime {
        &self.rt
    }

    async fn open(&self, relay: &RelayAddress) -> Result<WsLink, NetError> {
        Ok(WsLink(connect_websocket_with(relay, &self.via).await?))
    }
}

/// Tokio's timer, the system clock and the operating system's random
/// generator.
#[derive(Debug, Clone, Copy)]
pub struct TokioRuntime {
    origin: tokio::time::Instant,
}

impl Default for TokioRuntime {
    /// A runtime whose monotonic clock starts now.
    fn default() -> TokioRuntime {
        TokioRuntime {
            origin: tokio::time::Instant::now(),
        }
    }
}

impl Runtime for TokioRuntime {
    fn sleep(&self, d: Duration) -> impl Future<Output = ()> {
        tokio::time::sleep(d)
    }

    async fn timeout<F: Future>(&self, d: Duration, f: F) -> Option<F::Output> {
        tokio::time::timeout(d, f).await.ok()
    }

    fn fill_random(&self, out: &mut [u8]) {
        rand::RngCore::fill_bytes(&mut rand::rng(), out);
    }

    fn now(&self) -> postern_core::UnixTime {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        postern_core::UnixTime(ms)
    }

    fn monotonic(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// A WebSocket to a relay as a [`Link`]: one binary message per frame.
pub struct WsLink(pub WsStream);

impl core::fmt::Debug for WsLink {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("WsLink")
    }
}

impl Link for WsLink {
    async fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        self.0
            .send(Message::Binary(frame.to_vec().into()))
            .await
            .map_err(ws_error)
    }

    async fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        // Cancel-safe: a dropped wait loses at most a partly read frame,
        // which tungstenite keeps buffered.
        read_frame(&mut self.0).await
    }

    async fn close(&mut self) -> Result<(), NetError> {
        match self.0.close(None).await {
            Ok(()) => {}
            Err(tokio_tungstenite::tungstenite::Error::ConnectionClosed) => return Ok(()),
            Err(e) => return Err(ws_error(e)),
        }
        // Drain until the relay's close arrives.
        while let Some(m) = self.0.next().await {
            if m.is_err() {
                break;
            }
        }
        Ok(())
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

fn tls_failure(e: &std::io::Error) -> TlsFailure {
    match e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::InvalidCertificate(_)) => TlsFailure::Certificate,
        Some(rustls::Error::AlertReceived(_)) => TlsFailure::Alert,
        _ => TlsFailure::Handshake,
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
    let provider = tls::provider(tls::KeyExchange::HybridOnly);
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
/// themselves; [`connect`] is the normal way in.
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use postern_core::crypto::signal::QueueSecret;

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
        assert_send(&connect(addr));
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
