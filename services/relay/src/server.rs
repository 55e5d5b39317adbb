//! The relay's network side: TLS 1.3 + WebSocket on `/v1`, one task per
//! connection, every request checked by the core's `ServerAuth` and
//! applied through the storage thread.
//!
//! Nothing here logs a peer address, and queue ids only with
//! `log_queue_ids`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use postern_core::RelayAddress;
use postern_core::consts::FRAME_BYTES;
use postern_core::crypto::signal::{QueuePublic, QueueSecret};
use postern_core::relay_proto::{
    self, Command, ErrorCode, Frame, QueueId, Reply, Request, ServerAuth,
};
use rand::RngCore as _;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::handshake::server::{
    ErrorResponse, Request as HttpRequest, Response as HttpResponse,
};
use tokio_tungstenite::tungstenite::http::StatusCode;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use crate::config::Settings;
use crate::metrics::Metrics;
use crate::offenders::{Offenders, Source};
use crate::storage::{Op, Outcome, Storage, StorageError};
use crate::tls::{self, TlsError};
use crate::writer::Writer;

/// A connection is closed after this many error replies caused by what
/// the client sent (see [`counts_against_client`]).
pub const MAX_ERRORS_PER_CONNECTION: u32 = 32;
/// Time for the TLS and WebSocket handshakes: a client sending its
/// handshake slowly (slow loris) is dropped after this.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time for the client to take one batch of answer frames: a client that
/// stops reading is dropped after this, never holding its task longer.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often a connection's idle time is checked against `idle_timeout`.
/// The relay never sends WebSocket pings: a client keeps an idle
/// connection open with full-size `Ping` frames (docs/relay-protocol.md).
pub const IDLE_CHECK_INTERVAL: Duration = Duration::from_secs(15);
/// Largest WebSocket message or frame read; a larger one breaks the
/// connection, a smaller one of the wrong size gets `FrameSize`.
pub const MAX_MESSAGE_BYTES: usize = 2 * FRAME_BYTES;
/// Most queues one connection may subscribe to (beyond: `RateLimited`).
pub const MAX_SUBSCRIPTIONS_PER_CONNECTION: usize = 1024;
/// Notifications buffered per connection; beyond, they are dropped (a
/// notification only means "fetch").
pub const NOTIFY_QUEUE: usize = 256;
/// How long shutdown waits for connections to finish their requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// The WebSocket path.
pub const RELAY_PATH: &str = "/v1";
/// File in the data directory holding the running relay's address.
pub const ADDRESS_FILE: &str = "address";
/// The database file in the data directory.
pub const DB_FILE: &str = "relay.sqlite";
/// Lock file: one relay per data directory.
pub const LOCK_FILE: &str = "relay.lock";

