//! Which relays a client collects from, and how: a watching client stays
//! connected to one relay (its home relay when it has queues there) and
//! is notified of new items; queues left on other relays — from before a
//! change of home relay — are polled on the [`Schedule`](crate::Schedule)'s
//! `PollOthers` timer. A one-shot sync fetches every relay once.

use std::collections::BTreeMap;

use postern_core::RelayAddress;
use postern_core::courier::OwnQueue;

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

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
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
}
