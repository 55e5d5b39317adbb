//! Counters and gauges, rendered in the Prometheus text format. No label
//! carries a queue id or an address: only command names and error codes.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

use postern_core::consts::BLOB_BYTES;
use postern_core::relay_proto::ErrorCode;

/// The commands counted, in wire order.
pub const COMMANDS: [&str; 11] = [
    "create",
    "send",
    "fetch",
    "ack",
    "subscribe",
    "delete_queue",
    "put_invite",
    "take_invite",
    "forward",
    "get_directory",
    "ping",
];

/// Every counter and gauge of a relay.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Onion packets processed and sent on to the next hop.
    pub packets_forwarded: AtomicU64,
    /// Onion packets whose blob was delivered into a queue here.
    pub packets_delivered: AtomicU64,
    /// Onion packets dropped (replayed, undecodable, unknown next hop,
    /// next hop unreachable).
    pub packets_dropped: AtomicU64,
    /// Connections open now.
    pub connections_open: AtomicU64,
    /// Connections accepted since start.
    pub connections_total: AtomicU64,
    /// Connections refused (over `max_connections`).
    pub connections_rejected: AtomicU64,
    /// Connections closed for too many errors.
    pub connections_closed_for_errors: AtomicU64,
    /// TLS or WebSocket handshakes that failed or timed out.
    pub handshakes_failed: AtomicU64,
    /// Connections closed because the client did not take what was sent
    /// within the write timeout.
    pub connections_closed_slow: AtomicU64,
    /// New connections refused because their source keeps offending
    /// (`offenders`).
    pub connections_refused_source: AtomicU64,
    /// Times a source reached the offence limit and began to be refused.
    pub sources_refused: AtomicU64,
    requests: [AtomicU64; COMMANDS.len()],
    errors: [AtomicU64; ErrorCode::ALL.len()],
    /// Queues held.
    pub queues: AtomicU64,
    /// Items held.
    pub items: AtomicU64,
    /// Notifications sent.
    pub notifications: AtomicU64,
    /// Garbage collection runs.
    pub gc_runs: AtomicU64,
    /// Items removed by garbage collection.
    pub gc_items: AtomicU64,
    /// Queues removed by garbage collection.
    pub gc_queues: AtomicU64,
    /// Invitation blobs removed by garbage collection.
    pub gc_invites: AtomicU64,
    /// Storage transactions.
    pub storage_batches: AtomicU64,
    /// Storage operations.
    pub storage_ops: AtomicU64,
    /// Batches of replay tags committed to disk.
    pub replay_commits: AtomicU64,
    /// Replay-tag commits that failed (a full disk); packets are refused
    /// until one succeeds.
    pub replay_commit_failures: AtomicU64,
    /// 1 when the relay also accepts classical-only TLS key exchange.
    pub tls_classical_allowed: AtomicU64,
    /// TLS handshakes completed with the hybrid group X25519MLKEM768.
    pub tls_hybrid: AtomicU64,
    /// TLS handshakes completed with a classical group (only when allowed).
    pub tls_classical: AtomicU64,
    /// TLS handshakes refused because the client offered no hybrid group.
    pub tls_refused_classical: AtomicU64,
}

