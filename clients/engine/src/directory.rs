//! When a client uses its cached directory and when it asks its home relay
//! for a new one; which copy it keeps afterwards.
//!
//! The rule: a cached directory that verifies is used until it is stale
//! ([`Directory::should_refetch`]); a stale one is asked for again at most
//! once per [`postern_core::consts::DIRECTORY_RECHECK_MS`] (a relay that
//! serves nothing newer must not cost a connection per send); of a fetched
//! and a cached copy the newer is kept (a relay may serve an old one); when
//! the fetch fails, a stale but valid cached copy is still used.

use postern_core::UnixTime;
use postern_core::directory::Directory;

/// What a directory lookup does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// Use the cached copy; no connection.
    UseCached,
    /// Record the attempt time, then fetch from the home relay.
    Fetch,
}

/// Decides a lookup from the cached copy (already verified at `now`, or
/// `None`) and when a fetch was last attempted.
pub fn lookup(cached: Option<&Directory>, fetched_at: Option<UnixTime>, now: UnixTime) -> Lookup {
    match cached {
        Some(d) if !d.should_refetch(fetched_at, now) => Lookup::UseCached,
        _ => Lookup::Fetch,
    }
}

/// Which copy to keep after a fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keep {
    /// The fetched one: cache it and use it.
    Fetched,
    /// The cached one (newer than what was fetched, or the fetch failed).
    Cached,
    /// Neither exists: the lookup fails with the fetch's error.
    Neither,
}

/// Chooses between a fetched copy (`None` when the fetch failed or did
/// not verify) and the cached one.
pub fn keep(fetched: Option<&Directory>, cached: Option<&Directory>) -> Keep {
    match (fetched, cached) {
        (Some(f), Some(c)) if c.issued_at > f.issued_at => Keep::Cached,
        (Some(_), _) => Keep::Fetched,
        (None, Some(_)) => Keep::Cached,
        (None, None) => Keep::Neither,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::testing::signed_directory;
    use postern_core::consts::DIRECTORY_RECHECK_MS;

    const HOUR: u64 = 3_600_000;

    #[test]
    fn a_stale_directory_is_fetched_at_most_once_per_recheck_interval() {
        let t = UnixTime(1_800_000_000_000);
        // Valid for 30 more minutes: within the hour before expiry, stale.
        let stale = signed_directory(t, 30 * 60_000, 3_600, 3).1;
        // Never fetched: fetch.
        assert_eq!(lookup(Some(&stale), None, t), Lookup::Fetch);
        // Fetched (and failed) just now: the cached copy for the interval.
        assert_eq!(
            lookup(
                Some(&stale),
                Some(t),
                t.plus_millis(DIRECTORY_RECHECK_MS - 1)
            ),
            Lookup::UseCached
        );
        assert_eq!(
            lookup(Some(&stale), Some(t), t.plus_millis(DIRECTORY_RECHECK_MS)),
            Lookup::Fetch
        );
        // A fetch time in the future (a clock set back) does not hold
        // fetches off.
        assert_eq!(
            lookup(Some(&stale), Some(t.plus_millis(HOUR)), t),
            Lookup::Fetch
        );
        // No copy at all: always fetch, however recent the last try.
        assert_eq!(lookup(None, Some(t), t), Lookup::Fetch);
    }

    #[test]
    fn a_fresh_directory_is_used_without_a_connection() {
        let t = UnixTime(1_800_000_000_000);
        let fresh = signed_directory(t, 24 * HOUR, 3_600, 3).1;
        assert_eq!(lookup(Some(&fresh), None, t), Lookup::UseCached);
        assert_eq!(
            lookup(Some(&fresh), None, t.plus_millis(14 * 60_000)),
            Lookup::UseCached
        );
        // A quarter of an epoch after it was issued it is stale.
        assert_eq!(
            lookup(Some(&fresh), None, t.plus_millis(15 * 60_000)),
            Lookup::Fetch
        );
    }

    #[test]
    fn an_older_copy_served_by_a_relay_does_not_replace_the_cached_one() {
        let t = UnixTime(1_800_000_000_000);
        let old = signed_directory(t, 24 * HOUR, 3_600, 3).1;
        let new = signed_directory(t.plus_millis(HOUR), 24 * HOUR, 3_600, 3).1;
        assert_eq!(keep(Some(&old), Some(&new)), Keep::Cached);
        assert_eq!(keep(Some(&new), Some(&old)), Keep::Fetched);
        assert_eq!(keep(Some(&new), Some(&new)), Keep::Fetched);
        assert_eq!(keep(Some(&new), None), Keep::Fetched);
        // The fetch failed: a stale but valid copy is better than none.
        assert_eq!(keep(None, Some(&old)), Keep::Cached);
        assert_eq!(keep(None, None), Keep::Neither);
    }
}
