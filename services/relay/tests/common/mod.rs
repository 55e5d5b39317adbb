//! Starts and stops the real `postern-relay` binary on 127.0.0.1 with an
//! ephemeral port and a temporary data directory.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    dead_code
)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use postern_core::RelayAddress;
use postern_core::consts::BLOB_BYTES;
use postern_core::relay_proto::{self, ClientAuth, Command as Cmd, Frame, Reply, Response};
use postern_net::{Blob, WsStream};

pub const BIN: &str = env!("CARGO_BIN_EXE_postern-relay");

pub struct Relay {
    pub dir: tempfile::TempDir,
    pub addr: RelayAddress,
    pub admin: SocketAddr,
    /// The WebTransport listener's UDP port, when it listens.
    pub webtransport: Option<u16>,
    pub child: Child,
    stdout: BufReader<ChildStdout>,
    args: Vec<String>,
    runs: u32,
}

impl Relay {
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self, run: u32) -> PathBuf {
        self.dir.path().join(format!("relay-{run}.log"))
    }

    /// All log output so far.
    pub fn logs(&self) -> String {
        (1..=self.runs)
            .map(|r| std::fs::read_to_string(self.log_path(r)).unwrap_or_default())
            .collect()
    }

    /// `init` then `run` with `args` added.
    pub fn start(args: &[&str]) -> Relay {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let st = Command::new(BIN)
            .args(["init", "--host", "127.0.0.1", "--port", "0", "--data-dir"])
            .arg(&data)
            .env_remove("POSTERN_RELAY_CONFIG")
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(st.success());
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let (child, stdout, addr, admin, webtransport) =
            spawn(&data, &args, &dir.path().join("relay-1.log"));
        Relay {
            dir,
            addr,
            admin,
            webtransport,
            child,
            stdout,
            args,
            runs: 1,
        }
    }

    /// Starts the relay again on the same data directory (after a stop).
    pub fn restart(&mut self) {
        self.runs += 1;
        let log = self.log_path(self.runs);
        let (child, stdout, addr, admin, webtransport) = spawn(&self.data_dir(), &self.args, &log);
        self.webtransport = webtransport;
        self.child = child;
        self.stdout = stdout;
        self.addr = addr;
        self.admin = admin;
    }

    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Sends SIGTERM; returns the exit status and how long it took.
    pub fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let t = Instant::now();
        let st = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st, t.elapsed());
            }
            assert!(
                Instant::now() < deadline,
                "relay did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// One admin HTTP GET; returns the whole response.
    pub fn admin_get(&self, path: &str) -> String {
        let mut s = std::net::TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut r = String::new();
        s.read_to_string(&mut r).unwrap();
        r
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(
    data: &Path,
    args: &[String],
    log: &Path,
) -> (
    Child,
    BufReader<ChildStdout>,
    RelayAddress,
    SocketAddr,
    Option<u16>,
) {
    let log = std::fs::File::create(log).unwrap();
    let mut child = Command::new(BIN)
        .args(["run", "--admin-listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .args(args)
        .env("POSTERN_RELAY_LOG", "debug")
        .env_remove("POSTERN_RELAY_CONFIG")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let (mut addr, mut admin, mut webtransport) = (None, None, None);
    while addr.is_none() || admin.is_none() {
        let mut line = String::new();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "relay exited early"
        );
        if let Some(a) = line.trim().strip_prefix("listening ") {
            addr = Some(RelayAddress::parse(a).unwrap());
        } else if let Some(p) = line.trim().strip_prefix("webtransport ") {
            webtransport = Some(p.parse().unwrap());
        } else if let Some(a) = line.trim().strip_prefix("admin http://") {
            admin = Some(a.parse().unwrap());
        }
    }
    (child, stdout, addr.unwrap(), admin.unwrap(), webtransport)
}

pub fn blob(marker: u64) -> Blob {
    let mut b = Box::new([0u8; BLOB_BYTES]);
    b[..8].copy_from_slice(&marker.to_be_bytes());
    b
}

pub fn marker(b: &Blob) -> u64 {
    u64::from_be_bytes(b[..8].try_into().unwrap())
}

pub fn rng() -> rand::rngs::ThreadRng {
    rand::rng()
}

/// A connection that speaks frames directly, for malformed input.
pub struct Raw {
    pub ws: WsStream,
    pub auth: ClientAuth,
}

impl Raw {
    pub async fn connect(addr: &RelayAddress) -> Raw {
        Raw::try_connect_from(addr, None).await.unwrap()
    }

    /// A connection leaving from `source` (e.g. 127.0.0.2: another
    /// source on loopback), or an error if the relay refuses it.
    pub async fn try_connect_from(
        addr: &RelayAddress,
        source: Option<std::net::IpAddr>,
    ) -> Result<Raw, postern_net::NetError> {
        let via = postern_net::Connector {
            source_address: source,
        };
        let mut ws = postern_net::connect_websocket_with(addr, &via).await?;
        let hello = next(&mut ws).await.unwrap();
        let Reply::Hello { challenge } = hello.reply else {
            panic!("no hello")
        };
        Ok(Raw {
            ws,
            auth: ClientAuth::new(challenge),
        })
    }

    pub fn local_port(&self) -> u16 {
        self.ws.get_ref().get_ref().0.local_addr().unwrap().port()
    }

    pub async fn send_bytes(&mut self, b: Vec<u8>) {
        use futures_util::SinkExt as _;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(b.into()))
            .await
            .unwrap();
    }

    /// Sends, ignoring a relay that closes in the middle.
    pub async fn try_send_bytes(&mut self, b: Vec<u8>) {
        use futures_util::SinkExt as _;
        let _ = self
            .ws
            .send(tokio_tungstenite::tungstenite::Message::Binary(b.into()))
            .await;
    }

    pub async fn send_text(&mut self, t: &str) {
        use futures_util::SinkExt as _;
        self.ws
            .send(tokio_tungstenite::tungstenite::Message::Text(t.into()))
            .await
            .unwrap();
    }

    pub async fn send_frame(&mut self, f: &Frame) {
        self.send_bytes(f.to_vec()).await;
    }

    /// Builds (and returns, without sending) the next request.
    pub fn request(
        &mut self,
        c: Cmd,
        key: Option<&postern_core::crypto::signal::QueueSecret>,
    ) -> (u64, Frame) {
        self.auth.request(c, key, &mut rng()).unwrap()
    }

    /// The next response, or `None` once the relay closed.
    pub async fn recv(&mut self) -> Option<Response> {
        tokio::time::timeout(Duration::from_secs(10), next(&mut self.ws))
            .await
            .expect("relay did not answer")
    }

    /// The next response must be `Error(code)` for `seq`.
    pub async fn expect_error(&mut self, seq: u64, code: postern_net::ErrorCode) {
        let r = self.recv().await.expect("connection closed");
        assert_eq!((r.seq, r.reply), (seq, Reply::Error(code)));
    }
}

async fn next(ws: &mut WsStream) -> Option<Response> {
    use futures_util::StreamExt as _;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        match ws.next().await? {
            Ok(Message::Binary(b)) => return Some(relay_proto::decode_response(&b).unwrap()),
            Ok(Message::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// Accepts any certificate but still checks the handshake's signature:
/// for tests and benchmarks about key exchange only (pins are
/// `postern-net`'s to check, and its tests do).
#[derive(Debug)]
pub struct AnyCertificate(pub std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS 1.3 client with `provider`'s key exchange, accepting any
/// certificate ([`AnyCertificate`]).
pub fn any_certificate_client(
    provider: std::sync::Arc<rustls::crypto::CryptoProvider>,
) -> rustls::ClientConfig {
    rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(std::sync::Arc::new(AnyCertificate(provider)))
        .with_no_client_auth()
}
