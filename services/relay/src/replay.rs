//! Replay protection for onion packets: the tags of packets this relay
//! has processed, per Sphinx key epoch, in memory and in one append-only
//! file per epoch in the data directory (so a restart does not reopen the
//! window). Bounded: at most [`MAX_TAGS_PER_EPOCH`] tags per epoch (beyond
//! that, packets of the epoch are refused until it ends), and an epoch's
//! tags are dropped with its key.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Most tags remembered per epoch (32 bytes each in memory and on disk).
pub const MAX_TAGS_PER_EPOCH: usize = 4_000_000;
const PREFIX: &str = "replay-";

/// Outcome of [`ReplayCache::insert`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: process the packet.
    Fresh,
    /// Already processed: drop it.
    Replay,
    /// The epoch's cache is full: drop it.
    Full,
}

struct Epoch {
    tags: HashSet<[u8; 32]>,
    file: Arc<File>,
    /// Tags recorded since the last [`ReplayCache::take_batch`], not yet
    /// handed to a [`Batch`].
    pending: Vec<u8>,
}

/// The per-epoch tag sets.
pub struct ReplayCache {
    dir: PathBuf,
    epochs: HashMap<u32, Epoch>,
}

impl core::fmt::Debug for ReplayCache {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "ReplayCache({} epochs)", self.epochs.len())
    }
}

fn path_for(dir: &Path, epoch: u32) -> PathBuf {
    dir.join(format!("{PREFIX}{epoch}"))
}

impl ReplayCache {
    /// Loads the tags stored in `dir`.
    pub fn open(dir: &Path) -> std::io::Result<ReplayCache> {
        let mut c = ReplayCache {
            dir: dir.to_path_buf(),
            epochs: HashMap::new(),
        };
        for e in std::fs::read_dir(dir)?.flatten() {
            let name = e.file_name();
            let Some(epoch) = name
                .to_str()
                .and_then(|n| n.strip_prefix(PREFIX))
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            let mut bytes = Vec::new();
            File::open(e.path())?.read_to_end(&mut bytes)?;
            // A torn last record (crash mid-write) is cut off before
            // anything is appended, so later tags stay aligned.
            let whole = bytes.len() - bytes.len() % 32;
            if whole != bytes.len() {
                OpenOptions::new()
                    .write(true)
                    .open(e.path())?
                    .set_len(whole as u64)?;
            }
            let ep = c.epoch(epoch)?;
            for t in bytes.chunks_exact(32) {
                if let Ok(tag) = <[u8; 32]>::try_from(t) {
                    ep.tags.insert(tag);
                }
            }
        }
        Ok(c)
    }

    fn epoch(&mut self, epoch: u32) -> std::io::Result<&mut Epoch> {
        if !self.epochs.contains_key(&epoch) {
            let f = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path_for(&self.dir, epoch))?;
            self.epochs.insert(
                epoch,
                Epoch {
                    tags: HashSet::new(),
                    file: Arc::new(f),
                    pending: Vec::new(),
                },
            );
        }
        self.epochs
            .get_mut(&epoch)
            .ok_or_else(|| std::io::Error::other("replay epoch"))
    }

    /// Records `tag` for `epoch` if it is new. It is on disk once the
    /// next [`ReplayCache::take_batch`]'s [`Batch::write`] succeeded.
    pub fn insert(&mut self, epoch: u32, tag: [u8; 32]) -> std::io::Result<Seen> {
        let ep = self.epoch(epoch)?;
        if ep.tags.contains(&tag) {
            return Ok(Seen::Replay);
        }
        if ep.tags.len() >= MAX_TAGS_PER_EPOCH {
            return Ok(Seen::Full);
        }
        ep.pending.extend_from_slice(&tag);
        ep.tags.insert(tag);
        Ok(Seen::Fresh)
    }

    /// Whether tags wait for a batch.
    pub fn has_pending(&self) -> bool {
        self.epochs.values().any(|e| !e.pending.is_empty())
    }

    /// Hands every tag recorded since the last call to a batch, to be
    /// written without holding the cache (so packets keep being checked
    /// while it syncs).
    pub fn take_batch(&mut self) -> Batch {
        let parts = self
            .epochs
            .values_mut()
            .filter(|e| !e.pending.is_empty())
            .map(|e| Part {
                file: e.file.clone(),
                bytes: std::mem::take(&mut e.pending),
                written: 0,
            })
            .collect();
        Batch { parts }
    }

    /// Forgets (and deletes the files of) epochs for which `keep` is false.
    pub fn prune(&mut self, keep: impl Fn(u32) -> bool) {
        let gone: Vec<u32> = self.epochs.keys().copied().filter(|e| !keep(*e)).collect();
        for e in gone {
            self.epochs.remove(&e);
            let _ = std::fs::remove_file(path_for(&self.dir, e));
        }
    }
}

