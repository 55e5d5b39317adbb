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
//!
//! | file | holds |
//! |---|---|
//! | `mod.rs` | the operations, their results, transactions and batches |
//! | `schema.rs` | tables, pragmas, the schema version check |
//! | `quota.rs` | quota and expiry decisions, pure functions of counts and limits |
//! | `queue.rs` | queues and their items: create, send, fetch, ack, delete |
//! | `invite.rs` | invitation payloads: put, take once |
//! | `gc.rs` | removing expired items, invitations and idle queues |

mod gc;
mod invite;
mod queue;
pub mod quota;
mod schema;
#[cfg(test)]
mod tests;

use std::path::Path;

use postern_core::consts::BLOB_BYTES;
use postern_core::relay_proto::{Blob, Command, ErrorCode, QueueId};
use rusqlite::Connection;

pub use schema::SCHEMA_VERSION;

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
///
/// Client requests are not declared again here: a command that acts on
/// stored state travels as the [`Command`] decoded from its frame. Only
/// what the relay itself asks for has its own variant.
#[derive(Clone)]
#[non_exhaustive]
pub enum Op {
    /// A client command that acts on stored state, as decoded: `Send`,
    /// `Fetch`, `Ack`, `Subscribe` (checks the queue exists and marks it
    /// active), `DeleteQueue`, `PutInvite`, `TakeInvite`. Any other
    /// command is refused with `UnknownCommand`.
    Client(Command),
    /// Registers a queue under ids the relay drew (the stored half of
    /// [`Command::Create`]).
    Register {
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
    /// Deletes expired items and invitations and idle queues.
    Gc,
}

impl core::fmt::Debug for Op {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        // Queue ids stay out of logs.
        match self {
            Op::Client(c) => write!(f, "Client({})", c.name()),
            Op::Register { .. } => f.write_str("Register"),
            Op::QueueKey { .. } => f.write_str("QueueKey"),
            Op::Gc => f.write_str("Gc"),
        }
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

/// The error code for a failed transaction: `StorageFull` when the disk
/// (or the database's size limit) is full, so a client can tell "try
/// later" from a fault; `Internal` otherwise.
fn failure_code(e: &rusqlite::Error) -> ErrorCode {
    match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DiskFull) => ErrorCode::StorageFull,
        _ => ErrorCode::Internal,
    }
}

impl Storage {
    /// Opens (creating if needed) the database at `path`.
    pub fn open(path: &Path, limits: Limits) -> Result<Storage, StorageError> {
        let conn = schema::open(path)?;
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
            Err(e) => {
                let code = failure_code(&e);
                // Counters may have moved inside the rolled-back transaction.
                if self.reload_totals().is_err() {
                    return ops.iter().map(|_| Err(code)).collect();
                }
                if ops.len() == 1 {
                    return vec![Err(code)];
                }
                ops.iter()
                    .map(|op| match self.try_batch(std::slice::from_ref(op), now) {
                        Ok(mut r) => r.pop().unwrap_or(Err(ErrorCode::Internal)),
                        Err(e) => {
                            let _ = self.reload_totals();
                            Err(failure_code(&e))
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

    fn apply(&mut self, op: &Op, now: u64) -> Result<Outcome, OpError> {
        let command = match op {
            Op::Client(c) => c,
            Op::Register {
                recipient_id,
                sender_id,
                queue_key,
            } => return self.create(recipient_id, sender_id, queue_key, now),
            Op::QueueKey { recipient_id } => return self.queue_key(recipient_id),
            Op::Gc => return self.gc(now),
        };
        match command {
            Command::Send { sender_id, blob } => self.send(sender_id, blob, now),
            Command::Fetch { recipient_id, max } => self.fetch(recipient_id, *max, now),
            Command::Ack {
                recipient_id,
                item_ids,
            } => self.ack(recipient_id, item_ids, now),
            Command::Subscribe { recipient_id } => self.touch_queue(recipient_id, now),
            Command::DeleteQueue { recipient_id } => self.delete_queue(recipient_id),
            Command::PutInvite {
                recipient_id,
                index,
                total,
                ttl_secs,
                blob,
            } => self.put_invite(recipient_id, *index, *total, *ttl_secs, blob, now),
            Command::TakeInvite { sender_id } => self.take_invite(sender_id, now),
            // Create needs ids drawn by the relay (`Register`); the rest
            // never touch storage.
            _ => Err(OpError::Refused(ErrorCode::UnknownCommand)),
        }
    }

    /// Writes the WAL back into the database file (on shutdown).
    pub fn checkpoint(&self) -> Result<(), rusqlite::Error> {
        self.conn
            .query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
    }
}
