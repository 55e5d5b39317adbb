//! Serves Postern's browser app (`postern-relay web`, or `testnet --web`):
//! the app's static files from one directory, `network.json` (the
//! network's directory authorities, part of the app), and `directory`
//! (the latest signed directory file, re-read on each request; the app
//! verifies it against the authorities, so the server is not trusted for
//! it). Plain HTTP is for loopback only (browsers treat 127.0.0.1 as a
//! secure context); anywhere else give it a certificate (HTTPS).
//!
//! A deliberately small HTTP/1.1 server: GET and HEAD only, one request
//! per connection, request heads up to [`MAX_HEAD`] bytes, file names
//! from a fixed alphabet in one flat directory (no paths), a strict
//! Content-Security-Policy on every answer (no third-party origin, no
//! inline script, WebAssembly allowed, WebTransport to relays over
//! `https:`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Largest request head read.
pub const MAX_HEAD: usize = 8 * 1024;
/// Largest file served.
pub const MAX_FILE: u64 = 64 * 1024 * 1024;
/// Time a client has to send its request.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Most connections served at once.
pub const MAX_CONNECTIONS: usize = 256;

/// The policy sent with every answer.
pub const CSP: &str = "default-src 'none'; script-src 'self' 'wasm-unsafe-eval'; \
    connect-src 'self' https:; img-src 'self' blob: data:; media-src 'self' blob:; \
    style-src 'self'; font-src 'self'; worker-src 'self' blob:; base-uri 'none'; \
    form-action 'none'; frame-ancestors 'none'";

/// What the server serves.
#[derive(Debug, Clone)]
pub struct Site {
    /// The app's files (index.html, main.js, the wasm module, …).
    pub app_dir: PathBuf,
    /// The signed directory file.
    pub directory: PathBuf,
    /// The network's directory authorities (base64url).
    pub authorities: Vec<String>,
    /// Signatures a directory needs.
    pub threshold: usize,
    /// Onion hops per path.
    pub hops: u8,
}

impl Site {
    fn network_json(&self) -> String {
        let keys: Vec<String> = self
            .authorities
            .iter()
            .map(|k| format!("\"{}\"", k.replace(['"', '\\'], "")))
            .collect();
        format!(
            "{{\"authorities\":[{}],\"threshold\":{},\"hops\":{}}}\n",
            keys.join(","),
            self.threshold,
            self.hops
        )
    }
}

fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.')?.1;
    Some(match ext {
        "html" => "text/html; charset=utf-8",
        "js" => "text/javascript; charset=utf-8",
        "wasm" => "application/wasm",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        _ => return None,
    })
}

/// A file name the server may serve: letters, digits, `-`, `_` and
/// inner dots, with a known extension.
pub fn allowed_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        && content_type(name).is_some()
}

/// One answer.
#[derive(Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// Content type.
    pub content_type: &'static str,
    /// Body.
    pub body: Vec<u8>,
}

fn not_found() -> Answer {
    Answer {
        status: 404,
        content_type: "text/plain; charset=utf-8",
        body: b"not found\n".to_vec(),
    }
}

/// The answer to a request head (hostile input).
pub fn answer(site: &Site, head: &[u8]) -> (Answer, bool) {
    let bad = Answer {
        status: 400,
        content_type: "text/plain; charset=utf-8",
        body: b"bad request\n".to_vec(),
    };
    let Some(line) = head.split(|b| *b == b'\n').next() else {
        return (bad, false);
    };
    let Ok(line) = std::str::from_utf8(line) else {
        return (bad, false);
    };
    let mut parts = line.trim_end().split(' ');
    let (Some(method), Some(target), Some(version)) = (parts.next(), parts.next(), parts.next())
    else {
        return (bad, false);
    };
    if !version.starts_with("HTTP/1.") || parts.next().is_some() {
        return (bad, false);
    }
    let head_only = match method {
        "GET" => false,
        "HEAD" => true,
        _ => {
            return (
                Answer {
                    status: 405,
                    content_type: "text/plain; charset=utf-8",
                    body: b"method not allowed\n".to_vec(),
                },
                false,
            );
        }
    };
    let path = target.split(['?', '#']).next().unwrap_or("");
    let Some(name) = path.strip_prefix('/') else {
        return (bad, head_only);
    };
    let a = match name {
        "" => file(&site.app_dir, "index.html"),
        "network.json" => Answer {
            status: 200,
            content_type: "application/json",
            body: site.network_json().into_bytes(),
        },
        "directory" => match read_bounded(&site.directory) {
            Some(body) => Answer {
                status: 200,
                content_type: "application/octet-stream",
                body,
            },
            None => not_found(),
        },
        n if allowed_name(n) => file(&site.app_dir, n),
        _ => not_found(),
    };
    (a, head_only)
}

