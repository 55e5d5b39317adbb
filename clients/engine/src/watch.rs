//! Which relays a client collects from, and how: a watching client stays
//! connected to one relay (its home relay when it has queues there) and
//! is notified of new items; queues left on other relays — from before a
//! change of home relay — are polled on the [`Schedule`](crate::Schedule)'s
//! `PollOthers` timer. A one-shot sync fetches every relay once.
//!
//! [`Watcher`] is the whole watch loop with no I/O: it owns the plan and
//! the [`Schedule`](crate::Schedule), and says what to do next as a
//! [`Task`] (`poll_action`), when to wake (`poll_timeout`, then
//! `handle_timeout`), and takes what happened to the home connection and
//! its notifications (`handle`). The shell only carries tasks out.
//!
//! ```text
//! start:         Connect, FetchOther(each other relay)
//! Connected:     FetchHome(all watched queues)      (items that came unheard)
//! Notified(q):   FetchHome(q)     q one of ours, not already pending
//! Lost:          home tasks dropped; Connect after 1 s, backoff to 60 s
//! timers:        Ping (only while connected), Resend, FetchOther, Cover
//! ```

use std::collections::{BTreeMap, VecDeque};

use postern_core::RelayAddress;
use postern_core::courier::OwnQueue;
use postern_core::relay_proto::QueueId;
use rand_core::{CryptoRng, RngCore};

use crate::schedule::{Due, Millis, Schedule, WatchConfig};

/// The client's queues grouped by relay, one group per relay, in a stable
/// order (by address).
pub fn by_relay(queues: Vec<OwnQueue>) -> Vec<Vec<OwnQueue>> {
    let mut groups: BTreeMap<String, Vec<OwnQueue>> = BTreeMap::new();
    for q in queues {
        groups.entry(q.relay.to_string()).or_default().push(q);
    }
    groups.into_values().collect()
}

/// What a watching client does with its queues.
#[derive(Debug)]
pub struct Plan {
    /// Subscribed to over one lasting connection (all on one relay).
    pub watched: Vec<OwnQueue>,
    /// Polled, one group per other relay.
    pub polled: Vec<Vec<OwnQueue>>,
}

impl Plan {
    /// A plan with no queue: nothing to watch or poll yet (a new profile);
    /// a [`Watcher`] for it still runs the timers (resends, cover).
    pub fn empty() -> Plan {
        Plan {
            watched: Vec::new(),
            polled: Vec::new(),
        }
    }

    /// Whether it watches the same queues on the same relay as `other`
    /// and polls the same groups.
    fn same_as(&self, other: &Plan) -> bool {
        let ids = |qs: &[OwnQueue]| -> Vec<(String, QueueId)> {
            qs.iter()
                .map(|q| (q.relay.to_string(), q.recipient_id))
                .collect()
        };
        ids(&self.watched) == ids(&other.watched)
            && self.polled.len() == other.polled.len()
            && self
                .polled
                .iter()
                .zip(&other.polled)
                .all(|(a, b)| ids(a) == ids(b))
    }

    /// How many queues are polled rather than watched.
    pub fn polled_queues(&self) -> usize {
        self.polled.iter().map(Vec::len).sum()
    }
}

/// Watches the home relay's queues when there are any there, else the
/// first relay's (in address order); polls the rest. `None` when the
/// client has no queue at all.
pub fn plan(queues: Vec<OwnQueue>, home: Option<&RelayAddress>) -> Option<Plan> {
    let mut groups = by_relay(queues);
    let at = home
        .and_then(|h| {
            groups
                .iter()
                .position(|g| g.first().is_some_and(|q| &q.relay == h))
        })
        .unwrap_or(0);
    if at >= groups.len() {
        return None;
    }
    let watched = groups.remove(at);
    Some(Plan {
        watched,
        polled: groups,
    })
}

