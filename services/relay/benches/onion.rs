//! Onion routing benchmark (prints figures; not a criterion bench).
//!
//! 1. Raw Sphinx unwrap rate (`crypto::sphinx::process`, one hop's key,
//!    one thread) and the relays' forwarding rate for the same packets
//!    over loopback: a real 3-relay `postern-relay testnet` (mixing delay
//!    0), N packets on the path A → B → C pushed into A from several
//!    connections and fetched from the queue on C as they arrive.
//! 2. End-to-end latency over those 3 hops, one packet at a time: from
//!    `forward` at A to the queue's notification on C (sent after the
//!    blob's commit).
//! 3. Text messages per second with 50 concurrent senders (random 3-hop
//!    paths from `onion::choose_path`, recipients fetching and opening),
//!    against the same pipeline without a network (seal + fragment, wrap,
//!    3 × peel, receive + open) on one thread.
//! 4. A 10 MiB attachment's 6,827 chunk blobs through 3 hops into one
//!    queue, fetched and acknowledged as they arrive.
//!
//! `cargo bench -p postern-relay --bench onion` runs the full version;
//! without `--bench` (as under `cargo test --all-targets`) it runs a tiny
//! one. The relays, the load generator and the clients share the
//! machine's cores. The relays' per-connection rate limit is lifted
//! (through the environment the testnet passes to its relays): the
//! benchmark measures the relays, not their abuse protection.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs
)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use postern_core::consts::{BLOB_BYTES, MAX_FETCH};
use postern_core::courier::{self, CreatedQueue, QueueKeys, Received};
use postern_core::crypto::signal::QueueSecret;
use postern_core::crypto::sphinx::{self, Hop, NodeSecret, Packet};
use postern_core::directory::Directory;
use postern_core::message::{Body, Text};
use postern_core::onion::{self, HopAction, Node, Path};
use postern_core::relay_proto::{Blob, QueueId};
use postern_core::{Address, KvStore as _, MemStore, RelayAddress, UnixTime, e2e};
use postern_net::Connection;
use postern_relay::config::parse_authority_key;
use rand::rngs::StdRng;
use rand::{RngCore as _, SeedableRng as _};

const BIN: &str = env!("CARGO_BIN_EXE_postern-relay");
/// Lifts the per-connection rate limit in every relay of the testnet
/// (the relays read their settings from the environment too).
const NO_RATE_LIMIT: [(&str, &str); 2] = [
    ("POSTERN_RELAY_RATE_PER_SEC", "1000000"),
    ("POSTERN_RELAY_RATE_BURST", "1000000"),
];
/// Longest any one phase may wait for its packets.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);

struct Plan {
    full: bool,
    unwrap_time: Duration,
    unwrap_packets: usize,
    forward_packets: usize,
    forward_connections: usize,
    latency_packets: usize,
    senders: usize,
    messages_per_sender: usize,
    pipeline_messages: usize,
    attachment_blobs: usize,
    attachment_connections: usize,
    /// Relays of the network for parts 3 and 4 (3: reuse the first).
    wide_relays: usize,
}

fn now() -> UnixTime {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    UnixTime(d.as_millis() as u64)
}

fn rng() -> StdRng {
    StdRng::from_os_rng()
}

/// A blob carrying its index in its first 8 bytes, random after.
fn numbered_blob(i: u64, r: &mut StdRng) -> Blob {
    let mut b = Box::new([0u8; BLOB_BYTES]);
    r.fill_bytes(&mut b[8..]);
    b[..8].copy_from_slice(&i.to_be_bytes());
    b
}

fn blob_index(b: &Blob) -> usize {
    u64::from_be_bytes(b[..8].try_into().unwrap()) as usize
}

/// CPU seconds (user + system) of a process, from `/proc/PID/stat`.
fn cpu_secs(pid: &str) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after_name = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
    let f: Vec<f64> = after_name
        .split_whitespace()
        .map(|v| v.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line (USER_HZ = 100).
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / 100.0
}