struct Part {
    file: Arc<File>,
    bytes: Vec<u8>,
    written: usize,
}

/// Tags taken from the cache together, to be appended and synced with
/// one `fdatasync` per epoch file (group commit).
pub struct Batch {
    parts: Vec<Part>,
}

impl core::fmt::Debug for Batch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Batch({} tags)", self.tags())
    }
}

impl Batch {
    /// No tags in it.
    pub fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// How many tags it holds.
    pub fn tags(&self) -> usize {
        self.parts.iter().map(|p| p.bytes.len() / 32).sum()
    }

    /// Appends the tags and syncs each file. On an error (a full disk)
    /// the batch remembers how far it got: calling again goes on from
    /// there, so the files never hold a gap or a tag twice, and a torn
    /// record is cut off at the next start.
    pub fn write(&mut self) -> std::io::Result<()> {
        for p in &mut self.parts {
            while let Some(rest) = p.bytes.get(p.written..).filter(|r| !r.is_empty()) {
                let n = (&*p.file).write(rest)?;
                if n == 0 {
                    return Err(std::io::ErrorKind::WriteZero.into());
                }
                p.written += n;
            }
        }
        for p in &self.parts {
            p.file.sync_data()?;
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn replays_are_seen_across_a_restart_and_pruned_with_their_epoch() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ReplayCache::open(dir.path()).unwrap();
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Fresh);
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Replay);
        assert_eq!(c.insert(8, [1; 32]).unwrap(), Seen::Fresh);
        c.take_batch().write().unwrap();
        drop(c);
        let mut c = ReplayCache::open(dir.path()).unwrap();
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Replay);
        assert_eq!(c.insert(8, [1; 32]).unwrap(), Seen::Replay);
        c.prune(|e| e == 8);
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Fresh);
        assert!(!path_for(dir.path(), 9).exists());
    }

    /// Tags are on disk only once their batch is written: a tag recorded
    /// but not yet committed is gone after a restart (which is why the mix
    /// forwards a packet only after its batch).
    #[test]
    fn a_tag_is_durable_once_its_batch_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ReplayCache::open(dir.path()).unwrap();
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Fresh);
        let mut batch = c.take_batch();
        assert_eq!(batch.tags(), 1);
        assert!(!c.has_pending() && c.take_batch().is_empty());
        assert_eq!(c.insert(7, [2; 32]).unwrap(), Seen::Fresh);
        batch.write().unwrap();
        drop(c);
        let mut c = ReplayCache::open(dir.path()).unwrap();
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Replay);
        assert_eq!(c.insert(7, [2; 32]).unwrap(), Seen::Fresh);
    }

    /// A write that fails (here `/dev/full`: every write is ENOSPC) keeps
    /// the batch whole, to be written again; nothing is skipped.
    #[test]
    fn a_failed_write_keeps_the_batch_for_the_next_attempt() {
        let full = OpenOptions::new().append(true).open("/dev/full").unwrap();
        let mut batch = Batch {
            parts: vec![Part {
                file: Arc::new(full),
                bytes: vec![5; 64],
                written: 0,
            }],
        };
        let e = batch.write().unwrap_err();
        assert_eq!(e.raw_os_error(), Some(28), "ENOSPC: {e}");
        assert_eq!((batch.tags(), batch.parts[0].written), (2, 0));
        // Space returns: the same batch goes to a file that takes it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("replay-3");
        batch.parts[0].file = Arc::new(
            OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap(),
        );
        batch.write().unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), vec![5; 64]);
    }

    /// A crash mid-write leaves a torn last record: it is cut off at the
    /// next start, so tags written after it stay aligned and are seen
    /// after yet another restart.
    #[test]
    fn a_torn_record_does_not_misalign_later_tags() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ReplayCache::open(dir.path()).unwrap();
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Fresh);
        c.take_batch().write().unwrap();
        drop(c);
        let path = path_for(dir.path(), 7);
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(&[9; 13]).unwrap();
        drop(f);
        let mut c = ReplayCache::open(dir.path()).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32);
        assert_eq!(c.insert(7, [2; 32]).unwrap(), Seen::Fresh);
        c.take_batch().write().unwrap();
        drop(c);
        let mut c = ReplayCache::open(dir.path()).unwrap();
        assert_eq!(c.insert(7, [1; 32]).unwrap(), Seen::Replay);
        assert_eq!(c.insert(7, [2; 32]).unwrap(), Seen::Replay);
    }
}
