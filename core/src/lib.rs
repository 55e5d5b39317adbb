#![doc = include_str!("../README.md")]
#![cfg_attr(
    test,
    allow(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod address;
pub mod attachment;
pub mod backup;
pub mod codec;
pub mod consts;
pub mod courier;
pub mod crypto;
pub mod directory;
pub mod e2e;
pub mod error;
pub mod message;
pub mod onion;
pub mod relay_address;
pub mod relay_proto;
pub mod settings;
pub mod store;
pub mod time;

pub use address::Address;
pub use crypto::signal::{IdentityPublic, SafetyNumber};
pub use error::{Error, ErrorKind, Result, StoreError};
pub use relay_address::RelayAddress;
pub use store::{ChangeSet, KvStore, MemStore};
pub use time::UnixTime;
