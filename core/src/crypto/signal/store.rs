//! libsignal's async store traits backed by the core's synchronous
//! [`Overlay`], and the mapping of libsignal's errors to Postern's.

use core::cell::RefCell;

use async_trait::async_trait;

use libsignal_protocol as ls;
use ls::GenericSignedPreKey as _;

use crate::codec::{self, proto};
use crate::consts::MAX_LAST_RESORT_BASE_KEYS;
use crate::error::{Error, Result};
use crate::store::{Namespace, Overlay, Record};

use super::*;

/// Shared state of one facade operation: the overlay the operation writes
/// into, and the first Postern error a store callback raised (libsignal
/// only sees a generic failure; we report the precise one).
pub(super) struct OpState<'a> {
    overlay: Overlay<'a>,
    error: Option<Error>,
    /// The contact record last decoded in this operation. libsignal asks
    /// for the same contact several times per message (trust check, save,
    /// get); the adapter never writes contacts, so one decode serves all.
    contact: Option<(String, Option<proto::ContactRecord>)>,
}

pub(super) struct Adapter<'c, 'a>(pub(super) &'c RefCell<OpState<'a>>);

impl Adapter<'_, '_> {
    fn fail(&self, e: Error) -> ls::SignalProtocolError {
        let mut st = self.0.borrow_mut();
        if st.error.is_none() {
            st.error = Some(e);
        }
        ls::SignalProtocolError::InvalidState("postern store", String::new())
    }

    /// Reads a record and parses it while the overlay is borrowed.
    fn read<T>(
        &self,
        ns: Namespace,
        key: &[u8],
        parse: impl FnOnce(&[u8]) -> ls::error::Result<T>,
    ) -> ls::error::Result<Option<T>> {
        let parsed = {
            let st = self.0.borrow();
            match get_record(&st.overlay, ns, key) {
                Ok(None) => Ok(None),
                Ok(Some(r)) => Ok(Some(parse(&r.bytes))),
                Err(e) => Err(e),
            }
        };
        match parsed {
            Ok(None) => Ok(None),
            Ok(Some(Ok(v))) => Ok(Some(v)),
            Ok(Some(Err(_))) => Err(self.fail(corrupt(ns.name()))),
            Err(e) => Err(self.fail(e)),
        }
    }

    fn put(&self, ns: Namespace, key: &[u8], bytes: Vec<u8>) {
        self.0
            .borrow_mut()
            .overlay
            .put(ns, key, Record::current(ns, bytes));
    }

    fn contact(
        &self,
        addr: &ls::ProtocolAddress,
    ) -> ls::error::Result<Option<proto::ContactRecord>> {
        if let Some((name, c)) = &self.0.borrow().contact
            && name == addr.name()
        {
            return Ok(c.clone());
        }
        let peer = parse_protocol_address(addr).map_err(|e| self.fail(e))?;
        let c = self.read(Namespace::Contact, peer.as_bytes(), |b| {
            codec::decode_bounded(b, crate::consts::MAX_RECORD_BYTES, "contact record")
                .map_err(|_| ls::SignalProtocolError::InvalidProtobufEncoding)
        })?;
        self.0.borrow_mut().contact = Some((addr.name().to_string(), c.clone()));
        Ok(c)
    }
}

#[async_trait(?Send)]
impl ls::IdentityKeyStore for Adapter<'_, '_> {
    async fn get_identity_key_pair(&self) -> ls::error::Result<ls::IdentityKeyPair> {
        let local = local_identity(&self.0.borrow().overlay);
        let local = local.map_err(|e| self.fail(e))?;
        ls::IdentityKeyPair::try_from(local.identity_key_pair.as_slice())
            .map_err(|_| self.fail(corrupt("local_identity")))
    }

    async fn get_local_registration_id(&self) -> ls::error::Result<u32> {
        let local = local_identity(&self.0.borrow().overlay);
        Ok(local.map_err(|e| self.fail(e))?.registration_id)
    }

    /// Contacts are created by the e2e layer before libsignal runs, so this
    /// only ever confirms the key already pinned; a different key is refused.
    async fn save_identity(
        &mut self,
        address: &ls::ProtocolAddress,
        identity: &ls::IdentityKey,
    ) -> ls::error::Result<ls::IdentityChange> {
        match self.contact(address)? {
            Some(c) if c.identity_key == identity.serialize().as_ref() => {
                Ok(ls::IdentityChange::NewOrUnchanged)
            }
            _ => Err(ls::SignalProtocolError::UntrustedIdentity(address.clone())),
        }
    }

