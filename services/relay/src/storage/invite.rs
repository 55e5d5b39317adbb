//! Invitation payloads: stored blob by blob, taken once, whole or not at all.

use postern_core::relay_proto::{Blob, ErrorCode, QueueId};
use rusqlite::{OptionalExtension as _, params};

use super::{OpError, Outcome, Storage, quota, secs, to_blob};

impl Storage {
    pub(super) fn put_invite(
        &mut self,
        recipient_id: &QueueId,
        index: u32,
        total: u32,
        ttl_secs: u32,
        blob: &Blob,
        now: u64,
    ) -> Result<Outcome, OpError> {
        let (id, _) = self
            .by_recipient(recipient_id)?
            .ok_or(OpError::Refused(ErrorCode::NoSuchQueue))?;
        if index == 0 {
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
                secs(quota::invite_expiry(now, ttl_secs)),
                &blob[..]
            ])?;
        self.touch(id, now)?;
        Ok(Outcome::Done)
    }

    pub(super) fn take_invite(
        &mut self,
        sender_id: &QueueId,
        now: u64,
    ) -> Result<Outcome, OpError> {
        let no_invite = || OpError::Refused(ErrorCode::NoSuchInvite);
        let id: i64 = self
            .conn
            .prepare_cached("SELECT id FROM queues WHERE sender_id = ?1")?
            .query_row([&sender_id[..]], |r| r.get(0))
            .optional()?
            .ok_or_else(no_invite)?;
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
                usize::try_from(t).ok() == Some(blobs.len()) && blobs.iter().all(|(x, _)| *x == t)
            });
        if !complete {
            return Err(no_invite());
        }
        // One-time: gone in the same transaction that read it.
        self.conn
            .prepare_cached("DELETE FROM invites WHERE queue = ?1")?
            .execute([id])?;
        Ok(Outcome::Invite(blobs.into_iter().map(|(_, b)| b).collect()))
    }
}