/// What a watching client does next; the shell carries it out and
/// reports back through [`Watcher::handle`].
#[derive(Debug)]
pub enum Task<'a> {
    /// Open the lasting connection to `relay` and subscribe to `queues`;
    /// report [`WatchInput::Connected`] or [`WatchInput::ConnectFailed`].
    Connect {
        /// The watched relay.
        relay: &'a RelayAddress,
        /// The queues to subscribe to.
        queues: &'a [OwnQueue],
    },
    /// Fetch `queues` over the lasting connection (a
    /// [`FetchFlow`](crate::fetch::FetchFlow)) and send the receipts owed;
    /// a network failure is [`WatchInput::Lost`].
    FetchHome {
        /// Every watched queue, or the one notified.
        queues: &'a [OwnQueue],
    },
    /// Fetch `queues` (all on one other relay) over a connection of their
    /// own, closed after; a failure is only noted, the next round tries
    /// again.
    FetchOther {
        /// One polled group.
        queues: &'a [OwnQueue],
    },
    /// Ping the lasting connection; a failure is [`WatchInput::Lost`].
    Ping,
    /// Send again what the onion network has not acknowledged in time.
    Resend,
    /// Send one cover packet through the links everything else uses.
    Cover,
}

/// What happened, as the shell reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchInput {
    /// The lasting connection is up and subscribed.
    Connected,
    /// Connecting (or subscribing) failed.
    ConnectFailed,
    /// The lasting connection broke (during any task on it).
    Lost,
    /// The watched relay says a queue has new items.
    Notified(QueueId),
}

/// What the shell should tell the user after [`Watcher::handle`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reaction {
    /// Nothing to say.
    Quiet,
    /// Watching has started: the first connection is up.
    Started,
    /// The connection is back after a loss.
    Reconnected,
    /// The relay is out of reach; trying again in this many ms.
    RetryIn(u64),
    /// The first connection failed: watching cannot start.
    GiveUp,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Connect,
    /// All watched queues, or the one at this index.
    FetchHome(Option<usize>),
    FetchOther(usize),
    Ping,
    Resend,
    Cover,
}

impl Pending {
    /// Whether the task needs the lasting connection.
    fn on_home(self) -> bool {
        matches!(self, Pending::FetchHome(_) | Pending::Ping)
    }
}

/// The watch loop of a client, sans-IO.
#[derive(Debug)]
pub struct Watcher {
    plan: Plan,
    schedule: Schedule,
    pending: VecDeque<Pending>,
    connected: bool,
    started: bool,
    keep_trying: bool,
}

impl Watcher {
    /// A watcher for `plan` with `cfg` (its `others_poll_ms` is ignored
    /// when the plan polls no other relay), starting at `now`.
    pub fn new<R: RngCore + CryptoRng>(
        plan: Plan,
        mut cfg: WatchConfig,
        now: Millis,
        rng: &mut R,
    ) -> Watcher {
        if plan.polled.is_empty() {
            cfg.others_poll_ms = None;
        }
        let mut pending = VecDeque::from([Pending::Connect]);
        pending.extend((0..plan.polled.len()).map(Pending::FetchOther));
        // Pings wait for `Connected` (a keepalive before is ignored).
        let schedule = Schedule::new(cfg, now, rng);
        Watcher {
            plan,
            schedule,
            pending,
            connected: false,
            started: false,
            keep_trying: false,
        }
    }

    /// Never gives up: a first connection that fails is retried with the
    /// same backoff as a lost one (for a client that stays open, where a
    /// relay out of reach at start is no reason to stop).
    pub fn keep_trying(mut self) -> Watcher {
        self.keep_trying = true;
        self
    }

