//! Sources that keep misbehaving. One connection that floods invalid
//! frames is closed after [`crate::server::MAX_ERRORS_PER_CONNECTION`];
//! this stops the same source from simply opening the next one. A
//! connection "offends" when it ends because of what its source sent: too
//! many error replies, an oversized message, or a transport handshake that
//! failed or timed out (garbage, slow loris). A source with [`STRIKES`]
//! offences within [`WINDOW`] has its new connections refused, before any
//! TLS work, for [`COOLDOWN`].
//!
//! A source is an IPv4 address, or an IPv6 /64 (one host usually holds a
//! whole /64). Sources behind one NAT share a count; since only offending
//! connections count, a well-behaved client there is refused only while
//! another one on its address keeps offending. The table is bounded
//! ([`MAX_SOURCES`]): when full, expired entries go first, then the oldest.
//! Sans-IO: the caller passes the time.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Offences within [`WINDOW`] after which a source is refused.
pub const STRIKES: u32 = 8;
/// How long offences are counted from a source's first one.
pub const WINDOW: Duration = Duration::from_secs(60);
/// How long a source is refused once it reached [`STRIKES`].
pub const COOLDOWN: Duration = Duration::from_secs(60);
/// Most sources tracked at once.
pub const MAX_SOURCES: usize = 4096;

/// Where connections come from, as counted here.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Source([u8; 16]);

impl Source {
    /// The source of a peer address: IPv4 whole (IPv4-mapped IPv6 too),
    /// IPv6 by its /64 prefix.
    pub fn of(ip: IpAddr) -> Source {
        match ip {
            IpAddr::V4(v4) => Source(v4.to_ipv6_mapped().octets()),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source(v4.to_ipv6_mapped().octets()),
                None => {
                    let mut b = v6.octets();
                    b[8..].fill(0);
                    Source(b)
                }
            },
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    strikes: u32,
    since: Instant,
    refused_until: Option<Instant>,
}

impl Entry {
    fn expired(&self, now: Instant) -> bool {
        match self.refused_until {
            Some(until) => now >= until,
            None => now.duration_since(self.since) >= WINDOW,
        }
    }
}

/// The table of recent offenders.
#[derive(Debug, Default)]
pub struct Offenders {
    map: HashMap<Source, Entry>,
}

impl Offenders {
    /// An empty table.
    pub fn new() -> Offenders {
        Offenders::default()
    }

    /// Whether a new connection from `s` is refused now.
    pub fn refused(&mut self, s: Source, now: Instant) -> bool {
        match self.map.get(&s) {
            Some(e) if e.expired(now) => {
                self.map.remove(&s);
                false
            }
            Some(e) => e.refused_until.is_some(),
            None => false,
        }
    }

    /// Counts an offence by `s`; true when this one makes it refused.
    pub fn strike(&mut self, s: Source, now: Instant) -> bool {
        if let Some(e) = self.map.get(&s)
            && e.expired(now)
        {
            self.map.remove(&s);
        }
        if !self.map.contains_key(&s) {
            self.make_room(now);
        }
        let e = self.map.entry(s).or_insert(Entry {
            strikes: 0,
            since: now,
            refused_until: None,
        });
        if e.refused_until.is_some() {
            return false;
        }
        e.strikes += 1;
        if e.strikes >= STRIKES {
            e.refused_until = Some(now + COOLDOWN);
            return true;
        }
        false
    }

    /// Sources refused now.
    pub fn refused_count(&self, now: Instant) -> usize {
        self.map
            .values()
            .filter(|e| e.refused_until.is_some() && !e.expired(now))
            .count()
    }

    /// Sources tracked (refused or counting).
    pub fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether no source is tracked.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    fn make_room(&mut self, now: Instant) {
        if self.map.len() < MAX_SOURCES {
            return;
        }
        self.map.retain(|_, e| !e.expired(now));
        if self.map.len() < MAX_SOURCES {
            return;
        }
        // Still full of live entries: forget the one counting longest
        // (refused sources are kept over counting ones).
        let oldest = self
            .map
            .iter()
            .min_by_key(|(_, e)| (e.refused_until.is_some(), e.since))
            .map(|(s, _)| *s);
        if let Some(s) = oldest {
            self.map.remove(&s);
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn v4(last: u8) -> Source {
        Source::of(IpAddr::V4(Ipv4Addr::new(192, 0, 2, last)))
    }

    #[test]
    fn a_source_is_refused_at_the_strike_limit_and_only_for_the_cooldown() {
        let mut t = Offenders::new();
        let t0 = Instant::now();
        for i in 0..STRIKES - 1 {
            assert!(!t.strike(v4(1), t0 + Duration::from_secs(u64::from(i))));
            assert!(!t.refused(v4(1), t0 + Duration::from_secs(u64::from(i))));
        }
        let at = t0 + Duration::from_secs(10);
        assert!(t.strike(v4(1), at));
        assert!(t.refused(v4(1), at));
        assert!(!t.refused(v4(2), at), "another source is not affected");
        assert_eq!(t.refused_count(at), 1);
        assert!(t.refused(v4(1), at + COOLDOWN - Duration::from_millis(1)));
        assert!(!t.refused(v4(1), at + COOLDOWN));
        assert!(t.is_empty(), "an expired entry is forgotten");
    }

    #[test]
    fn offences_spread_beyond_the_window_never_refuse() {
        let mut t = Offenders::new();
        let t0 = Instant::now();
        for i in 0..3 * STRIKES {
            let now = t0 + (WINDOW / STRIKES) * 2 * i;
            assert!(!t.strike(v4(1), now));
            assert!(!t.refused(v4(1), now));
        }
    }

    #[test]
    fn ipv6_counts_by_slash_64_and_mapped_ipv4_as_ipv4() {
        let a: Ipv6Addr = "2001:db8:1:2::1".parse().unwrap();
        let b: Ipv6Addr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let c: Ipv6Addr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a.into()), Source::of(b.into()));
        assert_ne!(Source::of(a.into()), Source::of(c.into()));
        let mapped = Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped();
        assert_eq!(Source::of(mapped.into()), v4(1));
    }

    #[test]
    fn the_table_is_bounded_and_keeps_refused_sources() {
        let mut t = Offenders::new();
        let t0 = Instant::now();
        let bad = v4(1);
        for _ in 0..STRIKES {
            t.strike(bad, t0);
        }
        for i in 0..(2 * MAX_SOURCES) as u32 {
            let s = Source::of(IpAddr::V4(Ipv4Addr::from(0x0a00_0000 + i)));
            t.strike(s, t0 + Duration::from_millis(1));
            assert!(t.len() <= MAX_SOURCES);
        }
        assert!(t.refused(bad, t0 + Duration::from_secs(1)));
    }
}
