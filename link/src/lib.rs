#![doc = include_str!("../README.md")]

use core::future::Future;
use core::time::Duration;

use postern_core::consts::{FRAME_BYTES, MAX_FETCH, MAX_INVITE_BLOBS, MAX_INVITE_TTL_SECS};
use postern_core::crypto::signal::QueueSecret;
use postern_core::relay_proto::Command;
use postern_core::relay_proto::client::{Answer, ClientSession, Event};
use postern_core::{RelayAddress, UnixTime};
use rand_core::{CryptoRng, RngCore};

pub use postern_core::relay_proto::client::MAX_PENDING_NOTIFICATIONS;
pub use postern_core::relay_proto::{Blob, ErrorCode, QueueId};

/// How long opening a connection may take (the platform's connect and
/// the relay's `Hello`).
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a request may wait for its complete answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Largest message a link accepts from a relay (a frame is
/// `FRAME_BYTES`; anything larger than twice that is refused unread).
pub const MAX_MESSAGE_BYTES: usize = 2 * FRAME_BYTES;
/// The WebSocket path of the relay protocol.
pub const RELAY_PATH: &str = "/v1";
/// How often a long-lived connection with nothing to say sends a `Ping`
/// (a full-size frame, like all traffic) so the relay keeps it open; well
/// under the relays' default idle timeout of 10 minutes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);

/// An open channel to one relay carrying whole frames, in order. The
/// platform's part of a connection: native clients and relays use a
/// WebSocket over TLS (`postern-net`), the browser its own.
#[allow(async_fn_in_trait)]
pub trait Link {
    /// Sends one frame.
    async fn send(&mut self, frame: &[u8]) -> Result<(), NetError>;
    /// The next frame from the relay; [`NetError::Closed`] when the relay
    /// closed the link. Must be cancel-safe: a wait dropped before it
    /// finishes loses no frame.
    async fn recv(&mut self) -> Result<Vec<u8>, NetError>;
    /// Closes the link politely (waits for the relay's close).
    async fn close(&mut self) -> Result<(), NetError>;
}

/// Time and randomness, from the platform: what a connection (and the
/// client driver above it) needs besides its links. Nothing in Postern
/// above the platform reads a clock or draws randomness any other way.
pub trait Runtime {
    /// Completes after `d`.
    fn sleep(&self, d: Duration) -> impl Future<Output = ()>;
    /// Runs `f` for at most `d`: `None` when the time ran out first. The
    /// default races `f` against [`Runtime::sleep`]; a runtime with a
    /// timer of its own may use that instead.
    fn timeout<F: Future>(&self, d: Duration, f: F) -> impl Future<Output = Option<F::Output>> {
        async move {
            let f = core::pin::pin!(f);
            let sleep = core::pin::pin!(self.sleep(d));
            match futures_util::future::select(f, sleep).await {
                futures_util::future::Either::Left((r, _)) => Some(r),
                futures_util::future::Either::Right(_) => None,
            }
        }
    }
    /// Fills `out` with cryptographically secure random bytes (the
    /// operating system's generator, or the browser's).
    fn fill_random(&self, out: &mut [u8]);
    /// The wall clock, as the core counts time (for expiries, message
    /// times and acknowledgement deadlines).
    fn now(&self) -> UnixTime;
    /// A monotonic clock from an origin of the runtime's choosing (for
    /// timers: it never goes back when the wall clock is set).
    fn monotonic(&self) -> Duration;
}

/// How a platform reaches relays: opens a [`Link`] to one. Native clients
/// and the relay use a WebSocket over TLS with the relay's certificate
/// pinned (`postern-net`); the browser its own transport.
pub trait Connect {
    /// The link it opens.
    type Link: Link;
    /// The runtime the connections it opens are timed by.
    type Runtime: Runtime + Clone;
    /// The runtime.
    fn runtime(&self) -> &Self::Runtime;
    /// Opens a link to `relay`, up to the point where the relay speaks
    /// first (no frame read yet).
    fn open(&self, relay: &RelayAddress) -> impl Future<Output = Result<Self::Link, NetError>>;
    /// Opens a link and reads the relay's `Hello`, all within
    /// [`CONNECT_TIMEOUT`].
    fn connect(
        &self,
        relay: &RelayAddress,
    ) -> impl Future<Output = Result<Connection<Self::Link, Self::Runtime>, NetError>> {
        async move {
            let rt = self.runtime();
            within(rt, CONNECT_TIMEOUT, async {
                let link = self.open(relay).await?;
                Connection::open(link, rt.clone()).await
            })
            .await
        }
    }
}

/// The runtime's randomness as an RNG for the core and the engine.
pub struct RuntimeRng<'a, R: Runtime>(pub &'a R);

