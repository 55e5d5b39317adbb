//! The relay as an onion hop: check the key epoch and the replay tag,
//! peel one Sphinx layer (the core's `onion::process`), then either hold
//! the packet for an exponentially distributed delay and send it on to
//! the next relay, or — at the last hop — deliver the blob into the
//! mailbox queue. Tampered, replayed or undecodable packets are dropped
//! and counted, never forwarded.
//!
//! What this code learns of a packet is exactly what the Sphinx layer
//! gives it: the previous hop (the connection it arrived on), the next
//! hop, and, only at the last hop, the queue's sender id and the sealed
//! blob. Nothing here logs a packet, a tag, a queue id or an address.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postern_core::RelayAddress;
use postern_core::consts::SPHINX_PACKET_BYTES;
use postern_core::onion;
use postern_core::relay_proto::ErrorCode;
use postern_core::time::UnixTime;

use crate::hop::{self, Decision};
pub use crate::hop::{Topology, Work};
use crate::metrics::Metrics;
use crate::replay::ReplayCache;

/// Packets waiting for their delay or their next hop, beyond which new
/// ones are refused (`RateLimited`): memory stays bounded.
pub const MAX_PACKETS_IN_FLIGHT: usize = 100_000;
/// Under load (tags already waiting when a commit ends), how long the
/// next batch gathers before it is committed: forwards then leave in
/// bursts, which costs the relays far less CPU per packet than one by
/// one (BENCHMARKS.md). An idle relay commits at once.
pub const REPLAY_LINGER: Duration = Duration::from_millis(10);
/// How often expired epochs' replay tags are forgotten.
pub const REPLAY_PRUNE_INTERVAL: Duration = Duration::from_secs(1);
/// How long the committer waits before writing again after a failed
/// write (a full disk): meanwhile new packets are refused.
pub const REPLAY_RETRY: Duration = Duration::from_millis(200);

/// What the connection handler does after [`Mix::accept`]: answer `Ok`
/// at once in every case. The previous hop learns nothing from the answer
/// or its timing (a delivery, an acknowledgement and a cover packet look
/// alike to it), and storage errors never go back to it.
#[derive(Debug)]
pub enum Accepted {
    /// Scheduled for the next hop.
    Forwarding,
    /// Cover traffic that ended here: nothing to do.
    Dropped,
    /// Last-hop work to run after answering, once [`Pending::tag_synced`].
    Later(Pending),
}

/// Last-hop work held until the packet's replay tag is synced to disk, so
/// a crash cannot let a replay of it be stored or acknowledged again.
/// Counts against [`MAX_PACKETS_IN_FLIGHT`] until dropped.
pub struct Pending {
    /// The work.
    pub work: Work,
    /// The key epoch of the packet (its acknowledgement uses it too).
    pub epoch: u32,
    batch: u64,
    flushed: tokio::sync::watch::Receiver<Flushed>,
    mix: Arc<Mix>,
}

/// How far replay tags are on disk, and whether the relay has stopped
/// committing them.
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    /// Batches `0..batches` are on disk.
    batches: u64,
    /// No commit will follow: work waiting on a later batch is dropped.
    closed: bool,
}

/// Waits until the tags of `batch` are on disk; false if the relay
/// stopped committing first.
async fn durable(flushed: &mut tokio::sync::watch::Receiver<Flushed>, batch: u64) -> bool {
    match flushed.wait_for(|f| f.batches > batch || f.closed).await {
        Ok(f) => f.batches > batch,
        Err(_) => false,
    }
}

