//! The SQLCipher side: keying, durability settings, schema migrations, and
//! the core's `KvStore` on top of three tables.

use std::borrow::Cow;

use postern_core::store::{
    AttachmentId, ChangeSet, ConversationSummary, Direction, MessageId, Namespace, OutboxEntry,
    Record, StoredMessage,
};
use postern_core::{Address, KvStore, StoreError, UnixTime};
use rusqlite::{Connection, ErrorCode, OptionalExtension, params};
use zeroize::Zeroizing;

use crate::{Profile, ProfileError};

/// Schema migrations; entry `i` takes the database from version `i` to
/// `i + 1`. Never edit a released entry: append a new one.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 0 -> 1
    "CREATE TABLE records (
         ns     INTEGER NOT NULL,
         key    BLOB    NOT NULL,
         schema INTEGER NOT NULL,
         value  BLOB    NOT NULL,
         PRIMARY KEY (ns, key)
     ) WITHOUT ROWID;
     CREATE TABLE messages (
         seq       INTEGER PRIMARY KEY,
         peer      BLOB    NOT NULL,
         id        BLOB    NOT NULL,
         incoming  INTEGER NOT NULL,
         ts        INTEGER NOT NULL,
         body      BLOB    NOT NULL,
         UNIQUE (peer, id)
     );
     CREATE INDEX messages_by_peer ON messages (peer, seq);
     CREATE TABLE conversations (
         peer      BLOB    PRIMARY KEY,
         messages  INTEGER NOT NULL,
         last_seq  INTEGER NOT NULL
     ) WITHOUT ROWID;
     CREATE INDEX conversations_by_last ON conversations (last_seq);
     CREATE TABLE outbox (
         seq       INTEGER PRIMARY KEY,
         id        BLOB    NOT NULL UNIQUE,
         peer      BLOB    NOT NULL,
         payload   BLOB    NOT NULL
     );",
    // 1 -> 2
    "CREATE TABLE attachment_chunks (
         attachment BLOB    NOT NULL,
         idx        INTEGER NOT NULL,
         data       BLOB    NOT NULL,
         PRIMARY KEY (attachment, idx)
     ) WITHOUT ROWID;",
    // 2 -> 3: incoming messages not yet read, per conversation.
    "ALTER TABLE conversations ADD COLUMN unread INTEGER NOT NULL DEFAULT 0;",
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

fn sqlite(e: rusqlite::Error) -> ProfileError {
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => ProfileError::Corrupt,
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => ProfileError::InUse,
        _ => ProfileError::Sqlite(e),
    }
}

