#![doc = include_str!("../README.md")]

pub mod admin;
pub mod config;
pub mod directory;
pub mod hop;
pub mod keys;
pub mod metrics;
pub mod mix;
pub mod network;
pub mod replay;
pub mod server;
pub mod storage;
pub mod testnet;
pub mod tls;
pub mod topology;
pub mod writer;
