//! The admin listener (loopback by default): `GET /health` and
//! `GET /metrics`. A tiny HTTP/1.x responder with a bounded request
//! reader: it reads at most [`MAX_REQUEST_BYTES`] within
//! [`REQUEST_TIMEOUT`], looks only at the request line and always closes.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Longest request head read.
pub const MAX_REQUEST_BYTES: usize = 4096;
/// How long a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// What a request line asks for.
fn route(head: &[u8], metrics: &Metrics) -> (&'static str, &'static str, String) {
    let line = head
        .split(|b| *b == b'\r' || *b == b'\n')
        .next()
        .unwrap_or(&[]);
    let mut parts = line.split(|b| *b == b' ');
    let (method, path) = (parts.next(), parts.next());
    let text = "text/plain; charset=utf-8";
    match (method, path) {
        (Some(b"GET"), Some(b"/health")) => ("200 OK", text, "ok\n".to_owned()),
        (Some(b"GET"), Some(b"/metrics")) => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            metrics.render(),
        ),
        (Some(b"GET"), Some(_)) => ("404 Not Found", text, "not found\n".to_owned()),
        _ => (
            "405 Method Not Allowed",
            text,
            "method not allowed\n".to_owned(),
        ),
    }
}

async fn answer(mut s: TcpStream, metrics: Arc<Metrics>) {
    let mut head = Vec::with_capacity(512);
    let read = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let mut buf = [0u8; 512];
        while head.len() < MAX_REQUEST_BYTES && !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = s.read(&mut buf).await.ok()?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(buf.get(..n)?);
        }
        Some(())
    })
    .await;
    if !matches!(read, Ok(Some(()))) {
        return;
    }
    let (status, ctype, body) = route(&head, &metrics);
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(REQUEST_TIMEOUT, async {
        let _ = s.write_all(resp.as_bytes()).await;
        let _ = s.shutdown().await;
    })
    .await;
}

/// Serves until `shutdown` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            r = listener.accept() => {
                if let Ok((s, _)) = r {
                    tokio::spawn(answer(s, metrics.clone()));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_only_health_and_metrics() {
        let m = Metrics::default();
        assert_eq!(route(b"GET /health HTTP/1.1\r\n\r\n", &m).0, "200 OK");
        assert!(
            route(b"GET /metrics HTTP/1.1\r\n\r\n", &m)
                .2
                .contains("postern_relay_connections_open 0")
        );
        assert_eq!(route(b"GET /x HTTP/1.1\r\n\r\n", &m).0, "404 Not Found");
        assert_eq!(
            route(b"POST /health HTTP/1.1\r\n\r\n", &m).0,
            "405 Method Not Allowed"
        );
        assert_eq!(route(b"", &m).0, "405 Method Not Allowed");
        assert_eq!(route(&[0xff; 100], &m).0, "405 Method Not Allowed");
    }
}
