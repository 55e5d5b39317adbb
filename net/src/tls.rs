//! The one place that chooses TLS cryptography for every Postern link
//! (client to relay, relay to relay, browsers over WebTransport, the web
//! app's listener): rustls on the aws-lc-rs provider, TLS 1.3 only, and
//! the hybrid post-quantum key exchange X25519MLKEM768 (X25519 together
//! with ML-KEM-768) first. A recorded link cannot be decrypted later by
//! breaking X25519 alone.

use std::sync::Arc;

use rustls::NamedGroup;
use rustls::crypto::CryptoProvider;
use rustls::crypto::aws_lc_rs::kx_group;

/// The TLS code point of X25519MLKEM768.
pub const X25519MLKEM768: u16 = 0x11ec;

/// Which key exchanges one side accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KeyExchange {
    /// X25519MLKEM768 only: a peer that offers nothing post-quantum
    /// fails the handshake. Every Postern client and relay.
    #[default]
    HybridOnly,
    /// X25519MLKEM768 first, then X25519 and P-256 for peers that offer
    /// nothing else (a relay's `allow_classical_tls`).
    AlsoClassical,
}

/// The crypto provider for `kx`: aws-lc-rs's, with its key exchange
/// groups replaced by exactly those `kx` allows, in that order.
pub fn provider(kx: KeyExchange) -> Arc<CryptoProvider> {
    let mut p = rustls::crypto::aws_lc_rs::default_provider();
    p.kx_groups = match kx {
        KeyExchange::HybridOnly => vec![kx_group::X25519MLKEM768],
        KeyExchange::AlsoClassical => vec![
            kx_group::X25519MLKEM768,
            kx_group::X25519,
            kx_group::SECP256R1,
        ],
    };
    Arc::new(p)
}

/// Whether a negotiated group is the post-quantum hybrid.
pub fn is_hybrid(group: NamedGroup) -> bool {
    u16::from(group) == X25519MLKEM768
}

/// Whether a failed handshake failed because the peer offered no group
/// this side accepts (a classical-only client at a hybrid-only relay).
pub fn is_no_common_group(e: &rustls::Error) -> bool {
    matches!(
        e,
        rustls::Error::PeerIncompatible(rustls::PeerIncompatible::NoKxGroupsInCommon)
    )
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn the_hybrid_group_comes_first_and_alone_unless_classical_is_allowed() {
        let only = provider(KeyExchange::HybridOnly);
        let names: Vec<u16> = only.kx_groups.iter().map(|g| g.name().into()).collect();
        assert_eq!(names, [X25519MLKEM768]);
        let also = provider(KeyExchange::AlsoClassical);
        let names: Vec<u16> = also.kx_groups.iter().map(|g| g.name().into()).collect();
        assert_eq!(names, [X25519MLKEM768, 0x001d, 0x0017]);
        assert!(is_hybrid(NamedGroup::X25519MLKEM768));
        assert!(!is_hybrid(NamedGroup::X25519));
    }
}
