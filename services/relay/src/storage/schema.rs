//! The database's tables, and opening it.

use std::path::Path;

use rusqlite::Connection;

use super::StorageError;

/// Schema version written to `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

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
/// Opens the database, refusing one written by a newer relay, and creates
/// the tables it lacks.
pub(super) fn open(path: &Path) -> Result<Connection, StorageError> {
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
    Ok(conn)
}
