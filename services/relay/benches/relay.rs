//! Relay benchmark (prints figures; not a criterion bench).
//!
//! 1. send + fetch + ack rounds per second through the real relay binary
//!    over loopback (TLS, WebSocket, signatures, SQLite with fsync), with
//!    100 concurrent connections;
//! 2. the same rounds against the storage layer directly (one thread,
//!    one transaction per operation);
//! 3. the relay's resident memory with 100,000 idle queues.
//!
//! `cargo bench -p postern-relay --bench relay` runs the full version (a
//! minute or two); without `--bench` (as under `cargo test
//! --all-targets`) it runs a tiny version so the test suite stays fast.
//! The client and the relay share the machine's cores.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    missing_docs
)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Relay, blob};
use postern_core::crypto::signal::QueueSecret;
use postern_core::relay_proto::Command;
use postern_relay::storage::{Limits, Op, Outcome, Storage};

/// The throughput runs lift the per-connection rate limit: the benchmark
/// measures the relay, not its abuse protection.
const NO_RATE_LIMIT: [&str; 4] = ["--rate-per-sec", "1000000", "--rate-burst", "1000000"];

struct Plan {
    connections: usize,
    duration: Duration,
    idle_queues: usize,
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

async fn relay_rounds(plan: &Plan) -> f64 {
    let relay = Relay::start(&NO_RATE_LIMIT);
    let rounds = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + plan.duration;
    let mut tasks = Vec::new();
    for i in 0..plan.connections {
        let (addr, rounds) = (relay.addr.clone(), rounds.clone());
        tasks.push(tokio::spawn(async move {
            let key = QueueSecret::generate(&mut rand::rng());
            let mut c = postern_net::connect(&addr).await.unwrap();
            let q = c.create_queue(&key).await.unwrap();
            let b = blob(i as u64);
            while Instant::now() < deadline {
                c.send(&q.sender_id, &b).await.unwrap();
                let (items, _) = c.fetch(&q.recipient_id, &key, 1).await.unwrap();
                c.ack(&q.recipient_id, &key, &[items[0].id]).await.unwrap();
                rounds.fetch_add(1, Ordering::Relaxed);
            }
            c.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    let m = relay.admin_get("/metrics");
    let get = |name: &str| {
        m.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let (tx, ops) = (
        get("postern_relay_storage_transactions_total "),
        get("postern_relay_storage_operations_total "),
    );
    println!(
        "  storage operations per transaction in the relay: {:.1}",
        ops / tx.max(1.0)
    );
    rounds.load(Ordering::Relaxed) as f64 / took
}

fn storage_rounds(plan: &Plan) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    let mut s = Storage::open(&dir.path().join("bench.sqlite"), Limits::default()).unwrap();
    let now = 1_700_000_000;
    let queues: Vec<([u8; 16], [u8; 16])> = (0..plan.connections)
        .map(|i| {
            let mut rid = [0u8; 16];
            rid[..8].copy_from_slice(&(i as u64).to_be_bytes());
            let mut sid = rid;
            sid[15] = 1;
            s.run(
                &Op::Register {
                    recipient_id: rid,
                    sender_id: sid,
                    queue_key: vec![5; 33],
                },
                now,
            )
            .unwrap();
            (rid, sid)
        })
        .collect();
    let b = blob(1);
    let start = Instant::now();
    let mut rounds = 0u64;
    'outer: loop {
        for (rid, sid) in &queues {
            if start.elapsed() >= plan.duration {
                break 'outer;
            }
            s.run(
                &Op::Client(Command::Send {
                    sender_id: *sid,
                    blob: b.clone(),
                }),
                now,
            )
            .unwrap();
            let Ok(Outcome::Items { items, .. }) = s.run(
                &Op::Client(Command::Fetch {
                    recipient_id: *rid,
                    max: 1,
                }),
                now,
            ) else {
                panic!("fetch")
            };
            s.run(
                &Op::Client(Command::Ack {
                    recipient_id: *rid,
                    item_ids: vec![items[0].0],
                }),
                now,
            )
            .unwrap();
            rounds += 1;
        }
    }
    rounds as f64 / start.elapsed().as_secs_f64()
}

async fn idle_queue_memory(plan: &Plan) -> (u64, u64) {
    let mut relay = Relay::start(&NO_RATE_LIMIT);
    let pid = relay.child.id();
    let before = rss_kib(pid);
    let per_conn = plan.idle_queues / plan.connections;
    let mut tasks = Vec::new();
    for _ in 0..plan.connections {
        let addr = relay.addr.clone();
        tasks.push(tokio::spawn(async move {
            let key = QueueSecret::generate(&mut rand::rng());
            let mut c = postern_net::connect(&addr).await.unwrap();
            for _ in 0..per_conn {
                c.create_queue(&key).await.unwrap();
            }
            c.close().await.unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = rss_kib(pid);
    let m = relay.admin_get("/metrics");
    let want = format!("postern_relay_queues {}", per_conn * plan.connections);
    assert!(m.contains(&want), "{want} missing");
    let (st, _) = relay.terminate();
    assert!(st.success());
    (before, after)
}

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            connections: 100,
            duration: Duration::from_secs(10),
            idle_queues: 100_000,
        }
    } else {
        Plan {
            connections: 10,
            duration: Duration::from_millis(300),
            idle_queues: 200,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "relay benchmark ({}): {} connections, {:?} per run",
        if full { "full" } else { "quick" },
        plan.connections,
        plan.duration
    );
    let relay = rt.block_on(relay_rounds(&plan));
    let direct = storage_rounds(&plan);
    println!("  relay over loopback: {relay:>9.0} send+fetch+ack rounds/s");
    println!("  storage directly:    {direct:>9.0} send+fetch+ack rounds/s");
    println!(
        "  ratio relay/storage: {:>9.2} (target >= 0.5)",
        relay / direct
    );
    let (before, after) = rt.block_on(idle_queue_memory(&plan));
    println!(
        "  relay RSS: {before} KiB at start, {after} KiB with {} idle queues",
        plan.idle_queues
    );
    assert!(relay > 0.0 && direct > 0.0);
}
