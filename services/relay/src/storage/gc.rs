//! Garbage collection: expired items and invitations, idle queues.

use super::{GcReport, OpError, Outcome, Storage, quota, secs};

impl Storage {
    pub(super) fn gc(&mut self, now: u64) -> Result<Outcome, OpError> {
        let cutoff = secs(quota::retention_cutoff(now, &self.limits));
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
        report.queues =
            self.conn
                .execute("DELETE FROM queues WHERE active <= ?1", [cutoff])? as u64;
        // Expired items, keeping the per-queue counts right.
        self.conn.execute(
            "UPDATE queues SET items = items -
                (SELECT COUNT(*) FROM items WHERE items.queue = queues.id AND stored <= ?1)
             WHERE id IN (SELECT queue FROM items WHERE stored <= ?1)",
            [cutoff],
        )?;
        report.items =
            self.conn
                .execute("DELETE FROM items WHERE stored <= ?1", [cutoff])? as u64;
        report.invites = self
            .conn
            .execute("DELETE FROM invites WHERE expires <= ?1", [secs(now)])?
            as u64;
        self.reload_totals()?;
        Ok(Outcome::Gc(report))
    }
}
