#![doc = include_str!("../README.md")]

pub mod pcap;
pub mod quic;
pub mod tcp;
pub mod tcpdump;
pub mod tls;

/// Why a capture could not be read.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CaptureError {
    /// Not a classic microsecond pcap file.
    #[error("not a microsecond pcap file")]
    NotPcap,
    /// A link type other than Ethernet (what `tcpdump -i lo` writes).
    #[error("link type {0} is not Ethernet")]
    LinkType(u32),
    /// The file, a packet, a record or a message ends early.
    #[error("{0} is cut short")]
    Truncated(&'static str),
    /// A packet could not be sliced into IP and transport headers.
    #[error("a packet that is not Ethernet/IP: {0}")]
    Packet(String),
    /// Bytes missing from a TCP stream (the capture dropped segments).
    #[error("{0}")]
    Stream(String),
    /// Something that is not TLS where TLS was expected.
    #[error("not TLS: {0}")]
    NotTls(String),
    /// A QUIC packet that does not open with its Initial keys.
    #[error("QUIC: {0}")]
    Quic(String),
}

/// The key exchange one connection's clear handshake shows.
#[derive(Debug)]
pub struct Handshake {
    /// "tcp" (TLS over TCP) or "quic".
    pub transport: &'static str,
    /// The connecting side.
    pub client: pcap::Endpoint,
    /// The accepting side.
    pub server: pcap::Endpoint,
    /// The client's hellos, in order (a second one follows a retry).
    pub from_client: Vec<tls::Hello>,
    /// The server's hellos, in order.
    pub from_server: Vec<tls::Hello>,
}

impl Handshake {
    /// The groups of the first ClientHello's key shares, GREASE left out.
    pub fn offered(&self) -> Vec<u16> {
        match self.from_client.first() {
            Some(tls::Hello::Client { key_shares, .. }) => key_shares
                .iter()
                .copied()
                .filter(|g| !tls::is_grease(*g))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The group the server's last hello settled on; `None` when no
    /// ServerHello was captured.
    pub fn selected(&self) -> Option<u16> {
        self.from_server.iter().rev().find_map(|h| match h {
            tls::Hello::Server { group } => Some(*group),
            _ => None,
        })
    }

    /// Whether the server asked for another key share first.
    pub fn retried(&self) -> bool {
        self.from_server
            .iter()
            .any(|h| matches!(h, tls::Hello::Retry { .. }))
    }

    /// One JSON object (the `postern-capture handshakes` output line).
    pub fn to_json(&self) -> serde_json::Value {
        let supported = match self.from_client.first() {
            Some(tls::Hello::Client {
                supported_groups, ..
            }) => supported_groups.clone(),
            _ => Vec::new(),
        };
        serde_json::json!({
            "transport": self.transport,
            "client": format!("{}:{}", self.client.0, self.client.1),
            "server": format!("{}:{}", self.server.0, self.server.1),
            "offered": self.offered(),
            "supported": supported,
            "selected": self.selected(),
            "retried": self.retried(),
        })
    }
}

/// Every TLS-over-TCP and QUIC connection in a capture whose opening was
/// captured, with the key exchange its clear handshake shows. A TCP
/// connection that carries no TLS (none is expected) is an error.
pub fn handshakes(capture: &pcap::Capture) -> Result<Vec<Handshake>, CaptureError> {
    let mut out = Vec::new();
    for c in tcp::connections(&capture.tcp)? {
        out.push(Handshake {
            transport: "tcp",
            client: c.client,
            server: c.server,
            from_client: tls::hellos(&tls::clear_handshake(&c.to_server)?)?,
            from_server: tls::hellos(&tls::clear_handshake(&c.to_client)?)?,
        });
    }
    for f in quic::initial_flows(&capture.udp)? {
        out.push(Handshake {
            transport: "quic",
            client: f.client,
            server: f.server,
            from_client: tls::hellos(&f.to_server)?,
            from_server: tls::hellos(&f.to_client)?,
        });
    }
    Ok(out)
}
