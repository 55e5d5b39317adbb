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
/// How often buffered replay tags are synced to disk. A packet is sent on
/// only after its tag is on disk, so a crash cannot reopen the replay
/// window; this bounds the extra delay per hop.
pub const REPLAY_FLUSH_INTERVAL: Duration = Duration::from_millis(20);

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
    round: u64,
    flushed: tokio::sync::watch::Receiver<Flushed>,
    mix: Arc<Mix>,
}

/// How far replay tags are on disk, and whether the relay has stopped
/// flushing them.
#[derive(Debug, Clone, Copy, Default)]
struct Flushed {
    /// The last round whose tags are on disk.
    round: u64,
    /// No flush will follow: work waiting on a later round is dropped.
    closed: bool,
}

/// Waits until tags recorded in `round` are on disk; false if the relay
/// stopped flushing first.
async fn durable(flushed: &mut tokio::sync::watch::Receiver<Flushed>, round: u64) -> bool {
    match flushed.wait_for(|f| f.round > round || f.closed).await {
        Ok(f) => f.round > round,
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
        durable(&mut self.flushed, self.round).await
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
    replay: Mutex<ReplayCache>,
    links: Mutex<HashMap<RelayAddress, Link>>,
    in_flight: std::sync::atomic::AtomicUsize,
    metrics: Arc<Metrics>,
    /// Flush round in progress (tags inserted now are durable once a
    /// later round has completed).
    round: std::sync::atomic::AtomicU64,
    /// The last round whose tags are on disk, and whether flushing ended.
    flushed: tokio::sync::watch::Sender<Flushed>,
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
            replay: Mutex::new(replay),
            links: Mutex::new(HashMap::new()),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            metrics,
            round: std::sync::atomic::AtomicU64::new(0),
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
        let seen = {
            let mut r = self
                .replay
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            r.insert(epoch, opened.tag)
        }
        .map_err(|_| self.drop_packet(ErrorCode::Internal))?;
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
                // The tag was recorded in round `r` or later: wait for a
                // completed flush after it.
                let r = self.round.load(Ordering::SeqCst);
                let mut flushed = self.flushed.subscribe();
                let me = self.clone();
                tokio::spawn(async move {
                    if delay_ms > 0 {
                        tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                    }
                    if durable(&mut flushed, r).await {
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
            round: self.round.load(Ordering::SeqCst),
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

    /// Syncs replay tags to disk and forgets expired epochs; runs until
    /// `stop` changes, then flushes a last time.
    pub async fn maintain(self: Arc<Self>, mut stop: tokio::sync::watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(REPLAY_FLUSH_INTERVAL);
        loop {
            let stopping = tokio::select! {
                _ = stop.changed() => true,
                _ = tick.tick() => false,
            };
            let t = now();
            let topo = self.topology.clone();
            let this_round = self.round.fetch_add(1, Ordering::SeqCst) + 1;
            let ok = {
                let mut r = self
                    .replay
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let ok = match r.flush() {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(error = %e, "replay cache flush failed");
                        false
                    }
                };
                r.prune(|e| topo.keep_epoch(e, t));
                ok
            };
            // Only a successful flush releases the packets waiting on it;
            // after the last one, work that came too late is dropped
            // instead of waiting for ever.
            self.flushed.send_modify(|f| {
                if ok {
                    f.round = this_round;
                }
                f.closed = stopping;
            });
            if stopping {
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