impl Metrics {
    /// Counts one request of this command.
    pub fn request(&self, command: &str) {
        if let Some(i) = COMMANDS.iter().position(|c| *c == command)
            && let Some(c) = self.requests.get(i)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts one error reply.
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code)
            && let Some(c) = self.errors.get(i)
        {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Errors answered with this code so far.
    pub fn errors_of(&self, code: ErrorCode) -> u64 {
        ErrorCode::ALL
            .iter()
            .position(|c| *c == code)
            .and_then(|i| self.errors.get(i))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let one = |s: &mut String, name: &str, kind: &str, help: &str, v: u64| {
            let _ = writeln!(s, "# HELP postern_relay_{name} {help}");
            let _ = writeln!(s, "# TYPE postern_relay_{name} {kind}");
            let _ = writeln!(s, "postern_relay_{name} {v}");
        };
        one(
            &mut s,
            "packets_forwarded_total",
            "counter",
            "Onion packets forwarded.",
            g(&self.packets_forwarded),
        );
        one(
            &mut s,
            "packets_delivered_total",
            "counter",
            "Onion packets delivered into a queue here.",
            g(&self.packets_delivered),
        );
        one(
            &mut s,
            "packets_dropped_total",
            "counter",
            "Onion packets dropped.",
            g(&self.packets_dropped),
        );
        one(
            &mut s,
            "connections_open",
            "gauge",
            "Connections open.",
            g(&self.connections_open),
        );
        one(
            &mut s,
            "connections_total",
            "counter",
            "Connections accepted.",
            g(&self.connections_total),
        );
        one(
            &mut s,
            "connections_rejected_total",
            "counter",
            "Connections refused over the limit.",
            g(&self.connections_rejected),
        );
        one(
            &mut s,
            "connections_closed_for_errors_total",
            "counter",
            "Connections closed after too many errors.",
            g(&self.connections_closed_for_errors),
        );
        one(
            &mut s,
            "connections_closed_slow_total",
            "counter",
            "Connections closed because the client stopped reading.",
            g(&self.connections_closed_slow),
        );
        one(
            &mut s,
            "connections_refused_source_total",
            "counter",
            "New connections refused because their source keeps offending.",
            g(&self.connections_refused_source),
        );
        one(
            &mut s,
            "sources_refused_total",
            "counter",
            "Times a source reached the offence limit (then refused for the cooldown).",
            g(&self.sources_refused),
        );
        one(
            &mut s,
            "handshakes_failed_total",
            "counter",
            "TLS or WebSocket handshakes that failed.",
            g(&self.handshakes_failed),
        );
        one(&mut s, "queues", "gauge", "Queues stored.", g(&self.queues));
        one(&mut s, "items", "gauge", "Items stored.", g(&self.items));
        one(
            &mut s,
            "item_bytes",
            "gauge",
            "Blob bytes stored in items.",
            g(&self.items).saturating_mul(BLOB_BYTES as u64),
        );
        one(
            &mut s,
            "notifications_total",
            "counter",
            "Notifications sent.",
            g(&self.notifications),
        );
        one(
            &mut s,
            "gc_runs_total",
            "counter",
            "Garbage collection runs.",
            g(&self.gc_runs),
        );
        one(
            &mut s,
            "gc_items_total",
            "counter",
            "Expired items removed.",
            g(&self.gc_items),
        );
        one(
            &mut s,
            "gc_queues_total",
            "counter",
            "Idle queues removed.",
            g(&self.gc_queues),
        );
        one(
            &mut s,
            "gc_invites_total",
            "counter",
            "Expired invitation blobs removed.",
            g(&self.gc_invites),
        );
        one(
            &mut s,
            "storage_transactions_total",
            "counter",
            "Storage transactions committed.",
            g(&self.storage_batches),
        );
        one(
            &mut s,
            "storage_operations_total",
            "counter",
            "Storage operations.",
            g(&self.storage_ops),
        );
        one(
            &mut s,
            "replay_commits_total",
            "counter",
            "Batches of replay tags synced to disk.",
            g(&self.replay_commits),
        );
        one(
            &mut s,
            "replay_commit_failures_total",
            "counter",
            "Replay-tag commits that failed (packets refused meanwhile).",
            g(&self.replay_commit_failures),
        );
        one(
            &mut s,
            "tls_classical_allowed",
            "gauge",
            "1 if classical-only TLS key exchange is accepted (allow_classical_tls).",
            g(&self.tls_classical_allowed),
        );
        let _ = writeln!(
            s,
            "# HELP postern_relay_tls_handshakes_total TLS handshakes by key exchange."
        );
        let _ = writeln!(s, "# TYPE postern_relay_tls_handshakes_total counter");
        for (group, c) in [
            ("x25519mlkem768", &self.tls_hybrid),
            ("classical", &self.tls_classical),
            ("refused_classical", &self.tls_refused_classical),
        ] {
            let _ = writeln!(
                s,
                "postern_relay_tls_handshakes_total{{group=\"{group}\"}} {}",
                g(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP postern_relay_requests_total Requests by command."
        );
        let _ = writeln!(s, "# TYPE postern_relay_requests_total counter");
        for (name, c) in COMMANDS.iter().zip(&self.requests) {
            let _ = writeln!(
                s,
                "postern_relay_requests_total{{command=\"{name}\"}} {}",
                g(c)
            );
        }
        let _ = writeln!(
            s,
            "# HELP postern_relay_errors_total Error replies by code."
        );
        let _ = writeln!(s, "# TYPE postern_relay_errors_total counter");
        for (code, c) in ErrorCode::ALL.iter().zip(&self.errors) {
            let _ = writeln!(
                s,
                "postern_relay_errors_total{{code=\"{}\"}} {}",
                code.name(),
                g(c)
            );
        }
        s
    }
}