    /// The queues watched and polled.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// Whether the lasting connection is up.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    /// When [`Watcher::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Millis {
        self.schedule.poll_timeout()
    }

    fn push(&mut self, t: Pending) {
        if !self.pending.contains(&t) {
            self.pending.push_back(t);
        }
    }

    /// Turns every timer due at `now` into tasks.
    pub fn handle_timeout<R: RngCore + CryptoRng>(&mut self, now: Millis, rng: &mut R) {
        while let Some(due) = self.schedule.poll_due(now, rng) {
            match due {
                Due::Keepalive if self.connected => self.push(Pending::Ping),
                Due::Keepalive => {}
                Due::Reconnect => self.push(Pending::Connect),
                Due::Resend => self.push(Pending::Resend),
                Due::PollOthers => {
                    for i in 0..self.plan.polled.len() {
                        self.push(Pending::FetchOther(i));
                    }
                }
                Due::Cover => self.push(Pending::Cover),
            }
        }
    }

    /// The next task, in order; `None` until something happens or a timer
    /// comes due.
    pub fn poll_action(&mut self) -> Option<Task<'_>> {
        loop {
            let t = self.pending.pop_front()?;
            let task = match t {
                Pending::Connect => match self.plan.watched.first() {
                    Some(q) => Task::Connect {
                        relay: &q.relay,
                        queues: &self.plan.watched,
                    },
                    None => continue,
                },
                Pending::FetchHome(None) => Task::FetchHome {
                    queues: &self.plan.watched,
                },
                Pending::FetchHome(Some(i)) => match self.plan.watched.get(i..=i) {
                    Some(queues) => Task::FetchHome { queues },
                    None => continue,
                },
                Pending::FetchOther(i) => match self.plan.polled.get(i) {
                    Some(queues) => Task::FetchOther { queues },
                    None => continue,
                },
                Pending::Ping => Task::Ping,
                Pending::Resend => Task::Resend,
                Pending::Cover => Task::Cover,
            };
            return Some(task);
        }
    }

    /// Takes what happened at `now`.
    pub fn handle(&mut self, now: Millis, input: WatchInput) -> Reaction {
        match input {
            WatchInput::Connected => {
                self.connected = true;
                self.schedule.connected(now);
                self.pending.retain(|t| *t != Pending::Connect);
                // What came while nobody listened, before anything else.
                self.pending.retain(|t| !matches!(t, Pending::FetchHome(_)));
                self.pending.push_front(Pending::FetchHome(None));
                if core::mem::replace(&mut self.started, true) {
                    Reaction::Reconnected
                } else {
                    Reaction::Started
                }
            }
            WatchInput::ConnectFailed => {
                self.drop_home();
                if !self.started && !self.keep_trying {
                    return Reaction::GiveUp;
                }
                Reaction::RetryIn(self.schedule.connect_failed(now))
            }
            WatchInput::Lost => {
                if !self.connected {
                    return Reaction::Quiet;
                }
                self.drop_home();
                self.schedule.lost(now);
                Reaction::RetryIn(crate::schedule::RECONNECT_MIN_MS)
            }
            WatchInput::Notified(id) => {
                if self.connected
                    && let Some(i) = self.plan.watched.iter().position(|q| q.recipient_id == id)
                    && !self.pending.contains(&Pending::FetchHome(None))
                {
                    self.push(Pending::FetchHome(Some(i)));
                }
                Reaction::Quiet
            }
        }
    }

    /// The client's queues changed (a contact added, a queue moved):
    /// watch and poll by `plan` from now on. When the watched queues
    /// changed, the lasting connection is to be dropped and made again
    /// with the new subscriptions at once (returns true: the shell drops
    /// it); new polled groups are fetched at once.
    pub fn replan(&mut self, plan: Plan) -> bool {
        if plan.same_as(&self.plan) {
            return false;
        }
        let ids = |qs: &[OwnQueue]| -> Vec<QueueId> { qs.iter().map(|q| q.recipient_id).collect() };
        let rewatch = ids(&plan.watched) != ids(&self.plan.watched);
        let known: Vec<Vec<QueueId>> = self.plan.polled.iter().map(|g| ids(g)).collect();
        self.plan = plan;
        // Indices into the old groups mean nothing now: pending polls are
        // made again for every group, at once only for a group not polled
        // before (the others wait for their period).
        let pending_polls = self
            .pending
            .iter()
            .any(|t| matches!(t, Pending::FetchOther(_)));
        self.pending
            .retain(|t| !matches!(t, Pending::FetchOther(_)));
        for i in 0..self.plan.polled.len() {
            let new = self
                .plan
                .polled
                .get(i)
                .is_some_and(|g| !known.contains(&ids(g)));
            if new || pending_polls {
                self.push(Pending::FetchOther(i));
            }
        }
        if rewatch {
            self.drop_home();
            self.pending.push_front(Pending::Connect);
        }
        rewatch
    }

    /// The lasting connection is gone: what needed it goes too.
    fn drop_home(&mut self) {
        self.connected = false;
        self.pending
            .retain(|t| !t.on_home() && *t != Pending::Connect);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::testing::{queue, relay};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    fn own(r: &mut ChaCha20Rng, at: u16) -> OwnQueue {
        let q = queue(r, at);
        OwnQueue {
            relay: q.relay,
            recipient_id: q.recipient_id,
            queue_key: q.keys.queue_key,
            contact: None,
            acks: false,
        }
    }

    #[test]
    fn no_queue_is_no_plan() {
        assert!(plan(Vec::new(), Some(&relay(1))).is_none());
        assert!(plan(Vec::new(), None).is_none());
        assert!(by_relay(Vec::new()).is_empty());
    }

    #[test]
    fn the_home_relay_is_watched_and_every_other_relay_polled_once() {
        let mut r = ChaCha20Rng::seed_from_u64(1);
        let qs = vec![
            own(&mut r, 3),
            own(&mut r, 1),
            own(&mut r, 2),
            own(&mut r, 1),
        ];
        let p = plan(qs, Some(&relay(2))).unwrap();
        assert_eq!(p.watched.len(), 1);
        assert_eq!(p.watched[0].relay, relay(2));
        assert_eq!(p.polled.len(), 2);
        assert_eq!(p.polled_queues(), 3);
        for g in &p.polled {
            assert!(
                g.iter().all(|q| q.relay == g[0].relay),
                "one relay per group"
            );
            assert_ne!(g[0].relay, relay(2));
        }
    }

    #[test]
    fn without_queues_at_home_the_first_relay_is_watched() {
        let qs = || {
            let mut r = ChaCha20Rng::seed_from_u64(2);
            vec![own(&mut r, 3), own(&mut r, 1)]
        };
        let p = plan(qs(), Some(&relay(9))).unwrap();
        assert_eq!(p.watched[0].relay, relay(1));
        assert_eq!(p.polled_queues(), 1);
        let q = plan(qs(), None).unwrap();
        assert_eq!(q.watched[0].relay, p.watched[0].relay);
    }

    fn cfg(cover_per_minute: u32) -> WatchConfig {
        WatchConfig {
            ack_timeout_ms: 30_000,
            cover_per_minute,
            others_poll_ms: Some(20_000),
            keepalive_ms: 60_000,
        }
    }

    /// Home relay 1 with two queues, relays 2 and 3 with one each.
    fn watcher(cover_per_minute: u32, r: &mut ChaCha20Rng) -> Watcher {
        let qs = vec![own(r, 1), own(r, 2), own(r, 1), own(r, 3)];
        let p = plan(qs, Some(&relay(1))).unwrap();
        Watcher::new(p, cfg(cover_per_minute), Millis(0), r)
    }

    /// Every task now pending, as labels.
    fn tasks(w: &mut Watcher) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(t) = w.poll_action() {
            out.push(match t {
                Task::Connect { relay: r, queues } => {
                    assert_eq!(*r, relay(1));
                    format!("connect:{}", queues.len())
                }
                Task::FetchHome { queues } => format!("home:{}", queues.len()),
                Task::FetchOther { queues } => format!("other:{}", queues[0].relay),
                Task::Ping => "ping".into(),
                Task::Resend => "resend".into(),
                Task::Cover => "cover".into(),
            });
        }
        out
    }

    /// Advances virtual time to `to` in timer steps, collecting tasks.
    fn run_to(w: &mut Watcher, to: u64, r: &mut ChaCha20Rng) -> Vec<(u64, String)> {
        let mut out = Vec::new();
        loop {
            let t = w.poll_timeout().0;
            if t > to {
                return out;
            }
            w.handle_timeout(Millis(t), r);
            out.extend(tasks(w).into_iter().map(|k| (t, k)));
        }
    }

    #[test]
    fn a_first_connection_that_fails_gives_up_and_nothing_needs_it_before_it_is_up() {
        let mut r = ChaCha20Rng::seed_from_u64(3);
        let mut w = watcher(0, &mut r);
        let first = tasks(&mut w);
        assert_eq!(first[0], "connect:2");
        assert_eq!(first.len(), 3, "then every other relay once: {first:?}");
        assert!(first[1..].iter().all(|t| t.starts_with("other:")));
        // A notification or a keepalive before the connection is nothing.
        w.handle(
            Millis(1),
            WatchInput::Notified(w.plan.watched[0].recipient_id),
        );
        let later = run_to(&mut w, 120_000, &mut r);
        assert!(
            later
                .iter()
                .all(|(_, t)| t != "ping" && !t.starts_with("home")),
            "{later:?}"
        );
        assert_eq!(
            w.handle(Millis(2), WatchInput::ConnectFailed),
            Reaction::GiveUp
        );
        assert!(!w.is_connected());
    }

    #[test]
    fn on_connecting_what_came_unheard_is_fetched_first_and_notifications_are_ours_only() {
        let mut r = ChaCha20Rng::seed_from_u64(4);
        let mut w = watcher(0, &mut r);
        assert_eq!(tasks(&mut w).len(), 3);
        w.handle_timeout(Millis(0), &mut r); // the first resend round
        assert_eq!(
            w.handle(Millis(0), WatchInput::Connected),
            Reaction::Started
        );
        assert_eq!(tasks(&mut w), ["home:2", "resend"], "the fetch goes first");
        // A queue that is not ours (a hostile or confused relay) is ignored.
        let mut other = ChaCha20Rng::seed_from_u64(99);
        let stranger = own(&mut other, 1).recipient_id;
        w.handle(Millis(5), WatchInput::Notified(stranger));
        assert!(tasks(&mut w).is_empty());
        // Ours: fetched alone, and a burst of notifications is one fetch.
        let id = w.plan.watched[1].recipient_id;
        for _ in 0..50 {
            w.handle(Millis(6), WatchInput::Notified(id));
        }
        assert_eq!(tasks(&mut w), ["home:1"]);
        // A keepalive once connected.
        let t = run_to(&mut w, 60_000, &mut r);
        assert!(t.contains(&(60_000, "ping".into())), "{t:?}");
    }

    #[test]
    fn a_new_queue_at_home_resubscribes_at_once_and_the_same_plan_changes_nothing() {
        // The same queues each time (from the same seed), and more.
        let queues = |at: &[u16]| -> Plan {
            let mut q = ChaCha20Rng::seed_from_u64(99);
            plan(
                at.iter().map(|a| own(&mut q, *a)).collect(),
                Some(&relay(1)),
            )
            .unwrap()
        };
        let mut r = ChaCha20Rng::seed_from_u64(11);
        let mut w = Watcher::new(queues(&[1, 2]), cfg(0), Millis(0), &mut r);
        tasks(&mut w);
        w.handle(Millis(0), WatchInput::Connected);
        tasks(&mut w);
        assert!(!w.replan(queues(&[1, 2])));
        assert!(tasks(&mut w).is_empty());
        assert!(w.is_connected());
        // A contact added: a second queue on the watched relay.
        assert!(w.replan(queues(&[1, 2, 1])));
        assert!(!w.is_connected(), "the shell drops the old connection");
        assert_eq!(tasks(&mut w), ["connect:2"]);
        assert_eq!(
            w.handle(Millis(5), WatchInput::Connected),
            Reaction::Reconnected
        );
        assert_eq!(tasks(&mut w), ["home:2"]);
    }

    #[test]
    fn an_empty_plan_waits_for_a_queue_and_a_persistent_watcher_never_gives_up() {
        let mut r = ChaCha20Rng::seed_from_u64(12);
        let mut w = Watcher::new(Plan::empty(), cfg(0), Millis(0), &mut r).keep_trying();
        assert!(tasks(&mut w).is_empty(), "nothing to connect to");
        let q = vec![own(&mut r, 1)];
        assert!(w.replan(plan(q, Some(&relay(1))).unwrap()));
        assert_eq!(tasks(&mut w), ["connect:1"]);
        // The first connection fails: retried with backoff, not given up.
        assert_eq!(
            w.handle(Millis(1), WatchInput::ConnectFailed),
            Reaction::RetryIn(2_000)
        );
        let t = run_to(&mut w, 2_001, &mut r);
        assert!(t.contains(&(2_001, "connect:1".into())), "{t:?}");
        assert_eq!(
            w.handle(Millis(2_001), WatchInput::Connected),
            Reaction::Started
        );
    }

    #[test]
    fn a_lost_connection_drops_its_tasks_and_reconnects_with_backoff() {
        let mut r = ChaCha20Rng::seed_from_u64(5);
        let mut w = watcher(0, &mut r);
        tasks(&mut w);
        w.handle(Millis(0), WatchInput::Connected);
        tasks(&mut w);
        let id = w.plan.watched[0].recipient_id;
        w.handle(Millis(10), WatchInput::Notified(id));
        assert_eq!(
            w.handle(Millis(10), WatchInput::Lost),
            Reaction::RetryIn(1_000)
        );
        assert!(tasks(&mut w).is_empty(), "the fetch needed the connection");
        // A second report of the same loss changes nothing.
        assert_eq!(w.handle(Millis(11), WatchInput::Lost), Reaction::Quiet);
        let t = run_to(&mut w, 1_009, &mut r);
        assert!(!t.iter().any(|(_, k)| k.starts_with("connect")), "{t:?}");
        let t = run_to(&mut w, 1_010, &mut r);
        assert_eq!(t, [(1_010, "connect:2".into())]);
        // Each failure waits twice as long, up to a minute.
        let mut waits = Vec::new();
        let mut now = 1_010;
        for _ in 0..8 {
            let Reaction::RetryIn(ms) = w.handle(Millis(now), WatchInput::ConnectFailed) else {
                panic!("a reconnection failure is not the end");
            };
            waits.push(ms);
            now += ms;
            let t = run_to(&mut w, now, &mut r);
            assert!(t.contains(&(now, "connect:2".into())), "{t:?}");
        }
        assert_eq!(
            waits,
            [2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000]
        );
        assert_eq!(
            w.handle(Millis(now), WatchInput::Connected),
            Reaction::Reconnected
        );
        assert_eq!(tasks(&mut w)[0], "home:2", "resubscribed, then fetched");
    }

    #[test]
    fn cover_resends_and_polls_go_on_while_the_connection_is_down() {
        let mut r = ChaCha20Rng::seed_from_u64(6);
        let mut w = watcher(6, &mut r);
        tasks(&mut w);
        w.handle(Millis(0), WatchInput::Connected);
        tasks(&mut w);
        w.handle(Millis(0), WatchInput::Lost);
        // Ten minutes with the relay away: every reconnection fails.
        let mut now = 0;
        let mut seen: Vec<(u64, String)> = Vec::new();
        while now < 600_000 {
            let t = w.poll_timeout().0.max(now);
            w.handle_timeout(Millis(t), &mut r);
            for k in tasks(&mut w) {
                if k.starts_with("connect") {
                    w.handle(Millis(t), WatchInput::ConnectFailed);
                }
                seen.push((t, k));
            }
            now = t;
        }
        let count = |p: &str| seen.iter().filter(|(_, k)| k.starts_with(p)).count();
        // 6 a minute: 60 expected; the Poisson count is far from 0 or 200.
        assert!((30..120).contains(&count("cover")), "{}", count("cover"));
        assert!(count("resend") >= 35, "every 15 s: {}", count("resend"));
        // Both other relays every 20 s.
        assert!(count("other:") >= 2 * 29, "{}", count("other:"));
        assert_eq!(count("ping"), 0);
        assert_eq!(count("home"), 0);
        assert!(count("connect") >= 10);
    }

    #[test]
    fn without_other_relays_nothing_is_polled() {
        let mut r = ChaCha20Rng::seed_from_u64(7);
        let p = plan(vec![own(&mut r, 1)], Some(&relay(1))).unwrap();
        let mut w = Watcher::new(p, cfg(0), Millis(0), &mut r);
        assert_eq!(tasks(&mut w), ["connect:1"]);
        w.handle(Millis(0), WatchInput::Connected);
        let t = run_to(&mut w, 300_000, &mut r);
        assert!(!t.iter().any(|(_, k)| k.starts_with("other")), "{t:?}");
    }
}
