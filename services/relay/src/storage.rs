//! The relay's durable state: queues, their items and invitation payloads,
//! in one SQLite database (WAL, `synchronous = FULL`).
//!
//! [`Storage`] is synchronous and owns the connection; [`Storage::run`]
//! applies one operation in its own transaction, [`Storage::run_batch`]
//! applies many in one transaction (group commit). An operation's result
//! is returned only after its transaction committed, so a relay that
//! answers `Ok` to a `Send` has the blob on disk. The server runs a
//! `Storage` on one thread ([`crate::writer`]).
//!
//! Time is passed in (`now`, seconds since the epoch). Item arrival times
//! and queue activity times are stored rounded up to
//! [`TIME_GRANULARITY_SECS`], so the database does not keep exact arrival
//! times; only their order (item ids) and invitation expiries.

use std::path::Path;

use postern_core::consts::BLOB_BYTES;
use postern_core::relay_proto::{Blob, ErrorCode, QueueId};
use rusqlite::{Connection, OptionalExtension as _, params};

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;
/// Item and activity times are rounded up to this (seconds).
pub const TIME_GRANULARITY_SECS: u64 = 3600;

/// Quotas and retention.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Most items one queue may hold.
    pub queue_max_messages: u64,
    /// Most blob bytes one queue may hold.
    pub queue_max_bytes: u64,
    /// Most queues the relay holds.
    pub max_queues: u64,
    /// How long items are kept, and how long a queue may stay idle
    /// (no fetch, ack, subscribe or invitation put by its owner).
    pub ttl_secs: u64,
}

/// Default per-queue message quota: room for one largest attachment
/// (100 MiB is 68,267 chunks of one blob each) and the messages around it.
pub const DEFAULT_QUEUE_MAX_MESSAGES: u64 = 70_000;
/// Default per-queue byte quota (of blobs).
pub const DEFAULT_QUEUE_MAX_BYTES: u64 = 70_000 * BLOB_BYTES as u64;
/// Default maximum number of queues.
pub const DEFAULT_MAX_QUEUES: u64 = 1_000_000;
/// Default retention: 21 days.
pub const DEFAULT_TTL_SECS: u64 = 21 * 24 * 3600;

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            queue_max_messages: DEFAULT_QUEUE_MAX_MESSAGES,
            queue_max_bytes: DEFAULT_QUEUE_MAX_BYTES,
            max_queues: DEFAULT_MAX_QUEUES,
            ttl_secs: DEFAULT_TTL_SECS,
        }
    }
}

/// Storage failures (opening the database).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StorageError {
    /// SQLite failed.
    #[error("database: {0}")]
    Sql(#[from] rusqlite::Error),
    /// The database was written by a newer relay.
    #[error("database schema {found} is newer than this relay's ({SCHEMA_VERSION})")]
    SchemaTooNew {
        /// Version found.
        found: i64,
    },
}

/// One operation on the relay's state.
#[derive(Clone)]
#[non_exhaustive]
pub enum Op {
    /// Registers a queue.
    Create {
        /// New recipient id.
        recipient_id: QueueId,
        /// New sender id.
        sender_id: QueueId,
        /// Serialized queue public key.
        queue_key: Vec<u8>,
    },
    /// Reads a queue's key (for signature checks).
    QueueKey {
        /// Recipient id.
        recipient_id: QueueId,
    },
    /// Appends a blob.
    Send {
        /// Sender id.
        sender_id: QueueId,
        /// The blob.
        blob: Blob,
    },
    /// Reads the oldest items.
    Fetch {
        /// Recipient id.
        recipient_id: QueueId,
        /// Most items returned.
        max: u32,
    },
    /// Deletes items.
    Ack {
        /// Recipient id.
        recipient_id: QueueId,
        /// Item ids (absent ones ignored).
        item_ids: Vec<u64>,
    },
    /// Checks a queue exists and marks it active (subscribe).
    Touch {
        /// Recipient id.
        recipient_id: QueueId,
    },
    /// Deletes a queue with its items and invitation.
    DeleteQueue {
        /// Recipient id.
        recipient_id: QueueId,
    },
    /// Stores one blob of an invitation payload.
    PutInvite {
        /// Recipient id.
        recipient_id: QueueId,
        /// Blob position.
        index: u32,
        /// Blob count.
        total: u32,
        /// Lifetime.
        ttl_secs: u32,
        /// The blob.
        blob: Blob,
    },
    /// Returns and deletes a complete, unexpired invitation payload.
    TakeInvite {
        /// Sender id.
        sender_id: QueueId,
    },
    /// Deletes expired items and invitations and idle queues.
    Gc,
}