/// CPU used by the relays and by this process (load generator and
/// clients) over a phase.
struct CpuMeter {
    start: Instant,
    relays: f64,
    me: f64,
}

impl CpuMeter {
    fn start(net: &Net) -> CpuMeter {
        CpuMeter {
            start: Instant::now(),
            relays: net.relay_cpu(),
            me: cpu_secs("self"),
        }
    }

    fn report(&self, net: &Net) {
        let wall = self.start.elapsed().as_secs_f64();
        println!(
            "    CPU over {wall:.2} s: relays {:.2} s, benchmark process {:.2} s \
             (both cores: {:.2} s)",
            net.relay_cpu() - self.relays,
            cpu_secs("self") - self.me,
            2.0 * wall
        );
    }
}

// ---------------------------------------------------------------------------
// The test network
// ---------------------------------------------------------------------------

struct Net {
    child: Child,
    /// Kept (with the relays' logs) when the benchmark fails.
    tmp: Option<tempfile::TempDir>,
    relays: Vec<RelayAddress>,
    epoch: u32,
    nodes: Vec<Node>,
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_child(&self.child),
            rustix::process::Signal::TERM,
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
        if std::thread::panicking()
            && let Some(t) = self.tmp.take()
        {
            eprintln!("relay logs kept in {}/relay-N.log", t.keep().display());
        }
    }
}

impl Net {
    fn node(&self, a: &RelayAddress) -> Node {
        self.nodes.iter().find(|n| n.address == *a).unwrap().clone()
    }

    /// CPU seconds used so far by the relay processes (the testnet's
    /// children).
    fn relay_cpu(&self) -> f64 {
        let mut total = 0.0;
        let tasks = format!("/proc/{}/task", self.child.id());
        for t in std::fs::read_dir(tasks).into_iter().flatten().flatten() {
            let children = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
            total += children.split_whitespace().map(cpu_secs).sum::<f64>();
        }
        total
    }

    fn fail(&self, what: &str) -> ! {
        panic!("{what}")
    }
}

async fn testnet(relays: usize) -> Net {
    let tmp = tempfile::tempdir().unwrap();
    let mut child = Command::new(BIN)
        .args(["testnet", "--relays", &relays.to_string()])
        .args(["--mix-delay-ms", "0", "--dir"])
        .arg(tmp.path())
        .env_remove("POSTERN_RELAY_CONFIG")
        .envs(NO_RATE_LIMIT)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            let _ = tx.send(line);
        }
    });
    let (mut addrs, mut authority) = (Vec::new(), None);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("testnet of {relays} relays did not get ready in 60 s"));
        let words: Vec<&str> = line.split(' ').collect();
        match words.as_slice() {
            ["relay", _, a] => addrs.push(RelayAddress::parse(a).unwrap()),
            ["authority", k] => authority = Some(parse_authority_key(k).unwrap()),
            ["ready"] => break,
            _ => {}
        }
    }
    assert_eq!(addrs.len(), relays);
    let mut c = postern_net::connect(&addrs[0]).await.unwrap();
    let bytes = c.get_directory().await.unwrap();
    c.close().await.unwrap();
    let dir = Directory::verify(&bytes, &[authority.unwrap()], 1, now()).unwrap();
    let epoch = dir.epoch_at(now());
    let nodes = onion::nodes(&dir, epoch);
    assert_eq!(
        nodes.len(),
        relays,
        "every relay holds a key for this epoch"
    );
    Net {
        child,
        tmp: Some(tmp),
        relays: addrs,
        epoch,
        nodes,
    }
}