fn hex_key(key: &[u8; 32]) -> Zeroizing<String> {
    let mut s = Zeroizing::new(String::with_capacity(64));
    for b in key {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Gives SQLCipher the raw 256-bit key (no SQLCipher-side KDF: the key is
/// already random or Argon2id-derived).
pub(crate) fn apply_key(conn: &Connection, key: &[u8; 32]) -> Result<(), ProfileError> {
    // Silence SQLCipher's own stderr logging ("hmac check failed").
    let _ = conn.execute_batch("PRAGMA cipher_log_level = NONE;");
    let stmt = Zeroizing::new(format!("PRAGMA key = \"x'{}'\";", hex_key(key).as_str()));
    conn.execute_batch(&stmt).map_err(sqlite)
}

/// Cheap checks on open: the first page decrypts and authenticates (a
/// wrong key was already refused by the header's key check), and the file
/// holds exactly the pages the header promises (a truncated file is
/// refused). Damage elsewhere is caught page by page as pages are read —
/// every SQLCipher page carries an HMAC — or all at once by [`verify_all`].
pub(crate) fn verify_readable(
    conn: &Connection,
    file_len: Option<u64>,
) -> Result<(), ProfileError> {
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(sqlite)?;
    if let Some(file_len) = file_len {
        let pages = pragma_int(conn, "page_count")?;
        // SQLCipher answers `page_size` as text, SQLite as an integer.
        let size = pragma_int(conn, "page_size")?;
        if u64::try_from(pages.saturating_mul(size)).ok() != Some(file_len) {
            return Err(ProfileError::Corrupt);
        }
    }
    Ok(())
}

fn pragma_int(conn: &Connection, name: &str) -> Result<i64, ProfileError> {
    let v: rusqlite::types::Value = conn
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .map_err(sqlite)?;
    match v {
        rusqlite::types::Value::Integer(i) => Ok(i),
        rusqlite::types::Value::Text(t) => t.trim().parse().map_err(|_| ProfileError::Corrupt),
        _ => Err(ProfileError::Corrupt),
    }
}

/// Reads and authenticates every page.
pub(crate) fn verify_all(conn: &Connection) -> Result<(), ProfileError> {
    let mut stmt = conn
        .prepare("PRAGMA cipher_integrity_check")
        .map_err(sqlite)?;
    let problems = stmt
        .query_map([], |r| r.get::<_, String>(0))
        .map_err(sqlite)?
        .count();
    if problems > 0 {
        return Err(ProfileError::Corrupt);
    }
    let ok: String = conn
        .query_row("PRAGMA quick_check", [], |r| r.get(0))
        .map_err(sqlite)?;
    if ok != "ok" {
        return Err(ProfileError::Corrupt);
    }
    Ok(())
}

/// Durability: WAL with `synchronous = FULL`, so a transaction that
/// returned from COMMIT survives power loss; then schema migrations.
pub(crate) fn configure_and_migrate(conn: &Connection, target: i64) -> Result<(), ProfileError> {
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         PRAGMA synchronous = FULL;
         PRAGMA foreign_keys = ON;
         PRAGMA secure_delete = ON;",
    )
    .map_err(sqlite)?;
    migrate(conn, target)
}

/// Migrates to `target` (tests use lower targets to build old schemas).
pub(crate) fn migrate(conn: &Connection, target: i64) -> Result<(), ProfileError> {
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(sqlite)?;
    if version > SCHEMA_VERSION {
        return Err(ProfileError::SchemaTooNew {
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    for v in version..target {
        let sql = MIGRATIONS
            .get(usize::try_from(v).map_err(|_| ProfileError::Corrupt)?)
            .ok_or(ProfileError::Corrupt)?;
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {sql}; PRAGMA user_version = {}; COMMIT;",
            v + 1
        ))
        .map_err(sqlite)?;
    }
    Ok(())
}

/// Re-encrypts the database under a new key.
pub(crate) fn rekey(conn: &Connection, key: &[u8; 32]) -> Result<(), ProfileError> {
    // rekey is not supported in WAL mode: switch to a rollback journal for
    // the duration, then back.
    conn.execute_batch("PRAGMA journal_mode = DELETE;")
        .map_err(sqlite)?;
    let stmt = Zeroizing::new(format!("PRAGMA rekey = \"x'{}'\";", hex_key(key).as_str()));
    conn.execute_batch(&stmt).map_err(sqlite)?;
    conn.execute_batch("PRAGMA journal_mode = WAL;")
        .map_err(sqlite)
}

fn backend(e: rusqlite::Error) -> StoreError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => StoreError::Corrupt {
            namespace: "database",
        },
        _ => StoreError::Backend("sqlcipher"),
    }
}

fn ns_code(ns: Namespace) -> i64 {
    ns as i64
}

fn to_address(b: Vec<u8>) -> Result<Address, StoreError> {
    Address::from_slice(&b).ok_or(StoreError::Corrupt {
        namespace: "messages",
    })
}

fn to_id(b: Vec<u8>) -> Result<MessageId, StoreError> {
    b.try_into().map_err(|_| StoreError::Corrupt {
        namespace: "messages",
    })
}

fn row_message(
    peer: Vec<u8>,
    id: Vec<u8>,
    incoming: bool,
    ts: i64,
    body: Vec<u8>,
) -> Result<StoredMessage, StoreError> {
    Ok(StoredMessage {
        peer: to_address(peer)?,
        id: to_id(id)?,
        direction: if incoming {
            Direction::Incoming
        } else {
            Direction::Outgoing
        },
        timestamp: UnixTime(u64::try_from(ts).map_err(|_| StoreError::Corrupt {
            namespace: "messages",
        })?),
        body: Zeroizing::new(body),
    })
}

impl KvStore for Profile {
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT schema, value FROM records WHERE ns = ?1 AND key = ?2")
            .map_err(backend)?;
        let row = stmt
            .query_row(params![ns_code(ns), key], |r| {
                Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .optional()
            .map_err(backend)?;
        match row {
            None => Ok(None),
            Some((schema, value)) => Ok(Some(Cow::Owned(Record {
                schema: u16::try_from(schema).map_err(|_| StoreError::Corrupt {
                    namespace: ns.name(),
                })?,
                bytes: Zeroizing::new(value),
            }))),
        }
    }

    fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT key FROM records WHERE ns = ?1 ORDER BY key")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![ns_code(ns)], |r| r.get::<_, Vec<u8>>(0))
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    /// One SQLite transaction: every record write, message and outbox
    /// change of the set commits together or not at all.
    fn commit(&mut self, changes: ChangeSet) -> Result<(), StoreError> {
        changes.check_bounds()?;
        let outbox_len: i64 = self
            .conn
            .query_row("SELECT count(*) FROM outbox", [], |r| r.get(0))
            .map_err(backend)?;
        let room = postern_core::consts::MAX_OUTBOX_ENTRIES as i64 - outbox_len;
        if changes.outbox_added().len() as i64 > room {
            return Err(StoreError::Full {
                limit: postern_core::consts::MAX_OUTBOX_ENTRIES,
            });
        }
        let tx = self.conn.transaction().map_err(backend)?;
        {
            let mut put = tx
                .prepare_cached("INSERT OR REPLACE INTO records (ns, key, schema, value) VALUES (?1, ?2, ?3, ?4)")
                .map_err(backend)?;
            let mut del = tx
                .prepare_cached("DELETE FROM records WHERE ns = ?1 AND key = ?2")
                .map_err(backend)?;
            for (ns, key, rec) in changes.records() {
                match rec {
                    Some(r) => put
                        .execute(params![
                            ns_code(ns),
                            key,
                            i64::from(r.schema),
                            r.bytes.as_slice()
                        ])
                        .map_err(backend)?,
                    None => del.execute(params![ns_code(ns), key]).map_err(backend)?,
                };
            }
            // Statements are prepared only for what the change set holds.
            if !changes.messages().is_empty() {
                let mut add = tx
                    .prepare_cached("INSERT INTO messages (peer, id, incoming, ts, body) VALUES (?1, ?2, ?3, ?4, ?5)")
                    .map_err(backend)?;
                let mut conv = tx
                    .prepare_cached(
                        "INSERT INTO conversations (peer, messages, last_seq, unread) VALUES (?1, 1, ?2, ?3)
                         ON CONFLICT (peer) DO UPDATE SET messages = messages + 1,
                             last_seq = excluded.last_seq, unread = unread + excluded.unread",
                    )
                    .map_err(backend)?;
                for m in changes.messages() {
                    let ts = i64::try_from(m.timestamp.millis())
                        .map_err(|_| StoreError::TooLarge { limit: 0 })?;
                    let r = add.execute(params![
                        m.peer.as_bytes().as_slice(),
                        m.id.as_slice(),
                        m.direction == Direction::Incoming,
                        ts,
                        m.body.as_slice()
                    ]);
                    match r {
                        Ok(_) => {}
                        Err(e) if e.sqlite_error_code() == Some(ErrorCode::ConstraintViolation) => {
                            return Err(StoreError::DuplicateMessage);
                        }
                        Err(e) => return Err(backend(e)),
                    }
                    conv.execute(params![
                        m.peer.as_bytes().as_slice(),
                        tx.last_insert_rowid(),
                        i64::from(m.direction == Direction::Incoming)
                    ])
                    .map_err(backend)?;
                }
            }
            if !changes.marked_read().is_empty() {
                let mut read = tx
                    .prepare_cached("UPDATE conversations SET unread = 0 WHERE peer = ?1")
                    .map_err(backend)?;
                for peer in changes.marked_read() {
                    read.execute(params![peer.as_bytes().as_slice()])
                        .map_err(backend)?;
                }
            }
            let mut ob_add = tx
                .prepare_cached("INSERT INTO outbox (id, peer, payload) VALUES (?1, ?2, ?3)")
                .map_err(backend)?;
            for e in changes.outbox_added() {
                ob_add
                    .execute(params![
                        e.id.as_slice(),
                        e.peer.as_bytes().as_slice(),
                        e.payload.as_slice()
                    ])
                    .map_err(|e| match e.sqlite_error_code() {
                        Some(ErrorCode::ConstraintViolation) => StoreError::DuplicateMessage,
                        _ => backend(e),
                    })?;
            }
            let mut ob_del = tx
                .prepare_cached("DELETE FROM outbox WHERE id = ?1")
                .map_err(backend)?;
            for id in changes.outbox_removed() {
                ob_del.execute(params![id.as_slice()]).map_err(backend)?;
            }
            // Prepared only when used, so that a profile still at an older
            // schema (during its own migration tests) commits everything else.
            if !changes.attachments_deleted().is_empty() {
                let mut ch_del = tx
                    .prepare_cached("DELETE FROM attachment_chunks WHERE attachment = ?1")
                    .map_err(backend)?;
                for id in changes.attachments_deleted() {
                    ch_del.execute(params![id.as_slice()]).map_err(backend)?;
                }
            }
            if changes.attachment_chunks_added().next().is_some() {
                let mut ch_put = tx
                    .prepare_cached(
                        "INSERT OR REPLACE INTO attachment_chunks (attachment, idx, data) VALUES (?1, ?2, ?3)",
                    )
                    .map_err(backend)?;
                for (id, index, data) in changes.attachment_chunks_added() {
                    ch_put
                        .execute(params![id.as_slice(), index, data])
                        .map_err(backend)?;
                }
            }
        }
        tx.commit().map_err(backend)
    }

    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT m.peer, m.id, m.incoming, m.ts, m.body, c.messages, c.unread
                 FROM conversations c JOIN messages m ON m.seq = c.last_seq
                 ORDER BY c.last_seq DESC",
            )
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, bool>(2)?,
                    r.get::<_, i64>(3)?,
                    r.get::<_, Vec<u8>>(4)?,
                    r.get::<_, i64>(5)?,
                    r.get::<_, i64>(6)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (peer, id, incoming, ts, body, n, unread) = row.map_err(backend)?;
            let last = row_message(peer, id, incoming, ts, body)?;
            let count = |n: i64| {
                u64::try_from(n).map_err(|_| StoreError::Corrupt {
                    namespace: "conversations",
                })
            };
            out.push(ConversationSummary {
                peer: last.peer,
                messages: count(n)?,
                unread: count(unread)?,
                last,
            });
        }
        Ok(out)
    }

    fn history(&self, peer: &Address, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached(
                "SELECT peer, id, incoming, ts, body FROM messages WHERE peer = ?1
                 ORDER BY seq DESC LIMIT ?2",
            )
            .map_err(backend)?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = stmt
            .query_map(params![peer.as_bytes().as_slice(), limit], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (p, id, inc, ts, body) = row.map_err(backend)?;
            out.push(row_message(p, id, inc, ts, body)?);
        }
        out.reverse();
        Ok(out)
    }

    fn has_message(&self, peer: &Address, id: &MessageId) -> Result<bool, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT 1 FROM messages WHERE peer = ?1 AND id = ?2")
            .map_err(backend)?;
        stmt.exists(params![peer.as_bytes().as_slice(), id.as_slice()])
            .map_err(backend)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT id, peer, payload FROM outbox ORDER BY seq")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, Vec<u8>>(1)?,
                    r.get::<_, Vec<u8>>(2)?,
                ))
            })
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            let (id, peer, payload) = row.map_err(backend)?;
            out.push(OutboxEntry {
                id: to_id(id)?,
                peer: to_address(peer)?,
                payload,
            });
        }
        Ok(out)
    }

    fn attachment_chunk(
        &self,
        id: &AttachmentId,
        index: u32,
    ) -> Result<Option<Cow<'_, [u8]>>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT data FROM attachment_chunks WHERE attachment = ?1 AND idx = ?2")
            .map_err(backend)?;
        stmt.query_row(params![id.as_slice(), index], |r| r.get::<_, Vec<u8>>(0))
            .optional()
            .map(|o| o.map(Cow::Owned))
            .map_err(backend)
    }

    fn attachment_chunks(&self, id: &AttachmentId) -> Result<Vec<u32>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT idx FROM attachment_chunks WHERE attachment = ?1 ORDER BY idx")
            .map_err(backend)?;
        let rows = stmt
            .query_map(params![id.as_slice()], |r| r.get::<_, u32>(0))
            .map_err(backend)?;
        rows.collect::<Result<Vec<_>, _>>().map_err(backend)
    }

    fn attachments(&self) -> Result<Vec<AttachmentId>, StoreError> {
        let mut stmt = self
            .conn
            .prepare_cached("SELECT DISTINCT attachment FROM attachment_chunks ORDER BY attachment")
            .map_err(backend)?;
        let rows = stmt
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(backend)?;
        let mut out = Vec::new();
        for row in rows {
            out.push(to_id(row.map_err(backend)?)?);
        }
        Ok(out)
    }
}
