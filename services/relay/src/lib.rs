#![doc = include_str!("../README.md")]

pub mod admin;
pub mod config;
pub mod metrics;
pub mod server;
pub mod storage;
pub mod tls;
pub mod writer;
