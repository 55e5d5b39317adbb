//! End-to-end encryption for one local identity: identity creation, the
//! prekey pool, contacts and their trust state, sessions, sealed sender and
//! safety numbers.
//!
//! Every function reads the store, runs the operation against an
//! [`Overlay`], and returns the [`ChangeSet`] it produced; nothing is
//! written until the caller commits it (together with anything else that
//! belongs to the same step). A failed call changes nothing.
//!
//! All protocol work goes through [`crate::crypto::signal`].

use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::codec::{self, padding, proto};
use crate::consts::{
    MAX_RECORD_BYTES, ONE_TIME_KYBER_PREKEY_POOL, ONE_TIME_PREKEY_LOW_WATER, ONE_TIME_PREKEY_POOL,
    SENDER_CERT_LIFETIME_MS, SENDER_CERT_RENEW_MARGIN_MS,
};
use crate::crypto::signal::{self, Bundle, IdentityPublic, SafetyNumber};
use crate::error::{Error, Result, StoreError};
use crate::store::{ChangeSet, KvStore, Namespace, Overlay, Record};
use crate::time::UnixTime;

/// Verification state of a contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verification {
    /// Safety number not compared yet.
    Unverified,
    /// The user compared the safety number (scanned or read it).
    Verified,
}

/// What the core knows about a contact.
#[derive(Debug, Clone)]
pub struct Contact {
    /// The contact's stable address.
    pub address: Address,
    /// The identity key currently pinned.
    pub identity: IdentityPublic,
    /// Whether the safety number was verified.
    pub verification: Verification,
}

fn decode<M: prost::Message + Default>(rec: &Record, ns: Namespace) -> Result<M> {
    codec::decode_bounded(rec.checked(ns)?, MAX_RECORD_BYTES, ns.name()).map_err(|_| {
        Error::Store(StoreError::Corrupt {
            namespace: ns.name(),
        })
    })
}

fn load<M: prost::Message + Default>(
    o: &Overlay<'_>,
    ns: Namespace,
    key: &[u8],
) -> Result<Option<M>> {
    match o.get(ns, key)? {
        None => Ok(None),
        Some(r) => decode(&r, ns).map(Some),
    }
}

fn save<M: prost::Message>(o: &mut Overlay<'_>, ns: Namespace, key: &[u8], m: &M) {
    o.put(ns, key, Record::current(ns, codec::encode(m)));
}

fn local(o: &Overlay<'_>) -> Result<proto::LocalIdentityRecord> {
    load(o, Namespace::LocalIdentity, &[])?.ok_or(Error::NoIdentity)
}

fn prekey_state(o: &Overlay<'_>) -> Result<proto::PrekeyStateRecord> {
    load(o, Namespace::PrekeyState, &[])?.ok_or(Error::NoIdentity)
}

fn contact_record(o: &Overlay<'_>, peer: &Address) -> Result<Option<proto::ContactRecord>> {
    load(o, Namespace::Contact, peer.as_bytes())
}

fn next_id(counter: &mut u32) -> Result<u32> {
    let id = *counter;
    // Ids are 24-bit in libsignal's wire format; stay below that.
    if id >= 0x00FF_FFFF {
        return Err(Error::PrekeyIdsExhausted);
    }
    *counter = id + 1;
    Ok(id)
}

/// Creates a new identity with its address derived from its key, plus a
/// signed prekey, a last-resort Kyber prekey and the one-time pools.
pub fn create_identity<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, ChangeSet)> {
    create(store, None, now, rng)
}

/// Re-keys the identity while keeping `address`, which contacts already
/// know: used when a user resets their keys. Contacts see an identity-key
/// change and must accept the new key before talking again.
pub fn create_identity_for_address<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    address: Address,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, ChangeSet)> {
    create(store, Some(address), now, rng)
}

