//! Settings: embedded defaults, overridden by a TOML file, overridden by
//! command-line flags and environment variables (see `main.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::storage::{self, Limits};

/// Default data directory (systemd's `StateDirectory=postern-relay`).
pub const DEFAULT_DATA_DIR: &str = "/var/lib/postern-relay";
/// Default host name or IP address clients use.
pub const DEFAULT_HOST: &str = "127.0.0.1";
/// Default TCP port.
pub const DEFAULT_PORT: u16 = 7443;
/// Default admin listener (loopback only).
pub const DEFAULT_ADMIN_LISTEN: SocketAddr = SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 9464);
/// Default most simultaneous connections.
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// Default garbage collection interval.
pub const DEFAULT_GC_INTERVAL_SECS: u64 = 600;
/// Default sustained requests per second per connection.
pub const DEFAULT_RATE_PER_SEC: u32 = 1000;
/// Default burst of requests per connection.
pub const DEFAULT_RATE_BURST: u32 = 2000;
/// Default time a connection may stay silent (pings answered count).
pub const DEFAULT_IDLE_TIMEOUT_SECS: u64 = 600;
/// Name of the config file `init` writes into the data directory, read
/// when no `--config` is given.
pub const CONFIG_FILE: &str = "relay.toml";

/// Every setting, each optional: one layer of configuration (the TOML
/// file, or the flags and environment).
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Layer {
    /// Data directory (database, TLS identity, `address` file).
    pub data_dir: Option<PathBuf>,
    /// Host name or IP address in the relay's address and certificate.
    pub host: Option<String>,
    /// TCP port in the relay's address (0: any free port, tests).
    pub port: Option<u16>,
    /// Socket address to listen on (default: host:port for an IP host,
    /// else 0.0.0.0:port).
    pub listen: Option<SocketAddr>,
    /// Admin listener (`/health`, `/metrics`).
    pub admin_listen: Option<SocketAddr>,
    /// A CA-issued certificate chain (PEM); the address then has no pin.
    pub cert_path: Option<PathBuf>,
    /// Its private key (PEM).
    pub key_path: Option<PathBuf>,
    /// Most simultaneous connections.
    pub max_connections: Option<usize>,
    /// Most queues.
    pub max_queues: Option<u64>,
    /// Per-queue message quota.
    pub queue_max_messages: Option<u64>,
    /// Per-queue byte quota.
    pub queue_max_bytes: Option<u64>,
    /// Retention of items and idle queues (seconds).
    pub ttl_secs: Option<u64>,
    /// Garbage collection interval (seconds).
    pub gc_interval_secs: Option<u64>,
    /// Sustained requests per second per connection.
    pub rate_per_sec: Option<u32>,
    /// Request burst per connection.
    pub rate_burst: Option<u32>,
    /// Idle connection timeout (seconds).
    pub idle_timeout_secs: Option<u64>,
    /// Log queue ids (debugging only; off by default).
    pub log_queue_ids: Option<bool>,
}

/// Configuration errors.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("{path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The config file is not valid.
    #[error("{path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(&'static str),
}

impl Layer {
    /// Reads a TOML file.
    pub fn from_file(path: &Path) -> Result<Layer, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })
    }

    /// This layer, with `under`'s values where this one has none.
    pub fn over(self, under: Layer) -> Layer {
        Layer {
            data_dir: self.data_dir.or(under.data_dir),
            host: self.host.or(under.host),
            port: self.port.or(under.port),
            listen: self.listen.or(under.listen),
            admin_listen: self.admin_listen.or(under.admin_listen),
            cert_path: self.cert_path.or(under.cert_path),
            key_path: self.key_path.or(under.key_path),
            max_connections: self.max_connections.or(under.max_connections),
            max_queues: self.max_queues.or(under.max_queues),
            queue_max_messages: self.queue_max_messages.or(under.queue_max_messages),
            queue_max_bytes: self.queue_max_bytes.or(under.queue_max_bytes),
            ttl_secs: self.ttl_secs.or(under.ttl_secs),
            gc_interval_secs: self.gc_interval_secs.or(under.gc_interval_secs),
            rate_per_sec: self.rate_per_sec.or(under.rate_per_sec),
            rate_burst: self.rate_burst.or(under.rate_burst),
            idle_timeout_secs: self.idle_timeout_secs.or(under.idle_timeout_secs),
            log_queue_ids: self.log_queue_ids.or(under.log_queue_ids),
        }
    }
}

