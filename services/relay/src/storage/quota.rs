//! Quota and expiry decisions: pure functions of the counts the database
//! keeps and the configured [`Limits`], so each bound is tested without
//! a database.

use postern_core::consts::BLOB_BYTES;
use postern_core::relay_proto::ErrorCode;

use super::{Limits, Totals};

/// Whether the relay may register one more queue.
pub fn admit_queue(totals: Totals, limits: &Limits) -> Result<(), ErrorCode> {
    if totals.queues >= limits.max_queues {
        return Err(ErrorCode::TooManyQueues);
    }
    Ok(())
}

/// Whether a queue now holding `items` blobs may take one more: both the
/// message and the byte quota must hold after it.
pub fn admit_item(items: u64, limits: &Limits) -> Result<(), ErrorCode> {
    let after = items.saturating_add(1);
    if after > limits.queue_max_messages
        || after.saturating_mul(BLOB_BYTES as u64) > limits.queue_max_bytes
    {
        return Err(ErrorCode::QueueFull);
    }
    Ok(())
}

/// Items stored, and queues last active, at or before this time (seconds)
/// have outlived the retention period.
pub fn retention_cutoff(now: u64, limits: &Limits) -> u64 {
    now.saturating_sub(limits.ttl_secs)
}

/// When an invitation blob put now with `ttl_secs` expires.
pub fn invite_expiry(now: u64, ttl_secs: u32) -> u64 {
    now.saturating_add(u64::from(ttl_secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: u64, bytes: u64, queues: u64) -> Limits {
        Limits {
            queue_max_messages: messages,
            queue_max_bytes: bytes,
            max_queues: queues,
            ttl_secs: 100,
        }
    }

    #[test]
    fn refuses_a_queue_past_the_limit() {
        let l = limits(10, u64::MAX, 2);
        let t = |queues| Totals { queues, items: 0 };
        assert_eq!(admit_queue(t(2), &l), Err(ErrorCode::TooManyQueues));
        assert_eq!(admit_queue(t(u64::MAX), &l), Err(ErrorCode::TooManyQueues));
        assert_eq!(admit_queue(t(1), &l), Ok(()));
        assert_eq!(
            admit_queue(t(0), &limits(1, 1, 0)),
            Err(ErrorCode::TooManyQueues)
        );
    }

    #[test]
    fn refuses_an_item_past_either_quota() {
        // Message quota binds.
        let l = limits(3, u64::MAX, 1);
        assert_eq!(admit_item(3, &l), Err(ErrorCode::QueueFull));
        assert_eq!(admit_item(u64::MAX, &l), Err(ErrorCode::QueueFull));
        assert_eq!(admit_item(2, &l), Ok(()));
        // Byte quota binds: room for two blobs and a bit.
        let l = limits(u64::MAX, 2 * BLOB_BYTES as u64 + 1, 1);
        assert_eq!(admit_item(2, &l), Err(ErrorCode::QueueFull));
        assert_eq!(admit_item(1, &l), Ok(()));
        // A byte quota below one blob admits nothing.
        assert_eq!(
            admit_item(0, &limits(10, BLOB_BYTES as u64 - 1, 1)),
            Err(ErrorCode::QueueFull)
        );
        // The defaults admit the largest attachment's chunk count.
        assert_eq!(admit_item(68_266, &Limits::default()), Ok(()));
    }

    #[test]
    fn times_saturate() {
        let l = limits(1, 1, 1);
        assert_eq!(retention_cutoff(50, &l), 0);
        assert_eq!(retention_cutoff(1_000, &l), 900);
        assert_eq!(invite_expiry(u64::MAX, 10), u64::MAX);
        assert_eq!(invite_expiry(5, 10), 15);
    }
}
