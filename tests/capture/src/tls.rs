//! TLS as an observer reads it: records, and the handshake messages sent
//! in the clear (ClientHello, ServerHello, HelloRetryRequest) with the
//! key exchange groups they name.

use crate::CaptureError;

/// Record content type of handshake messages.
pub const HANDSHAKE: u8 = 22;
/// Record content type of application data (and, in TLS 1.3, of every
/// encrypted record).
pub const APPLICATION_DATA: u8 = 23;

const CLIENT_HELLO: u8 = 1;
const SERVER_HELLO: u8 = 2;
const EXT_SUPPORTED_GROUPS: u16 = 0x000a;
const EXT_KEY_SHARE: u16 = 0x0033;
/// The random of a ServerHello that is a HelloRetryRequest (RFC 8446 §4.1.3).
const HRR_RANDOM: [u8; 32] = [
    0xcf, 0x21, 0xad, 0x74, 0xe5, 0x9a, 0x61, 0x11, 0xbe, 0x1d, 0x8c, 0x02, 0x1e, 0x65, 0xb8, 0x91,
    0xc2, 0xa2, 0x11, 0x16, 0x7a, 0xbb, 0x8c, 0x5e, 0x07, 0x9e, 0x09, 0xe2, 0xc8, 0xa8, 0x33, 0x9c,
];

/// (content type, length) of each record in one direction of a TLS
/// connection.
pub fn records(mut bytes: &[u8]) -> Result<Vec<(u8, usize)>, CaptureError> {
    let mut out = Vec::new();
    while !bytes.is_empty() {
        let [kind, major, _minor, hi, lo, ..] = *bytes else {
            return Err(CaptureError::Truncated("a record header"));
        };
        if !(20..=23).contains(&kind) || major != 3 {
            return Err(CaptureError::NotTls(format!(
                "record type {kind}, version {major}"
            )));
        }
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        if bytes.len() < 5 + len {
            return Err(CaptureError::Truncated("a record"));
        }
        out.push((kind, len));
        bytes = bytes.get(5 + len..).unwrap_or_default();
    }
    Ok(out)
}

/// The bytes of every plaintext handshake record in one direction of a
/// TLS-over-TCP connection, concatenated: the handshake messages sent in
/// the clear (TLS 1.3 encrypts the rest as application data records).
pub fn clear_handshake(mut bytes: &[u8]) -> Result<Vec<u8>, CaptureError> {
    let mut out = Vec::new();
    while let [kind, _, _, hi, lo, ..] = *bytes {
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let body = bytes
            .get(5..5 + len)
            .ok_or(CaptureError::Truncated("a record"))?;
        if kind == HANDSHAKE {
            out.extend_from_slice(body);
        }
        bytes = bytes.get(5 + len..).unwrap_or_default();
    }
    Ok(out)
}

/// What one handshake message says about key exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hello {
    /// A ClientHello: the groups it sends key shares for, in order, and
    /// the groups it supports, in order (GREASE values included).
    Client {
        /// `key_share` entries.
        key_shares: Vec<u16>,
        /// `supported_groups`.
        supported_groups: Vec<u16>,
    },
    /// A ServerHello: the group of its key share.
    Server {
        /// The selected group.
        group: u16,
    },
    /// A HelloRetryRequest: the group the server asks the client to use.
    Retry {
        /// The requested group.
        group: u16,
    },
}

/// Whether `g` is a GREASE value (RFC 8701): 0x0a0a, 0x1a1a, … 0xfafa.
pub fn is_grease(g: u16) -> bool {
    g & 0x0f0f == 0x0a0a && (g >> 8) == (g & 0xff)
}

struct Reader<'a> {
    b: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], CaptureError> {
        let (head, rest) = self
            .b
            .split_at_checked(n)
            .ok_or(CaptureError::Truncated("a handshake message"))?;
        self.b = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, CaptureError> {
        Ok(self.take(1)?.first().copied().unwrap_or(0))
    }
    fn u16(&mut self) -> Result<u16, CaptureError> {
        let b = self.take(2)?;
        Ok(b.iter().fold(0u16, |v, x| v << 8 | u16::from(*x)))
    }
    fn vec8(&mut self) -> Result<&'a [u8], CaptureError> {
        let n = self.u8()?;
        self.take(n.into())
    }
    fn vec16(&mut self) -> Result<&'a [u8], CaptureError> {
        let n = self.u16()?;
        self.take(n.into())
    }
}

