//! The classic pcap format (`tcpdump -w`): a 24-byte file header, then a
//! 16-byte header before each packet. Ethernet framing on `lo`; IPv4 only
//! (every Postern wire test runs on 127.0.0.0/8).

use std::net::Ipv4Addr;
use std::time::{Duration, SystemTime};

use crate::CaptureError;

/// An IPv4 address and a port.
pub type Endpoint = (Ipv4Addr, u16);

/// One captured TCP segment.
#[derive(Debug, Clone)]
pub struct Segment {
    /// When it was captured.
    pub at: SystemTime,
    /// Sender.
    pub from: Endpoint,
    /// Receiver.
    pub to: Endpoint,
    /// Sequence number.
    pub seq: u32,
    /// The SYN flag.
    pub syn: bool,
    /// The ACK flag.
    pub ack_flag: bool,
    /// The TCP payload.
    pub payload: Vec<u8>,
}

/// One captured UDP datagram.
#[derive(Debug, Clone)]
pub struct Datagram {
    /// When it was captured.
    pub at: SystemTime,
    /// Sender.
    pub from: Endpoint,
    /// Receiver.
    pub to: Endpoint,
    /// The UDP payload.
    pub payload: Vec<u8>,
}

/// What a capture holds, in capture order.
#[derive(Debug, Default)]
pub struct Capture {
    /// TCP segments.
    pub tcp: Vec<Segment>,
    /// UDP datagrams.
    pub udp: Vec<Datagram>,
}

fn u32_at(b: &[u8], at: usize, le: bool) -> Result<u32, CaptureError> {
    let w: [u8; 4] = b
        .get(at..at + 4)
        .and_then(|s| s.try_into().ok())
        .ok_or(CaptureError::Truncated("the capture file"))?;
    Ok(if le {
        u32::from_le_bytes(w)
    } else {
        u32::from_be_bytes(w)
    })
}

/// Reads a whole capture file.
pub fn read(data: &[u8]) -> Result<Capture, CaptureError> {
    let le = match data.get(..4) {
        Some([0xd4, 0xc3, 0xb2, 0xa1]) => true,
        Some([0xa1, 0xb2, 0xc3, 0xd4]) => false,
        _ => return Err(CaptureError::NotPcap),
    };
    let link = u32_at(data, 20, le)?;
    if link != 1 {
        return Err(CaptureError::LinkType(link));
    }
    let mut out = Capture::default();
    let mut at = 24;
    while at < data.len() {
        let secs = u32_at(data, at, le)?;
        let micros = u32_at(data, at + 4, le)?;
        let caplen = u32_at(data, at + 8, le)? as usize;
        let len = u32_at(data, at + 12, le)? as usize;
        if caplen != len {
            return Err(CaptureError::Truncated("a packet (snap length)"));
        }
        let packet = data
            .get(at + 16..at + 16 + caplen)
            .ok_or(CaptureError::Truncated("the capture file"))?;
        at += 16 + caplen;
        let when = SystemTime::UNIX_EPOCH
            + Duration::from_secs(secs.into())
            + Duration::from_micros(micros.into());
        let sliced = etherparse::SlicedPacket::from_ethernet(packet)
            .map_err(|e| CaptureError::Packet(e.to_string()))?;
        let Some(etherparse::NetSlice::Ipv4(ip)) = sliced.net else {
            continue;
        };
        let h = ip.header();
        match sliced.transport {
            Some(etherparse::TransportSlice::Tcp(tcp)) => out.tcp.push(Segment {
                at: when,
                from: (h.source_addr(), tcp.source_port()),
                to: (h.destination_addr(), tcp.destination_port()),
                seq: tcp.sequence_number(),
                syn: tcp.syn(),
                ack_flag: tcp.ack(),
                payload: tcp.payload().to_vec(),
            }),
            Some(etherparse::TransportSlice::Udp(udp)) => out.udp.push(Datagram {
                at: when,
                from: (h.source_addr(), udp.source_port()),
                to: (h.destination_addr(), udp.destination_port()),
                payload: udp.payload().to_vec(),
            }),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn what_is_not_a_whole_pcap_file_is_refused() {
        assert!(matches!(read(b""), Err(CaptureError::NotPcap)));
        assert!(matches!(
            read(b"GIF89a........."),
            Err(CaptureError::NotPcap)
        ));
        let mut header = vec![0xd4, 0xc3, 0xb2, 0xa1];
        header.extend_from_slice(&[0; 16]);
        header.extend_from_slice(&101u32.to_le_bytes());
        assert!(matches!(read(&header), Err(CaptureError::LinkType(101))));
        header.truncate(20);
        header.extend_from_slice(&1u32.to_le_bytes());
        assert_eq!(read(&header).unwrap().tcp.len(), 0);
        // A packet header promising more than the file holds.
        header.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 0, 60, 0, 0, 0, 60, 0, 0, 0, 1]);
        assert!(matches!(read(&header), Err(CaptureError::Truncated(_))));
    }
}