    /// Fail closed: only the key pinned for the contact is trusted, in both
    /// directions; an unknown peer is never trusted here.
    async fn is_trusted_identity(
        &self,
        address: &ls::ProtocolAddress,
        identity: &ls::IdentityKey,
        _direction: ls::Direction,
    ) -> ls::error::Result<bool> {
        Ok(match self.contact(address)? {
            Some(c) => c.identity_key == identity.serialize().as_ref(),
            None => false,
        })
    }

    async fn get_identity(
        &self,
        address: &ls::ProtocolAddress,
    ) -> ls::error::Result<Option<ls::IdentityKey>> {
        match self.contact(address)? {
            None => Ok(None),
            Some(c) => ls::IdentityKey::decode(&c.identity_key)
                .map(Some)
                .map_err(|_| self.fail(corrupt("contact"))),
        }
    }
}

#[async_trait(?Send)]
impl ls::SessionStore for Adapter<'_, '_> {
    async fn load_session(
        &self,
        address: &ls::ProtocolAddress,
    ) -> ls::error::Result<Option<ls::SessionRecord>> {
        let peer = parse_protocol_address(address).map_err(|e| self.fail(e))?;
        self.read(
            Namespace::Session,
            peer.as_bytes(),
            ls::SessionRecord::deserialize,
        )
    }

    async fn store_session(
        &mut self,
        address: &ls::ProtocolAddress,
        record: &ls::SessionRecord,
    ) -> ls::error::Result<()> {
        let peer = parse_protocol_address(address).map_err(|e| self.fail(e))?;
        self.put(Namespace::Session, peer.as_bytes(), record.serialize()?);
        Ok(())
    }
}

#[async_trait(?Send)]
impl ls::PreKeyStore for Adapter<'_, '_> {
    async fn get_pre_key(&self, id: ls::PreKeyId) -> ls::error::Result<ls::PreKeyRecord> {
        self.read(
            Namespace::PreKey,
            &id_key(id.into()),
            ls::PreKeyRecord::deserialize,
        )?
        .ok_or(ls::SignalProtocolError::InvalidPreKeyId)
    }

    async fn save_pre_key(
        &mut self,
        id: ls::PreKeyId,
        record: &ls::PreKeyRecord,
    ) -> ls::error::Result<()> {
        self.put(Namespace::PreKey, &id_key(id.into()), record.serialize()?);
        Ok(())
    }

    async fn remove_pre_key(&mut self, id: ls::PreKeyId) -> ls::error::Result<()> {
        self.0
            .borrow_mut()
            .overlay
            .delete(Namespace::PreKey, &id_key(id.into()));
        Ok(())
    }
}

#[async_trait(?Send)]
impl ls::SignedPreKeyStore for Adapter<'_, '_> {
    async fn get_signed_pre_key(
        &self,
        id: ls::SignedPreKeyId,
    ) -> ls::error::Result<ls::SignedPreKeyRecord> {
        self.read(
            Namespace::SignedPreKey,
            &id_key(id.into()),
            ls::SignedPreKeyRecord::deserialize,
        )?
        .ok_or(ls::SignalProtocolError::InvalidSignedPreKeyId)
    }

    async fn save_signed_pre_key(
        &mut self,
        id: ls::SignedPreKeyId,
        record: &ls::SignedPreKeyRecord,
    ) -> ls::error::Result<()> {
        self.put(
            Namespace::SignedPreKey,
            &id_key(id.into()),
            record.serialize()?,
        );
        Ok(())
    }
}

#[async_trait(?Send)]
impl ls::KyberPreKeyStore for Adapter<'_, '_> {
    async fn get_kyber_pre_key(
        &self,
        id: ls::KyberPreKeyId,
    ) -> ls::error::Result<ls::KyberPreKeyRecord> {
        self.read(
            Namespace::KyberPreKey,
            &id_key(id.into()),
            ls::KyberPreKeyRecord::deserialize,
        )?
        .ok_or(ls::SignalProtocolError::InvalidKyberPreKeyId)
    }

    async fn save_kyber_pre_key(
        &mut self,
        id: ls::KyberPreKeyId,
        record: &ls::KyberPreKeyRecord,
    ) -> ls::error::Result<()> {
        self.put(
            Namespace::KyberPreKey,
            &id_key(id.into()),
            record.serialize()?,
        );
        Ok(())
    }

