//! One-time invitations: links, payloads, accepting one.

use prost::Message as _;
use rand_core::{CryptoRng, RngCore};
use zeroize::Zeroizing;

use crate::address::Address;
use crate::codec::{self, local_proto as lp};
use crate::consts::{MAX_INVITE_BLOBS, MAX_RECORD_BYTES};
use crate::e2e;
use crate::error::{Error, Result};
use crate::message::{Body, ContactCard, Envelope, QueueAddress};
use crate::relay_address::RelayAddress;
use crate::relay_proto::{Blob, QueueId};
use crate::store::{ChangeSet, KvStore, Namespace, Overlay};
use crate::time::UnixTime;

use super::*;

/// A parsed `postern:` invitation link.
#[derive(Clone, PartialEq, Eq)]
pub struct Invitation {
    /// The inviter's relay.
    pub relay: RelayAddress,
    /// The invitation queue's sender id.
    pub sender_id: QueueId,
    /// Opens the payload.
    pub key: Zeroizing<[u8; 32]>,
    /// After this the invitation is refused.
    pub expires_at: UnixTime,
}

impl core::fmt::Debug for Invitation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Invitation({}, <redacted>)", self.relay)
    }
}

impl Invitation {
    /// The `postern:` link.
    pub fn to_link(&self) -> String {
        let p = lp::InvitationLink {
            version: LINK_VERSION,
            relay: self.relay.to_string(),
            sender_id: self.sender_id.to_vec(),
            key: self.key.to_vec(),
            expires_at_ms: self.expires_at.millis(),
        };
        format!(
            "{LINK_PREFIX}{}",
            data_encoding::BASE64URL_NOPAD.encode(&p.encode_to_vec())
        )
    }

    /// Parses a link, refusing an expired one.
    pub fn parse(link: &str, now: UnixTime) -> Result<Invitation> {
        const WHAT: &str = "invitation link";
        if link.len() > MAX_LINK_CHARS {
            return Err(Error::TooLarge {
                what: WHAT,
                len: link.len(),
                max: MAX_LINK_CHARS,
            });
        }
        let b64 = link
            .trim()
            .strip_prefix(LINK_PREFIX)
            .ok_or(malformed(WHAT))?;
        let bytes = data_encoding::BASE64URL_NOPAD
            .decode(b64.as_bytes())
            .map_err(|_| malformed(WHAT))?;
        let p: lp::InvitationLink = codec::decode_bounded(&bytes, MAX_LINK_CHARS, WHAT)?;
        if p.version != LINK_VERSION {
            return Err(Error::UnsupportedVersion {
                what: WHAT,
                version: p.version,
            });
        }
        let inv = Invitation {
            relay: RelayAddress::parse(&p.relay)?,
            sender_id: codec::fixed(&p.sender_id, WHAT)?,
            key: Zeroizing::new(codec::fixed(&p.key, WHAT)?),
            expires_at: UnixTime(p.expires_at_ms),
        };
        if now.millis() >= inv.expires_at.millis() {
            return Err(Error::InvitationExpired);
        }
        Ok(inv)
    }
}

/// Makes a one-time invitation for the freshly created queue `q`: the
/// link to show, the payload blobs to put on the relay (`PutInvite`), and
/// the change set (the queue, marked as an invitation, and the bundle's
/// prekeys).
pub fn create_invitation<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    q: &CreatedQueue,
    display_name: &str,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Invitation, Vec<Blob>, ChangeSet)> {
    check_name(display_name)?;
    let (bundle, mut cs) = e2e::publish_bundle(store)?;
    let mut link_key = Zeroizing::new([0u8; 32]);
    rng.fill_bytes(link_key.as_mut());
    let inv = Invitation {
        relay: q.relay.clone(),
        sender_id: q.sender_id,
        key: link_key,
        expires_at: UnixTime(now.millis().saturating_add(INVITATION_LIFETIME_MS)),
    };
    let payload = Zeroizing::new(
        lp::InvitePayload {
            version: LINK_VERSION,
            bundle,
            blob_key: q.keys.blob_key.to_vec(),
            display_name: display_name.to_owned(),
        }
        .encode_to_vec(),
    );
    let blobs = fragment(&inv.key, MSG_INVITE_PAYLOAD, &payload, rng)?;
    if blobs.len() > MAX_INVITE_BLOBS as usize {
        return Err(Error::Bug("invitation payload too large"));
    }
    let mut rec = queue_record(q, now);
    rec.invitation = true;
    rec.invite_expires_at_ms = inv.expires_at.millis();
    save(&mut cs, Namespace::Queue, &q.recipient_id, &rec);
    Ok((inv, blobs, cs))
}

