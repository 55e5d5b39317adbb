//! Relay addresses: `postern-relay://HOST:PORT#PIN`.
//!
//! `HOST` is a DNS name, an IPv4 address or a bracketed IPv6 address;
//! `PORT` is decimal; `PIN`, when present, is the unpadded base64url
//! SHA-256 of the relay's TLS certificate (DER), which the client then
//! requires instead of a CA-issued certificate. Without a pin the client
//! validates the certificate against the web PKI. Parsing is strict and
//! bounded: these strings arrive in invitations and contact cards.

use core::fmt;

use crate::consts::MAX_RELAY_ADDRESS_BYTES;
use crate::error::{Error, Result};

const SCHEME: &str = "postern-relay://";
const WHAT: &str = "relay address";
const PIN_CHARS: usize = 43;

/// Where a relay listens and, optionally, the certificate it must present.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct RelayAddress {
    host: String,
    port: u16,
    pin: Option<[u8; 32]>,
}

fn malformed() -> Error {
    Error::Malformed { what: WHAT }
}

fn valid_dns_name(h: &str) -> bool {
    !h.is_empty()
        && h.len() <= 253
        && h.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        })
}

impl RelayAddress {
    /// A relay address from its parts. `host` must be a lower-case DNS
    /// name, an IPv4 address or an IPv6 address (without brackets).
    pub fn new(host: &str, port: u16, pin: Option<[u8; 32]>) -> Result<RelayAddress> {
        let ok = port != 0 && (host.parse::<core::net::IpAddr>().is_ok() || valid_dns_name(host));
        if !ok {
            return Err(malformed());
        }
        Ok(RelayAddress {
            host: host.to_owned(),
            port,
            pin,
        })
    }

    /// Parses `postern-relay://HOST:PORT[#PIN]`.
    pub fn parse(s: &str) -> Result<RelayAddress> {
        if s.len() > MAX_RELAY_ADDRESS_BYTES {
            return Err(Error::TooLarge {
                what: WHAT,
                len: s.len(),
                max: MAX_RELAY_ADDRESS_BYTES,
            });
        }
        let rest = s.strip_prefix(SCHEME).ok_or_else(malformed)?;
        let (hostport, pin) = match rest.split_once('#') {
            None => (rest, None),
            Some((hp, pin)) => {
                if pin.len() != PIN_CHARS {
                    return Err(malformed());
                }
                let bytes = data_encoding::BASE64URL_NOPAD
                    .decode(pin.as_bytes())
                    .map_err(|_| malformed())?;
                (hp, Some(crate::codec::fixed::<32>(&bytes, WHAT)?))
            }
        };
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, p) = v6.split_once("]:").ok_or_else(malformed)?;
            if h.parse::<core::net::Ipv6Addr>().is_err() {
                return Err(malformed());
            }
            (h, p)
        } else {
            let (h, p) = hostport.rsplit_once(':').ok_or_else(malformed)?;
            if h.contains(':') {
                return Err(malformed());
            }
            (h, p)
        };
        // Decimal digits only: no sign, no leading zeros.
        if port.is_empty()
            || port.len() > 5
            || !port.bytes().all(|b| b.is_ascii_digit())
            || port.starts_with('0')
        {
            return Err(malformed());
        }
        let port: u16 = port.parse().map_err(|_| malformed())?;
        let a = RelayAddress::new(host, port, pin)?;
        // Canonical form only, so one relay has one address string.
        if a.to_string() != s {
            return Err(malformed());
        }
        Ok(a)
    }

    /// Host name or IP address (IPv6 without brackets).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// TCP port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// SHA-256 of the certificate the relay must present, if pinned.
    pub fn pin(&self) -> Option<&[u8; 32]> {
        self.pin.as_ref()
    }

    /// `host:port` for connecting (IPv6 bracketed).
    pub fn socket_host(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Display for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{SCHEME}{}", self.socket_host())?;
        if let Some(pin) = &self.pin {
            write!(f, "#{}", data_encoding::BASE64URL_NOPAD.encode(pin))?;
        }
        Ok(())
    }
}

impl fmt::Debug for RelayAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RelayAddress({self})")
    }
}

impl core::str::FromStr for RelayAddress {
    type Err = Error;
    fn from_str(s: &str) -> Result<RelayAddress> {
        RelayAddress::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_malformed_addresses() {
        let pin = data_encoding::BASE64URL_NOPAD.encode(&[7u8; 32]);
        for bad in [
            "",
            "postern-relay://",
            "https://relay.example:443",
            "postern-relay://relay.example",
            "postern-relay://relay.example:",
            "postern-relay://relay.example:0",
            "postern-relay://relay.example:65536",
            "postern-relay://relay.example:+443",
            "postern-relay://relay.example:0443",
            "postern-relay://Relay.Example:443",
            "postern-relay://relay..example:443",
            "postern-relay://-relay.example:443",
            "postern-relay://relay example:443",
            "postern-relay://::1:443",
            "postern-relay://[::1:443",
            "postern-relay://[zz::1]:443",
            "postern-relay://relay.example:443/path",
            "postern-relay://user@relay.example:443",
            "postern-relay://relay.example:443#",
            "postern-relay://relay.example:443#short",
            &format!("postern-relay://relay.example:443#{pin}A"),
            &format!(
                "postern-relay://relay.example:443#{}",
                &pin.replace('H', "+")
            ),
            &format!("postern-relay://{}:443", "a".repeat(400)),
        ] {
            assert!(RelayAddress::parse(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn round_trips_canonical_addresses() {
        let pin = data_encoding::BASE64URL_NOPAD.encode(&[0xFBu8; 32]);
        for good in [
            "postern-relay://relay.example:443".to_owned(),
            "postern-relay://127.0.0.1:9000".to_owned(),
            "postern-relay://[::1]:9000".to_owned(),
            format!("postern-relay://127.0.0.1:65535#{pin}"),
        ] {
            let a = RelayAddress::parse(&good).unwrap();
            assert_eq!(a.to_string(), good);
        }
        let a = RelayAddress::parse(&format!("postern-relay://[::1]:9000#{pin}")).unwrap();
        assert_eq!(a.host(), "::1");
        assert_eq!(a.socket_host(), "[::1]:9000");
        assert_eq!(a.pin(), Some(&[0xFB; 32]));
    }
}