/// Fetches and acknowledges from `rid` until `want` items have arrived,
/// handing each blob to `each`; waits on the queue's notifications when
/// it is empty. Panics after [`PHASE_TIMEOUT`].
async fn drain(
    net: &Net,
    conn: &mut Connection,
    rid: &QueueId,
    key: &QueueSecret,
    want: usize,
    mut each: impl FnMut(&Blob),
) {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    let mut got = 0;
    while got < want {
        let (items, more) = conn.fetch(rid, key, MAX_FETCH).await.unwrap();
        if !items.is_empty() {
            for it in &items {
                each(&it.blob);
            }
            let ids: Vec<u64> = items.iter().map(|i| i.id).collect();
            conn.ack(rid, key, &ids).await.unwrap();
            got += items.len();
        }
        if got >= want {
            break;
        }
        if Instant::now() > deadline {
            net.fail(&format!(
                "only {got} of {want} blobs arrived in {PHASE_TIMEOUT:?}: packets were dropped"
            ));
        }
        if !more {
            // Cancel-safe; a timeout just means nothing new yet.
            let _ = tokio::time::timeout(Duration::from_millis(50), conn.next_notification()).await;
        }
    }
    assert_eq!(got, want, "more blobs than were sent");
}

/// Marks blob indices seen; panics on a duplicate.
fn mark(seen: &mut [bool], b: &Blob) {
    let i = blob_index(b);
    assert!(
        i < seen.len() && !seen[i],
        "unexpected or duplicate blob {i}"
    );
    seen[i] = true;
}

// ---------------------------------------------------------------------------
// 1. Raw unwrap vs forwarding through 3 relays
// ---------------------------------------------------------------------------

