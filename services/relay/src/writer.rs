//! The storage thread: one thread owns the [`Storage`] and applies the
//! operations of all connections, many per transaction (group commit).
//!
//! A connection sends an [`Op`] and awaits its result; the thread takes
//! every operation already waiting (up to [`MAX_BATCH`]), applies them in
//! one transaction, commits (one fsync of the WAL) and only then answers
//! each. So no connection is told `Ok` before its data is durable, and
//! under load many sends share one fsync.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{SystemTime, UNIX_EPOCH};

use postern_core::relay_proto::ErrorCode;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;
use crate::storage::{Op, Outcome, Storage};

/// Most operations in one transaction.
pub const MAX_BATCH: usize = 256;
/// Most operations waiting for the storage thread; callers wait beyond.
pub const QUEUE_DEPTH: usize = 4096;

type Job = (Op, oneshot::Sender<Result<Outcome, ErrorCode>>);

/// A handle to the storage thread (cheap to clone).
#[derive(Debug, Clone)]
pub struct Writer {
    tx: mpsc::Sender<Job>,
}

/// Seconds since the epoch (the relay's only clock read for storage).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Writer {
    /// Starts the thread. It ends, after the last queued operation and a
    /// WAL checkpoint, when every `Writer` handle is dropped.
    pub fn start(
        mut storage: Storage,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Writer, std::thread::JoinHandle<()>)> {
        let (tx, mut rx) = mpsc::channel::<Job>(QUEUE_DEPTH);
        let publish = |s: &Storage, m: &Metrics| {
            let t = s.totals();
            m.queues.store(t.queues, Ordering::Relaxed);
            m.items.store(t.items, Ordering::Relaxed);
        };
        publish(&storage, &metrics);
        let thread = std::thread::Builder::new()
            .name("postern-storage".into())
            .spawn(move || {
                let mut ops = Vec::with_capacity(MAX_BATCH);
                let mut replies = Vec::with_capacity(MAX_BATCH);
                while let Some((op, reply)) = rx.blocking_recv() {
                    ops.push(op);
                    replies.push(reply);
                    while ops.len() < MAX_BATCH {
                        match rx.try_recv() {
                            Ok((op, reply)) => {
                                ops.push(op);
                                replies.push(reply);
                            }
                            Err(_) => break,
                        }
                    }
                    let results = storage.run_batch(&ops, unix_now());
                    metrics.storage_batches.fetch_add(1, Ordering::Relaxed);
                    metrics
                        .storage_ops
                        .fetch_add(ops.len() as u64, Ordering::Relaxed);
                    publish(&storage, &metrics);
                    for (reply, result) in replies.drain(..).zip(results) {
                        // The caller may be gone (connection closed).
                        let _ = reply.send(result);
                    }
                    ops.clear();
                }
                if let Err(e) = storage.checkpoint() {
                    tracing::warn!(error = %e, "WAL checkpoint at shutdown failed");
                }
            })?;
        Ok((Writer { tx }, thread))
    }

    /// Applies `op`; returns after its transaction committed.
    pub async fn call(&self, op: Op) -> Result<Outcome, ErrorCode> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send((op, tx))
            .await
            .map_err(|_| ErrorCode::ShuttingDown)?;
        rx.await.map_err(|_| ErrorCode::Internal)?
    }
}
