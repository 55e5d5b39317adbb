//! Postern addresses: the stable name of an identity, derived from the
//! identity key it was created with. There are no phone numbers, e-mail
//! addresses or server-assigned ids anywhere in Postern.

const DOMAIN: &[u8] = b"postern/address/v1";

/// A 128-bit address, SHA-256("postern/address/v1" || identity key)[..16].
///
/// It is printed in the UUID form libsignal uses for sender names, so that
/// sealed-sender certificates and safety numbers interoperate with Signal's
/// own implementation.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Address([u8; 16]);

impl Address {
    /// The address an identity key derives.
    pub fn derive(identity_key: &[u8]) -> Address {
        let digest = crate::crypto::hash::sha256(&[DOMAIN, identity_key]);
        let mut out = [0u8; 16];
        out.copy_from_slice(digest.get(..16).unwrap_or(&[0u8; 16]));
        Address(out)
    }

    /// From its 16 raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Address {
        Address(bytes)
    }

    /// From a byte slice that must be exactly 16 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Address> {
        <[u8; 16]>::try_from(bytes).ok().map(Address)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// The UUID-style text form (`xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`).
    pub fn to_uuid_string(&self) -> String {
        uuid::Uuid::from_bytes(self.0).hyphenated().to_string()
    }

    /// Parses the UUID-style text form.
    pub fn parse_uuid_string(s: &str) -> Option<Address> {
        uuid::Uuid::try_parse(s)
            .ok()
            .map(|u| Address(*u.as_bytes()))
    }
}

impl core::fmt::Debug for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Address({})", self.to_uuid_string())
    }
}

impl core::fmt::Display for Address {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(&self.to_uuid_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derivation_test_vector() {
        // identity key 0x05 || 00 01 02 .. 1f
        let mut key = vec![5u8];
        key.extend(0u8..32);
        let a = Address::derive(&key);
        assert_eq!(a.to_uuid_string(), "f4193977-535a-abff-d20e-d95dea5b8991");
        assert_eq!(Address::parse_uuid_string(&a.to_uuid_string()), Some(a));
    }

    #[test]
    fn rejects_bad_lengths_and_text() {
        assert!(Address::from_slice(&[0u8; 15]).is_none());
        assert!(Address::from_slice(&[0u8; 17]).is_none());
        assert!(Address::parse_uuid_string("not-a-uuid").is_none());
        assert!(Address::parse_uuid_string("").is_none());
    }
}