/// Resolved settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data directory.
    pub data_dir: PathBuf,
    /// Advertised host.
    pub host: String,
    /// Advertised port (0: the port actually bound).
    pub port: u16,
    /// Listening socket address.
    pub listen: SocketAddr,
    /// Admin socket address.
    pub admin_listen: SocketAddr,
    /// CA-issued certificate and key, if configured.
    pub ca_cert: Option<(PathBuf, PathBuf)>,
    /// Quotas and retention.
    pub limits: Limits,
    /// Most simultaneous connections.
    pub max_connections: usize,
    /// Garbage collection interval.
    pub gc_interval: Duration,
    /// Sustained requests per second per connection.
    pub rate_per_sec: u32,
    /// Burst per connection.
    pub rate_burst: u32,
    /// Idle connection timeout.
    pub idle_timeout: Duration,
    /// Log queue ids.
    pub log_queue_ids: bool,
}

impl Settings {
    /// Fills in defaults and checks ranges.
    pub fn resolve(l: Layer) -> Result<Settings, ConfigError> {
        let host = l.host.unwrap_or_else(|| DEFAULT_HOST.to_owned());
        let port = l.port.unwrap_or(DEFAULT_PORT);
        let listen = l.listen.unwrap_or_else(|| match host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, port),
            Err(_) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), port),
        });
        let ca_cert = match (l.cert_path, l.key_path) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => return Err(ConfigError::Invalid("cert_path and key_path go together")),
        };
        let limits = Limits {
            queue_max_messages: l
                .queue_max_messages
                .unwrap_or(storage::DEFAULT_QUEUE_MAX_MESSAGES),
            queue_max_bytes: l
                .queue_max_bytes
                .unwrap_or(storage::DEFAULT_QUEUE_MAX_BYTES),
            max_queues: l.max_queues.unwrap_or(storage::DEFAULT_MAX_QUEUES),
            ttl_secs: l.ttl_secs.unwrap_or(storage::DEFAULT_TTL_SECS),
        };
        let s = Settings {
            data_dir: l
                .data_dir
                .unwrap_or_else(|| PathBuf::from(DEFAULT_DATA_DIR)),
            host,
            port,
            listen,
            admin_listen: l.admin_listen.unwrap_or(DEFAULT_ADMIN_LISTEN),
            ca_cert,
            limits,
            max_connections: l.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS),
            gc_interval: Duration::from_secs(
                l.gc_interval_secs.unwrap_or(DEFAULT_GC_INTERVAL_SECS),
            ),
            rate_per_sec: l.rate_per_sec.unwrap_or(DEFAULT_RATE_PER_SEC),
            rate_burst: l.rate_burst.unwrap_or(DEFAULT_RATE_BURST),
            idle_timeout: Duration::from_secs(
                l.idle_timeout_secs.unwrap_or(DEFAULT_IDLE_TIMEOUT_SECS),
            ),
            log_queue_ids: l.log_queue_ids.unwrap_or(false),
        };
        if s.max_connections == 0
            || s.limits.queue_max_messages == 0
            || s.limits.ttl_secs == 0
            || s.gc_interval.is_zero()
            || s.rate_per_sec == 0
            || s.rate_burst == 0
            || s.idle_timeout.is_zero()
        {
            return Err(ConfigError::Invalid(
                "limits, intervals and rates must be greater than zero",
            ));
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn file_layers_under_flags_and_rejects_unknown_keys() {
        let file: Layer =
            toml::from_str("port = 1000\nttl_secs = 60\nhost = \"relay.example\"").unwrap();
        let flags = Layer {
            port: Some(2000),
            ..Layer::default()
        };
        let s = Settings::resolve(flags.over(file)).unwrap();
        assert_eq!((s.port, s.limits.ttl_secs), (2000, 60));
        assert_eq!(s.listen, "0.0.0.0:2000".parse().unwrap());
        assert_eq!(s.admin_listen, DEFAULT_ADMIN_LISTEN);
        assert!(toml::from_str::<Layer>("prot = 1").is_err());
        let zero = Layer {
            rate_per_sec: Some(0),
            ..Layer::default()
        };
        assert!(Settings::resolve(zero).is_err());
    }
}