impl core::fmt::Debug for Pending {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Pending")
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.mix.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Pending {
    /// Waits until the packet's replay tag is on disk; false if the relay
    /// stops first (the work must then be dropped).
    pub async fn tag_synced(&mut self) -> bool {
        durable(&mut self.flushed, self.batch).await
    }

    /// The mix, to send an acknowledgement through.
    pub fn mix(&self) -> &Arc<Mix> {
        &self.mix
    }
}

/// Connections kept open to each next hop: packets to one relay are sent
/// over several connections at once instead of one after the other.
pub const LINK_CONNECTIONS: usize = 4;

type Slot = tokio::sync::Mutex<Option<postern_net::Connection>>;
type Link = Arc<Vec<Slot>>;

/// The onion hop.
pub struct Mix {
    topology: Arc<dyn Topology>,
    mean_delay_ms: u64,
    replay: Mutex<Tags>,
    /// Wakes the committer when a tag is recorded or the relay stops.
    wake: std::sync::Condvar,
    /// The last commit failed (full disk): refuse packets until one works.
    commit_failing: std::sync::atomic::AtomicBool,
    links: Mutex<HashMap<RelayAddress, Link>>,
    in_flight: std::sync::atomic::AtomicUsize,
    metrics: Arc<Metrics>,
    /// How far batches of tags are on disk, and whether committing ended.
    flushed: tokio::sync::watch::Sender<Flushed>,
}

/// The replay cache and the number of the batch its new tags will go to.
struct Tags {
    cache: ReplayCache,
    /// Tags recorded now go to disk with this batch.
    batch: u64,
    /// The relay is stopping: commit what is left, then end.
    stop: bool,
    /// The committer sleeps until woken (no syscall to wake it otherwise).
    committer_waiting: bool,
}

impl core::fmt::Debug for Mix {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Mix")
    }
}

fn now() -> UnixTime {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
    UnixTime(ms)
}

impl Mix {
    /// A mix over `topology` with the replay cache in `replay`.
    pub fn new(
        topology: Arc<dyn Topology>,
        mean_delay_ms: u64,
        replay: ReplayCache,
        metrics: Arc<Metrics>,
    ) -> Mix {
        Mix {
            topology,
            mean_delay_ms: mean_delay_ms.min(onion::MAX_MEAN_DELAY_MS),
            replay: Mutex::new(Tags {
                cache: replay,
                batch: 0,
                stop: false,
                committer_waiting: false,
            }),
            wake: std::sync::Condvar::new(),
            commit_failing: std::sync::atomic::AtomicBool::new(false),
            links: Mutex::new(HashMap::new()),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            metrics,
            flushed: tokio::sync::watch::Sender::new(Flushed::default()),
        }
    }

    fn drop_packet(&self, code: ErrorCode) -> ErrorCode {
        self.metrics.packets_dropped.fetch_add(1, Ordering::Relaxed);
        code
    }

