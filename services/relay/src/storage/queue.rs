//! Queues and their items: create, send, fetch, ack, delete.

use postern_core::relay_proto::{Blob, ErrorCode, QueueId};
use rusqlite::{OptionalExtension as _, params};

use super::{OpError, Outcome, Storage, coarse, quota, secs, to_blob};

fn no_queue() -> OpError {
    OpError::Refused(ErrorCode::NoSuchQueue)
}

impl Storage {
    /// (row id, item count) of the queue with this recipient id.
    pub(super) fn by_recipient(
        &self,
        rid: &QueueId,
    ) -> Result<Option<(i64, i64)>, rusqlite::Error> {
        self.conn
            .prepare_cached("SELECT id, items FROM queues WHERE recipient_id = ?1")?
            .query_row([&rid[..]], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()
    }

    /// Marks a queue active now.
    pub(super) fn touch(&self, id: i64, now: u64) -> Result<(), rusqlite::Error> {
        // Written only when the coarse time moves on, so most reads stay
        // read-only transactions (no fsync).
        self.conn
            .prepare_cached("UPDATE queues SET active = ?2 WHERE id = ?1 AND active < ?2")?
            .execute(params![id, coarse(now)])?;
        Ok(())
    }

    pub(super) fn create(
        &mut self,
        recipient_id: &QueueId,
        sender_id: &QueueId,
        queue_key: &[u8],
        now: u64,
    ) -> Result<Outcome, OpError> {
        quota::admit_queue(self.totals, &self.limits).map_err(OpError::Refused)?;
        self.conn
            .prepare_cached(
                "INSERT INTO queues (recipient_id, sender_id, queue_key, next_item, items, active)
                 VALUES (?1, ?2, ?3, 1, 0, ?4)",
            )?
            .execute(params![
                &recipient_id[..],
                &sender_id[..],
                queue_key,
                coarse(now)
            ])?;
        self.totals.queues += 1;
        Ok(Outcome::Done)
    }

    pub(super) fn queue_key(&self, recipient_id: &QueueId) -> Result<Outcome, OpError> {
        let key: Option<Vec<u8>> = self
            .conn
            .prepare_cached("SELECT queue_key FROM queues WHERE recipient_id = ?1")?
            .query_row([&recipient_id[..]], |r| r.get(0))
            .optional()?;
        Ok(Outcome::Key(key))
    }

    pub(super) fn send(
        &mut self,
        sender_id: &QueueId,
        blob: &Blob,
        now: u64,
    ) -> Result<Outcome, OpError> {
        let row: Option<(i64, Vec<u8>, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT id, recipient_id, items, next_item FROM queues WHERE sender_id = ?1",
            )?
            .query_row([&sender_id[..]], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (id, rid, items, next) = row.ok_or_else(no_queue)?;
        let rid: QueueId = rid
            .as_slice()
            .try_into()
            .map_err(|_| OpError::Refused(ErrorCode::Internal))?;
        let items = u64::try_from(items).unwrap_or(u64::MAX);
        quota::admit_item(items, &self.limits).map_err(OpError::Refused)?;
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

    pub(super) fn fetch(
        &mut self,
        recipient_id: &QueueId,
        max: u32,
        now: u64,
    ) -> Result<Outcome, OpError> {
        let (id, count) = self.by_recipient(recipient_id)?.ok_or_else(no_queue)?;
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

    pub(super) fn ack(
        &mut self,
        recipient_id: &QueueId,
        item_ids: &[u64],
        now: u64,
    ) -> Result<Outcome, OpError> {
        let (id, _) = self.by_recipient(recipient_id)?.ok_or_else(no_queue)?;
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

    pub(super) fn touch_queue(
        &mut self,
        recipient_id: &QueueId,
        now: u64,
    ) -> Result<Outcome, OpError> {
        let (id, _) = self.by_recipient(recipient_id)?.ok_or_else(no_queue)?;
        self.touch(id, now)?;
        Ok(Outcome::Done)
    }

    pub(super) fn delete_queue(&mut self, recipient_id: &QueueId) -> Result<Outcome, OpError> {
        let (id, count) = self.by_recipient(recipient_id)?.ok_or_else(no_queue)?;
        for sql in [
            "DELETE FROM items WHERE queue = ?1",
            "DELETE FROM invites WHERE queue = ?1",
            "DELETE FROM queues WHERE id = ?1",
        ] {
            self.conn.prepare_cached(sql)?.execute([id])?;
        }
        self.totals.queues = self.totals.queues.saturating_sub(1);
        self.totals.items = self
            .totals
            .items
            .saturating_sub(u64::try_from(count).unwrap_or(0));
        Ok(Outcome::Done)
    }
}