fn u16s(b: &[u8]) -> Vec<u16> {
    b.chunks_exact(2)
        .map(|c| c.iter().fold(0u16, |v, x| v << 8 | u16::from(*x)))
        .collect()
}

/// The hellos in a stream of handshake messages (a QUIC CRYPTO stream,
/// or [`clear_handshake`]'s output). Parsing stops at the first message
/// that is neither a ClientHello nor a ServerHello (the rest is
/// encrypted in TLS 1.3).
pub fn hellos(mut stream: &[u8]) -> Result<Vec<Hello>, CaptureError> {
    let mut out = Vec::new();
    while let [kind, a, b, c, ..] = *stream {
        if kind != CLIENT_HELLO && kind != SERVER_HELLO {
            break;
        }
        let len = usize::from(a) << 16 | usize::from(b) << 8 | usize::from(c);
        let body = stream
            .get(4..4 + len)
            .ok_or(CaptureError::Truncated("a handshake message"))?;
        stream = stream.get(4 + len..).unwrap_or_default();
        let mut r = Reader { b: body };
        let _legacy_version = r.u16()?;
        let random = r.take(32)?;
        let _session_id = r.vec8()?;
        if kind == CLIENT_HELLO {
            let _suites = r.vec16()?;
            let _compression = r.vec8()?;
        } else {
            let _suite = r.u16()?;
            let _compression = r.u8()?;
        }
        let mut ext = Reader { b: r.vec16()? };
        let mut key_shares = Vec::new();
        let mut supported_groups = Vec::new();
        let mut selected = None;
        while !ext.b.is_empty() {
            let t = ext.u16()?;
            let mut data = Reader { b: ext.vec16()? };
            match (kind, t) {
                (CLIENT_HELLO, EXT_SUPPORTED_GROUPS) => supported_groups = u16s(data.vec16()?),
                (CLIENT_HELLO, EXT_KEY_SHARE) => {
                    let mut shares = Reader { b: data.vec16()? };
                    while !shares.b.is_empty() {
                        key_shares.push(shares.u16()?);
                        let _key = shares.vec16()?;
                    }
                }
                // A ServerHello's entry, or a HelloRetryRequest's group.
                (SERVER_HELLO, EXT_KEY_SHARE) => selected = Some(data.u16()?),
                _ => {}
            }
        }
        out.push(if kind == CLIENT_HELLO {
            Hello::Client {
                key_shares,
                supported_groups,
            }
        } else {
            let group = selected
                .ok_or_else(|| CaptureError::NotTls("a ServerHello without a key share".into()))?;
            if random == HRR_RANDOM {
                Hello::Retry { group }
            } else {
                Hello::Server { group }
            }
        });
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    /// A ClientHello rustls writes with only the hybrid group, read back.
    #[test]
    fn a_client_hello_shows_its_key_shares_and_groups() {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
        let config = rustls::ClientConfig::builder_with_provider(p.into())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let mut c = rustls::ClientConnection::new(
            std::sync::Arc::new(config),
            "relay.example".try_into().unwrap(),
        )
        .unwrap();
        let mut wire = Vec::new();
        c.write_tls(&mut wire).unwrap();
        let recs = records(&wire).unwrap();
        assert_eq!(recs.first().map(|r| r.0), Some(HANDSHAKE));
        let hs = hellos(&clear_handshake(&wire).unwrap()).unwrap();
        assert_eq!(
            hs,
            [Hello::Client {
                key_shares: vec![0x11ec],
                supported_groups: vec![0x11ec],
            }]
        );
    }

    #[test]
    fn grease_values_are_recognised() {
        assert!(is_grease(0x0a0a) && is_grease(0xfafa) && is_grease(0x3a3a));
        assert!(!is_grease(0x11ec) && !is_grease(0x001d) && !is_grease(0x0a1a));
    }

    #[test]
    fn cut_or_foreign_bytes_are_errors_not_panics() {
        assert!(records(&[22, 3, 1, 0, 9, 1]).is_err());
        assert!(records(b"GET / HTTP/1.1\r\n").is_err());
        assert!(hellos(&[1, 0, 0, 50, 3, 3]).is_err());
        assert_eq!(hellos(&[11, 0, 0, 0]).unwrap(), []);
        for n in 0..64 {
            let junk: Vec<u8> = (0..n).map(|i| (i * 37 + 1) as u8).collect();
            let _ = hellos(&[&[1, 0, 0, n as u8][..], &junk].concat());
            let _ = records(&junk);
            let _ = clear_handshake(&junk);
        }
    }
}