/// Packets per second of `sphinx::process` for hop `position` (0, 1, 2)
/// of a 3-hop path.
fn raw_unwrap(plan: &Plan, position: usize) -> f64 {
    let mut r = rng();
    let secrets: Vec<NodeSecret> = (0..3).map(|_| NodeSecret::generate(&mut r)).collect();
    let hops: Vec<Hop> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| Hop {
            id: [i as u8 + 1; 32],
            key: s.public(),
        })
        .collect();
    let payload = vec![0x5A; sphinx::PAYLOAD_PLAINTEXT_BYTES];
    let packets: Vec<Packet> = (0..plan.unwrap_packets)
        .map(|_| {
            let mut p = sphinx::build(&hops, &[9; 32], &payload, &mut r).unwrap();
            for s in &secrets[..position] {
                let sphinx::Processed::Forward { packet, .. } = sphinx::process(&p, s).unwrap()
                else {
                    panic!("a middle hop must forward");
                };
                p = packet;
            }
            p
        })
        .collect();
    let key = &secrets[position];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < plan.unwrap_time {
        for p in &packets {
            let out = sphinx::process(p, key).unwrap();
            std::hint::black_box(out);
        }
        n += packets.len() as u64;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Packets per second through A → B → C into a queue on C.
async fn forwarding(plan: &Plan, net: &Net) -> f64 {
    let mut r = rng();
    let (a, b, c) = (
        net.node(&net.relays[0]),
        net.node(&net.relays[1]),
        net.node(&net.relays[2]),
    );
    let key = QueueSecret::generate(&mut r);
    let mut conn_c = postern_net::connect(&c.address).await.unwrap();
    let ids = conn_c.create_queue(&key).await.unwrap();
    conn_c.subscribe(&ids.recipient_id, &key).await.unwrap();
    let path = Path {
        nodes: vec![a.clone(), b, c],
    };
    let n = plan.forward_packets;
    let packets: Arc<Vec<Packet>> = Arc::new(
        (0..n)
            .map(|i| {
                let blob = numbered_blob(i as u64, &mut r);
                onion::wrap(&path, &ids.sender_id, &blob, &mut r).unwrap()
            })
            .collect(),
    );
    let mut conns = Vec::new();
    for _ in 0..plan.forward_connections {
        conns.push(postern_net::connect(&a.address).await.unwrap());
    }
    let cpu = CpuMeter::start(net);
    let start = Instant::now();
    let mut pushers = Vec::new();
    for (k, mut conn) in conns.into_iter().enumerate() {
        let (packets, epoch, step) = (packets.clone(), net.epoch, plan.forward_connections);
        pushers.push(tokio::spawn(async move {
            for p in packets.iter().skip(k).step_by(step) {
                conn.forward(epoch, p).await.unwrap();
            }
            start.elapsed()
        }));
    }
    let mut seen = vec![false; n];
    drain(net, &mut conn_c, &ids.recipient_id, &key, n, |b| {
        mark(&mut seen, b)
    })
    .await;
    let took = start.elapsed();
    let mut accepted = Duration::ZERO;
    for p in pushers {
        accepted = accepted.max(p.await.unwrap());
    }
    println!(
        "  {n} packets A→B→C: all accepted by A after {:.2} s, all in the queue on C after {:.2} s",
        accepted.as_secs_f64(),
        took.as_secs_f64()
    );
    cpu.report(net);
    n as f64 / took.as_secs_f64()
}

// ---------------------------------------------------------------------------
// 2. Latency over 3 hops
// ---------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn latency(plan: &Plan, net: &Net) {
    let mut r = rng();
    let (a, b, c) = (
        net.node(&net.relays[0]),
        net.node(&net.relays[1]),
        net.node(&net.relays[2]),
    );
    let key = QueueSecret::generate(&mut r);
    let mut conn_c = postern_net::connect(&c.address).await.unwrap();
    let ids = conn_c.create_queue(&key).await.unwrap();
    conn_c.subscribe(&ids.recipient_id, &key).await.unwrap();
    let mut conn_a = postern_net::connect(&a.address).await.unwrap();
    let path = Path {
        nodes: vec![a, b, c],
    };
    let warmup = 10;
    let total = warmup + plan.latency_packets;
    let mut accept = Vec::new();
    let mut arrive = Vec::new();
    for i in 0..total {
        let blob = numbered_blob(i as u64, &mut r);
        let p = onion::wrap(&path, &ids.sender_id, &blob, &mut r).unwrap();
        let t0 = Instant::now();
        conn_a.forward(net.epoch, &p).await.unwrap();
        let t_acc = t0.elapsed();
        let got = tokio::time::timeout(Duration::from_secs(10), conn_c.next_notification())
            .await
            .unwrap_or_else(|_| net.fail(&format!("packet {i} did not arrive within 10 s")))
            .unwrap();
        let t_arr = t0.elapsed();
        assert_eq!(got, ids.recipient_id);
        let (items, _) = conn_c
            .fetch(&ids.recipient_id, &key, MAX_FETCH)
            .await
            .unwrap();
        assert_eq!(items.len(), 1, "exactly the one packet sent");
        assert_eq!(items[0].blob, blob);
        conn_c
            .ack(&ids.recipient_id, &key, &[items[0].id])
            .await
            .unwrap();
        if i >= warmup {
            accept.push(t_acc);
            arrive.push(t_arr);
        }
    }
    accept.sort();
    arrive.sort();
    println!(
        "  {} packets one at a time: in the queue on C after p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        arrive.len(),
        ms(percentile(&arrive, 0.5)),
        ms(percentile(&arrive, 0.99)),
        ms(arrive[arrive.len() - 1]),
    );
    println!(
        "    (A's Ok to the sender: p50 {:.2} ms, p99 {:.2} ms)",
        ms(percentile(&accept, 0.5)),
        ms(percentile(&accept, 0.99)),
    );
}

// ---------------------------------------------------------------------------
// 3. Messages: over the network vs crypto only
// ---------------------------------------------------------------------------

struct User {
    store: MemStore,
    addr: Address,
}

impl User {
    fn new(r: &mut StdRng) -> User {
        let mut store = MemStore::new();
        let (addr, cs) = e2e::create_identity(&store, now(), r).unwrap();
        store.commit(cs).unwrap();
        User { store, addr }
    }
}

