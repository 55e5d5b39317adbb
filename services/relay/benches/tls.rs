//! TLS handshake cost, hybrid post-quantum against classical (prints
//! figures; not a criterion bench): full TLS 1.3 handshakes between a
//! rustls client and the relay's own server configuration
//! (`postern_relay::tls::server_config`, its generated certificate), in
//! memory so only the handshake's computation is measured, alternating
//! X25519MLKEM768 (what every Postern link uses) and X25519 (what the
//! relay accepts only with `allow_classical_tls`), in rounds so machine
//! noise falls on both alike.
//!
//! `cargo bench -p postern-relay --bench tls`; without `--bench` (as
//! under `cargo test --all-targets`) it runs a few handshakes only.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    missing_docs
)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_net::tls::{KeyExchange, X25519MLKEM768};
use rustls::crypto::CryptoProvider;

#[path = "../tests/common/mod.rs"]
mod common;

fn client(provider: Arc<CryptoProvider>) -> Arc<rustls::ClientConfig> {
    Arc::new(common::any_certificate_client(provider))
}

/// One full handshake in memory; the group it settled on.
fn handshake(client: &Arc<rustls::ClientConfig>, server: &Arc<rustls::ServerConfig>) -> u16 {
    let mut c =
        rustls::ClientConnection::new(client.clone(), "127.0.0.1".try_into().unwrap()).unwrap();
    let mut s = rustls::ServerConnection::new(server.clone()).unwrap();
    let mut buf = Vec::new();
    while c.is_handshaking() || s.is_handshaking() {
        buf.clear();
        while c.wants_write() {
            c.write_tls(&mut buf).unwrap();
        }
        let mut r = &buf[..];
        while !r.is_empty() {
            s.read_tls(&mut r).unwrap();
        }
        s.process_new_packets().unwrap();
        buf.clear();
        while s.wants_write() {
            s.write_tls(&mut buf).unwrap();
        }
        let mut r = &buf[..];
        while !r.is_empty() {
            c.read_tls(&mut r).unwrap();
        }
        c.process_new_packets().unwrap();
    }
    c.negotiated_key_exchange_group().unwrap().name().into()
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let (rounds, per_round) = if full { (20, 50) } else { (1, 3) };
    let dir = tempfile::tempdir().unwrap();
    postern_relay::tls::generate(dir.path(), "127.0.0.1").unwrap();
    let (certs, key) = postern_relay::tls::load(
        &dir.path().join(postern_relay::tls::CERT_FILE),
        &dir.path().join(postern_relay::tls::KEY_FILE),
    )
    .unwrap();
    // The relay as an operator who allows classical clients runs it:
    // the same server serves both kinds.
    let server = postern_relay::tls::server_config(certs, key, KeyExchange::AlsoClassical).unwrap();
    let hybrid = client(postern_net::tls::provider(KeyExchange::HybridOnly));
    let mut x25519 = rustls::crypto::aws_lc_rs::default_provider();
    x25519.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519];
    let classical = client(Arc::new(x25519));
    assert_eq!(handshake(&hybrid, &server), X25519MLKEM768);
    assert_eq!(handshake(&classical, &server), 0x001d);

    let mut times = [Vec::new(), Vec::new()];
    for _ in 0..rounds {
        for (i, c) in [&hybrid, &classical].into_iter().enumerate() {
            let t = Instant::now();
            for _ in 0..per_round {
                handshake(c, &server);
            }
            times[i].push(t.elapsed() / per_round);
        }
    }
    let median = |v: &mut Vec<Duration>| {
        v.sort();
        v[v.len() / 2]
    };
    let h = median(&mut times[0]);
    let c = median(&mut times[1]);
    println!(
        "TLS 1.3 handshake, client and relay in one thread (in memory), median of {rounds} rounds of {per_round}:"
    );
    println!("  X25519MLKEM768: {:.3} ms", h.as_secs_f64() * 1e3);
    println!("  X25519:         {:.3} ms", c.as_secs_f64() * 1e3);
    println!(
        "  ratio hybrid / classical: {:.2} (goal <= 1.3)",
        h.as_secs_f64() / c.as_secs_f64()
    );
}