/// Why the relay could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    /// Storage failure.
    #[error("storage: {0}")]
    Storage(#[from] StorageError),
    /// TLS setup failure.
    #[error("tls: {0}")]
    Tls(#[from] TlsError),
    /// I/O failure (binding, data directory).
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The cause.
        source: std::io::Error,
    },
    /// The relay's keys could not be loaded or created.
    #[error("keys: {0}")]
    Keys(#[from] crate::keys::KeyError),
    /// Another relay uses this data directory.
    #[error("data directory in use by another relay")]
    InUse,
    /// The advertised host or port cannot form an address.
    #[error("host and port do not form a relay address")]
    BadAddress,
}

fn io_err(what: &'static str) -> impl FnOnce(std::io::Error) -> RelayError {
    move |source| RelayError::Io { what, source }
}

/// Whether an error reply counts towards [`MAX_ERRORS_PER_CONNECTION`]:
/// those caused by what the client sent, not by the relay's state (a
/// full queue, a missing invitation, an internal failure). Refused onion
/// packets never count: the connection may be another relay's link, and
/// a relay forwarding someone else's packet cannot check its inner layers
/// (a sender could otherwise get honest links closed); a client sending
/// bad packets only spends its own rate budget.
pub fn counts_against_client(code: ErrorCode) -> bool {
    !matches!(
        code,
        ErrorCode::QueueFull
            | ErrorCode::NoSuchInvite
            | ErrorCode::TooManyQueues
            | ErrorCode::Internal
            | ErrorCode::ShuttingDown
            | ErrorCode::BadPacket
            | ErrorCode::ReplayedPacket
            | ErrorCode::UnknownEpoch
            | ErrorCode::UnknownNextHop
            | ErrorCode::NoDirectory
            | ErrorCode::StorageFull
    )
}

/// A token bucket: `rate` tokens per second, at most `burst`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, burst: u32) -> Bucket {
        Bucket {
            tokens: f64::from(burst),
            rate: f64::from(rate),
            burst: f64::from(burst),
            last: Instant::now(),
        }
    }

    fn take(&mut self) -> bool {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

type Subscribers = HashMap<QueueId, Vec<(u64, mpsc::Sender<QueueId>)>>;

/// State shared by all connections.
pub(crate) struct Shared {
    pub(crate) writer: Writer,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) settings: Settings,
    subscribers: Mutex<Subscribers>,
    /// Stands in for the key of an unknown queue, so a signed command on
    /// an unknown queue costs the same signature check as on a known one.
    decoy_key: QueuePublic,
    next_conn: AtomicU64,
    /// The onion hop (None when the relay is not part of a network).
    mix: Option<Arc<crate::mix::Mix>>,
    /// Keys, descriptor and the network directory.
    pub(crate) directory: Arc<crate::directory::DirectoryState>,
    /// Sources whose connections keep offending.
    offenders: Mutex<Offenders>,
}

