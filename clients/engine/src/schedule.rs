//! The timers of a watching client, with virtual time.
//!
//! A shell asks [`Schedule::poll_timeout`] when to wake, wakes then (or
//! earlier, for a notification), and calls [`Schedule::poll_due`] until it
//! returns `None`, doing what each [`Due`] says. It reports what happened
//! to its home connection with [`Schedule::connected`],
//! [`Schedule::connect_failed`] and [`Schedule::lost`].
//!
//! - **Cover** follows a Poisson process: each gap is drawn from an
//!   exponential distribution, counted from the instant the last packet was
//!   *due*, not from when the shell got to it, so other work never thins
//!   the cover rate. After a stall longer than a gap the schedule starts
//!   again from now: cover missed during a stall is not sent as a burst.
//! - **Resends, keepalives and polls of other relays** are periodic; a
//!   period missed while busy is not made up with a burst either.
//! - **Reconnection** to the home relay waits [`RECONNECT_MIN_MS`] after a
//!   loss, then doubles after each failure up to [`RECONNECT_MAX_MS`].

use postern_core::onion::next_cover_delay_ms;
use rand_core::{CryptoRng, RngCore};

/// First wait before reconnecting to the home relay.
pub const RECONNECT_MIN_MS: u64 = 1_000;
/// Longest wait between reconnection attempts.
pub const RECONNECT_MAX_MS: u64 = 60_000;
/// Shortest resend period, whatever the acknowledgement timeout.
pub const MIN_RESEND_PERIOD_MS: u64 = 100;

/// Milliseconds on a monotonic clock whose origin the shell chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Millis(pub u64);

impl Millis {
    fn plus(self, ms: u64) -> Millis {
        Millis(self.0.saturating_add(ms))
    }
}

/// How a watching client behaves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchConfig {
    /// Acknowledgement timeout: overdue blobs are looked for every half of it.
    pub ack_timeout_ms: u64,
    /// Mean cover packets per minute; 0 for none (or no onion network).
    pub cover_per_minute: u32,
    /// How often queues on relays other than the home relay are fetched;
    /// `None` when there are none.
    pub others_poll_ms: Option<u64>,
    /// How often an idle home connection is pinged.
    pub keepalive_ms: u64,
}

/// A timer that has come due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Due {
    /// Ping the home relay.
    Keepalive,
    /// Try to connect to the home relay again.
    Reconnect,
    /// Send again whatever has not been acknowledged in time.
    Resend,
    /// Fetch the queues on other relays.
    PollOthers,
    /// Send one cover packet.
    Cover,
}

/// The watch loop's timers.
#[derive(Debug, Clone)]
pub struct Schedule {
    cfg: WatchConfig,
    cover_at: Option<Millis>,
    resend_at: Millis,
    keepalive_at: Option<Millis>,
    others_at: Option<Millis>,
    reconnect_at: Option<Millis>,
    backoff_ms: u64,
}

impl Schedule {
    /// The timers of a client that starts watching at `now`, connected to
    /// its home relay.
    pub fn new<R: RngCore + CryptoRng>(cfg: WatchConfig, now: Millis, rng: &mut R) -> Schedule {
        Schedule {
            cfg,
            cover_at: next_cover_delay_ms(cfg.cover_per_minute, rng).map(|d| now.plus(d)),
            resend_at: now,
            keepalive_at: Some(now.plus(cfg.keepalive_ms)),
            others_at: cfg.others_poll_ms.map(|p| now.plus(p)),
            reconnect_at: None,
            backoff_ms: RECONNECT_MIN_MS,
        }
    }

    fn resend_period(&self) -> u64 {
        (self.cfg.ack_timeout_ms / 2).max(MIN_RESEND_PERIOD_MS)
    }

    /// Whether the home connection is up (as far as the schedule was told).
    pub fn is_connected(&self) -> bool {
        self.reconnect_at.is_none()
    }

