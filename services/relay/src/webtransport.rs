//! The relay's listener for browsers: HTTP/3 WebTransport on UDP, with a
//! short-lived ECDSA P-256 certificate the browser accepts by hash
//! (`serverCertificateHashes`, see [`crate::wtcert`]); the hashes reach
//! the browser in this relay's signed descriptor.
//!
//! A browser opens a session on [`crate::server::RELAY_PATH`] and one
//! bidirectional stream; on it, both sides write whole 3,072-byte
//! relay-protocol frames back to back (no other framing: every frame has
//! the same size), and the connection is then served exactly like a
//! WebSocket one (`server::serve_frames`). Datagrams are not used.
//!
//! What a QUIC observer sees: packets no larger than the fixed 1,200-byte
//! path MTU (MTU discovery is off, so the packet size never depends on
//! the path), each frame written on its own; the sizes follow the number
//! of frames, not what is in them (THREAT_MODEL.md).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use postern_core::consts::FRAME_BYTES;
use postern_core::relay_proto::Frame;
use postern_core::{RelayAddress, UnixTime};
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use wtransport::endpoint::endpoint_side::Server;
use wtransport::error::StreamReadExactError;
use wtransport::{Endpoint, RecvStream, SendStream, ServerConfig};

use crate::config::Settings;
use crate::directory::DirectoryState;
use crate::keys::{self, KeyError};
use crate::server::{FrameIo, HANDSHAKE_TIMEOUT, Incoming, RELAY_PATH, RelayError, Shared};
use crate::wtcert::{self, CertSet, WtCert};

/// How often the certificates are checked for rotation.
pub const ROTATE_CHECK: Duration = Duration::from_secs(3_600);
/// QUIC idle timeout (the client keeps a session open with `Ping`s).
pub const QUIC_IDLE_TIMEOUT: Duration = Duration::from_secs(120);

/// The descriptor's WebTransport entry for these settings at `now`
/// (making or rotating the certificates as needed); `None` when the
/// listener is off or its port is not fixed yet.
pub fn descriptor_info(
    settings: &Settings,
    now: UnixTime,
) -> Result<Option<postern_core::directory::WebTransportInfo>, KeyError> {
    match settings.webtransport_port {
        Some(port) if port != 0 => Ok(Some(
            wtcert::ensure(&settings.data_dir, &settings.host, now)?.info(port),
        )),
        _ => Ok(None),
    }
}

fn quic_config(
    bind: SocketAddr,
    cert: &WtCert,
    kx: postern_net::tls::KeyExchange,
) -> Result<ServerConfig, RelayError> {
    let bad = || {
        RelayError::Keys(KeyError::Corrupt {
            what: "WebTransport certificate",
            path: wtcert::CERT_DIR.into(),
        })
    };
    let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_der.to_vec());
    // The same TLS as every other link (`postern_net::tls`): X25519MLKEM768.
    let mut tls = crate::tls::server_config(
        vec![rustls::pki_types::CertificateDer::from(
            cert.cert_der.clone(),
        )],
        key.into(),
        kx,
    )
    .map_err(|_| bad())?;
    let tls_mut = Arc::make_mut(&mut tls);
    tls_mut.alpn_protocols = vec![wtransport::tls::WEBTRANSPORT_ALPN.to_vec()];
    // QUIC carries no early data.
    tls_mut.max_early_data_size = 0;
    let mut transport = wtransport::quinn::TransportConfig::default();
    // A fixed packet size: what an observer sees never depends on the path.
    transport.mtu_discovery_config(None);
    transport.datagram_receive_buffer_size(None);
    let config = ServerConfig::builder()
        .with_bind_address(bind)
        .with_custom_tls_and_transport(Arc::unwrap_or_clone(tls), transport)
        .keep_alive_interval(None)
        .max_idle_timeout(Some(QUIC_IDLE_TIMEOUT))
        .map_err(|_| bad())?
        .build();
    Ok(config)
}

/// A bound WebTransport listener.
pub(crate) struct Listener {
    endpoint: Endpoint<Server>,
    bind: SocketAddr,
    port: u16,
    certs: CertSet,
}

impl Listener {
    /// Binds the listener (UDP on the listen address's IP) with the
    /// current certificate; `None` when the settings turn it off.
    pub(crate) fn bind(settings: &Settings) -> Result<Option<Listener>, RelayError> {
        let Some(port) = settings.webtransport_port else {
            return Ok(None);
        };
        let certs = wtcert::ensure(&settings.data_dir, &settings.host, keys::now())?;
        let bind = SocketAddr::new(settings.listen.ip(), port);
        let endpoint = Endpoint::server(quic_config(bind, &certs.current, settings.key_exchange)?)
            .map_err(|source| RelayError::Io {
                what: "WebTransport listen",
                source,
            })?;
        let bound = endpoint.local_addr().map_err(|source| RelayError::Io {
            what: "WebTransport listen",
            source,
        })?;
        Ok(Some(Listener {
            endpoint,
            bind: bound,
            port: bound.port(),
            certs,
        }))
    }