/// A recipient (owner of queue `q`) and a sender who accepted the
/// recipient's invitation; the introduction is delivered in memory.
fn befriend(q: &CreatedQueue, r: &mut StdRng) -> (User, User) {
    let (mut alice, mut bob) = (User::new(r), User::new(r));
    let t = now();
    let (inv, payload, cs) = courier::create_invitation(&alice.store, q, "Alice", t, r).unwrap();
    alice.store.commit(cs).unwrap();
    let mut id = [0u8; 16];
    r.fill_bytes(&mut id);
    let bq = CreatedQueue {
        relay: q.relay.clone(),
        keys: QueueKeys::generate(r),
        recipient_id: id,
        sender_id: id,
    };
    let (peer, intro, cs) =
        courier::accept_invitation(&bob.store, &inv, &payload, &bq, "Bob", t, r).unwrap();
    assert_eq!(peer, alice.addr);
    bob.store.commit(cs).unwrap();
    let mut last = None;
    for b in &intro.blobs {
        let (rec, cs) = courier::receive(&alice.store, &q.recipient_id, b, t, r).unwrap();
        alice.store.commit(cs).unwrap();
        last = Some(rec);
    }
    assert!(matches!(last, Some(Received::NewContact { peer, .. }) if peer == bob.addr));
    // Alice answers once, so Bob's session is complete and his texts are
    // ordinary Signal messages (one blob each) rather than PreKey messages
    // (which carry the Kyber ciphertext and take two blobs).
    let (_, out, cs) = courier::send(&alice.store, &bob.addr, text(0, 0), None, t, r).unwrap();
    alice.store.commit(cs).unwrap();
    for b in &out.blobs {
        let (rec, cs) = courier::receive(&bob.store, &bq.recipient_id, b, t, r).unwrap();
        bob.store.commit(cs).unwrap();
        last = Some(rec);
    }
    assert!(matches!(last, Some(Received::Message { from, .. }) if from == alice.addr));
    (alice, bob)
}

fn text(i: usize, m: usize) -> Body {
    Body::Text(Text(format!(
        "Message {m} from sender {i}: see you at the station at six, bring the map."
    )))
}

/// `courier::send` of a text; returns its single blob and where it goes.
fn seal_text(bob: &mut User, to: &Address, body: Body, r: &mut StdRng) -> courier::Outgoing {
    let (_, out, cs) = courier::send(&bob.store, to, body, None, now(), r).unwrap();
    bob.store.commit(cs).unwrap();
    assert_eq!(
        out.blobs.len(),
        1,
        "a short text in an established session is one blob"
    );
    out
}

fn open_text(alice: &mut User, rid: &QueueId, blob: &Blob, from: &Address, r: &mut StdRng) {
    let (rec, cs) = courier::receive(&alice.store, rid, blob, now(), r).unwrap();
    alice.store.commit(cs).unwrap();
    assert!(
        matches!(&rec, Received::Message { from: f, .. } if f == from),
        "expected a message, got {rec:?}"
    );
}

/// The whole pipeline without a network, one thread: messages/s.
fn pipeline(plan: &Plan) -> f64 {
    let mut r = rng();
    let secrets: Vec<NodeSecret> = (0..5).map(|_| NodeSecret::generate(&mut r)).collect();
    let nodes: Vec<Node> = secrets
        .iter()
        .enumerate()
        .map(|(i, s)| Node {
            id: [i as u8 + 1; 32],
            address: RelayAddress::new("127.0.0.1", 7000 + i as u16, None).unwrap(),
            roles: onion::ROLE_ENTRY | onion::ROLE_MIX | onion::ROLE_MAILBOX,
            key: s.public(),
        })
        .collect();
    let q = CreatedQueue {
        relay: nodes[4].address.clone(),
        keys: QueueKeys::generate(&mut r),
        recipient_id: [1; 16],
        sender_id: [2; 16],
    };
    let (mut alice, mut bob) = befriend(&q, &mut r);
    let mut stage = [Duration::ZERO; 4];
    let start = Instant::now();
    for m in 0..plan.pipeline_messages {
        let t = Instant::now();
        let out = seal_text(&mut bob, &alice.addr, text(0, m), &mut r);
        stage[0] += t.elapsed();
        let t = Instant::now();
        let path = onion::choose_path(&nodes, &out.relay, 3, &[], &mut r).unwrap();
        let mut packet = onion::wrap(&path, &out.sender_id, &out.blobs[0], &mut r).unwrap();
        stage[1] += t.elapsed();
        let t = Instant::now();
        let mut delivered = None;
        for hop in &path.nodes {
            let i = nodes.iter().position(|n| n.id == hop.id).unwrap();
            let action = onion::process(&packet, &secrets[i], &hop.id, 0, &mut r).unwrap();
            if let HopAction::Forward { packet: p, .. } = action {
                packet = p;
            } else if let HopAction::Deliver {
                sender_id, blob, ..
            } = action
            {
                assert_eq!(sender_id, q.sender_id);
                delivered = Some(blob);
            } else {
                panic!("unexpected hop action");
            }
        }
        stage[2] += t.elapsed();
        let t = Instant::now();
        open_text(
            &mut alice,
            &q.recipient_id,
            &delivered.unwrap(),
            &bob.addr,
            &mut r,
        );
        stage[3] += t.elapsed();
    }
    let took = start.elapsed();
    let per = |d: Duration| ms(d) * 1e3 / plan.pipeline_messages as f64;
    println!(
        "  crypto only, per message: seal + fragment {:.0} µs, path + wrap {:.0} µs, \
         3 × peel {:.0} µs, receive + open {:.0} µs",
        per(stage[0]),
        per(stage[1]),
        per(stage[2]),
        per(stage[3])
    );
    plan.pipeline_messages as f64 / took.as_secs_f64()
}