impl core::fmt::Debug for Op {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Queue ids stay out of logs.
        f.write_str(match self {
            Op::Create { .. } => "Create",
            Op::QueueKey { .. } => "QueueKey",
            Op::Send { .. } => "Send",
            Op::Fetch { .. } => "Fetch",
            Op::Ack { .. } => "Ack",
            Op::Touch { .. } => "Touch",
            Op::DeleteQueue { .. } => "DeleteQueue",
            Op::PutInvite { .. } => "PutInvite",
            Op::TakeInvite { .. } => "TakeInvite",
            Op::Gc => "Gc",
        })
    }
}

/// What a garbage collection run removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GcReport {
    /// Expired items.
    pub items: u64,
    /// Idle queues.
    pub queues: u64,
    /// Expired invitation blobs.
    pub invites: u64,
}

/// The result of an operation.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outcome {
    /// Done, nothing to return.
    Done,
    /// A queue's key, if the queue exists.
    Key(Option<Vec<u8>>),
    /// A blob was stored in the queue with this recipient id.
    Sent {
        /// For notifying subscribers.
        recipient_id: QueueId,
    },
    /// Fetched items (id, blob), oldest first, and whether more wait.
    Items {
        /// The items.
        items: Vec<(u64, Blob)>,
        /// More wait.
        more: bool,
    },
    /// A taken invitation payload, in index order.
    Invite(Vec<Blob>),
    /// A garbage collection report.
    Gc(GcReport),
}

impl core::fmt::Debug for Outcome {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Outcome::Done => f.write_str("Done"),
            Outcome::Key(k) => write!(f, "Key({})", k.is_some()),
            Outcome::Sent { .. } => f.write_str("Sent"),
            Outcome::Items { items, more } => write!(f, "Items({}, more: {more})", items.len()),
            Outcome::Invite(b) => write!(f, "Invite({})", b.len()),
            Outcome::Gc(r) => write!(f, "{r:?}"),
        }
    }
}

/// Why one operation failed inside a transaction.
enum OpError {
    /// Refused with this code; the transaction may go on.
    Refused(ErrorCode),
    /// SQLite failed; the transaction must be rolled back.
    Sql(rusqlite::Error),
}

impl From<rusqlite::Error> for OpError {
    fn from(e: rusqlite::Error) -> OpError {
        OpError::Sql(e)
    }
}

/// Running totals (for metrics and the queue limit).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Queues held.
    pub queues: u64,
    /// Items held.
    pub items: u64,
}

/// The relay's database.
#[derive(Debug)]
pub struct Storage {
    conn: Connection,
    limits: Limits,
    totals: Totals,
}

