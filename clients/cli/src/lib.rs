//! Support for driving `postern` and `postern-relay` as processes: the
//! local demo network (`postern-demo`) and the end-to-end tests use it.
//! The `postern` binary itself lives in `main.rs`.

pub mod harness;
