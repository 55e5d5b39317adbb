//! QUIC v1 Initial packets as an observer reads them: the Initial keys
//! come from the client's first destination connection id (RFC 9001
//! §5.2), which travels in the clear, so the TLS ClientHello and
//! ServerHello inside are readable by anyone on the path. Packets of
//! other types (Handshake, 1-RTT) are skipped: they need the handshake's
//! secrets.

use std::collections::BTreeMap;

use rustls::quic::{Keys, Version};
use rustls::{CipherSuite, Side};

use crate::CaptureError;
use crate::pcap::{Datagram, Endpoint};

const QUIC_V1: u32 = 1;
const FRAME_PADDING: u64 = 0x00;
const FRAME_PING: u64 = 0x01;
const FRAME_ACK: u64 = 0x02;
const FRAME_ACK_ECN: u64 = 0x03;
const FRAME_CRYPTO: u64 = 0x06;
const FRAME_CONNECTION_CLOSE: u64 = 0x1c;

/// One QUIC connection's Initial-level TLS bytes, in stream order.
#[derive(Debug)]
pub struct Flow {
    /// The side that sent the first Initial packet.
    pub client: Endpoint,
    /// The other side.
    pub server: Endpoint,
    /// The CRYPTO stream from client to server (its ClientHello).
    pub to_server: Vec<u8>,
    /// The CRYPTO stream from server to client (its ServerHello).
    pub to_client: Vec<u8>,
    /// Initial packets opened, both directions.
    pub initial_packets: usize,
}

struct Cursor<'a> {
    b: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn byte(&mut self) -> Result<u8, CaptureError> {
        let v = *self
            .b
            .get(self.at)
            .ok_or(CaptureError::Truncated("a QUIC packet"))?;
        self.at += 1;
        Ok(v)
    }
    fn bytes(&mut self, n: usize) -> Result<&[u8], CaptureError> {
        let v = self
            .b
            .get(self.at..self.at + n)
            .ok_or(CaptureError::Truncated("a QUIC packet"))?;
        self.at += n;
        Ok(v)
    }
    /// A variable-length integer (RFC 9000 §16).
    fn varint(&mut self) -> Result<u64, CaptureError> {
        let first = self.byte()?;
        let len = 1usize << (first >> 6);
        let mut v = u64::from(first & 0x3f);
        for _ in 1..len {
            v = v << 8 | u64::from(self.byte()?);
        }
        Ok(v)
    }
    fn varint_usize(&mut self) -> Result<usize, CaptureError> {
        usize::try_from(self.varint()?).map_err(|_| CaptureError::Quic("a length too large".into()))
    }
}

/// The Initial keys of a connection whose client first sent to `dcid`.
fn initial_keys(dcid: &[u8], side: Side) -> Result<Keys, CaptureError> {
    let suite = rustls::crypto::aws_lc_rs::default_provider()
        .cipher_suites
        .into_iter()
        .find(|s| s.suite() == CipherSuite::TLS13_AES_128_GCM_SHA256)
        .and_then(|s| s.tls13())
        .and_then(|s| s.quic_suite())
        .ok_or_else(|| CaptureError::Quic("no AES-128-GCM QUIC suite".into()))?;
    Ok(suite.keys(dcid, side, Version::V1))
}

/// Stream bytes by offset, for one direction.
#[derive(Default)]
struct Crypto {
    pieces: BTreeMap<u64, Vec<u8>>,
}

impl Crypto {
    /// The bytes from offset 0 up to the first gap.
    fn contiguous(&self) -> Vec<u8> {
        let mut out: Vec<u8> = Vec::new();
        for (off, p) in &self.pieces {
            let Ok(off) = usize::try_from(*off) else {
                break;
            };
            if off > out.len() {
                break;
            }
            if let Some(new) = p.get(out.len() - off..) {
                out.extend_from_slice(new);
            }
        }
        out
    }
}