/// Resets this profile's keys while keeping its address: a new identity
/// key, new prekeys, and every session dropped (the old keys are gone from
/// the store). Contacts, routes, queues and messages stay. Each contact
/// then sees an identity-key change and must accept the new key, which
/// reaches them in a new invitation (see
/// `courier::accept_invitation_with`).
pub fn reset_identity<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    now: UnixTime,
    rng: &mut R,
) -> Result<ChangeSet> {
    let address = local_address(store)?;
    let mut o = Overlay::new(store);
    for ns in [
        Namespace::Session,
        Namespace::PreKey,
        Namespace::SignedPreKey,
        Namespace::KyberPreKey,
    ] {
        for k in o.keys(ns)? {
            o.delete(ns, &k);
        }
    }
    let (_, cs) = create(&o, Some(address), now, rng)?;
    o.apply(cs);
    Ok(o.into_changes())
}

/// Whether a session with `peer` exists (messages can be sealed to them).
pub fn has_session(store: &dyn KvStore, peer: &Address) -> Result<bool> {
    Ok(store.get(Namespace::Session, peer.as_bytes())?.is_some())
}

fn create<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    address: Option<Address>,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, ChangeSet)> {
    let mut o = Overlay::new(store);
    let (mut rec, _public) = signal::new_local_identity(address, rng)?;
    let address = Address::from_slice(&rec.address).ok_or(Error::Bug("address length"))?;
    renew_certificate(&mut rec, now, rng)?;
    let mut st = proto::PrekeyStateRecord {
        next_one_time_prekey_id: 1,
        next_signed_prekey_id: 1,
        next_kyber_prekey_id: 1,
        ..Default::default()
    };
    let spk_id = next_id(&mut st.next_signed_prekey_id)?;
    let spk = signal::new_signed_prekey(&rec, spk_id, now, rng)?;
    o.put(
        Namespace::SignedPreKey,
        &spk_id.to_be_bytes(),
        Record::current(Namespace::SignedPreKey, spk),
    );
    st.current_signed_prekey_id = spk_id;
    let lr_id = next_id(&mut st.next_kyber_prekey_id)?;
    let lr = signal::new_kyber_prekey(&rec, lr_id, now, rng)?;
    o.put(
        Namespace::KyberPreKey,
        &lr_id.to_be_bytes(),
        Record::current(Namespace::KyberPreKey, lr),
    );
    st.last_resort_kyber_prekey_id = lr_id;
    save(&mut o, Namespace::LocalIdentity, &[], &rec);
    save(&mut o, Namespace::PrekeyState, &[], &st);
    refill_pools(&mut o, &rec, now, rng)?;
    Ok((address, o.into_changes()))
}

fn renew_certificate<R: RngCore + CryptoRng>(
    rec: &mut proto::LocalIdentityRecord,
    now: UnixTime,
    rng: &mut R,
) -> Result<bool> {
    if rec.sender_certificate_expires_ms > now.plus_millis(SENDER_CERT_RENEW_MARGIN_MS).millis() {
        return Ok(false);
    }
    let expires = now.plus_millis(SENDER_CERT_LIFETIME_MS);
    rec.sender_certificate = signal::issue_sender_certificate(rec, expires, rng)?;
    rec.sender_certificate_expires_ms = expires.millis();
    Ok(true)
}