struct Pair {
    alice: User,
    bob: User,
    q: CreatedQueue,
}

/// 50 senders, each to its own recipient (queues spread over the
/// relays), random paths: messages/s received and opened.
async fn messages(plan: &Plan, net: &Net) -> f64 {
    let mut r = rng();
    let setup = Instant::now();
    let mut admin = Vec::new();
    for a in &net.relays {
        admin.push(postern_net::connect(a).await.unwrap());
    }
    let mut pairs = Vec::new();
    for i in 0..plan.senders {
        let relay = net.relays[i % net.relays.len()].clone();
        let keys = QueueKeys::generate(&mut r);
        let ids = admin[i % net.relays.len()]
            .create_queue(&keys.queue_key)
            .await
            .unwrap();
        let q = CreatedQueue {
            relay,
            keys,
            recipient_id: ids.recipient_id,
            sender_id: ids.sender_id,
        };
        let (alice, bob) = befriend(&q, &mut r);
        pairs.push(Pair { alice, bob, q });
    }
    // Every connection is open before the clock starts: each sender has
    // one to every relay that can be its entry, each recipient one to its
    // mailbox relay.
    let mut prepared = Vec::new();
    for p in pairs {
        let mut entries = HashMap::new();
        for a in net.relays.iter().filter(|a| **a != p.q.relay) {
            entries.insert(a.clone(), postern_net::connect(a).await.unwrap());
        }
        let mut inbox = postern_net::connect(&p.q.relay).await.unwrap();
        inbox
            .subscribe(&p.q.recipient_id, &p.q.keys.queue_key)
            .await
            .unwrap();
        prepared.push((p, entries, inbox));
    }
    println!(
        "  setup: {} sender/recipient pairs, {} connections, {:.1} s",
        plan.senders,
        plan.senders * net.relays.len(),
        setup.elapsed().as_secs_f64()
    );
    let m = plan.messages_per_sender;
    let nodes = Arc::new(net.nodes.clone());
    let cpu = CpuMeter::start(net);
    let start = Instant::now();
    let mut senders = Vec::new();
    let mut receivers = Vec::new();
    for (i, (p, mut entries, mut inbox)) in prepared.into_iter().enumerate() {
        let Pair {
            mut alice,
            mut bob,
            q,
        } = p;
        let (alice_addr, bob_addr) = (alice.addr, bob.addr);
        let (nodes, epoch) = (nodes.clone(), net.epoch);
        senders.push(tokio::spawn(async move {
            let mut r = rng();
            for k in 0..m {
                let out = seal_text(&mut bob, &alice_addr, text(i, k), &mut r);
                let path = onion::choose_path(&nodes, &out.relay, 3, &[], &mut r).unwrap();
                let packet = onion::wrap(&path, &out.sender_id, &out.blobs[0], &mut r).unwrap();
                let conn = entries.get_mut(&path.entry().unwrap().address).unwrap();
                conn.forward(epoch, &packet).await.unwrap();
            }
        }));
        receivers.push(async move {
            let mut r = rng();
            let rid = q.recipient_id;
            // Blobs are opened as they come (the fetch/ack loop collects
            // one batch at a time).
            let deadline = Instant::now() + PHASE_TIMEOUT;
            let mut got = 0;
            while got < m {
                let (items, more) = inbox
                    .fetch(&rid, &q.keys.queue_key, MAX_FETCH)
                    .await
                    .unwrap();
                for it in &items {
                    open_text(&mut alice, &rid, &it.blob, &bob_addr, &mut r);
                }
                if !items.is_empty() {
                    let ids: Vec<u64> = items.iter().map(|i| i.id).collect();
                    inbox.ack(&rid, &q.keys.queue_key, &ids).await.unwrap();
                    got += items.len();
                }
                assert!(
                    Instant::now() < deadline,
                    "recipient {i}: only {got} of {m} messages in {PHASE_TIMEOUT:?}"
                );
                if got < m && !more {
                    let _ =
                        tokio::time::timeout(Duration::from_millis(50), inbox.next_notification())
                            .await;
                }
            }
            assert_eq!(got, m);
        });
    }
    let receivers: Vec<_> = receivers.into_iter().map(tokio::spawn).collect();
    for s in senders {
        s.await.unwrap();
    }
    let sent = start.elapsed();
    for rcv in receivers {
        if let Err(e) = rcv.await {
            net.fail(&format!("a recipient failed: {e}"));
        }
    }
    let took = start.elapsed();
    let total = plan.senders * m;
    println!(
        "  {total} texts: all handed to entries after {:.2} s, all received and opened after {:.2} s",
        sent.as_secs_f64(),
        took.as_secs_f64()
    );
    cpu.report(net);
    total as f64 / took.as_secs_f64()
}