    /// The earliest instant something is due.
    pub fn poll_timeout(&self) -> Millis {
        [
            self.cover_at,
            Some(self.resend_at),
            self.keepalive_at,
            self.others_at,
            self.reconnect_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(self.resend_at)
    }

    /// The next timer due at `now` (earliest deadline first), already
    /// rescheduled; `None` when nothing is due.
    pub fn poll_due<R: RngCore + CryptoRng>(&mut self, now: Millis, rng: &mut R) -> Option<Due> {
        let candidates = [
            (self.keepalive_at, Due::Keepalive),
            (self.reconnect_at, Due::Reconnect),
            (Some(self.resend_at), Due::Resend),
            (self.others_at, Due::PollOthers),
            (self.cover_at, Due::Cover),
        ];
        let (at, due) = candidates
            .into_iter()
            .filter_map(|(at, d)| at.filter(|t| *t <= now).map(|t| (t, d)))
            .min()?;
        match due {
            Due::Keepalive => self.keepalive_at = Some(now.plus(self.cfg.keepalive_ms)),
            // Set again by `connected` or `connect_failed`.
            Due::Reconnect => self.reconnect_at = None,
            Due::Resend => self.resend_at = now.plus(self.resend_period()),
            Due::PollOthers => self.others_at = self.cfg.others_poll_ms.map(|p| now.plus(p)),
            Due::Cover => {
                self.cover_at = next_cover_delay_ms(self.cfg.cover_per_minute, rng).map(|d| {
                    // From the instant it was due; from now after a stall.
                    let next = at.plus(d);
                    if next < now { now.plus(d) } else { next }
                });
            }
        }
        Some(due)
    }

    /// The home connection is up (again): pings resume, backoff resets.
    pub fn connected(&mut self, now: Millis) {
        self.reconnect_at = None;
        self.backoff_ms = RECONNECT_MIN_MS;
        self.keepalive_at = Some(now.plus(self.cfg.keepalive_ms));
    }

    /// The home connection broke: reconnect after [`RECONNECT_MIN_MS`].
    pub fn lost(&mut self, now: Millis) {
        self.keepalive_at = None;
        self.backoff_ms = RECONNECT_MIN_MS;
        self.reconnect_at = Some(now.plus(self.backoff_ms));
    }

    /// A reconnection failed: wait twice as long (at most
    /// [`RECONNECT_MAX_MS`]). Returns the wait.
    pub fn connect_failed(&mut self, now: Millis) -> u64 {
        self.keepalive_at = None;
        self.backoff_ms = self.backoff_ms.saturating_mul(2).min(RECONNECT_MAX_MS);
        self.reconnect_at = Some(now.plus(self.backoff_ms));
        self.backoff_ms
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const MINUTE: u64 = 60_000;

    fn cfg(cover_per_minute: u32) -> WatchConfig {
        WatchConfig {
            ack_timeout_ms: 30_000,
            cover_per_minute,
            others_poll_ms: Some(30_000),
            keepalive_ms: 60_000,
        }
    }

    /// Runs a watching client for `ms` of virtual time. Handling a timer
    /// other than cover costs `work_ms` (the shell is busy that long, as
    /// with a slow resend or fetch). Returns the instants each kind came
    /// due at.
    fn run(cfg: WatchConfig, ms: u64, work_ms: u64, seed: u64) -> Vec<(Millis, Due)> {
        let mut rng = ChaCha20Rng::seed_from_u64(seed);
        let mut s = Schedule::new(cfg, Millis(0), &mut rng);
        let mut now = Millis(0);
        let mut seen = Vec::new();
        while now.0 < ms {
            let wake = s.poll_timeout();
            assert!(wake >= now || seen.last().is_some_and(|(t, _)| *t == now));
            now = now.max(wake);
            while let Some(d) = s.poll_due(now, &mut rng) {
                seen.push((now, d));
                if d == Due::Reconnect {
                    s.connected(now);
                }
                if d != Due::Cover {
                    now = now.plus(work_ms);
                }
            }
        }
        seen
    }

    fn count(seen: &[(Millis, Due)], d: Due) -> usize {
        seen.iter().filter(|(_, x)| *x == d).count()
    }

    #[test]
    fn cover_keeps_its_rate_however_busy_the_client_is() {
        let hour = 60 * MINUTE;
        for seed in 0..4 {
            let idle = count(&run(cfg(6), hour, 0, seed), Due::Cover);
            // Every resend, keepalive and poll keeps the shell busy 4 s.
            let busy = count(&run(cfg(6), hour, 4_000, seed), Due::Cover);
            // 360 expected an hour (a Poisson count: sd about 19).
            assert!((300..=420).contains(&idle), "seed {seed}: {idle} idle");
            assert!(
                busy * 100 >= idle * 95,
                "seed {seed}: {busy} cover packets when busy, {idle} when idle"
            );
        }
    }

    #[test]
    fn a_cover_deadline_is_not_pushed_back_by_other_timers() {
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut s = Schedule::new(cfg(6), Millis(0), &mut rng);
        // Drain everything due at 0 (the first resend).
        while s.poll_due(Millis(0), &mut rng).is_some() {}
        let mut cover_at = None;
        let mut now = Millis(0);
        while cover_at.is_none() {
            now = s.poll_timeout();
            while let Some(d) = s.poll_due(now, &mut rng) {
                if d == Due::Cover {
                    cover_at = Some(now);
                }
            }
        }
        // The same seed, with a resend storm before the deadline: the
        // cover packet is due at the same instant.
        let mut rng = ChaCha20Rng::seed_from_u64(7);
        let mut s = Schedule::new(cfg(6), Millis(0), &mut rng);
        let deadline = cover_at.unwrap();
        let mut t = Millis(0);
        while t < deadline {
            while let Some(d) = s.poll_due(t, &mut rng) {
                assert_ne!(d, Due::Cover, "cover came early at {t:?}");
            }
            t = t.plus(100);
        }
        let mut got = false;
        while let Some(d) = s.poll_due(deadline, &mut rng) {
            got |= d == Due::Cover;
        }
        assert!(got, "cover not due at {deadline:?}");
        assert_eq!(now, deadline);
    }

    #[test]
    fn no_cover_is_scheduled_when_it_is_off() {
        let seen = run(cfg(0), 10 * MINUTE, 0, 1);
        assert_eq!(count(&seen, Due::Cover), 0);
        assert!(count(&seen, Due::Resend) > 0);
    }

    #[test]
    fn resends_come_every_half_timeout_and_a_stall_is_not_made_up() {
        let mut rng = ChaCha20Rng::seed_from_u64(1);
        let mut s = Schedule::new(cfg(0), Millis(0), &mut rng);
        // The first look is at once.
        assert_eq!(s.poll_due(Millis(0), &mut rng), Some(Due::Resend));
        assert_eq!(s.poll_due(Millis(0), &mut rng), None);
        assert_eq!(s.poll_timeout(), Millis(15_000));
        assert_eq!(s.poll_due(Millis(14_999), &mut rng), None);
        assert_eq!(s.poll_due(Millis(15_000), &mut rng), Some(Due::Resend));
        // Busy for ten periods: one resend, then the period from now.
        let late = Millis(15_000 + 10 * 15_000 + 7);
        let mut resends = 0;
        while let Some(d) = s.poll_due(late, &mut rng) {
            resends += usize::from(d == Due::Resend);
        }
        assert_eq!(resends, 1);
        assert_eq!(s.resend_at, late.plus(15_000));
        // A tiny timeout still leaves 100 ms between looks.
        let mut fast = cfg(0);
        fast.ack_timeout_ms = 10;
        let mut s = Schedule::new(fast, Millis(0), &mut rng);
        assert_eq!(s.poll_due(Millis(0), &mut rng), Some(Due::Resend));
        assert_eq!(s.resend_at, Millis(MIN_RESEND_PERIOD_MS));
    }

    #[test]
    fn reconnection_backs_off_from_one_second_to_a_minute_and_resets() {
        let mut rng = ChaCha20Rng::seed_from_u64(2);
        let mut s = Schedule::new(cfg(0), Millis(0), &mut rng);
        while s.poll_due(Millis(0), &mut rng).is_some() {}
        assert!(s.is_connected());
        s.lost(Millis(1_000));
        assert!(!s.is_connected());
        // No pings while disconnected.
        assert_eq!(s.keepalive_at, None);
        assert_eq!(s.poll_due(Millis(1_999), &mut rng), None);
        assert_eq!(s.poll_due(Millis(2_000), &mut rng), Some(Due::Reconnect));
        let mut now = Millis(2_000);
        let mut waits = Vec::new();
        for _ in 0..8 {
            let w = s.connect_failed(now);
            waits.push(w / 1_000);
            assert_eq!(s.reconnect_at, Some(now.plus(w)));
            let mut due = Vec::new();
            while let Some(d) = s.poll_due(now.plus(w - 1), &mut rng) {
                due.push(d);
            }
            assert!(!due.contains(&Due::Reconnect), "early: {due:?}");
            now = now.plus(w);
            while let Some(d) = s.poll_due(now, &mut rng) {
                due.push(d);
            }
            assert!(due.contains(&Due::Reconnect), "not due: {due:?}");
        }
        assert_eq!(waits, [2, 4, 8, 16, 32, 60, 60, 60]);
        s.connected(now);
        assert!(s.is_connected());
        assert_eq!(s.keepalive_at, Some(now.plus(60_000)));
        // The next loss starts from a second again.
        s.lost(now);
        assert_eq!(s.connect_failed(now), 2_000);
    }

    #[test]
    fn other_relays_are_polled_on_their_period_only_when_there_are_some() {
        let seen = run(cfg(0), 10 * MINUTE, 0, 3);
        let polls: Vec<u64> = seen
            .iter()
            .filter(|(_, d)| *d == Due::PollOthers)
            .map(|(t, _)| t.0)
            .collect();
        assert_eq!(polls, (1..=20).map(|i| i * 30_000).collect::<Vec<_>>());
        let mut none = cfg(0);
        none.others_poll_ms = None;
        assert_eq!(count(&run(none, 10 * MINUTE, 0, 3), Due::PollOthers), 0);
        // Keepalives once a minute.
        assert_eq!(count(&seen, Due::Keepalive), 10);
    }
}