/// Tops up the one-time EC and Kyber prekey pools when they run low.
fn refill_pools<R: RngCore + CryptoRng>(
    o: &mut Overlay<'_>,
    rec: &proto::LocalIdentityRecord,
    now: UnixTime,
    rng: &mut R,
) -> Result<()> {
    let mut st = prekey_state(o)?;
    let ec_left = u32::try_from(o.keys(Namespace::PreKey)?.len()).unwrap_or(u32::MAX);
    if ec_left < ONE_TIME_PREKEY_LOW_WATER {
        for _ in ec_left..ONE_TIME_PREKEY_POOL {
            let id = next_id(&mut st.next_one_time_prekey_id)?;
            let r = signal::new_one_time_prekey(id, rng)?;
            o.put(
                Namespace::PreKey,
                &id.to_be_bytes(),
                Record::current(Namespace::PreKey, r),
            );
        }
    }
    let kyber_left = u32::try_from(o.keys(Namespace::KyberPreKey)?.len())
        .unwrap_or(u32::MAX)
        .saturating_sub(1); // the last-resort key is not part of the pool
    if kyber_left < ONE_TIME_KYBER_PREKEY_POOL / 2 {
        for _ in kyber_left..ONE_TIME_KYBER_PREKEY_POOL {
            let id = next_id(&mut st.next_kyber_prekey_id)?;
            let r = signal::new_kyber_prekey(rec, id, now, rng)?;
            o.put(
                Namespace::KyberPreKey,
                &id.to_be_bytes(),
                Record::current(Namespace::KyberPreKey, r),
            );
        }
    }
    save(o, Namespace::PrekeyState, &[], &st);
    Ok(())
}

/// Refills the prekey pools if they are low (call after receiving).
pub fn refill_prekeys<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    now: UnixTime,
    rng: &mut R,
) -> Result<ChangeSet> {
    let mut o = Overlay::new(store);
    let rec = local(&o)?;
    refill_pools(&mut o, &rec, now, rng)?;
    Ok(o.into_changes())
}

/// Number of one-time EC prekeys left.
pub fn one_time_prekeys_left(store: &dyn KvStore) -> Result<usize> {
    Ok(store.keys(Namespace::PreKey)?.len())
}

/// Our address.
pub fn local_address(store: &dyn KvStore) -> Result<Address> {
    let o = Overlay::new(store);
    Address::from_slice(&local(&o)?.address).ok_or(Error::Store(StoreError::Corrupt {
        namespace: "local_identity",
    }))
}

/// Our public identity key.
pub fn local_identity_key(store: &dyn KvStore) -> Result<IdentityPublic> {
    let o = Overlay::new(store);
    Ok(signal::IdentitySecret::from_bytes(&local(&o)?.identity_key_pair)?.public())
}

/// Produces a prekey bundle to hand to one peer. It carries one one-time
/// EC prekey and one one-time Kyber prekey that no earlier bundle carried
/// (the last-resort Kyber prekey when the pool is empty).
pub fn publish_bundle(store: &dyn KvStore) -> Result<(Vec<u8>, ChangeSet)> {
    let mut o = Overlay::new(store);
    let mut st = prekey_state(&o)?;
    let pick = |keys: Vec<Vec<u8>>, after: u32, skip: u32| -> Option<u32> {
        keys.iter()
            .filter_map(|k| <[u8; 4]>::try_from(k.as_slice()).ok())
            .map(u32::from_be_bytes)
            .find(|id| *id > after && *id != skip)
    };
    // Hand out each one-time key once: the pool state remembers the highest
    // id already put in a bundle.
    let otp = pick(o.keys(Namespace::PreKey)?, st.handed_out_prekey_id, 0);
    let kyber = pick(
        o.keys(Namespace::KyberPreKey)?,
        st.handed_out_kyber_prekey_id,
        st.last_resort_kyber_prekey_id,
    );
    if let Some(id) = otp {
        st.handed_out_prekey_id = id;
    }
    let kyber_id = match kyber {
        Some(id) => {
            st.handed_out_kyber_prekey_id = id;
            id
        }
        None => st.last_resort_kyber_prekey_id,
    };
    let bytes = signal::build_bundle(&o, st.current_signed_prekey_id, kyber_id, otp)?;
    save(&mut o, Namespace::PrekeyState, &[], &st);
    Ok((bytes, o.into_changes()))
}

/// Checks a bundle and returns who it belongs to (nothing is stored).
pub fn inspect_bundle(bundle: &[u8]) -> Result<Bundle> {
    signal::verify_bundle(bundle)
}

