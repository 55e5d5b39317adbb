//! Post-quantum TLS on the relay's listeners: a Postern client's
//! handshake (over TCP and over WebTransport) settles on X25519MLKEM768;
//! a client that offers only classical key exchange is refused unless the
//! operator sets `allow_classical_tls`, and the metrics say which
//! happened. (What the handshakes look like on the wire is checked from a
//! packet capture: `clients/cli/tests/capture.rs` for TCP links,
//! `tests/browser/` for Chromium over QUIC.)
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::sync::Arc;

use common::Relay;
use postern_net::tls::{KeyExchange, X25519MLKEM768};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::ServerName;

/// A provider offering only X25519 (a client without post-quantum TLS).
fn classical_only() -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    Arc::new(p)
}

fn client_config(provider: Arc<CryptoProvider>, alpn: Option<&[u8]>) -> rustls::ClientConfig {
    let mut c = common::any_certificate_client(provider);
    if let Some(a) = alpn {
        c.alpn_protocols = vec![a.to_vec()];
    }
    c
}

/// A TLS handshake over TCP with `provider`; the group it settled on.
async fn tcp_handshake(relay: &Relay, provider: Arc<CryptoProvider>) -> Result<u16, String> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", relay.addr.port()))
        .await
        .unwrap();
    let tls = tokio_rustls::TlsConnector::from(Arc::new(client_config(provider, None)))
        .connect(ServerName::try_from("127.0.0.1").unwrap(), tcp)
        .await
        .map_err(|e| e.to_string())?;
    let group = tls
        .get_ref()
        .1
        .negotiated_key_exchange_group()
        .expect("a TLS 1.3 handshake negotiates a group");
    Ok(group.name().into())
}

/// A WebTransport session with `provider`, by the relay's certificate hash.
async fn webtransport_session(
    relay: &Relay,
    provider: Arc<CryptoProvider>,
) -> Result<wtransport::Connection, String> {
    let port = relay.webtransport.expect("the relay listens for browsers");
    let hashes = wt_hashes(relay);
    let mut tls = client_config(provider, Some(wtransport::tls::WEBTRANSPORT_ALPN));
    tls.dangerous().set_certificate_verifier(Arc::new(
        wtransport::tls::client::ServerHashVerification::new(
            hashes.into_iter().map(wtransport::tls::Sha256Digest::new),
        ),
    ));
    let config = wtransport::ClientConfig::builder()
        .with_bind_default()
        .with_custom_tls(tls)
        .build();
    let endpoint = wtransport::Endpoint::client(config).unwrap();
    endpoint
        .connect(format!("https://127.0.0.1:{port}/v1"))
        .await
        .map_err(|e| e.to_string())
}

fn wt_hashes(relay: &Relay) -> Vec<[u8; 32]> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Ok(bytes) = std::fs::read(relay.data_dir().join("descriptor"))
            && let Ok(d) = postern_core::directory::verify_descriptor(&bytes)
            && let Some(wt) = d.webtransport
        {
            return wt.cert_sha256;
        }
        assert!(std::time::Instant::now() < deadline, "no descriptor");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The metric once it equals `want` (the relay counts a handshake when
/// its side completes, a moment after the client's), or its value after
/// 5 s.
fn metric_is(relay: &Relay, line: &str, want: u64) -> u64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        let v = metric(relay, line);
        if v == want || std::time::Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

fn metric(relay: &Relay, line: &str) -> u64 {
    let m = relay.admin_get("/metrics");
    m.lines()
        .find_map(|l| l.strip_prefix(line)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line} in\n{m}"))
}

const HYBRID: &str = "postern_relay_tls_handshakes_total{group=\"x25519mlkem768\"}";
const CLASSICAL: &str = "postern_relay_tls_handshakes_total{group=\"classical\"}";
const REFUSED: &str = "postern_relay_tls_handshakes_total{group=\"refused_classical\"}";
const ALLOWED: &str = "postern_relay_tls_classical_allowed";

#[tokio::test]
async fn postern_handshakes_are_hybrid_and_classical_only_clients_are_refused() {
    let relay = Relay::start(&[]);
    assert_eq!(metric_is(&relay, ALLOWED, 0), 0);

    // Postern's own client (the same provider as every link).
    let group = tcp_handshake(&relay, postern_net::tls::provider(KeyExchange::HybridOnly))
        .await
        .unwrap();
    assert_eq!(group, X25519MLKEM768);
    // The full client: TLS, WebSocket and the relay's Hello.
    postern_net::connect(&relay.addr).await.unwrap();
    // A client offering every group, classical first in its own list:
    // the relay still settles on the hybrid.
    let mut everything = rustls::crypto::aws_lc_rs::default_provider();
    everything.kx_groups.reverse();
    let group = tcp_handshake(&relay, Arc::new(everything)).await.unwrap();
    assert_eq!(group, X25519MLKEM768);
    assert_eq!(metric_is(&relay, HYBRID, 3), 3);

    // Classical only: refused, over TCP and over WebTransport.
    let refused = tcp_handshake(&relay, classical_only()).await;
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(metric_is(&relay, REFUSED, 1), 1);
    assert_eq!(metric_is(&relay, CLASSICAL, 0), 0);
    let refused = webtransport_session(&relay, classical_only()).await;
    assert!(refused.is_err(), "a classical-only WebTransport session");
    // A browser-like client with the hybrid group gets its session.
    let session =
        webtransport_session(&relay, postern_net::tls::provider(KeyExchange::HybridOnly)).await;
    assert!(session.is_ok(), "{:?}", session.err());
}

#[tokio::test]
async fn an_operator_may_allow_classical_clients_and_the_metrics_say_so() {
    let relay = Relay::start(&["--allow-classical-tls"]);
    assert_eq!(metric_is(&relay, ALLOWED, 1), 1);
    let group = tcp_handshake(&relay, classical_only()).await.unwrap();
    assert_eq!(group, 0x001d, "X25519");
    let group = tcp_handshake(&relay, postern_net::tls::provider(KeyExchange::HybridOnly))
        .await
        .unwrap();
    assert_eq!(group, X25519MLKEM768);
    assert_eq!(metric_is(&relay, CLASSICAL, 1), 1);
    assert_eq!(metric_is(&relay, HYBRID, 1), 1);
    assert_eq!(metric_is(&relay, REFUSED, 0), 0);
    let session = webtransport_session(&relay, classical_only()).await;
    assert!(session.is_ok(), "{:?}", session.err());
}