// ---------------------------------------------------------------------------
// 4. A 10 MiB attachment
// ---------------------------------------------------------------------------

async fn attachment(plan: &Plan, net: &Net) -> Duration {
    let mut r = rng();
    let mailbox = net.relays[net.relays.len() - 1].clone();
    let key = QueueSecret::generate(&mut r);
    let mut inbox = postern_net::connect(&mailbox).await.unwrap();
    let ids = inbox.create_queue(&key).await.unwrap();
    inbox.subscribe(&ids.recipient_id, &key).await.unwrap();
    let n = plan.attachment_blobs;
    let blobs: Arc<Vec<Blob>> = Arc::new((0..n).map(|i| numbered_blob(i as u64, &mut r)).collect());
    let mut conns = Vec::new();
    for _ in 0..plan.attachment_connections {
        let mut entries = HashMap::new();
        for a in net.relays.iter().filter(|a| **a != mailbox) {
            entries.insert(a.clone(), postern_net::connect(a).await.unwrap());
        }
        conns.push(entries);
    }
    let nodes = Arc::new(net.nodes.clone());
    let cpu = CpuMeter::start(net);
    let start = Instant::now();
    let mut pushers = Vec::new();
    let step = plan.attachment_connections;
    for (k, mut entries) in conns.into_iter().enumerate() {
        let (blobs, nodes, mailbox, sid, epoch) = (
            blobs.clone(),
            nodes.clone(),
            mailbox.clone(),
            ids.sender_id,
            net.epoch,
        );
        pushers.push(tokio::spawn(async move {
            let mut r = rng();
            for b in blobs.iter().skip(k).step_by(step) {
                let path = onion::choose_path(&nodes, &mailbox, 3, &[], &mut r).unwrap();
                let p = onion::wrap(&path, &sid, b, &mut r).unwrap();
                let conn = entries.get_mut(&path.entry().unwrap().address).unwrap();
                conn.forward(epoch, &p).await.unwrap();
            }
        }));
    }
    let mut seen = vec![false; n];
    drain(net, &mut inbox, &ids.recipient_id, &key, n, |b| {
        mark(&mut seen, b)
    })
    .await;
    let took = start.elapsed();
    for p in pushers {
        p.await.unwrap();
    }
    cpu.report(net);
    took
}

