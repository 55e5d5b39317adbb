//! Received attachments saved as files.
//!
//! An attachment is written only once every chunk is in the profile and
//! the whole matches the digest its message announced; it goes into the
//! downloads directory under a name that never overwrites a file there.
//! The name a contact chose was checked when its message was decoded (no
//! path separators, no `..`); other kinds get a name made here.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use postern_core::message::AttachmentRef;
use postern_core::{KvStore, attachment};

use crate::{ClientError, Result};

/// The most names tried before saving gives up (`n-name` for n < this).
pub const MAX_NAME_TRIES: u32 = 10_000;

pub use postern_engine::attach::download_name;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> ClientError + '_ {
    move |source| ClientError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Verifies a complete attachment against its digest and writes it into
/// `dir` as `name` (or `1-name`, `2-name`, … if taken). Nothing is
/// written when a chunk is missing or the digest does not match.
pub fn save_attachment(
    store: &dyn KvStore,
    aref: &AttachmentRef,
    dir: &Path,
    name: &str,
) -> Result<PathBuf> {
    let v = attachment::verify(store, aref)?;
    let (path, mut f) = create_new_in(dir, name)?;
    for i in 0..attachment::chunk_count(aref.size)? {
        f.write_all(&attachment::read_chunk(store, &v, i)?)
            .map_err(io(&path))?;
    }
    f.sync_all().map_err(io(&path))?;
    Ok(path)
}

/// Writes `bytes` (an attachment already checked against its digest)
/// into `dir` as `name` (or `1-name`, `2-name`, … if taken), never
/// overwriting a file.
pub fn save_bytes(dir: &Path, name: &str, bytes: &[u8]) -> Result<PathBuf> {
    let (path, mut f) = create_new_in(dir, name)?;
    f.write_all(bytes).map_err(io(&path))?;
    f.sync_all().map_err(io(&path))?;
    Ok(path)
}

/// A new file in `dir` named `name`, or `n-name` for the first free `n`.
fn create_new_in(dir: &Path, name: &str) -> Result<(PathBuf, std::fs::File)> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut n = 0u32;
    loop {
        let path = if n == 0 {
            dir.join(name)
        } else {
            dir.join(format!("{n}-{name}"))
        };
        // `create_new`: an existing file (or one made meanwhile) is never
        // opened, so nothing is overwritten.
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(f) => return Ok((path, f)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < MAX_NAME_TRIES => {
                n += 1;
            }
            Err(e) => return Err(io(&path)(e)),
        }
    }
}

/// Writes a small file readable by the owner only (0600 on Unix),
/// replacing it whole (written beside it, then renamed).
pub fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o.open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)
}

/// Writes `bytes` to a file the user chose in a save dialog (which asked
/// before replacing anything).
pub fn write_new(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use postern_core::MemStore;
    use postern_core::crypto::hash::Sha256Stream;

    /// A store holding every chunk of `data` as an attachment announced
    /// with `digest` (the true one unless a test lies).
    fn received(data: &[u8], digest: Option<[u8; 32]>) -> (MemStore, AttachmentRef) {
        let mut h = Sha256Stream::new();
        h.update(data);
        let digest = digest.unwrap_or_else(|| h.finish());
        let aref = attachment::prepare(data.len() as u64, digest, &mut rand::rng()).unwrap();
        let mut store = MemStore::new();
        let n = attachment::chunk_count(aref.size).unwrap();
        let per = data.len().div_ceil(n as usize);
        for (i, part) in data.chunks(per).enumerate() {
            let wire = attachment::seal_chunk(&aref, i as u32, part).unwrap();
            let cs = attachment::receive_chunk(&store, &aref, &wire).unwrap();
            store.commit(cs).unwrap();
        }
        (store, aref)
    }

    #[test]
    fn an_attachment_that_does_not_match_its_digest_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (store, aref) = received(b"what the sender announced", Some([9; 32]));
        assert!(save_attachment(&store, &aref, dir.path(), "a.txt").is_err());
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_saved_attachment_never_overwrites_a_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("notes.txt"), b"mine").unwrap();
        let (store, aref) = received(b"from a contact", None);
        let first = save_attachment(&store, &aref, dir.path(), "notes.txt").unwrap();
        let second = save_attachment(&store, &aref, dir.path(), "notes.txt").unwrap();
        assert_eq!(first, dir.path().join("1-notes.txt"));
        assert_eq!(second, dir.path().join("2-notes.txt"));
        assert_eq!(
            std::fs::read(dir.path().join("notes.txt")).unwrap(),
            b"mine"
        );
        assert_eq!(std::fs::read(&first).unwrap(), b"from a contact");
        assert_eq!(std::fs::read(&second).unwrap(), b"from a contact");
    }

    #[test]
    fn an_incomplete_attachment_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let mut rng = rand::rng();
        let aref = attachment::prepare(10_000, [7; 32], &mut rng).unwrap();
        let store = MemStore::new();
        let e = save_attachment(&store, &aref, dir.path(), "a.bin").unwrap_err();
        assert!(matches!(e, ClientError::Core(_)), "{e:?}");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