/// Pins `bundle`'s identity key as a contact, unverified. (The identity key
/// is also the contact's sealed-sender trust root.)
///
/// First contact requires the address to be the one the key derives. For a
/// known contact, a different key is refused with
/// [`Error::IdentityKeyChanged`]: see [`accept_identity_change`].
pub fn add_contact(store: &dyn KvStore, bundle: &[u8]) -> Result<(Address, ChangeSet)> {
    let b = signal::verify_bundle(bundle)?;
    let mut o = Overlay::new(store);
    pin_contact(&mut o, &b)?;
    Ok((b.address(), o.into_changes()))
}

fn pin_contact(o: &mut Overlay<'_>, b: &Bundle) -> Result<()> {
    let peer = b.address();
    if peer == local_address_in(o)? {
        return Err(Error::AddressMismatch);
    }
    match contact_record(o, &peer)? {
        Some(c) if c.identity_key != b.identity().to_bytes() => {
            Err(Error::IdentityKeyChanged { peer })
        }
        Some(_) => Ok(()),
        None => {
            if b.identity().address() != peer {
                return Err(Error::AddressMismatch);
            }
            let c = proto::ContactRecord {
                address: peer.as_bytes().to_vec(),
                identity_key: b.identity().to_bytes(),
                verified: false,
            };
            save(o, Namespace::Contact, peer.as_bytes(), &c);
            Ok(())
        }
    }
}

fn local_address_in(o: &Overlay<'_>) -> Result<Address> {
    Address::from_slice(&local(o)?.address).ok_or(Error::Store(StoreError::Corrupt {
        namespace: "local_identity",
    }))
}

/// Pins the bundle's owner (see [`add_contact`]) and runs PQXDH with it.
/// The first message sent afterwards is a PreKey message.
pub fn start_session<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    bundle: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, ChangeSet)> {
    // libsignal checks the prekey signatures inside `initiate_session`.
    let b = signal::decode_bundle(bundle)?;
    let mut o = Overlay::new(store);
    pin_contact(&mut o, &b)?;
    let o = signal::initiate_session(o, &b, now, rng)?;
    Ok((b.address(), o.into_changes()))
}

/// The user accepts a contact's new identity key, taken from a bundle the
/// contact gave them. The contact becomes unverified, the old session is
/// dropped, and a new one must be started (or will be, by the contact's
/// next PreKey message).
pub fn accept_identity_change(store: &dyn KvStore, bundle: &[u8]) -> Result<(Address, ChangeSet)> {
    let b = signal::verify_bundle(bundle)?;
    let peer = b.address();
    let mut o = Overlay::new(store);
    if contact_record(&o, &peer)?.is_none() {
        return Err(Error::UnknownContact { peer });
    }
    let c = proto::ContactRecord {
        address: peer.as_bytes().to_vec(),
        identity_key: b.identity().to_bytes(),
        verified: false,
    };
    save(&mut o, Namespace::Contact, peer.as_bytes(), &c);
    o.delete(Namespace::Session, peer.as_bytes());
    Ok((peer, o.into_changes()))
}

/// A contact, if known.
pub fn contact(store: &dyn KvStore, peer: &Address) -> Result<Option<Contact>> {
    let o = Overlay::new(store);
    contact_record(&o, peer)?
        .map(|c| {
            Ok(Contact {
                address: *peer,
                identity: IdentityPublic::from_bytes(&c.identity_key)?,
                verification: if c.verified {
                    Verification::Verified
                } else {
                    Verification::Unverified
                },
            })
        })
        .transpose()
}

/// All contacts, by address.
pub fn contacts(store: &dyn KvStore) -> Result<Vec<Contact>> {
    let mut out = Vec::new();
    for k in store.keys(Namespace::Contact)? {
        let peer = Address::from_slice(&k).ok_or(Error::Store(StoreError::Corrupt {
            namespace: "contact",
        }))?;
        if let Some(c) = contact(store, &peer)? {
            out.push(c);
        }
    }
    Ok(out)
}

fn require_contact(o: &Overlay<'_>, peer: &Address) -> Result<proto::ContactRecord> {
    contact_record(o, peer)?.ok_or(Error::UnknownContact { peer: *peer })
}

