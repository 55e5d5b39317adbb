//! TCP connections rebuilt from captured segments.

use std::collections::BTreeMap;
use std::time::SystemTime;

use crate::CaptureError;
use crate::pcap::{Endpoint, Segment};

/// One TCP connection, both byte streams reassembled.
#[derive(Debug)]
pub struct Conn {
    /// The side that sent the first SYN.
    pub client: Endpoint,
    /// The side that accepted.
    pub server: Endpoint,
    /// When the first SYN was captured.
    pub opened: SystemTime,
    /// Bytes from client to server.
    pub to_server: Vec<u8>,
    /// Bytes from server to client.
    pub to_client: Vec<u8>,
}

/// Every connection whose opening was captured, its streams rebuilt from
/// sequence numbers (retransmissions collapse; a gap is an error).
pub fn connections(segments: &[Segment]) -> Result<Vec<Conn>, CaptureError> {
    // Initial sequence number of each direction, from its SYN.
    let mut isn: BTreeMap<(Endpoint, Endpoint), u32> = BTreeMap::new();
    let mut opened: BTreeMap<(Endpoint, Endpoint), SystemTime> = BTreeMap::new();
    for s in segments.iter().filter(|s| s.syn) {
        isn.entry((s.from, s.to)).or_insert(s.seq);
        if !s.ack_flag {
            opened.entry((s.from, s.to)).or_insert(s.at);
        }
    }
    let stream = |from: Endpoint, to: Endpoint| -> Result<Vec<u8>, CaptureError> {
        let start = *isn
            .get(&(from, to))
            .ok_or_else(|| CaptureError::Stream(format!("{from:?} -> {to:?}: no SYN captured")))?;
        let mut pieces: BTreeMap<u32, &[u8]> = BTreeMap::new();
        for s in segments
            .iter()
            .filter(|s| s.from == from && s.to == to && !s.payload.is_empty())
        {
            // Offsets from the ISN (+1 for the SYN); streams here are far
            // below 4 GiB so they never wrap.
            let off = s.seq.wrapping_sub(start).wrapping_sub(1);
            let e = pieces.entry(off).or_insert(&s.payload);
            if s.payload.len() > e.len() {
                *e = &s.payload;
            }
        }
        let mut out: Vec<u8> = Vec::new();
        for (off, p) in pieces {
            let off = off as usize;
            if off > out.len() {
                return Err(CaptureError::Stream(format!(
                    "{from:?} -> {to:?}: bytes missing at {off} (the capture dropped \
                     segments? tcpdump reports drops when it stops)"
                )));
            }
            if let Some(new) = p.get(out.len() - off..) {
                out.extend_from_slice(new);
            }
        }
        Ok(out)
    };
    let mut conns = Vec::new();
    for ((client, server), at) in opened {
        // A refused connection (no SYN-ACK: a relay already stopped at
        // the end) carries nothing.
        if !isn.contains_key(&(server, client)) {
            if segments
                .iter()
                .any(|s| s.from == client && s.to == server && !s.payload.is_empty())
            {
                return Err(CaptureError::Stream(
                    "data on a connection that was never accepted".into(),
                ));
            }
            continue;
        }
        conns.push(Conn {
            client,
            server,
            opened: at,
            to_server: stream(client, server)?,
            to_client: stream(server, client)?,
        });
    }
    Ok(conns)
}