fn read_bounded(path: &std::path::Path) -> Option<Vec<u8>> {
    let meta = std::fs::metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_FILE {
        return None;
    }
    std::fs::read(path).ok()
}

fn file(dir: &std::path::Path, name: &str) -> Answer {
    match (content_type(name), read_bounded(&dir.join(name))) {
        (Some(content_type), Some(body)) => Answer {
            status: 200,
            content_type,
            body,
        },
        _ => not_found(),
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        _ => "Error",
    }
}

/// The response bytes for an answer.
pub fn response(a: &Answer, head_only: bool) -> Vec<u8> {
    let mut out = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n\
         Content-Security-Policy: {CSP}\r\nX-Content-Type-Options: nosniff\r\n\
         Referrer-Policy: no-referrer\r\nCross-Origin-Opener-Policy: same-origin\r\n\
         Cross-Origin-Resource-Policy: same-origin\r\nPermissions-Policy: microphone=(self), camera=(), geolocation=()\r\n\
         Cache-Control: no-cache\r\nConnection: close\r\n\r\n",
        a.status,
        reason(a.status),
        a.content_type,
        a.body.len()
    )
    .into_bytes();
    if !head_only {
        out.extend_from_slice(&a.body);
    }
    out
}

async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> Option<Vec<u8>> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        if head.len() >= MAX_HEAD {
            return None;
        }
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        head.extend_from_slice(buf.get(..n)?);
    }
    Some(head)
}

async fn serve_one<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(mut s: S, site: &Site) {
    let Ok(Some(head)) = tokio::time::timeout(REQUEST_TIMEOUT, read_head(&mut s)).await else {
        return;
    };
    let (a, head_only) = answer(site, &head);
    let _ = s.write_all(&response(&a, head_only)).await;
    let _ = s.shutdown().await;
}

/// Serves `site` on `listener` (HTTPS with `tls`) until `stop`.
pub async fn serve(
    listener: TcpListener,
    site: Arc<Site>,
    tls: Option<tokio_rustls::TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            _ = stop.changed() => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            r = listener.accept() => {
                let Ok((tcp, _)) = r else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                if conns.len() >= MAX_CONNECTIONS {
                    continue;
                }
                let site = site.clone();
                let tls = tls.clone();
                conns.spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(Ok(s)) = tokio::time::timeout(REQUEST_TIMEOUT, acceptor.accept(tcp)).await {
                                serve_one(s, &site).await;
                            }
                        }
                        None => serve_one(tcp, &site).await,
                    }
                });
            }
        }
    }
    conns.shutdown().await;
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::*;

    fn site(dir: &std::path::Path) -> Site {
        std::fs::write(dir.join("index.html"), b"<!doctype html>").unwrap();
        std::fs::write(dir.join("app.wasm"), b"\0asm").unwrap();
        std::fs::write(dir.join("secret.txt"), b"no").unwrap();
        std::fs::write(dir.join("directory"), b"signed").unwrap();
        Site {
            app_dir: dir.to_owned(),
            directory: dir.join("directory"),
            authorities: vec!["AAAA\"x".into()],
            threshold: 1,
            hops: 3,
        }
    }

    #[test]
    fn serves_the_app_and_nothing_else() {
        let d = tempfile::tempdir().unwrap();
        let s = site(d.path());
        let get = |p: &str| {
            answer(
                &s,
                format!("GET {p} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            )
            .0
        };
        assert_eq!(get("/").status, 200);
        assert_eq!(get("/app.wasm").content_type, "application/wasm");
        assert_eq!(get("/directory").body, b"signed");
        assert_eq!(
            get("/network.json").body,
            b"{\"authorities\":[\"AAAAx\"],\"threshold\":1,\"hops\":3}\n"
        );
        for p in [
            "/secret.txt",
            "/../etc/passwd",
            "/%2e%2e/x.html",
            "/.hidden.js",
            "/sub/index.html",
            "/missing.js",
            "x",
        ] {
            assert_ne!(get(p).status, 200, "{p}");
        }
        assert_eq!(answer(&s, b"POST / HTTP/1.1\r\n\r\n").0.status, 405);
        assert_eq!(answer(&s, b"GET /\r\n\r\n").0.status, 400);
        assert_eq!(answer(&s, &[0xff, 0xfe, b'\n']).0.status, 400);
        let (a, head_only) = answer(&s, b"HEAD / HTTP/1.1\r\n\r\n");
        let r = String::from_utf8(response(&a, head_only)).unwrap();
        assert!(r.contains("Content-Security-Policy: default-src 'none'"));
        assert!(r.ends_with("\r\n\r\n"), "HEAD has no body");
    }
}
