//! Settings: embedded defaults, overridden by a TOML file, overridden by
//! command-line flags and environment variables (see `main.rs`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use postern_core::UnixTime;
use postern_core::consts::{MAX_EPOCH_SECS, MIN_EPOCH_SECS};
use postern_core::crypto::signal::AuthorityPublic;
use postern_core::directory::{ROLE_ENTRY, ROLE_MAILBOX, ROLE_MIX, ROLES_ALL};
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
/// Default Sphinx key epoch length (must match the network's directory).
pub const DEFAULT_EPOCH_SECS: u64 = 86_400;
/// Default mean per-hop mixing delay (milliseconds).
pub const DEFAULT_MIX_DELAY_MS: u64 = 50;
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
    /// Directory authorities' public keys (base64url, 33 bytes each).
    pub authority_keys: Option<Vec<String>>,
    /// Valid signatures by distinct authorities a directory needs.
    pub authority_threshold: Option<usize>,
    /// Sphinx key epoch length (seconds; the network's value).
    pub epoch_secs: Option<u64>,
    /// Start of epoch 0 (milliseconds since the Unix epoch).
    pub epoch_zero_ms: Option<u64>,
    /// Roles announced in the descriptor: "entry", "mix", "mailbox".
    pub roles: Option<Vec<String>>,
    /// Mean per-hop mixing delay (milliseconds; 0 for tests).
    pub mix_delay_ms: Option<u64>,
    /// Listen for browsers over WebTransport (HTTP/3, UDP); default on.
    pub webtransport: Option<bool>,
    /// Its UDP port (default: the TCP port's number).
    pub webtransport_port: Option<u16>,
    /// Also accept TLS handshakes without post-quantum key exchange
    /// (default off: X25519MLKEM768 only).
    pub allow_classical_tls: Option<bool>,
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
            authority_keys: self.authority_keys.or(under.authority_keys),
            authority_threshold: self.authority_threshold.or(under.authority_threshold),
            epoch_secs: self.epoch_secs.or(under.epoch_secs),
            epoch_zero_ms: self.epoch_zero_ms.or(under.epoch_zero_ms),
            roles: self.roles.or(under.roles),
            mix_delay_ms: self.mix_delay_ms.or(under.mix_delay_ms),
            webtransport: self.webtransport.or(under.webtransport),
            webtransport_port: self.webtransport_port.or(under.webtransport_port),
            allow_classical_tls: self.allow_classical_tls.or(under.allow_classical_tls),
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
    /// Pinned directory authorities.
    pub authority_keys: Vec<AuthorityPublic>,
    /// Signatures a directory needs (1..=number of authority keys).
    pub authority_threshold: usize,
    /// Sphinx key epoch length (seconds).
    pub epoch_secs: u64,
    /// Start of epoch 0.
    pub epoch_zero: UnixTime,
    /// Role bits (`postern_core::directory::ROLE_*`).
    pub roles: u32,
    /// Mean per-hop mixing delay (milliseconds).
    pub mix_delay_ms: u64,
    /// The WebTransport listener's UDP port (0: any free port, tests), or
    /// `None` when browsers are not served.
    pub webtransport_port: Option<u16>,
    /// Which TLS key exchanges the relay's listeners accept.
    pub key_exchange: postern_net::tls::KeyExchange,
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
            authority_keys: l
                .authority_keys
                .unwrap_or_default()
                .iter()
                .map(|k| parse_authority_key(k))
                .collect::<Result<_, _>>()?,
            authority_threshold: l.authority_threshold.unwrap_or(1),
            epoch_secs: l.epoch_secs.unwrap_or(DEFAULT_EPOCH_SECS),
            epoch_zero: UnixTime(l.epoch_zero_ms.unwrap_or(0)),
            roles: match &l.roles {
                Some(r) => parse_roles(r)?,
                None => ROLES_ALL,
            },
            mix_delay_ms: l.mix_delay_ms.unwrap_or(DEFAULT_MIX_DELAY_MS),
            webtransport_port: l
                .webtransport
                .unwrap_or(true)
                .then(|| l.webtransport_port.unwrap_or(port)),
            key_exchange: if l.allow_classical_tls.unwrap_or(false) {
                postern_net::tls::KeyExchange::AlsoClassical
            } else {
                postern_net::tls::KeyExchange::HybridOnly
            },
        };
        if !(MIN_EPOCH_SECS..=MAX_EPOCH_SECS).contains(&s.epoch_secs) {
            return Err(ConfigError::Invalid("epoch_secs must be 60..=2592000"));
        }
        if s.authority_threshold == 0
            || (s.authority_threshold > 1 && s.authority_threshold > s.authority_keys.len())
        {
            return Err(ConfigError::Invalid(
                "authority_threshold must be 1..=number of authority_keys",
            ));
        }
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

/// Parses an authority public key: unpadded base64url of its 33 bytes.
pub fn parse_authority_key(s: &str) -> Result<AuthorityPublic, ConfigError> {
    data_encoding::BASE64URL_NOPAD
        .decode(s.trim().as_bytes())
        .ok()
        .and_then(|b| AuthorityPublic::from_bytes(&b).ok())
        .ok_or(ConfigError::Invalid(
            "authority_keys: not a base64url Curve25519 public key",
        ))
}

/// Parses role names ("entry", "mix", "mailbox"; at least one).
pub fn parse_roles<S: AsRef<str>>(names: &[S]) -> Result<u32, ConfigError> {
    let mut roles = 0;
    for n in names {
        roles |= match n.as_ref().trim() {
            "entry" => ROLE_ENTRY,
            "mix" => ROLE_MIX,
            "mailbox" => ROLE_MAILBOX,
            _ => return Err(ConfigError::Invalid("roles: entry, mix or mailbox")),
        };
    }
    if roles == 0 {
        return Err(ConfigError::Invalid("roles: at least one role"));
    }
    Ok(roles)
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

    #[test]
    fn network_settings_parse_and_check() {
        let s = Settings::resolve(Layer::default()).unwrap();
        assert_eq!(
            (s.epoch_secs, s.epoch_zero, s.roles),
            (86_400, UnixTime(0), ROLES_ALL)
        );
        assert_eq!((s.authority_threshold, s.mix_delay_ms), (1, 50));
        assert!(s.authority_keys.is_empty());
        let file: Layer = toml::from_str(
            "roles = [\"mix\"]\nepoch_secs = 600\nmix_delay_ms = 0\nauthority_threshold = 2",
        )
        .unwrap();
        assert!(
            Settings::resolve(file.clone()).is_err(),
            "threshold above key count"
        );
        let one = Layer {
            authority_threshold: Some(1),
            ..Layer::default()
        };
        let s = Settings::resolve(one.over(file)).unwrap();
        assert_eq!((s.roles, s.epoch_secs, s.mix_delay_ms), (ROLE_MIX, 600, 0));
        let bad = Layer {
            authority_keys: Some(vec!["AAAA".into()]),
            ..Layer::default()
        };
        assert!(Settings::resolve(bad).is_err());
        assert!(parse_roles(&["exit"]).is_err());
        assert!(parse_roles::<&str>(&[]).is_err());
        let short = Layer {
            epoch_secs: Some(59),
            ..Layer::default()
        };
        assert!(Settings::resolve(short).is_err());
    }
}