    /// Checks and peels a packet. A forward is scheduled here; last-hop
    /// work is returned as [`Accepted::Later`] for the caller to run once
    /// its tag is synced. The caller answers `Ok` at once in every case.
    pub fn accept(
        self: &Arc<Self>,
        epoch: u32,
        packet: &[u8; SPHINX_PACKET_BYTES],
    ) -> Result<Accepted, ErrorCode> {
        let t = now();
        // Peel first (cheap to refuse garbage without touching the cache),
        // then record the tag: only authentic packets take cache space.
        let opened = hop::open(
            self.topology.as_ref(),
            self.mean_delay_ms,
            epoch,
            packet,
            t,
            &mut rand::rng(),
        )
        .map_err(|c| self.drop_packet(c))?;
        if self.commit_failing.load(Ordering::Relaxed) {
            // Tags cannot reach the disk: taking the packet would either
            // hold it for ever or forward it unprotected.
            return Err(self.drop_packet(ErrorCode::StorageFull));
        }
        let (seen, batch, wake) = {
            let mut r = self
                .replay
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let seen = r.cache.insert(epoch, opened.tag);
            (seen, r.batch, r.committer_waiting)
        };
        let seen = seen.map_err(|e| {
            self.drop_packet(if e.kind() == std::io::ErrorKind::StorageFull {
                ErrorCode::StorageFull
            } else {
                ErrorCode::Internal
            })
        })?;
        if wake && seen == crate::replay::Seen::Fresh {
            self.wake.notify_one();
        }
        let work = match hop::decide(self.topology.as_ref(), opened, seen)
            .map_err(|c| self.drop_packet(c))?
        {
            Decision::Later(work) => work,
            Decision::Drop => {
                // Refused exactly when real last-hop work would be, so a
                // busy relay's answer does not tell cover from a message.
                self.take_slot()?;
                self.in_flight.fetch_sub(1, Ordering::Relaxed);
                return Ok(Accepted::Dropped);
            }
            Decision::Forward {
                next,
                delay_ms,
                packet,
            } => {
                self.take_slot()?;
                let mut flushed = self.flushed.subscribe();
                let me = self.clone();
                tokio::spawn(async move {
                    if delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    }
                    if durable(&mut flushed, batch).await {
                        me.send_on(&next, epoch, &packet).await;
                    }
                    me.in_flight.fetch_sub(1, Ordering::Relaxed);
                });
                return Ok(Accepted::Forwarding);
            }
        };
        self.take_slot()?;
        Ok(Accepted::Later(Pending {
            work,
            epoch,
            batch,
            flushed: self.flushed.subscribe(),
            mix: self.clone(),
        }))
    }

    /// One more packet in flight, or `RateLimited` when there are too many.
    fn take_slot(&self) -> Result<(), ErrorCode> {
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_PACKETS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            return Err(self.drop_packet(ErrorCode::RateLimited));
        }
        Ok(())
    }

    /// Counts a last-hop packet whose blob could not be stored.
    pub fn count_dropped(&self) {
        self.metrics.packets_dropped.fetch_add(1, Ordering::Relaxed);
    }

    /// Sends a delivery acknowledgement through the sender's reply block
    /// (after the blob is durably stored). A bad block is dropped.
    pub fn acknowledge(self: &Arc<Self>, epoch: u32, block: &onion::AckBlock) {
        let Ok((addr, packet)) = hop::acknowledgement(self.topology.as_ref(), block) else {
            self.metrics.packets_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        if self.in_flight.fetch_add(1, Ordering::Relaxed) >= MAX_PACKETS_IN_FLIGHT {
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            self.metrics.packets_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            me.send_on(&addr, epoch, &packet).await;
            me.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }

    fn link(&self, addr: &RelayAddress) -> Link {
        let mut links = self
            .links
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        links
            .entry(addr.clone())
            .or_insert_with(|| Arc::new((0..LINK_CONNECTIONS).map(|_| Slot::default()).collect()))
            .clone()
    }

    /// Sends on over a kept-open connection to the next relay, with one
    /// reconnect if it broke.
    async fn send_on(&self, addr: &RelayAddress, epoch: u32, packet: &[u8; SPHINX_PACKET_BYTES]) {
        let link = self.link(addr);
        // A free connection if there is one, else wait for a random one.
        let mut conn = match link.iter().find_map(|s| s.try_lock().ok()) {
            Some(c) => c,
            None => {
                let i = usize::try_from(rand::random::<u32>()).unwrap_or(0) % LINK_CONNECTIONS;
                match link.get(i) {
                    Some(s) => s.lock().await,
                    None => return,
                }
            }
        };
        for _attempt in 0..2 {
            if conn.is_none() {
                match postern_net::connect(addr).await {
                    Ok(c) => *conn = Some(c),
                    Err(_) => break,
                }
            }
            let Some(c) = conn.as_mut() else { break };
            match c.forward(epoch, packet).await {
                Ok(()) => {
                    self.metrics
                        .packets_forwarded
                        .fetch_add(1, Ordering::Relaxed);
                    return;
                }
                // The next hop refused this packet: do not retry it.
                Err(postern_net::NetError::Relay(_)) => break,
                // The link broke: reconnect once.
                Err(_) => *conn = None,
            }
        }
        self.metrics.packets_dropped.fetch_add(1, Ordering::Relaxed);
        tracing::debug!("onion packet dropped: next hop unreachable or refused it");
    }

    /// Commits replay tags to disk and forgets expired epochs, on a
    /// thread of its own, until `stop` changes; then commits what is
    /// left and ends.
    ///
    /// Adaptive group commit: when idle, a commit starts as soon as a tag
    /// waits, so a packet waits for one `fdatasync`; when tags are
    /// already waiting as a commit ends (load), the next batch gathers
    /// for [`REPLAY_LINGER`] first, so many packets share one sync and
    /// their forwards leave together.
    pub async fn maintain(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let me = self.clone();
        let thread = std::thread::Builder::new()
            .name("postern-replay".into())
            .spawn(move || me.commit_loop());
        let thread = match thread {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(error = %e, "cannot start the replay-tag committer");
                self.flushed.send_modify(|f| f.closed = true);
                return;
            }
        };
        let _ = stop.wait_for(|s| *s).await;
        self.lock_tags().stop = true;
        self.wake.notify_all();
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
    }

    fn lock_tags(&self) -> std::sync::MutexGuard<'_, Tags> {
        self.replay
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn commit_loop(&self) {
        let mut pruned = std::time::Instant::now();
        // A batch whose write failed, written again before any other.
        let mut retry: Option<(crate::replay::Batch, u64)> = None;
        loop {
            let (mut batch, number, stopping) = {
                let mut t = self.lock_tags();
                match retry.take() {
                    Some((b, n)) => (b, n, t.stop),
                    None => {
                        // Tags already waiting when the previous commit
                        // ends mean load: let the batch gather a little
                        // longer (fewer, larger commits and bursts of
                        // forwards). An idle relay commits at once.
                        if t.cache.has_pending() && !t.stop {
                            drop(t);
                            std::thread::sleep(REPLAY_LINGER);
                            t = self.lock_tags();
                        }
                        while !t.stop
                            && !t.cache.has_pending()
                            && pruned.elapsed() < REPLAY_PRUNE_INTERVAL
                        {
                            let left = REPLAY_PRUNE_INTERVAL.saturating_sub(pruned.elapsed());
                            t.committer_waiting = true;
                            t = match self.wake.wait_timeout(t, left) {
                                Ok((g, _)) => g,
                                Err(p) => p.into_inner().0,
                            };
                            t.committer_waiting = false;
                        }
                        if pruned.elapsed() >= REPLAY_PRUNE_INTERVAL {
                            let now = now();
                            let topo = self.topology.clone();
                            t.cache.prune(|e| topo.keep_epoch(e, now));
                            pruned = std::time::Instant::now();
                        }
                        let n = t.batch;
                        let b = t.cache.take_batch();
                        if !b.is_empty() {
                            t.batch += 1;
                        }
                        (b, n, t.stop)
                    }
                }
            };
            if !batch.is_empty() {
                match batch.write() {
                    Ok(()) => {
                        self.commit_failing.store(false, Ordering::Relaxed);
                        self.metrics.replay_commits.fetch_add(1, Ordering::Relaxed);
                        self.flushed.send_modify(|f| f.batches = number + 1);
                    }
                    Err(e) => {
                        if !self.commit_failing.swap(true, Ordering::Relaxed) {
                            tracing::warn!(error = %e, "replay tags cannot be written: refusing packets");
                        }
                        self.metrics
                            .replay_commit_failures
                            .fetch_add(1, Ordering::Relaxed);
                        if !stopping {
                            retry = Some((batch, number));
                            std::thread::sleep(REPLAY_RETRY);
                            continue;
                        }
                    }
                }
            }
            if stopping && !self.lock_tags().cache.has_pending() {
                // No commit follows: work waiting on a later batch is
                // dropped instead of waiting for ever.
                self.flushed.send_modify(|f| f.closed = true);
                return;
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;
    use postern_core::consts::BLOB_BYTES;
    use postern_core::crypto::sphinx::NodeSecret;
    use postern_core::onion::{Node, Path};
    use zeroize::Zeroizing;

    /// One relay that is the last hop of every test packet.
    struct Alone {
        id: [u8; 32],
        secret: Zeroizing<[u8; 32]>,
    }

    impl Topology for Alone {
        fn own_id(&self) -> Option<[u8; 32]> {
            Some(self.id)
        }
        fn address_of(&self, _: &[u8; 32]) -> Option<RelayAddress> {
            None
        }
        fn secret(&self, epoch: u32, _: UnixTime) -> Option<Zeroizing<[u8; 32]>> {
            (epoch == 1).then(|| self.secret.clone())
        }
        fn keep_epoch(&self, epoch: u32, _: UnixTime) -> bool {
            epoch == 1
        }
    }

    struct Fixture {
        mix: Arc<Mix>,
        path: Path,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let mut rng = rand::rng();
        let secret = NodeSecret::generate(&mut rng);
        let id: [u8; 32] = rand::random();
        let node = Node {
            id,
            address: RelayAddress::parse("postern-relay://127.0.0.1:4443").unwrap(),
            roles: onion::ROLE_MAILBOX,
            key: secret.public(),
        };
        let dir = tempfile::tempdir().unwrap();
        let topology = Alone {
            id,
            secret: secret.to_bytes(),
        };
        let mix = Arc::new(Mix::new(
            Arc::new(topology),
            0,
            ReplayCache::open(dir.path()).unwrap(),
            Arc::new(Metrics::default()),
        ));
        Fixture {
            mix,
            path: Path { nodes: vec![node] },
            _dir: dir,
        }
    }

    fn delivery(path: &Path) -> Box<[u8; SPHINX_PACKET_BYTES]> {
        let blob = Box::new([7u8; BLOB_BYTES]);
        onion::wrap(path, &[9u8; 16], &blob, &mut rand::rng()).unwrap()
    }

    fn cover(path: &Path) -> Box<[u8; SPHINX_PACKET_BYTES]> {
        onion::cover_packet(path, &mut rand::rng()).unwrap()
    }

    #[tokio::test]
    async fn a_busy_last_hop_refuses_cover_and_messages_alike() {
        let f = fixture();
        f.mix
            .in_flight
            .store(MAX_PACKETS_IN_FLIGHT, Ordering::Relaxed);
        let real = f.mix.accept(1, &delivery(&f.path));
        let dropped = f.mix.accept(1, &cover(&f.path));
        assert!(
            matches!(real, Err(ErrorCode::RateLimited)),
            "message: {real:?}"
        );
        assert!(
            matches!(dropped, Err(ErrorCode::RateLimited)),
            "cover: {dropped:?}"
        );
        assert_eq!(
            f.mix.in_flight.load(Ordering::Relaxed),
            MAX_PACKETS_IN_FLIGHT
        );

        // Not busy: both are taken, and cover holds no slot afterwards.
        f.mix.in_flight.store(0, Ordering::Relaxed);
        let real = f.mix.accept(1, &delivery(&f.path)).unwrap();
        assert!(matches!(real, Accepted::Later(_)));
        assert_eq!(f.mix.in_flight.load(Ordering::Relaxed), 1);
        let dropped = f.mix.accept(1, &cover(&f.path)).unwrap();
        assert!(matches!(dropped, Accepted::Dropped));
        assert_eq!(f.mix.in_flight.load(Ordering::Relaxed), 1);
        drop(real);
        assert_eq!(f.mix.in_flight.load(Ordering::Relaxed), 0);
    }

    /// With nothing else to do, each packet waits for the commit of its
    /// own tag (no timer tick): once `tag_synced` says so, the tag is in
    /// the epoch's file, and the same packet again is refused.
    #[tokio::test]
    async fn work_goes_on_once_its_tag_is_on_disk_and_a_replay_is_refused() {
        let f = fixture();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let maintain = tokio::spawn(f.mix.clone().maintain(stop_rx));
        let file = f._dir.path().join("replay-1");
        for i in 1..=3u64 {
            let packet = delivery(&f.path);
            let Accepted::Later(mut work) = f.mix.accept(1, &packet).unwrap() else {
                panic!("expected last-hop work");
            };
            assert!(work.tag_synced().await);
            assert_eq!(std::fs::metadata(&file).unwrap().len(), 32 * i);
            let again = f.mix.accept(1, &packet);
            assert!(matches!(again, Err(ErrorCode::ReplayedPacket)), "{again:?}");
        }
        assert_eq!(f.mix.metrics.replay_commits.load(Ordering::Relaxed), 3);
        stop_tx.send(true).unwrap();
        maintain.await.unwrap();
    }

    #[tokio::test]
    async fn work_that_comes_after_the_last_flush_is_dropped_not_left_waiting() {
        let f = fixture();
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let maintain = tokio::spawn(f.mix.clone().maintain(stop_rx));
        let Accepted::Later(mut before) = f.mix.accept(1, &delivery(&f.path)).unwrap() else {
            panic!("expected last-hop work");
        };
        stop_tx.send(true).unwrap();
        maintain.await.unwrap();
        // Its tag went to disk with the last flush: it may go on.
        assert!(before.tag_synced().await);
        let Accepted::Later(mut after) = f.mix.accept(1, &delivery(&f.path)).unwrap() else {
            panic!("expected last-hop work");
        };
        // No flush will ever cover this one's tag.
        let synced = tokio::time::timeout(Duration::from_secs(30), after.tag_synced())
            .await
            .expect("waited for a flush that will never come");
        assert!(!synced);
    }
}