impl Shared {
    fn offenders(&self) -> std::sync::MutexGuard<'_, Offenders> {
        // A panic while holding the lock cannot leave the table invalid.
        self.offenders
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether a new connection from `peer` is refused (its source keeps
    /// offending); counted in the metrics.
    pub(crate) fn refuse_source(&self, peer: std::net::IpAddr) -> bool {
        let refused = self
            .offenders()
            .refused(Source::of(peer), std::time::Instant::now());
        if refused {
            self.metrics
                .connections_refused_source
                .fetch_add(1, Ordering::Relaxed);
        }
        refused
    }

    /// Counts an offence by `peer`'s source (see `offenders`).
    pub(crate) fn offence(&self, peer: std::net::IpAddr) {
        let now_refused = self
            .offenders()
            .strike(Source::of(peer), std::time::Instant::now());
        if now_refused {
            tracing::info!("a source reached the offence limit; refusing it for a while");
            self.metrics.sources_refused.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn subscribers(&self) -> std::sync::MutexGuard<'_, Subscribers> {
        // A panic while holding the lock cannot leave the map invalid.
        self.subscribers
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn notify(&self, rid: &QueueId) {
        let subs = self.subscribers();
        if let Some(list) = subs.get(rid) {
            for (_, tx) in list {
                if tx.try_send(*rid).is_ok() {
                    self.metrics.notifications.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    fn unsubscribe(&self, conn: u64, rids: &[QueueId]) {
        let mut subs = self.subscribers();
        for rid in rids {
            if let Some(list) = subs.get_mut(rid) {
                list.retain(|(c, _)| *c != conn);
                if list.is_empty() {
                    subs.remove(rid);
                }
            }
        }
    }
}

fn hex(id: &QueueId) -> String {
    data_encoding::HEXLOWER.encode(id)
}

/// Writes one line to stdout (for tests and scripts that start the relay).
fn announce(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Writes `text` to `path` atomically.
fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

/// The relay's TLS configuration and pin (none for a CA-issued
/// certificate), from the settings.
pub fn load_tls(
    settings: &Settings,
) -> Result<(Arc<rustls::ServerConfig>, Option<[u8; 32]>), RelayError> {
    let (certs, key, pinned) = match &settings.ca_cert {
        Some((c, k)) => {
            let (certs, key) = tls::load(c, k)?;
            (certs, key, false)
        }
        None => {
            let d = &settings.data_dir;
            let (certs, key) = tls::load(&d.join(tls::CERT_FILE), &d.join(tls::KEY_FILE))?;
            (certs, key, true)
        }
    };
    let pin = if pinned { tls::pin(&certs) } else { None };
    Ok((tls::server_config(certs, key, settings.key_exchange)?, pin))
}

/// Runs the relay until `shutdown` completes, then stops accepting,
/// lets connections finish the request in hand, closes them, flushes the
/// database and returns.
pub async fn run(settings: Settings, shutdown: impl Future<Output = ()>) -> Result<(), RelayError> {
    let data_dir = settings.data_dir.clone();
    let lock = std::fs::File::create(data_dir.join(LOCK_FILE)).map_err(io_err("lock file"))?;
    if lock.try_lock().is_err() {
        return Err(RelayError::InUse);
    }
    let (tls_config, pin) = load_tls(&settings)?;
    let metrics = Arc::new(Metrics::default());
    metrics.tls_classical_allowed.store(
        u64::from(settings.key_exchange == postern_net::tls::KeyExchange::AlsoClassical),
        Ordering::Relaxed,
    );
    let storage = Storage::open(&data_dir.join(DB_FILE), settings.limits)?;
    let (writer, storage_thread) =
        Writer::start(storage, metrics.clone()).map_err(io_err("storage thread"))?;

    let listener = TcpListener::bind(settings.listen)
        .await
        .map_err(io_err("listen"))?;
    let bound = listener.local_addr().map_err(io_err("listen"))?;
    let port = if settings.port == 0 {
        bound.port()
    } else {
        settings.port
    };
    let address =
        RelayAddress::new(&settings.host, port, pin).map_err(|_| RelayError::BadAddress)?;
    write_atomic(&data_dir.join(ADDRESS_FILE), &format!("{address}\n"))
        .map_err(io_err("address file"))?;
    let admin = TcpListener::bind(settings.admin_listen)
        .await
        .map_err(io_err("admin listen"))?;
    let admin_addr = admin.local_addr().map_err(io_err("admin listen"))?;
    if !admin_addr.ip().is_loopback() {
        tracing::warn!("admin listener is not on a loopback address");
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let directory = crate::directory::DirectoryState::open(&settings)?;
    let browsers = crate::webtransport::Listener::bind(&settings)?;
    if let Some(l) = &browsers {
        directory.set_webtransport(Some(l.info()));
    }
    let mix = Some(
        crate::topology::mix(
            directory.clone(),
            &data_dir,
            settings.mix_delay_ms,
            metrics.clone(),
        )
        .map_err(io_err("replay cache"))?,
    );
    let dir_task = tokio::spawn(directory.clone().maintain(address.clone(), stop_rx.clone()));
    let decoy_key = QueueSecret::generate(&mut rand::rng())
        .public()
        .map_err(|_| RelayError::BadAddress)?;
    let shared = Arc::new(Shared {
        writer,
        metrics: metrics.clone(),
        settings,
        subscribers: Mutex::new(HashMap::new()),
        decoy_key,
        next_conn: AtomicU64::new(1),
        mix: mix.clone(),
        directory,
        offenders: Mutex::new(Offenders::new()),
    });
    let mix_task = mix.map(|m| tokio::spawn(m.maintain(stop_rx.clone())));
    let slots = Arc::new(Semaphore::new(shared.settings.max_connections));
    let wt_port = browsers.as_ref().map(|l| l.info().port);
    let wt_task = browsers.map(|l| {
        tokio::spawn(l.serve(
            shared.clone(),
            slots.clone(),
            address.clone(),
            stop_rx.clone(),
        ))
    });
    let admin_task = tokio::spawn(crate::admin::serve(admin, metrics.clone(), stop_rx.clone()));
    let gc_task = tokio::spawn(gc_loop(shared.clone(), stop_rx.clone()));

    tracing::info!(%address, "relay listening");
    announce(&format!("listening {address}"));
    if let Some(port) = wt_port {
        announce(&format!("webtransport {port}"));
    }
    announce(&format!("admin http://{admin_addr}"));

    let acceptor = tokio_rustls::TlsAcceptor::from(tls_config);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => {
                let Ok((tcp, peer)) = r else {
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                // Before any TLS work: a source that keeps offending.
                if shared.refuse_source(peer.ip()) {
                    drop(tcp);
                    continue;
                }
                let Ok(permit) = slots.clone().try_acquire_owned() else {
                    metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
                    drop(tcp);
                    continue;
                };
                let shared = shared.clone();
                let acceptor = acceptor.clone();
                let stop = stop_rx.clone();
                conns.spawn(async move {
                    serve_connection(tcp, peer.ip(), acceptor, shared, stop).await;
                    drop(permit);
                });
            }
        }
    }

    tracing::info!("shutting down");
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(SHUTDOWN_GRACE, async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    if drained.is_err() {
        tracing::warn!("connections still open after the grace period; closing them");
        conns.shutdown().await;
    }
    if let Some(t) = wt_task {
        let _ = t.await;
    }
    let _ = admin_task.await;
    let _ = gc_task.await;
    if let Some(t) = mix_task {
        let _ = t.await;
    }
    let _ = dir_task.await;
    // The last handle to the storage thread: it finishes what is queued,
    // checkpoints and ends.
    drop(shared);
    let _ = tokio::task::spawn_blocking(move || storage_thread.join()).await;
    tracing::info!("stopped");
    Ok(())
}

async fn gc_loop(shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(shared.settings.gc_interval);
    loop {
        tokio::select! {
            _ = stop.changed() => return,
            _ = tick.tick() => {}
        }
        match shared.writer.call(Op::Gc).await {
            Ok(Outcome::Gc(r)) => {
                let m = &shared.metrics;
                m.gc_runs.fetch_add(1, Ordering::Relaxed);
                m.gc_items.fetch_add(r.items, Ordering::Relaxed);
                m.gc_queues.fetch_add(r.queues, Ordering::Relaxed);
                m.gc_invites.fetch_add(r.invites, Ordering::Relaxed);
                tracing::info!(
                    items = r.items,
                    queues = r.queues,
                    invites = r.invites,
                    "garbage collected"
                );
            }
            other => tracing::warn!(result = ?other, "garbage collection failed"),
        }
    }
}

fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .max_message_size(Some(MAX_MESSAGE_BYTES))
        .max_frame_size(Some(MAX_MESSAGE_BYTES))
}

use tokio_tungstenite::WebSocketStream;

type Ws = WebSocketStream<tokio_rustls::server::TlsStream<TcpStream>>;

// tungstenite's callback type fixes the large error response.
#[allow(clippy::result_large_err)]
async fn handshake(
    tcp: TcpStream,
    acceptor: tokio_rustls::TlsAcceptor,
    metrics: &Metrics,
) -> Option<Ws> {
    let _ = tcp.set_nodelay(true);
    let tls = match acceptor.accept(tcp).await {
        Ok(t) => t,
        Err(e) => {
            let no_group = e
                .get_ref()
                .and_then(|i| i.downcast_ref::<rustls::Error>())
                .is_some_and(postern_net::tls::is_no_common_group);
            if no_group {
                metrics
                    .tls_refused_classical
                    .fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
    };
    match tls.get_ref().1.negotiated_key_exchange_group() {
        Some(g) if postern_net::tls::is_hybrid(g.name()) => {
            metrics.tls_hybrid.fetch_add(1, Ordering::Relaxed)
        }
        _ => metrics.tls_classical.fetch_add(1, Ordering::Relaxed),
    };
    let check_path = |req: &HttpRequest, resp: HttpResponse| {
        if req.uri().path() == RELAY_PATH {
            Ok(resp)
        } else {
            let mut r = ErrorResponse::new(None);
            *r.status_mut() = StatusCode::NOT_FOUND;
            Err(r)
        }
    };
    tokio_tungstenite::accept_hdr_async_with_config(tls, check_path, Some(ws_config()))
        .await
        .ok()
}

struct Conn {
    id: u64,
    shared: Arc<Shared>,
    auth: ServerAuth,
    bucket: Bucket,
    errors: u32,
    subscriptions: Vec<QueueId>,
    notify_tx: mpsc::Sender<QueueId>,
}

async fn serve_connection(
    tcp: TcpStream,
    peer: std::net::IpAddr,
    acceptor: tokio_rustls::TlsAcceptor,
    shared: Arc<Shared>,
    stop: watch::Receiver<bool>,
) {
    let Ok(Some(ws)) =
        tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(tcp, acceptor, &shared.metrics)).await
    else {
        shared
            .metrics
            .handshakes_failed
            .fetch_add(1, Ordering::Relaxed);
        shared.offence(peer);
        return;
    };
    if serve_frames(ws, shared.clone(), stop).await == Ended::Offending {
        shared.offence(peer);
    }
}

/// How a connection ended, as far as its source is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ended {
    /// Closed by either side for a reason that is not the source's fault.
    Normally,
    /// Closed because of what the source sent (too many errors, an
    /// oversized message): an offence (see `offenders`).
    Offending,
}

/// What a connection's transport delivered.
#[derive(Debug)]
pub(crate) enum Incoming {
    /// One message, to be decoded as a request frame.
    Frame(Vec<u8>),
    /// Transport-level traffic with no request in it.
    Skip,
    /// A message of a kind that is never a request (answered `Malformed`).
    Malformed,
    /// An oversized message: the stream cannot be resynchronised.
    Oversized,
    /// The client closed the connection.
    Closed,
    /// The transport failed.
    Failed,
}

/// One client's channel of whole relay-protocol frames: WebSocket over
/// TLS, or a WebTransport bidirectional stream.
pub(crate) trait FrameIo {
    /// The next message.
    async fn next(&mut self) -> Incoming;
    /// Sends each frame on its own, so that every frame on the wire looks
    /// the same (see the implementations).
    async fn send(&mut self, frames: Vec<Frame>) -> Result<(), ()>;
    /// Closes the channel (bounded by the caller).
    async fn close(&mut self);
}

impl FrameIo for Ws {
    async fn next(&mut self) -> Incoming {
        match StreamExt::next(self).await {
            None => Incoming::Closed,
            Some(Ok(Message::Binary(b))) => Incoming::Frame(b.to_vec()),
            Some(Ok(Message::Text(_))) => Incoming::Malformed,
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => Incoming::Skip,
            Some(Ok(Message::Close(_))) => Incoming::Closed,
            Some(Err(tungstenite::Error::Capacity(_))) => Incoming::Oversized,
            Some(Err(_)) => Incoming::Failed,
        }
    }

    /// One WebSocket message per frame, flushed, so one TLS record per
    /// frame and every record on the wire has the same size (frames
    /// written together would share a record whose size counts them).
    async fn send(&mut self, frames: Vec<Frame>) -> Result<(), ()> {
        for f in frames {
            SinkExt::send(self, Message::Binary(f.to_vec().into()))
                .await
                .map_err(|_| ())?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        let _ = WebSocketStream::close(self, None).await;
    }
}

/// Serves one client whose transport handshake is done.
pub(crate) async fn serve_frames<T: FrameIo>(
    mut io: T,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Ended {
    let metrics = shared.metrics.clone();
    metrics.connections_total.fetch_add(1, Ordering::Relaxed);
    metrics.connections_open.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_conn.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(conn = id, "connection open");
    let (notify_tx, mut notify_rx) = mpsc::channel(NOTIFY_QUEUE);
    let mut conn = Conn {
        id,
        auth: ServerAuth::new(&mut rand::rng()),
        bucket: Bucket::new(shared.settings.rate_per_sec, shared.settings.rate_burst),
        errors: 0,
        subscriptions: Vec::new(),
        notify_tx,
        shared: shared.clone(),
    };
    let why = conn_loop(&mut conn, &mut io, &mut notify_rx, &mut stop).await;
    tracing::debug!(conn = id, reason = why, "connection closed");
    shared.unsubscribe(id, &conn.subscriptions);
    let _ = tokio::time::timeout(Duration::from_secs(2), io.close()).await;
    metrics.connections_open.fetch_sub(1, Ordering::Relaxed);
    if why == TOO_MANY_ERRORS || why == OVERSIZED {
        Ended::Offending
    } else {
        Ended::Normally
    }
}

const TOO_MANY_ERRORS: &str = "too many errors";
const OVERSIZED: &str = "oversized message";

async fn conn_loop<T: FrameIo>(
    conn: &mut Conn,
    io: &mut T,
    notify_rx: &mut mpsc::Receiver<QueueId>,
    stop: &mut watch::Receiver<bool>,
) -> &'static str {
    let Ok(hello) = conn.auth.hello() else {
        return "hello";
    };
    if !matches!(
        tokio::time::timeout(WRITE_TIMEOUT, io.send(vec![hello])).await,
        Ok(Ok(()))
    ) {
        return "write";
    }
    let idle_timeout = conn.shared.settings.idle_timeout;
    let mut last_heard = Instant::now();
    let every = IDLE_CHECK_INTERVAL.min(idle_timeout);
    let mut idle_check = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        let frames = tokio::select! {
            _ = stop.changed() => return "shutdown",
            Some(rid) = notify_rx.recv() => {
                match relay_proto::encode_response(0, &Reply::Notify { recipient_id: rid }) {
                    Ok(f) => vec![f],
                    Err(_) => continue,
                }
            }
            _ = idle_check.tick() => {
                if last_heard.elapsed() >= idle_timeout {
                    return "idle";
                }
                continue;
            }
            msg = io.next() => {
                last_heard = Instant::now();
                match msg {
                    Incoming::Frame(b) => conn.handle(&b).await,
                    Incoming::Malformed => conn.error_frame(0, ErrorCode::Malformed),
                    Incoming::Skip => continue,
                    Incoming::Closed => return "closed by client",
                    Incoming::Oversized => {
                        // The stream cannot be resynchronised after an
                        // oversized message: say why, then close.
                        let f = conn.error_frame(0, ErrorCode::FrameSize);
                        let _ = io.send(f).await;
                        return OVERSIZED;
                    }
                    Incoming::Failed => return "read error",
                }
            }
        };
        match tokio::time::timeout(WRITE_TIMEOUT, io.send(frames)).await {
            Ok(Ok(())) => {}
            Ok(Err(())) => return "write",
            Err(_) => {
                // A client that does not read: its buffers are full.
                conn.shared
                    .metrics
                    .connections_closed_slow
                    .fetch_add(1, Ordering::Relaxed);
                return "write timeout";
            }
        }
        if conn.errors >= MAX_ERRORS_PER_CONNECTION {
            conn.shared
                .metrics
                .connections_closed_for_errors
                .fetch_add(1, Ordering::Relaxed);
            return TOO_MANY_ERRORS;
        }
    }
}

impl Conn {
    fn error_frame(&mut self, seq: u64, code: ErrorCode) -> Vec<Frame> {
        self.shared.metrics.error(code);
        if counts_against_client(code) {
            self.errors += 1;
        }
        tracing::debug!(conn = self.id, code = code.name(), "error reply");
        relay_proto::encode_response(seq, &Reply::Error(code))
            .map(|f| vec![f])
            .unwrap_or_default()
    }

    fn reply(&mut self, seq: u64, replies: Vec<Reply>) -> Vec<Frame> {
        let mut frames = Vec::with_capacity(replies.len());
        for r in &replies {
            match relay_proto::encode_response(seq, r) {
                Ok(f) => frames.push(f),
                Err(_) => return self.error_frame(seq, ErrorCode::Internal),
            }
        }
        frames
    }

    /// One request frame in, the frames that answer it out.
    async fn handle(&mut self, bytes: &[u8]) -> Vec<Frame> {
        let req = match relay_proto::decode_request(bytes) {
            Ok(r) => r,
            Err(refusal) => return self.error_frame(refusal.seq, refusal.code),
        };
        let seq = req.seq;
        self.shared.metrics.request(req.command.name());
        if !self.bucket.take() {
            return self.error_frame(seq, ErrorCode::RateLimited);
        }
        if let Err(code) = self.authenticate(&req).await {
            return self.error_frame(seq, code);
        }
        if self.shared.settings.log_queue_ids
            && let Some(rid) = req.command.recipient_id()
        {
            tracing::debug!(conn = self.id, command = req.command.name(), queue = %hex(rid), "request");
        } else {
            tracing::trace!(conn = self.id, command = req.command.name(), "request");
        }
        match self.execute(req.command).await {
            Ok(replies) => self.reply(seq, replies),
            Err(code) => self.error_frame(seq, code),
        }
    }

    /// Checks the sequence number and, for signed commands, the
    /// signature with the queue's key (for `Create`, the key in it).
    async fn authenticate(&mut self, req: &Request) -> Result<(), ErrorCode> {
        if !req.command.is_signed() {
            return self.auth.check(req, None);
        }
        let rid = match &req.command {
            Command::Create { queue_key } => return self.auth.check(req, Some(queue_key)),
            c => c.recipient_id().ok_or(ErrorCode::UnknownCommand)?,
        };
        let key = match self
            .shared
            .writer
            .call(Op::QueueKey { recipient_id: *rid })
            .await?
        {
            Outcome::Key(k) => k,
            _ => return Err(ErrorCode::Internal),
        };
        match key.and_then(|k| QueuePublic::from_bytes(&k).ok()) {
            Some(k) => self.auth.check(req, Some(&k)),
            None => {
                // Same work as for a real queue, then the truth.
                let decoy = self.shared.decoy_key.clone();
                match self.auth.check(req, Some(&decoy)) {
                    Err(ErrorCode::StaleSequence) => Err(ErrorCode::StaleSequence),
                    _ => Err(ErrorCode::NoSuchQueue),
                }
            }
        }
    }

    async fn call(&self, op: Op) -> Result<Outcome, ErrorCode> {
        self.shared.writer.call(op).await
    }

    async fn execute(&mut self, command: Command) -> Result<Vec<Reply>, ErrorCode> {
        let unexpected = Err(ErrorCode::Internal);
        match command {
            Command::Create { queue_key } => {
                let (mut recipient_id, mut sender_id) = ([0u8; 16], [0u8; 16]);
                {
                    let mut rng = rand::rng();
                    rng.fill_bytes(&mut recipient_id);
                    rng.fill_bytes(&mut sender_id);
                }
                let op = Op::Register {
                    recipient_id,
                    sender_id,
                    queue_key: queue_key.to_bytes(),
                };
                match self.call(op).await? {
                    Outcome::Done => Ok(vec![Reply::Created {
                        recipient_id,
                        sender_id,
                    }]),
                    _ => unexpected,
                }
            }
            c @ Command::Send { .. } => match self.call(Op::Client(c)).await? {
                Outcome::Sent { recipient_id } => {
                    self.shared.notify(&recipient_id);
                    Ok(vec![Reply::Ok])
                }
                _ => unexpected,
            },
            c @ Command::Fetch { .. } => match self.call(Op::Client(c)).await? {
                Outcome::Items { items, more } => {
                    let count = u32::try_from(items.len()).map_err(|_| ErrorCode::Internal)?;
                    let mut replies: Vec<Reply> = items
                        .into_iter()
                        .map(|(item_id, blob)| Reply::Item { item_id, blob })
                        .collect();
                    replies.push(Reply::Done { count, more });
                    Ok(replies)
                }
                _ => unexpected,
            },
            c @ (Command::Ack { .. } | Command::PutInvite { .. }) => self.done(Op::Client(c)).await,
            Command::Subscribe { recipient_id } => {
                let already = self.subscriptions.contains(&recipient_id);
                if !already && self.subscriptions.len() >= MAX_SUBSCRIPTIONS_PER_CONNECTION {
                    return Err(ErrorCode::RateLimited);
                }
                let r = self
                    .done(Op::Client(Command::Subscribe { recipient_id }))
                    .await?;
                if !already {
                    self.subscriptions.push(recipient_id);
                    self.shared
                        .subscribers()
                        .entry(recipient_id)
                        .or_default()
                        .push((self.id, self.notify_tx.clone()));
                }
                Ok(r)
            }
            Command::DeleteQueue { recipient_id } => {
                let r = self
                    .done(Op::Client(Command::DeleteQueue { recipient_id }))
                    .await?;
                self.shared.subscribers().remove(&recipient_id);
                self.subscriptions.retain(|s| *s != recipient_id);
                Ok(r)
            }
            c @ Command::TakeInvite { .. } => match self.call(Op::Client(c)).await? {
                Outcome::Invite(blobs) => {
                    let count = u32::try_from(blobs.len()).map_err(|_| ErrorCode::Internal)?;
                    let mut replies: Vec<Reply> = (0u64..)
                        .zip(blobs)
                        .map(|(item_id, blob)| Reply::Item { item_id, blob })
                        .collect();
                    replies.push(Reply::Done { count, more: false });
                    Ok(replies)
                }
                _ => unexpected,
            },
            Command::GetDirectory => self.shared.directory.get_directory(),
            Command::Ping => Ok(vec![Reply::Ok]),
            Command::Forward { epoch, packet } => {
                let mix = self.shared.mix.clone().ok_or(ErrorCode::NoDirectory)?;
                if let crate::mix::Accepted::Later(p) = mix.accept(epoch, &packet)? {
                    tokio::spawn(finish_last_hop(self.shared.clone(), p));
                }
                Ok(vec![Reply::Ok])
            }
            _ => Err(ErrorCode::UnknownCommand),
        }
    }

    async fn done(&self, op: Op) -> Result<Vec<Reply>, ErrorCode> {
        match self.call(op).await? {
            Outcome::Done => Ok(vec![Reply::Ok]),
            _ => Err(ErrorCode::Internal),
        }
    }
}

/// A last hop's work, after the previous hop has its `Ok`: once the
/// packet's replay tag is on disk, store the blob (durably) and notify,
/// then send the acknowledgement; or send a loop back. A blob that cannot
/// be stored (unknown or full queue) is counted and dropped: the sender
/// hears nothing and sends it again.
async fn finish_last_hop(shared: Arc<Shared>, mut p: crate::mix::Pending) {
    if !p.tag_synced().await {
        return;
    }
    let epoch = p.epoch;
    let (stores, ack) = match &p.work {
        crate::mix::Work::Loop { ack } => {
            p.mix().acknowledge(epoch, ack);
            return;
        }
        crate::mix::Work::Deliver {
            sender_id,
            blob,
            ack,
        } => (vec![(*sender_id, blob.clone())], ack.as_ref()),
        crate::mix::Work::Reply { queue, blobs } => {
            (blobs.iter().map(|b| (*queue, b.clone())).collect(), None)
        }
    };
    let mut stored = None;
    for (sender_id, blob) in stores {
        match shared
            .writer
            .call(Op::Client(Command::Send { sender_id, blob }))
            .await
        {
            Ok(Outcome::Sent { recipient_id }) => stored = Some(recipient_id),
            Ok(_) => {
                shared.metrics.error(ErrorCode::Internal);
                p.mix().count_dropped();
                return;
            }
            Err(code) => {
                shared.metrics.error(code);
                p.mix().count_dropped();
                return;
            }
        }
    }
    if let Some(rid) = stored {
        shared.notify(&rid);
    }
    shared
        .metrics
        .packets_delivered
        .fetch_add(1, Ordering::Relaxed);
    // Stored durably: now acknowledge.
    if let Some(block) = ack {
        p.mix().acknowledge(epoch, block);
    }
}

/// The address clients use, from the settings (`None` while the port is
/// chosen at run time).
pub fn advertised(settings: &Settings, pin: Option<[u8; 32]>) -> Option<RelayAddress> {
    RelayAddress::new(&settings.host, settings.port, pin).ok()
}
