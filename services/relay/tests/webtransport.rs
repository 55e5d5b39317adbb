//! The relay's WebTransport listener for browsers, from a native
//! WebTransport client: the certificate is accepted only by the hash in
//! the relay's signed descriptor, and the relay protocol runs over one
//! bidirectional stream exactly as over a WebSocket.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{Relay, blob, marker};
use postern_core::consts::FRAME_BYTES;
use postern_core::crypto::signal::QueueSecret;
use postern_core::directory::{self, WebTransportInfo};
use postern_core::relay_proto::{self, Reply};
use postern_net::{NetError, TokioRuntime};
use wtransport::tls::Sha256Digest;
use wtransport::{ClientConfig, Endpoint};

/// The descriptor the running relay wrote, verified.
fn descriptor(relay: &Relay) -> WebTransportInfo {
    let path = relay.data_dir().join("descriptor");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(bytes) = std::fs::read(&path) {
            let info = directory::verify_descriptor(&bytes).unwrap();
            if let Some(wt) = info.webtransport
                && Some(wt.port) == relay.webtransport
            {
                return wt;
            }
        }
        assert!(std::time::Instant::now() < deadline, "no descriptor");
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn session(
    port: u16,
    path: &str,
    hashes: &[[u8; 32]],
) -> Result<wtransport::Connection, wtransport::error::ConnectingError> {
    let config = ClientConfig::builder()
        .with_bind_default()
        .with_server_certificate_hashes(hashes.iter().map(|h| Sha256Digest::new(*h)))
        .build();
    let endpoint = Endpoint::client(config).unwrap();
    endpoint
        .connect(format!("https://127.0.0.1:{port}{path}"))
        .await
}

/// The relay protocol's link over a WebTransport stream (what the
/// browser client does with the browser's own WebTransport).
struct WtLink {
    _conn: wtransport::Connection,
    send: wtransport::SendStream,
    recv: wtransport::RecvStream,
    buf: Vec<u8>,
}

impl postern_link::Link for WtLink {
    async fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        self.send
            .write_all(frame)
            .await
            .map_err(|_| NetError::Closed)
    }

    async fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        // Cancel-safe: whatever arrived stays in `buf`.
        while self.buf.len() < FRAME_BYTES {
            let mut chunk = vec![0u8; FRAME_BYTES - self.buf.len()];
            match self.recv.read(&mut chunk).await {
                Ok(Some(n)) => self.buf.extend_from_slice(&chunk[..n]),
                _ => return Err(NetError::Closed),
            }
        }
        Ok(std::mem::take(&mut self.buf))
    }

    async fn close(&mut self) -> Result<(), NetError> {
        let _ = self.send.finish().await;
        Ok(())
    }
}

async fn link(port: u16, hashes: &[[u8; 32]]) -> WtLink {
    let conn = session(port, "/v1", hashes).await.unwrap();
    let (send, recv) = conn.open_bi().await.unwrap().await.unwrap();
    WtLink {
        _conn: conn,
        send,
        recv,
        buf: Vec::new(),
    }
}

#[tokio::test]
async fn browsers_reach_the_relay_by_the_descriptors_certificate_hash() {
    let relay = Relay::start(&[]);
    let port = relay.webtransport.expect("the relay listens for browsers");
    let wt = descriptor(&relay);
    assert_eq!(wt.cert_sha256.len(), 1, "a new relay has one certificate");

    // The relay protocol end to end over WebTransport: a queue, a blob
    // sent over the WebSocket listener, fetched over WebTransport.
    let l = link(port, &wt.cert_sha256).await;
    let mut c = postern_link::Connection::open(l, TokioRuntime::default())
        .await
        .unwrap();
    let key = QueueSecret::generate(&mut common::rng());
    let q = c.create_queue(&key).await.unwrap();
    let mut native = postern_net::connect(&relay.addr).await.unwrap();
    native.send(&q.sender_id, &blob(7)).await.unwrap();
    let (items, _) = c.fetch(&q.recipient_id, &key, 10).await.unwrap();
    assert_eq!(
        items.iter().map(|i| marker(&i.blob)).collect::<Vec<_>>(),
        [7]
    );
    c.ping().await.unwrap();
    c.close().await.unwrap();
}

#[tokio::test]
async fn a_certificate_hash_other_than_the_relays_is_refused() {
    let relay = Relay::start(&[]);
    let port = relay.webtransport.unwrap();
    let mut wrong = descriptor(&relay).cert_sha256[0];
    wrong[0] ^= 1;
    let r = tokio::time::timeout(Duration::from_secs(10), session(port, "/v1", &[wrong]))
        .await
        .expect("refused promptly");
    assert!(r.is_err(), "a wrong hash must not connect");
}

#[tokio::test]
async fn other_paths_and_partial_frames_are_refused() {
    let relay = Relay::start(&[]);
    let port = relay.webtransport.unwrap();
    let hashes = descriptor(&relay).cert_sha256;
    assert!(session(port, "/other", &hashes).await.is_err());

    // A stream that ends in the middle of a frame is answered FrameSize
    // and closed; the relay keeps serving others.
    let mut l = link(port, &hashes).await;
    let hello = postern_link::Link::recv(&mut l).await.unwrap();
    assert!(matches!(
        relay_proto::decode_response(&hello).unwrap().reply,
        Reply::Hello { .. }
    ));
    l.send.write_all(&[0u8; 100]).await.unwrap();
    l.send.finish().await.unwrap();
    let answer = postern_link::Link::recv(&mut l).await.unwrap();
    assert_eq!(
        relay_proto::decode_response(&answer).unwrap().reply,
        Reply::Error(postern_net::ErrorCode::FrameSize)
    );
    assert!(postern_link::Link::recv(&mut l).await.is_err());

    // A garbage whole frame gets an error reply, not a closed relay.
    let mut l = link(port, &hashes).await;
    let _hello = postern_link::Link::recv(&mut l).await.unwrap();
    postern_link::Link::send(&mut l, &[0xA5; FRAME_BYTES])
        .await
        .unwrap();
    let answer = postern_link::Link::recv(&mut l).await.unwrap();
    assert!(matches!(
        relay_proto::decode_response(&answer).unwrap().reply,
        Reply::Error(_)
    ));
    let mut c = postern_net::connect(&relay.addr).await.unwrap();
    c.ping().await.unwrap();
}