// ---------------------------------------------------------------------------

fn main() {
    let full = std::env::args().any(|a| a == "--bench");
    let plan = if full {
        Plan {
            full,
            unwrap_time: Duration::from_secs(3),
            unwrap_packets: 500,
            forward_packets: 5000,
            forward_connections: 8,
            latency_packets: 200,
            senders: 50,
            messages_per_sender: 20,
            pipeline_messages: 300,
            attachment_blobs: 6827,
            attachment_connections: 8,
            wide_relays: 5,
        }
    } else {
        Plan {
            full,
            unwrap_time: Duration::from_millis(50),
            unwrap_packets: 5,
            forward_packets: 10,
            forward_connections: 2,
            latency_packets: 3,
            senders: 2,
            messages_per_sender: 2,
            pipeline_messages: 2,
            attachment_blobs: 20,
            attachment_connections: 2,
            wide_relays: 3,
        }
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "onion benchmark ({}), {} cores shared by the relays and the clients",
        if plan.full { "full" } else { "quick" },
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    println!("1. Sphinx unwrap vs forwarding (3-relay testnet, path A→B→C, mixing delay 0)");
    let raw: Vec<f64> = (0..3).map(|pos| raw_unwrap(&plan, pos)).collect();
    println!(
        "  raw sphinx::process, one thread: {:.0} packets/s at a first hop ({:.0} second, {:.0} last hop)",
        raw[0], raw[1], raw[2]
    );
    let net3 = rt.block_on(testnet(3));
    let e2e_rate = rt.block_on(forwarding(&plan, &net3));
    let per_hop = 3.0 * e2e_rate;
    println!("  through 3 relays: {e2e_rate:.0} packets/s end to end, {per_hop:.0} hop-packets/s");
    println!(
        "  ratio per-hop forwarding / raw unwrap: {:.2} (target >= 0.8)",
        per_hop / raw[0]
    );

    println!("2. Latency over 3 hops (same testnet, one packet at a time)");
    rt.block_on(latency(&plan, &net3));

    println!("3. Text messages: network vs crypto only");
    let crypto = pipeline(&plan);
    println!("  crypto-only pipeline, one thread: {crypto:.0} messages/s");
    let both: f64 = std::thread::scope(|sc| {
        let h: Vec<_> = (0..2).map(|_| sc.spawn(|| pipeline(&plan))).collect();
        h.into_iter().map(|h| h.join().unwrap()).sum()
    });
    println!("  crypto-only pipeline, two threads: {both:.0} messages/s");
    // Parts 3 and 4 run on a wider network (random paths have more
    // relays to choose from) in the full run, on the same one in the quick.
    let net = if plan.wide_relays > 3 {
        drop(net3);
        rt.block_on(testnet(plan.wide_relays))
    } else {
        net3
    };
    let net = &net;
    let over_net = rt.block_on(messages(&plan, net));
    println!(
        "  {} senders over a {}-relay testnet: {over_net:.0} messages/s",
        plan.senders,
        net.relays.len()
    );
    println!(
        "  ratio network / crypto only: {:.2} (target >= 0.6); against two threads: {:.2}",
        over_net / crypto,
        over_net / both
    );

    println!("4. A 10 MiB attachment ({} blobs)", plan.attachment_blobs);
    let took = rt.block_on(attachment(&plan, net));
    println!(
        "  all {} chunk blobs wrapped, through 3 hops and in the queue after {:.2} s ({:.0} blobs/s)",
        plan.attachment_blobs,
        took.as_secs_f64(),
        plan.attachment_blobs as f64 / took.as_secs_f64(),
    );
}