    /// What the descriptor announces.
    pub(crate) fn info(&self) -> postern_core::directory::WebTransportInfo {
        self.certs.info(self.port)
    }

    /// Applies the rotation rule; when the certificates changed, serves
    /// the new current one and rewrites the descriptor.
    fn rotate(&mut self, settings: &Settings, directory: &DirectoryState, address: &RelayAddress) {
        let now = keys::now();
        let certs = match wtcert::ensure(&settings.data_dir, &settings.host, now) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "WebTransport certificate rotation failed");
                return;
            }
        };
        let same = |a: &CertSet, b: &CertSet| a.info(0) == b.info(0);
        if same(&certs, &self.certs) {
            return;
        }
        if certs.current.sha256 != self.certs.current.sha256 {
            let reloaded = quic_config(self.bind, &certs.current, settings.key_exchange)
                .ok()
                .map(|c| self.endpoint.reload_config(c, false));
            if !matches!(reloaded, Some(Ok(()))) {
                tracing::warn!("cannot serve the new WebTransport certificate");
                return;
            }
        }
        self.certs = certs;
        directory.set_webtransport(Some(self.info()));
        if let Err(e) = directory.refresh_descriptor(address, now, true) {
            tracing::warn!(error = %e, "cannot write the descriptor");
        }
        tracing::info!("WebTransport certificates rotated");
    }

    /// Accepts browsers until `stop`, each taking a connection slot, and
    /// rotates the certificates every [`ROTATE_CHECK`].
    pub(crate) async fn serve(
        mut self,
        shared: Arc<Shared>,
        slots: Arc<Semaphore>,
        address: RelayAddress,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut sessions = JoinSet::new();
        let mut rotate = tokio::time::interval(ROTATE_CHECK);
        rotate.tick().await;
        loop {
            tokio::select! {
                _ = stop.changed() => break,
                Some(_) = sessions.join_next(), if !sessions.is_empty() => {}
                _ = rotate.tick() => {
                    self.rotate(&shared.settings, &shared.directory, &address);
                }
                incoming = self.endpoint.accept() => {
                    let peer = incoming.remote_address().ip();
                    // Before any QUIC or TLS work: a source that keeps
                    // offending.
                    if shared.refuse_source(peer) {
                        incoming.refuse();
                        continue;
                    }
                    let Ok(permit) = slots.clone().try_acquire_owned() else {
                        shared.metrics.connections_rejected.fetch_add(1, Ordering::Relaxed);
                        incoming.refuse();
                        continue;
                    };
                    let shared = shared.clone();
                    let stop = stop.clone();
                    sessions.spawn(async move {
                        match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(incoming)).await {
                            Ok(Some(io)) => {
                                let ended =
                                    crate::server::serve_frames(io, shared.clone(), stop).await;
                                if ended == crate::server::Ended::Offending {
                                    shared.offence(peer);
                                }
                            }
                            _ => {
                                shared.metrics.handshakes_failed.fetch_add(1, Ordering::Relaxed);
                                shared.offence(peer);
                            }
                        }
                        drop(permit);
                    });
                }
            }
        }
        // serve_frames ends each session on `stop`.
        let _ = tokio::time::timeout(crate::server::SHUTDOWN_GRACE, async {
            while sessions.join_next().await.is_some() {}
        })
        .await;
        sessions.shutdown().await;
        self.endpoint.close(wtransport::VarInt::from_u32(0), b"");
    }
}

async fn handshake(incoming: wtransport::endpoint::IncomingSession) -> Option<WtStream> {
    let request = incoming.await.ok()?;
    if request.path() != RELAY_PATH {
        request.not_found().await;
        return None;
    }
    let connection = request.accept().await.ok()?;
    let (send, recv) = connection.accept_bi().await.ok()?;
    Some(WtStream {
        connection,
        send,
        recv,
    })
}

/// A browser's session: one bidirectional stream of whole frames.
pub(crate) struct WtStream {
    connection: wtransport::Connection,
    send: SendStream,
    recv: RecvStream,
}

impl FrameIo for WtStream {
    async fn next(&mut self) -> Incoming {
        let mut buf = vec![0u8; FRAME_BYTES];
        match self.recv.read_exact(&mut buf).await {
            Ok(()) => Incoming::Frame(buf),
            Err(StreamReadExactError::FinishedEarly(0)) => Incoming::Closed,
            // A partial frame at the end: the stream cannot carry another.
            Err(StreamReadExactError::FinishedEarly(_)) => Incoming::Oversized,
            Err(StreamReadExactError::Read(_)) => Incoming::Failed,
        }
    }

    /// Frames are written one at a time, each completely, so that each
    /// leaves in the same number of same-size packets where nothing else
    /// is waiting to be sent.
    async fn send(&mut self, frames: Vec<Frame>) -> Result<(), ()> {
        for f in frames {
            self.send.write_all(&f[..]).await.map_err(|_| ())?;
        }
        Ok(())
    }

    async fn close(&mut self) {
        let _ = self.send.finish().await;
        self.connection.close(wtransport::VarInt::from_u32(0), b"");
    }
}