/// Opens one Initial packet's payload with `keys` and collects its
/// CRYPTO frames.
fn open_initial(
    packet: &[u8],
    pn_offset: usize,
    keys: &Keys,
    crypto: &mut Crypto,
) -> Result<(), CaptureError> {
    let mut p = packet.to_vec();
    let sample_at = pn_offset + 4;
    let sample_len = keys.remote.header.sample_len();
    let sample = p
        .get(sample_at..sample_at + sample_len)
        .ok_or(CaptureError::Truncated("a QUIC packet (sample)"))?
        .to_vec();
    let (head, rest) = p.split_at_mut(pn_offset);
    let first = head
        .first_mut()
        .ok_or(CaptureError::Truncated("a QUIC packet"))?;
    let pn_field = rest
        .get_mut(..4)
        .ok_or(CaptureError::Truncated("a QUIC packet"))?;
    keys.remote
        .header
        .decrypt_in_place(&sample, first, pn_field)
        .map_err(|e| CaptureError::Quic(format!("header protection: {e}")))?;
    let pn_len = usize::from(*first & 0x03) + 1;
    let pn = rest
        .get(..pn_len)
        .ok_or(CaptureError::Truncated("a QUIC packet"))?
        .iter()
        .fold(0u64, |n, b| n << 8 | u64::from(*b));
    let (header, payload) = p.split_at_mut(pn_offset + pn_len);
    let plain = keys
        .remote
        .packet
        .decrypt_in_place(pn, header, payload)
        .map_err(|e| CaptureError::Quic(format!("an Initial packet does not open: {e}")))?;
    let mut c = Cursor { b: plain, at: 0 };
    while c.at < plain.len() {
        match c.varint()? {
            FRAME_PADDING | FRAME_PING => {}
            t @ (FRAME_ACK | FRAME_ACK_ECN) => {
                let _largest = c.varint()?;
                let _delay = c.varint()?;
                let ranges = c.varint()?;
                let _first = c.varint()?;
                for _ in 0..ranges {
                    let _gap = c.varint()?;
                    let _len = c.varint()?;
                }
                if t == FRAME_ACK_ECN {
                    for _ in 0..3 {
                        let _count = c.varint()?;
                    }
                }
            }
            FRAME_CRYPTO => {
                let off = c.varint()?;
                let len = c.varint_usize()?;
                let data = c.bytes(len)?.to_vec();
                crypto.pieces.insert(off, data);
            }
            FRAME_CONNECTION_CLOSE => {
                let _code = c.varint()?;
                let _frame = c.varint()?;
                let len = c.varint_usize()?;
                let _reason = c.bytes(len)?;
            }
            t => {
                return Err(CaptureError::Quic(format!(
                    "frame type {t:#x} in an Initial packet"
                )));
            }
        }
    }
    Ok(())
}

struct State {
    client: Endpoint,
    server: Endpoint,
    /// Keys to open the client's packets, then the server's.
    keys: (Keys, Keys),
    crypto: (Crypto, Crypto),
    packets: usize,
}