pub(super) fn reassemble_standalone(
    key: &[u8; 32],
    blobs: &[Blob],
) -> Result<(u8, Zeroizing<Vec<u8>>)> {
    const WHAT: &str = "invitation payload";
    let mut parts: Vec<Option<Zeroizing<Vec<u8>>>> = Vec::new();
    let mut the_ref = None;
    for b in blobs {
        let inner = open_blob(key, b)?;
        let Inner::Fragment {
            msg_ref,
            index,
            total,
            data,
        } = parse_inner(&inner)?
        else {
            return Err(malformed(WHAT));
        };
        if *the_ref.get_or_insert((msg_ref, total)) != (msg_ref, total) {
            return Err(malformed(WHAT));
        }
        parts.resize_with(usize::from(total), || None);
        let slot = parts.get_mut(usize::from(index)).ok_or(malformed(WHAT))?;
        *slot = Some(Zeroizing::new(data.to_vec()));
    }
    let mut msg = Zeroizing::new(Vec::new());
    for p in &parts {
        msg.extend_from_slice(p.as_ref().ok_or(malformed(WHAT))?);
    }
    let (&t, body) = msg.split_first().ok_or(malformed(WHAT))?;
    Ok((t, Zeroizing::new(body.to_vec())))
}

/// Accepts an invitation whose payload blobs were taken from the relay.
/// `ours` is the queue just created for this contact. Runs PQXDH with
/// the inviter's bundle and returns the new contact, the introduction to
/// put into the invitation queue, and the change set.
pub fn accept_invitation<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    inv: &Invitation,
    payload: &[Blob],
    ours: &CreatedQueue,
    my_name: &str,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, Outgoing, ChangeSet)> {
    accept_invitation_with(
        store,
        inv,
        payload,
        ours,
        my_name,
        KeyChange::Refuse,
        now,
        rng,
    )
}

/// What accepting an invitation from a known contact does when it carries
/// another identity key than the one pinned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange {
    /// Refuse it with [`Error::IdentityKeyChanged`]: the user decides.
    Refuse,
    /// The user compared and accepts the new key: it replaces the pinned
    /// one (the contact becomes unverified) and a new session starts.
    Accept,
}

/// [`accept_invitation`], saying what to do when the inviter is a known
/// contact whose identity key changed (they reset their keys, or someone
/// claims their address). An invitation from a known contact with the
/// same key is refused ([`Error::AlreadyContact`]).
#[allow(clippy::too_many_arguments)]
pub fn accept_invitation_with<R: RngCore + CryptoRng>(
    store: &dyn KvStore,
    inv: &Invitation,
    payload: &[Blob],
    ours: &CreatedQueue,
    my_name: &str,
    key_change: KeyChange,
    now: UnixTime,
    rng: &mut R,
) -> Result<(Address, Outgoing, ChangeSet)> {
    const WHAT: &str = "invitation payload";
    check_name(my_name)?;
    if now.millis() >= inv.expires_at.millis() {
        return Err(Error::InvitationExpired);
    }
    let (t, body) = reassemble_standalone(&inv.key, payload)?;
    if t != MSG_INVITE_PAYLOAD {
        return Err(malformed(WHAT));
    }
    let p: lp::InvitePayload = codec::decode_bounded(&body, MAX_RECORD_BYTES, WHAT)?;
    if p.version != LINK_VERSION {
        return Err(Error::UnsupportedVersion {
            what: WHAT,
            version: p.version,
        });
    }
    check_name(&p.display_name)?;
    let their_blob_key = Zeroizing::new(codec::fixed::<32>(&p.blob_key, WHAT)?);
    let claimed = e2e::inspect_bundle(&p.bundle)?;
    let mut o = Overlay::new(store);
    if let Some(known) = e2e::contact(store, &claimed.address())? {
        if known.identity.to_bytes() == claimed.identity().to_bytes() {
            return Err(Error::AlreadyContact);
        }
        if key_change == KeyChange::Refuse {
            return Err(Error::IdentityKeyChanged {
                peer: claimed.address(),
            });
        }
        let (_, cs) = e2e::accept_identity_change(&o, &p.bundle)?;
        o.apply(cs);
    }
    let (peer, cs) = e2e::start_session(&o, &p.bundle, now, rng)?;
    o.apply(cs);
    let (my_bundle, cs) = e2e::publish_bundle(&o)?;
    o.apply(cs);
    let card = Envelope {
        id: random_id(rng),
        sent_at: now,
        reply_to: None,
        body: Body::ContactCard(ContactCard {
            queue: QueueAddress {
                relay: ours.relay.clone(),
                sender_id: ours.sender_id,
                blob_key: ours.keys.blob_key.clone(),
            },
            display_name: my_name.to_owned(),
        }),
    };
    let (sealed, cs) = e2e::seal(&o, &peer, &card.encode()?, now, rng)?;
    o.apply(cs);
    let intro = lp::Introduction {
        bundle: my_bundle,
        sealed,
    }
    .encode_to_vec();
    let blobs = fragment(&their_blob_key, MSG_INTRODUCTION, &intro, rng)?;
    let mut cs = o.into_changes();
    let mut rec = queue_record(ours, now);
    rec.contact = peer.as_bytes().to_vec();
    save(&mut cs, Namespace::Queue, &ours.recipient_id, &rec);
    let theirs = QueueAddress {
        relay: inv.relay.clone(),
        sender_id: inv.sender_id,
        blob_key: their_blob_key,
    };
    save_route(&mut cs, &peer, &theirs, &p.display_name, &ours.recipient_id);
    Ok((
        peer,
        Outgoing {
            relay: inv.relay.clone(),
            sender_id: inv.sender_id,
            blobs,
        },
        cs,
    ))
}