    /// One-time Kyber prekeys are deleted on use. The last-resort one stays,
    /// and every base key used with it is remembered so that a replayed
    /// PreKey message is refused (bounded: see [`MAX_LAST_RESORT_BASE_KEYS`]).
    async fn mark_kyber_pre_key_used(
        &mut self,
        id: ls::KyberPreKeyId,
        _ec_prekey_id: ls::SignedPreKeyId,
        base_key: &ls::PublicKey,
    ) -> ls::error::Result<()> {
        let id: u32 = id.into();
        let state: Option<proto::PrekeyStateRecord> =
            self.read(Namespace::PrekeyState, &[], |b| {
                codec::decode_bounded(b, crate::consts::MAX_RECORD_BYTES, "prekey state")
                    .map_err(|_| ls::SignalProtocolError::InvalidProtobufEncoding)
            })?;
        let last_resort = match state {
            Some(s) => s.last_resort_kyber_prekey_id,
            None => return Err(self.fail(corrupt("prekey_state"))),
        };
        if id != last_resort {
            self.0
                .borrow_mut()
                .overlay
                .delete(Namespace::KyberPreKey, &id_key(id));
            return Ok(());
        }
        let mut usage: proto::KyberUsageRecord = self
            .read(Namespace::KyberUsage, &id_key(id), |b| {
                codec::decode_bounded(b, crate::consts::MAX_RECORD_BYTES, "kyber usage")
                    .map_err(|_| ls::SignalProtocolError::InvalidProtobufEncoding)
            })?
            .unwrap_or_default();
        let bk = base_key.serialize().into_vec();
        if usage.base_keys.contains(&bk) {
            return Err(self.fail(Error::ReplayedPrekeyMessage));
        }
        if usage.base_keys.len() >= MAX_LAST_RESORT_BASE_KEYS {
            return Err(self.fail(Error::Bug("last-resort Kyber prekey must be rotated")));
        }
        usage.base_keys.push(bk);
        self.put(Namespace::KyberUsage, &id_key(id), codec::encode(&usage));
        Ok(())
    }
}

/// Runs `f` with libsignal stores backed by `overlay`; on success returns
/// the overlay with the operation's writes, on failure the precise error.
pub(super) fn with_stores<'a, T>(
    overlay: Overlay<'a>,
    f: impl for<'c> FnOnce(&mut Adapter<'c, 'a>, &mut Adapter<'c, 'a>) -> Result<ls::error::Result<T>>,
) -> Result<(T, Overlay<'a>)> {
    let cell = RefCell::new(OpState {
        overlay,
        error: None,
        contact: None,
    });
    let outcome = {
        let mut a = Adapter(&cell);
        let mut b = Adapter(&cell);
        f(&mut a, &mut b)
    };
    let st = cell.into_inner();
    match outcome? {
        Ok(v) => Ok((v, st.overlay)),
        Err(e) => Err(st.error.unwrap_or_else(|| map_error(e))),
    }
}

/// Translates libsignal's errors into Postern's, dropping any free text.
pub(super) fn map_error(e: ls::SignalProtocolError) -> Error {
    use ls::SignalProtocolError as E;
    match e {
        E::UntrustedIdentity(addr) => match parse_protocol_address(&addr) {
            Ok(peer) => Error::IdentityKeyChanged { peer },
            Err(e) => e,
        },
        E::DuplicatedMessage(..) => Error::DuplicateMessage,
        E::InvalidMessage(_, "reused base key") => Error::ReplayedPrekeyMessage,
        E::InvalidMessage(_, reason) => Error::DecryptionFailed { reason },
        E::InvalidPreKeyId | E::InvalidSignedPreKeyId | E::InvalidKyberPreKeyId => {
            Error::UnknownPrekey
        }
        E::SessionNotFound(addr) => match parse_protocol_address(&addr) {
            Ok(peer) => Error::NoSession { peer },
            Err(e) => e,
        },
        E::SignatureValidationFailed => Error::BadBundleSignature { which: "prekey" },
        E::InvalidProtobufEncoding
        | E::CiphertextMessageTooShort(_)
        | E::LegacyCiphertextVersion(_)
        | E::UnrecognizedCiphertextVersion(_)
        | E::UnrecognizedMessageVersion(_)
        | E::NoKeyTypeIdentifier
        | E::BadKeyType(_)
        | E::BadKeyLength(..)
        | E::BadKEMKeyType(_)
        | E::WrongKEMKeyType(..)
        | E::BadKEMKeyLength(..)
        | E::BadKEMCiphertextLength(..) => Error::Malformed {
            what: "Signal message",
        },
        E::InvalidSealedSenderMessage(_) | E::UnknownSealedSenderVersion(_) => {
            Error::DecryptionFailed {
                reason: "sealed sender envelope",
            }
        }
        E::SealedSenderSelfSend => Error::DecryptionFailed {
            reason: "message from ourselves",
        },
        E::InvalidSessionStructure(_) | E::InvalidState(..) => Error::DecryptionFailed {
            reason: "session state rejected the message",
        },
        _ => Error::DecryptionFailed {
            reason: "protocol error",
        },
    }
}
