//! A profile in the browser: its database (`idb`), sealed format
//! (`sealed`) and tab lock (`lock`) together, as the engine's `KvStore`.
//! Every commit is applied in memory and started as one IndexedDB
//! transaction at once; [`Durable`] lets the links wait until it is
//! stored before anything that depends on it leaves.

use std::borrow::Cow;

use postern_core::StoreError;
use postern_core::address::Address;
use postern_core::crypto::kdf::KdfParams;
use postern_core::store::{
    AttachmentId, ChangeSet, ConversationSummary, KvStore, MessageId, Namespace, OutboxEntry,
    Record, StoredMessage,
};
use zeroize::Zeroizing;

use crate::idb::{Durable, IdbError, ProfileDb};
use crate::lock::{self, LockError, TabLock};
use crate::sealed::{Header, HeaderError, Keys, SealedError, SealedStore};

/// Why a profile could not be created or opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// Another tab has it open.
    #[error("{0}")]
    Lock(#[from] LockError),
    /// The browser's storage failed.
    #[error("{0}")]
    Storage(#[from] IdbError),
    /// There is no profile in this browser.
    #[error("there is no profile in this browser")]
    NotFound,
    /// There is one already.
    #[error("a profile exists in this browser already")]
    Exists,
    /// The passphrase is wrong (or the header damaged).
    #[error("{0}")]
    Header(#[from] HeaderError),
    /// The stored data is not the profile's.
    #[error("{0}")]
    Sealed(#[from] SealedError),
    /// The core refused.
    #[error("{0}")]
    Core(#[from] postern_core::Error),
}

fn fill() -> crate::sealed::Fill {
    Box::new(|b: &mut [u8]| postern_link::Runtime::fill_random(&crate::runtime::BrowserRuntime, b))
}

/// The browser's RNG for the core.
pub fn rng() -> postern_link::RuntimeRng<'static, crate::runtime::BrowserRuntime> {
    postern_link::RuntimeRng(&crate::runtime::BrowserRuntime)
}

/// What is told of a newly cached directory.
type DirectoryHook = Box<dyn Fn(&[u8])>;

/// An open profile.
pub struct BrowserProfile {
    name: String,
    db: ProfileDb,
    store: SealedStore,
    header: Header,
    durable: Durable,
    /// How long the passphrase took to open the key (Argon2id) at unlock.
    kdf: std::time::Duration,
    /// Told of each new cached directory (the links follow its relays).
    on_directory: Option<DirectoryHook>,
    /// The cached directory last told.
    last_directory: Option<Vec<u8>>,
    _lock: TabLock,
}

impl core::fmt::Debug for BrowserProfile {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "BrowserProfile({})", self.name)
    }
}

impl BrowserProfile {
    /// Whether the database `name` holds a profile (a header).
    pub async fn exists(name: &str) -> Result<bool, IdbError> {
        let db = ProfileDb::open(name).await?;
        let found = db.header().await?.is_some();
        db.close();
        Ok(found)
    }

    /// A new, empty profile protected by `passphrase`; `first` is its
    /// first content (identity, settings), stored in the same
    /// transaction as the header, so a profile exists whole or not at all.
    pub async fn create(
        name: &str,
        passphrase: &[u8],
        params: KdfParams,
        first: impl FnOnce(&mut SealedStore) -> Result<(), postern_core::Error>,
    ) -> Result<BrowserProfile, OpenError> {
        let made = Header::create(passphrase, params, &mut rng())?;
        BrowserProfile::create_with(name, made, first).await
    }

    /// [`BrowserProfile::create`] with the header and key already made
    /// (by Argon2id in a worker, so the page keeps drawing).
    pub async fn create_with(
        name: &str,
        (header, key): (Header, Zeroizing<[u8; 32]>),
        first: impl FnOnce(&mut SealedStore) -> Result<(), postern_core::Error>,
    ) -> Result<BrowserProfile, OpenError> {
        let lock = lock::acquire(name).await?;
        let db = ProfileDb::open(name).await?;
        if db.header().await?.is_some() {
            return Err(OpenError::Exists);
        }
        let mut store = SealedStore::load(Keys::new(&key), Vec::new(), fill())?;
        first(&mut store)?;
        let all: Vec<_> = store.take_batches().into_iter().flatten().collect();
        let written = db.write(&all, Some(&header.to_bytes()))?;
        let durable = Durable::default();
        durable.push(written);
        durable.wait().await?;
        Ok(BrowserProfile {
            name: name.to_owned(),
            db,
            store,
            header,
            durable,
            kdf: std::time::Duration::ZERO,
            on_directory: None,
            last_directory: None,
            _lock: lock,
        })
    }

    /// Opens the profile with `passphrase`: the header's key (Argon2id),
    /// then every value opened and checked.
    pub async fn unlock(name: &str, passphrase: &[u8]) -> Result<BrowserProfile, OpenError> {
        BrowserProfile::unlock_with(name, async |h: Header| h.open(passphrase)).await
    }

    /// [`BrowserProfile::unlock`] with the key opened by `open` from the
    /// header (Argon2id in a worker, so the page keeps drawing). The tab
    /// lock is taken first: a second tab is told at once.
    pub async fn unlock_with(
        name: &str,
        open: impl AsyncFnOnce(Header) -> Result<Zeroizing<[u8; 32]>, HeaderError>,
    ) -> Result<BrowserProfile, OpenError> {
        let lock = lock::acquire(name).await?;
        let db = ProfileDb::open(name).await?;
        let bytes = db.header().await?.ok_or(OpenError::NotFound)?;
        let header = Header::parse(&bytes)?;
        let started = postern_link::Runtime::monotonic(&crate::runtime::BrowserRuntime);
        let key = open(header.clone()).await?;
        let kdf = postern_link::Runtime::monotonic(&crate::runtime::BrowserRuntime)
            .saturating_sub(started);
        let values = db.values().await?;
        let store = SealedStore::load(Keys::new(&key), values, fill())?;
        Ok(BrowserProfile {
            name: name.to_owned(),
            db,
            store,
            header,
            durable: Durable::default(),
            kdf,
            on_directory: None,
            last_directory: None,
            _lock: lock,
        })
    }

    /// How long Argon2id took at unlock (zero for a new profile).
    pub fn kdf_time(&self) -> std::time::Duration {
        self.kdf
    }

    /// Calls `f` with every directory the client caches from now on (the
    /// driver caches only directories it verified; `f` verifies again).
    pub fn on_directory(&mut self, f: impl Fn(&[u8]) + 'static) {
        self.last_directory = postern_core::settings::cached_directory(&self.store)
            .ok()
            .flatten();
        self.on_directory = Some(Box::new(f));
    }

    /// What the links wait on.
    pub fn durable(&self) -> Durable {
        self.durable.clone()
    }

    /// Protects the profile key with a new passphrase, after checking
    /// the current one.
    pub async fn change_passphrase(
        &mut self,
        current: &[u8],
        new: &[u8],
        params: KdfParams,
    ) -> Result<(), OpenError> {
        let key: Zeroizing<[u8; 32]> = self.header.open(current)?;
        let header = Header::protect(&key, new, params, &mut rng())?;
        let p = self.db.write(&Vec::new(), Some(&header.to_bytes()))?;
        self.durable.push(p);
        self.durable.wait().await?;
        self.header = header;
        Ok(())
    }

    /// Waits for what was committed, then closes the database (the tab
    /// lock goes with the value).
    pub async fn close(self) {
        let _ = self.durable.wait().await;
        self.db.close();
    }
}

impl KvStore for BrowserProfile {
    fn get(&self, ns: Namespace, key: &[u8]) -> Result<Option<Cow<'_, Record>>, StoreError> {
        self.store.get(ns, key)
    }

    fn keys(&self, ns: Namespace) -> Result<Vec<Vec<u8>>, StoreError> {
        self.store.keys(ns)
    }

    fn commit(&mut self, changes: ChangeSet) -> Result<(), StoreError> {
        let settings = changes.records().any(|(ns, _, _)| ns == Namespace::Setting);
        self.store.commit(changes)?;
        if settings && let Some(tell) = &self.on_directory {
            let now = postern_core::settings::cached_directory(&self.store)
                .ok()
                .flatten();
            if now.is_some() && now != self.last_directory {
                if let Some(d) = &now {
                    tell(d);
                }
                self.last_directory = now;
            }
        }
        for batch in self.store.take_batches() {
            match self.db.write(&batch, None) {
                Ok(p) => self.durable.push(p),
                Err(e) => {
                    // Memory is now ahead of the disk: nothing may leave
                    // any more (the links refuse), and the service stops.
                    self.durable.fail(e);
                    return Err(StoreError::Backend("the browser's storage failed"));
                }
            }
        }
        Ok(())
    }

    fn conversations(&self) -> Result<Vec<ConversationSummary>, StoreError> {
        self.store.conversations()
    }

    fn history(&self, peer: &Address, limit: usize) -> Result<Vec<StoredMessage>, StoreError> {
        self.store.history(peer, limit)
    }

    fn has_message(&self, peer: &Address, id: &MessageId) -> Result<bool, StoreError> {
        self.store.has_message(peer, id)
    }

    fn outbox(&self) -> Result<Vec<OutboxEntry>, StoreError> {
        self.store.outbox()
    }

    fn attachment_chunk(
        &self,
        id: &AttachmentId,
        index: u32,
    ) -> Result<Option<Cow<'_, [u8]>>, StoreError> {
        self.store.attachment_chunk(id, index)
    }

    fn attachment_chunks(&self, id: &AttachmentId) -> Result<Vec<u32>, StoreError> {
        self.store.attachment_chunks(id)
    }

    fn attachments(&self) -> Result<Vec<AttachmentId>, StoreError> {
        self.store.attachments()
    }
}