fn coarse(now: u64) -> i64 {
    let t = now.div_ceil(TIME_GRANULARITY_SECS) * TIME_GRANULARITY_SECS;
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn secs(t: u64) -> i64 {
    i64::try_from(t).unwrap_or(i64::MAX)
}

fn to_blob(bytes: &[u8]) -> Result<Blob, OpError> {
    let arr: [u8; BLOB_BYTES] = bytes
        .try_into()
        .map_err(|_| OpError::Refused(ErrorCode::Internal))?;
    Ok(Box::new(arr))
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS queues (
    id INTEGER PRIMARY KEY,
    recipient_id BLOB NOT NULL UNIQUE,
    sender_id BLOB NOT NULL UNIQUE,
    queue_key BLOB NOT NULL,
    next_item INTEGER NOT NULL,
    items INTEGER NOT NULL,
    active INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS queues_active ON queues(active);
CREATE TABLE IF NOT EXISTS items (
    queue INTEGER NOT NULL,
    item_id INTEGER NOT NULL,
    stored INTEGER NOT NULL,
    blob BLOB NOT NULL,
    PRIMARY KEY (queue, item_id)
);
CREATE INDEX IF NOT EXISTS items_stored ON items(stored);
CREATE TABLE IF NOT EXISTS invites (
    queue INTEGER NOT NULL,
    idx INTEGER NOT NULL,
    total INTEGER NOT NULL,
    expires INTEGER NOT NULL,
    blob BLOB NOT NULL,
    PRIMARY KEY (queue, idx)
);
CREATE INDEX IF NOT EXISTS invites_expires ON invites(expires);
";

impl Storage {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, limits: Limits) -> Result<Storage, StorageError> {
        let conn = Connection::open(path)?;
        // Plain SQLite (the workspace's SQLCipher build without a key):
        // the relay stores only opaque ciphertext and random ids.
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "FULL")?;
        // Acknowledged and expired blobs are overwritten, not just unlinked.
        conn.pragma_update(None, "secure_delete", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
        if found > SCHEMA_VERSION {
            return Err(StorageError::SchemaTooNew { found });
        }
        conn.execute_batch(SCHEMA)?;
        conn.pragma_update(None, "user_version", SCHEMA_VERSION)?;
        let mut s = Storage {
            conn,
            limits,
            totals: Totals::default(),
        };
        s.reload_totals()?;
        Ok(s)
    }

    /// The limits in force.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Queue and item counts.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    fn reload_totals(&mut self) -> Result<(), rusqlite::Error> {
        let (queues, items): (i64, i64) = self.conn.query_row(
            "SELECT COUNT(*), COALESCE(SUM(items), 0) FROM queues",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        self.totals = Totals {
            queues: u64::try_from(queues).unwrap_or(0),
            items: u64::try_from(items).unwrap_or(0),
        };
        Ok(())
    }

    /// Applies one operation in its own transaction.
    pub fn run(&mut self, op: &Op, now: u64) -> Result<Outcome, ErrorCode> {
        self.run_batch(std::slice::from_ref(op), now)
            .pop()
            .unwrap_or(Err(ErrorCode::Internal))
    }

    /// Applies `ops` in order in one transaction and returns one result
    /// per operation, after the commit. If SQLite fails, the batch is
    /// rolled back and each operation is retried in its own transaction,
    /// so one bad operation cannot fail the others.
    pub fn run_batch(&mut self, ops: &[Op], now: u64) -> Vec<Result<Outcome, ErrorCode>> {
        match self.try_batch(ops, now) {
            Ok(results) => results,
            Err(_) => {
                // Counters may have moved inside the rolled-back transaction.
                if self.reload_totals().is_err() {
                    return ops.iter().map(|_| Err(ErrorCode::Internal)).collect();
                }
                if ops.len() == 1 {
                    return vec![Err(ErrorCode::Internal)];
                }
                ops.iter()
                    .map(|op| match self.try_batch(std::slice::from_ref(op), now) {
                        Ok(mut r) => r.pop().unwrap_or(Err(ErrorCode::Internal)),
                        Err(_) => {
                            let _ = self.reload_totals();
                            Err(ErrorCode::Internal)
                        }
                    })
                    .collect()
            }
        }
    }

    fn try_batch(
        &mut self,
        ops: &[Op],
        now: u64,
    ) -> Result<Vec<Result<Outcome, ErrorCode>>, rusqlite::Error> {
        let saved = self.totals;
        self.conn.execute_batch("BEGIN IMMEDIATE")?;
        let mut results = Vec::with_capacity(ops.len());
        for op in ops {
            match self.apply(op, now) {
                Ok(o) => results.push(Ok(o)),
                Err(OpError::Refused(c)) => results.push(Err(c)),
                Err(OpError::Sql(e)) => {
                    let _ = self.conn.execute_batch("ROLLBACK");
                    self.totals = saved;
                    return Err(e);
                }
            }
        }
        if let Err(e) = self.conn.execute_batch("COMMIT") {
            let _ = self.conn.execute_batch("ROLLBACK");
            self.totals = saved;
            return Err(e);
        }
        Ok(results)
    }

    /// (row id, item count) of the queue with this recipient id.
    fn by_recipient(&self, rid: &QueueId) -> Result<Option<(i64, i64)>, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT id, items FROM queues WHERE recipient_id = ?1")?
            .query_row([&rid[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    fn touch(&self, id: i64, now: u64) -> Result<(), rusqlite::Error> {
        // Written only when the coarse time moves on, so most reads stay
        // read-only transactions (no fsync).
        self.conn
            .prepare_cached("UPDATE queues SET active = ?2 WHERE id = ?1 AND active < ?2")?
            .execute(params![id, coarse(now)])?;
        Ok(())
    }

    fn apply(&mut self, op: &Op, now: u64) -> Result<Outcome, OpError> {
        let no_queue = OpError::Refused(ErrorCode::NoSuchQueue);
        match op {
            Op::Create {
                recipient_id,
                sender_id,
                queue_key,
            } => {
                if self.totals.queues >= self.limits.max_queues {
                    return Err(OpError::Refused(ErrorCode::TooManyQueues));
                }
                self.conn
                    .prepare_cached(
                        "INSERT INTO queues (recipient_id, sender_id, queue_key, next_item, items, active)
                         VALUES (?1, ?2, ?3, 1, 0, ?4)",
                    )?
                    .execute(params![&recipient_id[..], &sender_id[..], queue_key, coarse(now)])?;
                self.totals.queues += 1;
                Ok(Outcome::Done)
            }
            Op::QueueKey { recipient_id } => {
                let key: Option<Vec<u8>> = self
                    .conn
                    .prepare_cached("SELECT queue_key FROM queues WHERE recipient_id = ?1")?
                    .query_row([&recipient_id[..]], |r| r.get(0))
                    .optional()?;
                Ok(Outcome::Key(key))
            }
            Op::Send { sender_id, blob } => {
                let row: Option<(i64, Vec<u8>, i64, i64)> = self
                    .conn
                    .prepare_cached(
                        "SELECT id, recipient_id, items, next_item FROM queues WHERE sender_id = ?1",
                    )?
                    .query_row([&sender_id[..]], |r| {
                        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                    })
                    .optional()?;
                let (id, rid, items, next) = row.ok_or(no_queue)?;
                let rid: QueueId = rid
                    .as_slice()
                    .try_into()
                    .map_err(|_| OpError::Refused(ErrorCode::Internal))?;
                let after = u64::try_from(items).unwrap_or(u64::MAX).saturating_add(1);
                if after > self.limits.queue_max_messages
                    || after.saturating_mul(BLOB_BYTES as u64) > self.limits.queue_max_bytes
                {
                    return Err(OpError::Refused(ErrorCode::QueueFull));
                }
                self.conn
                    .prepare_cached(
                        "INSERT INTO items (queue, item_id, stored, blob) VALUES (?1, ?2, ?3, ?4)",
                    )?
                    .execute(params![id, next, coarse(now), &blob[..]])?;
                self.conn
                    .prepare_cached(
                        "UPDATE queues SET items = items + 1, next_item = next_item + 1 WHERE id = ?1",
                    )?
                    .execute([id])?;
                self.totals.items += 1;
                Ok(Outcome::Sent { recipient_id: rid })
            }
            Op::Fetch { recipient_id, max } => {
                let (id, count) = self.by_recipient(recipient_id)?.ok_or(no_queue)?;
                let mut items = Vec::new();
                {
                    let mut stmt = self.conn.prepare_cached(
                        "SELECT item_id, blob FROM items WHERE queue = ?1 ORDER BY item_id LIMIT ?2",
                    )?;
                    let mut rows = stmt.query(params![id, max])?;
                    while let Some(r) = rows.next()? {
                        let item_id: i64 = r.get(0)?;
                        let blob = r.get_ref(1)?.as_blob().map_err(rusqlite::Error::from)?;
                        items.push((u64::try_from(item_id).unwrap_or(0), to_blob(blob)?));
                    }
                }
                self.touch(id, now)?;
                let more = usize::try_from(count).unwrap_or(0) > items.len();
                Ok(Outcome::Items { items, more })
            }
            Op::Ack {
                recipient_id,
                item_ids,
            } => {
                let (id, _) = self.by_recipient(recipient_id)?.ok_or(no_queue)?;
                let mut removed = 0u64;
                {
                    let mut stmt = self
                        .conn
                        .prepare_cached("DELETE FROM items WHERE queue = ?1 AND item_id = ?2")?;
                    for item in item_ids {
                        // Ids beyond i64 were never handed out.
                        let Ok(item) = i64::try_from(*item) else {
                            continue;
                        };
                        removed += stmt.execute(params![id, item])? as u64;
                    }
                }
                if removed > 0 {
                    self.conn
                        .prepare_cached("UPDATE queues SET items = items - ?2 WHERE id = ?1")?
                        .execute(params![id, secs(removed)])?;
                    self.totals.items = self.totals.items.saturating_sub(removed);
                }
                self.touch(id, now)?;
                Ok(Outcome::Done)
            }
            Op::Touch { recipient_id } => {
                let (id, _) = self.by_recipient(recipient_id)?.ok_or(no_queue)?;
                self.touch(id, now)?;
                Ok(Outcome::Done)
            }
            Op::DeleteQueue { recipient_id } => {
                let (id, count) = self.by_recipient(recipient_id)?.ok_or(no_queue)?;
                self.conn
                    .prepare_cached("DELETE FROM items WHERE queue = ?1")?
                    .execute([id])?;
                self.conn
                    .prepare_cached("DELETE FROM invites WHERE queue = ?1")?
                    .execute([id])?;
                self.conn
                    .prepare_cached("DELETE FROM queues WHERE id = ?1")?
                    .execute([id])?;
                self.totals.queues = self.totals.queues.saturating_sub(1);
                self.totals.items = self
                    .totals
                    .items
                    .saturating_sub(u64::try_from(count).unwrap_or(0));
                Ok(Outcome::Done)
            }
            Op::PutInvite {
                recipient_id,
                index,
                total,
                ttl_secs,
                blob,
            } => {
                let (id, _) = self.by_recipient(recipient_id)?.ok_or(no_queue)?;
                if *index == 0 {
                    // A new payload replaces any earlier one.
                    self.conn
                        .prepare_cached("DELETE FROM invites WHERE queue = ?1")?
                        .execute([id])?;
                } else {
                    // Blobs of a payload with another size cannot complete it.
                    self.conn
                        .prepare_cached("DELETE FROM invites WHERE queue = ?1 AND total != ?2")?
                        .execute(params![id, total])?;
                }
                self.conn
                    .prepare_cached(
                        "INSERT OR REPLACE INTO invites (queue, idx, total, expires, blob)
                         VALUES (?1, ?2, ?3, ?4, ?5)",
                    )?
                    .execute(params![
                        id,
                        index,
                        total,
                        secs(now.saturating_add(u64::from(*ttl_secs))),
                        &blob[..]
                    ])?;
                self.touch(id, now)?;
                Ok(Outcome::Done)
            }
            Op::TakeInvite { sender_id } => {
                let no_invite = OpError::Refused(ErrorCode::NoSuchInvite);
                let id: i64 = self
                    .conn
                    .prepare_cached("SELECT id FROM queues WHERE sender_id = ?1")?
                    .query_row([&sender_id[..]], |r| r.get(0))
                    .optional()?
                    .ok_or(no_invite)?;
                let mut blobs = Vec::new();
                let mut complete = true;
                {
                    let mut stmt = self.conn.prepare_cached(
                        "SELECT idx, total, expires, blob FROM invites WHERE queue = ?1 ORDER BY idx",
                    )?;
                    let mut rows = stmt.query([id])?;
                    while let Some(r) = rows.next()? {
                        let idx: i64 = r.get(0)?;
                        let total: i64 = r.get(1)?;
                        let expires: i64 = r.get(2)?;
                        let in_order = idx == i64::try_from(blobs.len()).unwrap_or(-1);
                        if !in_order || expires <= secs(now) || total <= idx {
                            complete = false;
                            break;
                        }
                        let blob = r.get_ref(3)?.as_blob().map_err(rusqlite::Error::from)?;
                        blobs.push((total, to_blob(blob)?));
                    }
                }
                let total = blobs.first().map(|(t, _)| *t);
                let complete = complete
                    && total.is_some_and(|t| {
                        usize::try_from(t).ok() == Some(blobs.len())
                            && blobs.iter().all(|(x, _)| *x == t)
                    });
                if !complete {
                    return Err(OpError::Refused(ErrorCode::NoSuchInvite));
                }
                // One-time: gone in the same transaction that read it.
                self.conn
                    .prepare_cached("DELETE FROM invites WHERE queue = ?1")?
                    .execute([id])?;
                Ok(Outcome::Invite(blobs.into_iter().map(|(_, b)| b).collect()))
            }
            Op::Gc => {
                let cutoff = secs(now.saturating_sub(self.limits.ttl_secs));
                let mut report = GcReport::default();
                // Idle queues first, with everything in them.
                self.conn.execute(
                    "DELETE FROM items WHERE queue IN (SELECT id FROM queues WHERE active <= ?1)",
                    [cutoff],
                )?;
                self.conn.execute(
                    "DELETE FROM invites WHERE queue IN (SELECT id FROM queues WHERE active <= ?1)",
                    [cutoff],
                )?;
                report.queues = self
                    .conn
                    .execute("DELETE FROM queues WHERE active <= ?1", [cutoff])?
                    as u64;
                // Expired items, keeping the per-queue counts right.
                self.conn.execute(
                    "UPDATE queues SET items = items -
                        (SELECT COUNT(*) FROM items WHERE items.queue = queues.id AND stored <= ?1)
                     WHERE id IN (SELECT queue FROM items WHERE stored <= ?1)",
                    [cutoff],
                )?;
                report.items = self
                    .conn
                    .execute("DELETE FROM items WHERE stored <= ?1", [cutoff])?
                    as u64;
                report.invites = self
                    .conn
                    .execute("DELETE FROM invites WHERE expires <= ?1", [secs(now)])?
                    as u64;
                self.reload_totals()?;
                Ok(Outcome::Gc(report))
            }
        }
    }

    /// Writes the WAL back into the database file (on shutdown).
    pub fn checkpoint(&self) -> Result<(), rusqlite::Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
    use super::*;

    const DAY: u64 = 24 * 3600;
    const T0: u64 = 1_700_000_000;

    fn open(limits: Limits) -> (tempfile::TempDir, Storage) {
        let d = tempfile::tempdir().unwrap();
        let s = Storage::open(&d.path().join("relay.sqlite"), limits).unwrap();
        (d, s)
    }

    fn create(s: &mut Storage, n: u8, now: u64) -> (QueueId, QueueId) {
        let (rid, sid) = ([n; 16], [n | 0x80; 16]);
        s.run(
            &Op::Create {
                recipient_id: rid,
                sender_id: sid,
                queue_key: vec![5; 33],
            },
            now,
        )
        .unwrap();
        (rid, sid)
    }

    fn blob(b: u8) -> Blob {
        Box::new([b; BLOB_BYTES])
    }

    #[test]
    fn rejects_unknown_queues_and_over_quota() {
        let limits = Limits {
            queue_max_messages: 2,
            max_queues: 1,
            ..Limits::default()
        };
        let (_d, mut s) = open(limits);
        let (rid, sid) = create(&mut s, 1, T0);
        let again = Op::Create {
            recipient_id: [2; 16],
            sender_id: [3; 16],
            queue_key: vec![5; 33],
        };
        assert_eq!(s.run(&again, T0), Err(ErrorCode::TooManyQueues));
        let send = |b| Op::Send {
            sender_id: sid,
            blob: blob(b),
        };
        assert!(s.run(&send(1), T0).is_ok());
        assert!(s.run(&send(2), T0).is_ok());
        assert_eq!(s.run(&send(3), T0), Err(ErrorCode::QueueFull));
        let unknown = Op::Send {
            sender_id: rid, // a recipient id is not a sender id
            blob: blob(1),
        };
        assert_eq!(s.run(&unknown, T0), Err(ErrorCode::NoSuchQueue));
        assert_eq!(
            s.run(&Op::TakeInvite { sender_id: sid }, T0),
            Err(ErrorCode::NoSuchInvite)
        );
        // Byte quota.
        let limits = Limits {
            queue_max_bytes: BLOB_BYTES as u64,
            ..Limits::default()
        };
        let (_d, mut s) = open(limits);
        let (_, sid) = create(&mut s, 1, T0);
        let send = Op::Send {
            sender_id: sid,
            blob: blob(1),
        };
        assert!(s.run(&send, T0).is_ok());
        assert_eq!(s.run(&send, T0), Err(ErrorCode::QueueFull));
    }

    #[test]
    fn fetch_ack_and_batches() {
        let (_d, mut s) = open(Limits::default());
        let (rid, sid) = create(&mut s, 1, T0);
        let ops: Vec<Op> = (0..5)
            .map(|i| Op::Send {
                sender_id: sid,
                blob: blob(i),
            })
            .chain([Op::Send {
                sender_id: [9; 16],
                blob: blob(9),
            }])
            .collect();
        let r = s.run_batch(&ops, T0);
        assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 5);
        assert_eq!(r.last().unwrap(), &Err(ErrorCode::NoSuchQueue));
        let Ok(Outcome::Items { items, more }) = s.run(
            &Op::Fetch {
                recipient_id: rid,
                max: 3,
            },
            T0,
        ) else {
            panic!()
        };
        assert!(more);
        assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(items[2].1[0], 2);
        s.run(
            &Op::Ack {
                recipient_id: rid,
                item_ids: vec![1, 2, 3, 77, u64::MAX],
            },
            T0,
        )
        .unwrap();
        assert_eq!(s.totals().items, 2);
        let Ok(Outcome::Items { items, more }) = s.run(
            &Op::Fetch {
                recipient_id: rid,
                max: 64,
            },
            T0,
        ) else {
            panic!()
        };
        assert!(!more);
        assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), [4, 5]);
    }

    #[test]
    fn invitations_are_taken_once_and_expire() {
        let (_d, mut s) = open(Limits::default());
        let (rid, sid) = create(&mut s, 1, T0);
        let put = |index, total, ttl_secs| Op::PutInvite {
            recipient_id: rid,
            index,
            total,
            ttl_secs,
            blob: blob(index as u8),
        };
        // Incomplete payload: not takeable.
        s.run(&put(0, 2, 60), T0).unwrap();
        let take = Op::TakeInvite { sender_id: sid };
        assert_eq!(s.run(&take, T0), Err(ErrorCode::NoSuchInvite));
        s.run(&put(1, 2, 60), T0).unwrap();
        let Ok(Outcome::Invite(b)) = s.run(&take, T0 + 1) else {
            panic!()
        };
        assert_eq!((b.len(), b[1][0]), (2, 1));
        assert_eq!(s.run(&take, T0 + 1), Err(ErrorCode::NoSuchInvite));
        // Expired.
        s.run(&put(0, 1, 60), T0).unwrap();
        assert_eq!(s.run(&take, T0 + 60), Err(ErrorCode::NoSuchInvite));
        // Re-putting index 0 replaces an old payload.
        s.run(&put(0, 2, 60), T0).unwrap();
        s.run(&put(0, 1, 60), T0).unwrap();
        assert!(matches!(s.run(&take, T0), Ok(Outcome::Invite(b)) if b.len() == 1));
    }

    #[test]
    fn gc_removes_expired_items_invites_and_idle_queues() {
        let limits = Limits {
            ttl_secs: 2 * DAY,
            ..Limits::default()
        };
        let (_d, mut s) = open(limits);
        let (rid, sid) = create(&mut s, 1, T0);
        let (idle, idle_sid) = create(&mut s, 2, T0);
        for t in [T0, T0 + DAY] {
            for sid in [sid, idle_sid] {
                s.run(
                    &Op::Send {
                        sender_id: sid,
                        blob: blob(1),
                    },
                    t,
                )
                .unwrap();
            }
        }
        s.run(
            &Op::PutInvite {
                recipient_id: rid,
                index: 0,
                total: 1,
                ttl_secs: 60,
                blob: blob(1),
            },
            T0,
        )
        .unwrap();
        // The owner of `rid` keeps it active.
        s.run(&Op::Touch { recipient_id: rid }, T0 + DAY).unwrap();
        let Ok(Outcome::Gc(r)) = s.run(&Op::Gc, T0 + 2 * DAY + TIME_GRANULARITY_SECS) else {
            panic!()
        };
        assert_eq!(
            r,
            GcReport {
                items: 1,
                queues: 1,
                invites: 1
            }
        );
        assert_eq!(
            s.totals(),
            Totals {
                queues: 1,
                items: 1
            }
        );
        assert_eq!(
            s.run(&Op::Touch { recipient_id: idle }, T0),
            Err(ErrorCode::NoSuchQueue)
        );
        let Ok(Outcome::Items { items, .. }) = s.run(
            &Op::Fetch {
                recipient_id: rid,
                max: 10,
            },
            T0,
        ) else {
            panic!()
        };
        assert_eq!(items.len(), 1);
    }

    #[test]
    fn totals_survive_reopen_and_newer_schema_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("relay.sqlite");
        {
            let mut s = Storage::open(&p, Limits::default()).unwrap();
            let (_, sid) = create(&mut s, 1, T0);
            s.run(
                &Op::Send {
                    sender_id: sid,
                    blob: blob(1),
                },
                T0,
            )
            .unwrap();
        }
        let s = Storage::open(&p, Limits::default()).unwrap();
        assert_eq!(
            s.totals(),
            Totals {
                queues: 1,
                items: 1
            }
        );
        s.conn.pragma_update(None, "user_version", 2).unwrap();
        drop(s);
        assert!(matches!(
            Storage::open(&p, Limits::default()),
            Err(StorageError::SchemaTooNew { found: 2 })
        ));
    }
}