/// Pads and encrypts `plaintext` for `peer` (not sealed: the message type
/// and our identity are visible to whoever holds the ciphertext).
pub fn encrypt<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    peer: &Address,
    plaintext: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Vec<u8>, ChangeSet)> {
    let o = Overlay::new(store);
    require_contact(&o, peer)?;
    let padded = padding::pad(plaintext)?;
    let (ct, o) = signal::encrypt(o, peer, &padded, now, rng)?;
    Ok((ct, o.into_changes()))
}

/// Decrypts a message from `peer` produced by [`encrypt`].
pub fn decrypt<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    peer: &Address,
    ciphertext: &[u8],
    rng: &mut R,
) -> Result<(Zeroizing<Vec<u8>>, ChangeSet)> {
    let o = Overlay::new(store);
    require_contact(&o, peer)?;
    let (padded, o) = signal::decrypt(o, peer, ciphertext, rng)?;
    let pt = padding::unpad(&padded)?;
    Ok((pt, o.into_changes()))
}

/// Pads, encrypts and seals `plaintext` for `peer`: the sealed message
/// reveals neither sender nor message type to anyone but `peer`.
pub fn seal<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    peer: &Address,
    plaintext: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Vec<u8>, ChangeSet)> {
    let mut o = Overlay::new(store);
    require_contact(&o, peer)?;
    let mut rec = local(&o)?;
    if renew_certificate(&mut rec, now, rng)? {
        save(&mut o, Namespace::LocalIdentity, &[], &rec);
    }
    let padded = padding::pad(plaintext)?;
    let (ct, o) = signal::seal(o, peer, &rec.sender_certificate, &padded, now, rng)?;
    Ok((ct, o.into_changes()))
}

/// Opens a sealed message: checks the sender against the trust root and
/// identity key pinned for it, decrypts, and removes the padding.
pub fn open<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    sealed: &[u8],
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, Zeroizing<Vec<u8>>, ChangeSet)> {
    let o = Overlay::new(store);
    let pinned = |o: &Overlay<'_>, peer: &Address| -> Result<Option<IdentityPublic>> {
        contact_record(o, peer)?
            .map(|c| IdentityPublic::from_bytes(&c.identity_key))
            .transpose()
    };
    let (peer, padded, o) = signal::open(o, sealed, now, pinned, rng)?;
    let pt = padding::unpad(&padded)?;
    Ok((peer, pt, o.into_changes()))
}

/// The safety number between us and `peer`.
pub fn safety_number(store: &dyn KvStore, peer: &Address) -> Result<SafetyNumber> {
    let o = Overlay::new(store);
    let c = require_contact(&o, peer)?;
    let rec = local(&o)?;
    let me = Address::from_slice(&rec.address).ok_or(Error::Bug("address length"))?;
    let my_key = signal::IdentitySecret::from_bytes(&rec.identity_key_pair)?.public();
    signal::safety_number(
        &me,
        &my_key,
        peer,
        &IdentityPublic::from_bytes(&c.identity_key)?,
    )
}

/// Compares a scanned safety-number code with ours for `peer`; on a match
/// marks the contact verified. A mismatch is `Ok((false, empty))`.
pub fn verify_scanned(
    store: &dyn KvStore,
    peer: &Address,
    scanned: &[u8],
) -> Result<(bool, ChangeSet)> {
    let ours = safety_number(store, peer)?;
    if !signal::compare_scanned(&ours, scanned)? {
        return Ok((false, ChangeSet::new()));
    }
    Ok((true, set_verified(store, peer, Verification::Verified)?))
}

/// Sets a contact's verification state (after the user compared digits).
pub fn set_verified(store: &dyn KvStore, peer: &Address, v: Verification) -> Result<ChangeSet> {
    let mut o = Overlay::new(store);
    let mut c = require_contact(&o, peer)?;
    c.verified = v == Verification::Verified;
    save(&mut o, Namespace::Contact, peer.as_bytes(), &c);
    Ok(o.into_changes())
}