impl<R: Runtime> core::fmt::Debug for RuntimeRng<'_, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("RuntimeRng")
    }
}

impl<R: Runtime> RngCore for RuntimeRng<'_, R> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill_random(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.0.fill_random(&mut b);
        u64::from_le_bytes(b)
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.0.fill_random(dst);
    }
}

impl<R: Runtime> CryptoRng for RuntimeRng<'_, R> {}

/// Runs `f` for at most `d` on `rt`.
pub async fn within<R: Runtime, T>(
    rt: &R,
    d: Duration,
    f: impl Future<Output = Result<T, NetError>>,
) -> Result<T, NetError> {
    rt.timeout(d, f).await.unwrap_or(Err(NetError::Timeout))
}

/// What went wrong talking to a relay.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// The relay could not be reached (the operating system's reason).
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
    /// The relay has no WebTransport listener in the signed directory
    /// (a browser cannot reach it).
    #[error("relay {0}: no WebTransport listener in the signed directory")]
    NoWebTransport(String),
    /// The browser refused or could not open the WebTransport session:
    /// the relay's certificate is not one its signed descriptor names, or
    /// the relay cannot be reached (the browser does not say which).
    #[error(
        "relay {0}: WebTransport session refused (certificate not the one in its signed descriptor, or unreachable)"
    )]
    WebTransportRefused(String),
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

/// A protocol violation: `what` was malformed.
pub fn protocol(what: &'static str) -> NetError {
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

fn refused_or(answer: Answer, what: &'static str) -> NetError {
    match answer {
        Answer::Refused(code) => NetError::Relay(code),
        _ => protocol(what),
    }
}

/// One connection to a relay: the frames of a [`ClientSession`] (the
/// protocol's sans-IO client half in the core) over a platform's
/// [`Link`], timed by its [`Runtime`].
pub struct Connection<L: Link, R: Runtime> {
    link: L,
    rt: R,
    session: ClientSession,
    broken: bool,
}

impl<L: Link, R: Runtime> core::fmt::Debug for Connection<L, R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Connection")
            .field("in_flight", &self.session.in_flight())
            .field("broken", &self.broken)
            .finish_non_exhaustive()
    }
}

impl<L: Link, R: Runtime> Connection<L, R> {
    /// Reads the relay's `Hello` on a link the platform just opened
    /// (the caller bounds the whole opening by [`CONNECT_TIMEOUT`]).
    pub async fn open(mut link: L, rt: R) -> Result<Self, NetError> {
        let mut session = ClientSession::new();
        let frame = link.recv().await?;
        match session.receive(&frame).map_err(NetError::Protocol)? {
            Event::Ready => Ok(Connection {
                link,
                rt,
                session,
                broken: false,
            }),
            _ => Err(protocol("relay hello")),
        }
    }

    /// The runtime this connection is timed by.
    pub fn runtime(&self) -> &R {
        &self.rt
    }

    /// One request and its complete answer under [`REQUEST_TIMEOUT`]; a
    /// timeout, a broken link or a protocol error leaves the connection
    /// unusable (its replies would be out of step).
    async fn call(
        &mut self,
        command: Command,
        key: Option<&QueueSecret>,
    ) -> Result<Answer, NetError> {
        if self.broken {
            return Err(NetError::Closed);
        }
        let Connection {
            link, rt, session, ..
        } = &mut *self;
        let rt: &R = rt;
        let r = within(
            rt,
            REQUEST_TIMEOUT,
            exchange(link, session, rt, command, key),
        )
        .await;
        if r.is_err() {
            self.broken = true;
        }
        r
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
        // Cancel-safe: the link's `recv` loses no frame when dropped.
        let frame = match self.link.recv().await {
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
        let Connection { link, rt, .. } = &mut self;
        within(&*rt, REQUEST_TIMEOUT, link.close()).await
    }
}

/// Sends one request and reads frames until its complete answer;
/// notifications on the way are kept by the session.
async fn exchange<L: Link, R: Runtime>(
    link: &mut L,
    session: &mut ClientSession,
    rt: &R,
    command: Command,
    key: Option<&QueueSecret>,
) -> Result<Answer, NetError> {
    let (seq, frame) = session
        .request(command, key, &mut RuntimeRng(rt))
        .map_err(NetError::Protocol)?;
    link.send(&frame[..]).await?;
    loop {
        let frame = link.recv().await?;
        match session.receive(&frame).map_err(NetError::Protocol)? {
            Event::Answer { seq: s, answer } if s == seq => return Ok(answer),
            // One request at a time on this connection: an answer to
            // another is out of step.
            Event::Answer { .. } | Event::Ready => return Err(protocol("relay reply sequence")),
            _ => {}
        }
    }
}