/// Every QUIC connection in `datagrams` whose first Initial packet was
/// captured, with the TLS bytes its Initial packets carried.
pub fn initial_flows(datagrams: &[Datagram]) -> Result<Vec<Flow>, CaptureError> {
    // By (client, server); a datagram from the server is looked up
    // reversed.
    let mut flows: BTreeMap<(Endpoint, Endpoint), State> = BTreeMap::new();
    for d in datagrams {
        let mut c = Cursor {
            b: &d.payload,
            at: 0,
        };
        // Coalesced packets: Initial, then Handshake, then perhaps 1-RTT.
        while c.at < d.payload.len() {
            let start = c.at;
            let first = c.byte()?;
            if first & 0x80 == 0 {
                break; // a short header runs to the end of the datagram
            }
            let version = c.bytes(4)?.iter().fold(0u32, |v, b| v << 8 | u32::from(*b));
            if version != QUIC_V1 {
                break; // version negotiation, or another version
            }
            let dcid_len = c.byte()?;
            let dcid = c.bytes(dcid_len.into())?.to_vec();
            let scid_len = c.byte()?;
            let _scid = c.bytes(scid_len.into())?;
            let kind = (first >> 4) & 0x03;
            if kind == 3 {
                break; // Retry: no length field, ends the datagram
            }
            if kind == 0 {
                let token = c.varint_usize()?;
                let _token = c.bytes(token)?;
            }
            let len = c.varint_usize()?;
            let pn_offset = c.at - start;
            let packet = d
                .payload
                .get(start..c.at + len)
                .ok_or(CaptureError::Truncated("a QUIC packet (length)"))?;
            c.at += len;
            if kind != 0 {
                continue; // 0-RTT or Handshake: not readable here
            }
            let state = if let Some(s) = flows.get_mut(&(d.from, d.to)) {
                (s, true)
            } else if let Some(s) = flows.get_mut(&(d.to, d.from)) {
                (s, false)
            } else {
                // The first Initial of a connection: the client's, to the
                // destination id the keys come from.
                let s = State {
                    client: d.from,
                    server: d.to,
                    keys: (
                        initial_keys(&dcid, Side::Server)?,
                        initial_keys(&dcid, Side::Client)?,
                    ),
                    crypto: (Crypto::default(), Crypto::default()),
                    packets: 0,
                };
                (flows.entry((d.from, d.to)).or_insert(s), true)
            };
            let (s, from_client) = state;
            let (keys, crypto) = if from_client {
                (&s.keys.0, &mut s.crypto.0)
            } else {
                (&s.keys.1, &mut s.crypto.1)
            };
            open_initial(packet, pn_offset, keys, crypto)?;
            s.packets += 1;
        }
    }
    Ok(flows
        .into_values()
        .map(|s| Flow {
            client: s.client,
            server: s.server,
            to_server: s.crypto.0.contiguous(),
            to_client: s.crypto.1.contiguous(),
            initial_packets: s.packets,
        })
        .collect())
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn datagram(payload: Vec<u8>) -> Datagram {
        Datagram {
            at: std::time::SystemTime::UNIX_EPOCH,
            from: (Ipv4Addr::LOCALHOST, 5000),
            to: (Ipv4Addr::LOCALHOST, 443),
            payload,
        }
    }

    /// A client Initial packet as RFC 9000 §17.2.2 lays it out, protected
    /// with rustls' Initial keys (RFC 9001 §5): the ClientHello rustls'
    /// QUIC client writes, in one CRYPTO frame, padded to at least 1,200
    /// bytes (a hybrid key share makes it larger than one usual packet).
    fn client_initial(dcid: &[u8]) -> Vec<u8> {
        let mut p = rustls::crypto::aws_lc_rs::default_provider();
        p.kx_groups = vec![rustls::crypto::aws_lc_rs::kx_group::X25519MLKEM768];
        let mut config = rustls::ClientConfig::builder_with_provider(p.into())
            .with_protocol_versions(&[&rustls::version::TLS13])
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h3".to_vec()];
        let mut conn = rustls::quic::ClientConnection::new(
            std::sync::Arc::new(config),
            Version::V1,
            "relay.example".try_into().unwrap(),
            vec![0x01, 0x02, 0x40, 0x64],
        )
        .unwrap();
        let mut hello = Vec::new();
        let _ = conn.write_hs(&mut hello);
        let hello_len = u16::try_from(hello.len()).unwrap();
        let mut payload = vec![FRAME_CRYPTO as u8, 0x00];
        payload.extend_from_slice(&(0x4000 | hello_len).to_be_bytes());
        payload.extend_from_slice(&hello);
        let mut header = vec![0xc3, 0, 0, 0, 1, u8::try_from(dcid.len()).unwrap()];
        header.extend_from_slice(dcid);
        header.extend_from_slice(&[0x00, 0x00]); // no source id, no token
        let pn_len = 4;
        let total = 1200 - header.len() - 2 - pn_len - 16;
        payload.resize(total.max(payload.len()), 0x00); // PADDING frames
        let length = u16::try_from(pn_len + payload.len() + 16).unwrap();
        header.extend_from_slice(&(0x4000 | length).to_be_bytes());
        let pn_offset = header.len();
        header.extend_from_slice(&[0, 0, 0, 2]);
        let keys = initial_keys(dcid, Side::Client).unwrap();
        let tag = keys
            .local
            .packet
            .encrypt_in_place(2, &header, &mut payload)
            .unwrap();
        let mut packet = header;
        packet.extend_from_slice(&payload);
        packet.extend_from_slice(tag.as_ref());
        let sample = packet[pn_offset + 4..pn_offset + 20].to_vec();
        let (head, rest) = packet.split_at_mut(pn_offset);
        keys.local
            .header
            .encrypt_in_place(&sample, &mut head[0], &mut rest[..4])
            .unwrap();
        assert!(packet.len() >= 1200);
        packet
    }

    #[test]
    fn a_client_initial_opens_to_its_client_hello() {
        let packet = client_initial(&[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08]);
        let flows = initial_flows(&[datagram(packet)]).unwrap();
        assert_eq!(flows.len(), 1);
        assert_eq!(flows[0].initial_packets, 1);
        let hs = crate::tls::hellos(&flows[0].to_server).unwrap();
        assert_eq!(
            hs,
            [crate::tls::Hello::Client {
                key_shares: vec![0x11ec],
                supported_groups: vec![0x11ec],
            }]
        );
    }

    #[test]
    fn damaged_packets_are_errors_not_panics() {
        let good = client_initial(&[7; 8]);
        let mut flipped = good.clone();
        flipped[100] ^= 1;
        assert!(initial_flows(&[datagram(flipped)]).is_err());
        for cut in [1, 5, 6, 20, 30, 200] {
            assert!(initial_flows(&[datagram(good[..cut].to_vec())]).is_err());
        }
        // A short-header packet alone is skipped.
        assert_eq!(initial_flows(&[datagram(vec![0x40; 60])]).unwrap().len(), 0);
    }
}
