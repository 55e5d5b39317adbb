//! Adding a contact: making and taking a one-time invitation, step by
//! step, as two state machines with no I/O.
//!
//! A shell drives either flow the same way: it asks [`InviteFlow::poll_action`]
//! (or [`AcceptFlow::poll_action`]) what to do, does it — a request to a
//! relay, or delivering committed blobs through the onion network — and
//! hands the result back with `handle(now, input, store, rng)`. The flow
//! commits its change sets to the store itself, always *before* the step
//! that depends on them leaves: the invitation's keys are stored before the
//! invitation is put on the relay, and the introduction is in the outbox
//! before it is delivered. A flow that fails part way leaves the store
//! consistent; what was committed and not yet sent waits in the outbox.
//!
//! ```text
//! invite:  Create queue (home) -> commit invitation keys -> PutInvite x n (home) -> link
//! accept:  parse link -> TakeInvite (their relay) -> Create queue (home)
//!          -> commit contact + introduction in the outbox -> deliver -> remove from outbox
//! ```

use postern_core::courier::{self, CreatedQueue, Invitation, KeyChange, Outgoing, QueueKeys};
use postern_core::crypto::signal::QueuePublic;
use postern_core::relay_proto::client::Answer;
use postern_core::relay_proto::{Blob, Command, ErrorCode};
use postern_core::{Address, Error, KvStore, RelayAddress, UnixTime};
use rand_core::{CryptoRng, RngCore};

pub use crate::flow::{Action, Flow, FlowError, Input};
use crate::outbox;

/// A fresh queue key and the request that registers it.
fn new_queue<R: RngCore + CryptoRng>(rng: &mut R) -> Result<(QueueKeys, QueuePublic), FlowError> {
    let keys = QueueKeys::generate(rng);
    let public = keys.queue_key.public()?;
    Ok((keys, public))
}

/// The created queue from a `Create` answer.
fn created(
    answer: Answer,
    relay: &RelayAddress,
    keys: QueueKeys,
) -> Result<CreatedQueue, FlowError> {
    match answer {
        Answer::Created {
            recipient_id,
            sender_id,
        } => Ok(CreatedQueue {
            relay: relay.clone(),
            keys,
            recipient_id,
            sender_id,
        }),
        Answer::Refused(code) => Err(FlowError::Refused(code)),
        _ => Err(FlowError::UnexpectedAnswer),
    }
}

fn ok(answer: Answer) -> Result<(), FlowError> {
    match answer {
        Answer::Ok => Ok(()),
        Answer::Refused(code) => Err(FlowError::Refused(code)),
        _ => Err(FlowError::UnexpectedAnswer),
    }
}

/// How long the home relay keeps an invitation payload (seconds).
pub fn invitation_ttl_secs() -> u32 {
    u32::try_from(courier::INVITATION_LIFETIME_MS / 1000).unwrap_or(u32::MAX)
}

#[derive(Debug)]
enum InviteState {
    Creating {
        keys: QueueKeys,
        public: QueuePublic,
    },
    Putting {
        queue: CreatedQueue,
        blobs: Vec<Blob>,
        next: usize,
        invitation: Invitation,
    },
    Done(Invitation),
    Failed,
}

/// Making a one-time invitation on the home relay.
#[derive(Debug)]
pub struct InviteFlow {
    home: RelayAddress,
    name: String,
    state: InviteState,
}

impl InviteFlow {
    /// Starts an invitation on `home`, introducing us as `name`.
    pub fn new<R: RngCore + CryptoRng>(
        home: RelayAddress,
        name: String,
        rng: &mut R,
    ) -> Result<InviteFlow, FlowError> {
        let (keys, public) = new_queue(rng)?;
        Ok(InviteFlow {
            home,
            name,
            state: InviteState::Creating { keys, public },
        })
    }

    fn step<R: RngCore + CryptoRng>(
        &self,
        state: InviteState,
        now: UnixTime,
        input: Input,
        store: &mut dyn KvStore,
        rng: &mut R,
    ) -> Result<InviteState, FlowError> {
        let Input::Answer(answer) = input else {
            return Err(FlowError::OutOfOrder);
        };
        match state {
            InviteState::Creating { keys, .. } => {
                let queue = created(answer, &self.home, keys)?;
                let (invitation, blobs, cs) =
                    courier::create_invitation(&*store, &queue, &self.name, now, rng)?;
                // The keys are stored before the payload that points at
                // them is published.
                store.commit(cs)?;
                Ok(InviteState::Putting {
                    queue,
                    blobs,
                    next: 0,
                    invitation,
                })
            }
            InviteState::Putting {
                queue,
                blobs,
                next,
                invitation,
            } => {
                ok(answer)?;
                let next = next + 1;
                if next >= blobs.len() {
                    Ok(InviteState::Done(invitation))
                } else {
                    Ok(InviteState::Putting {
                        queue,
                        blobs,
                        next,
                        invitation,
                    })
                }
            }
            InviteState::Done(_) | InviteState::Failed => Err(FlowError::OutOfOrder),
        }
    }

    /// The invitation, once every blob of it is on the relay.
    pub fn invitation(&self) -> Option<&Invitation> {
        match &self.state {
            InviteState::Done(i) => Some(i),
            _ => None,
        }
    }
}

impl Flow for InviteFlow {
    /// The next step, or `None` once the flow has finished or failed.
    fn poll_action(&self) -> Option<Action<'_>> {
        match &self.state {
            InviteState::Creating { keys, public } => Some(Action::Request {
                relay: &self.home,
                command: Command::Create {
                    queue_key: public.clone(),
                },
                key: Some(&keys.queue_key),
            }),
            InviteState::Putting {
                queue, blobs, next, ..
            } => {
                let blob = blobs.get(*next)?;
                Some(Action::Request {
                    relay: &self.home,
                    command: Command::PutInvite {
                        recipient_id: queue.recipient_id,
                        index: u32::try_from(*next).ok()?,
                        total: u32::try_from(blobs.len()).ok()?,
                        ttl_secs: invitation_ttl_secs(),
                        blob: blob.clone(),
                    },
                    key: Some(&queue.keys.queue_key),
                })
            }
            InviteState::Done(_) | InviteState::Failed => None,
        }
    }

    /// Takes the result of the last action. An error ends the flow.
    fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: UnixTime,
        input: Input,
        store: &mut dyn KvStore,
        rng: &mut R,
    ) -> Result<(), FlowError> {
        let state = core::mem::replace(&mut self.state, InviteState::Failed);
        self.state = self.step(state, now, input, store, rng)?;
        Ok(())
    }
}

#[derive(Debug)]
enum AcceptState {
    Taking,
    Creating {
        payload: Vec<Blob>,
        keys: QueueKeys,
        public: QueuePublic,
    },
    Delivering {
        id: [u8; 16],
        peer: Address,
        out: Outgoing,
    },
    /// The inviter is a known contact whose identity key changed: paused
    /// until the user accepts the new key ([`AcceptFlow::accept_new_key`]).
    KeyChanged {
        peer: Address,
        payload: Vec<Blob>,
        ours: CreatedQueue,
    },
    Done(Address),
    Failed,
}

/// Taking a one-time invitation: learning the contact, and sending it our
/// introduction.
#[derive(Debug)]
pub struct AcceptFlow {
    home: RelayAddress,
    name: String,
    invitation: Invitation,
    state: AcceptState,
}

impl AcceptFlow {
    /// Starts accepting `invitation`, with our queue on `home`,
    /// introducing us as `name`.
    pub fn new(home: RelayAddress, name: String, invitation: Invitation) -> AcceptFlow {
        AcceptFlow {
            home,
            name,
            invitation,
            state: AcceptState::Taking,
        }
    }

    /// Parses `link` (hostile input: a typed error) and starts accepting it.
    pub fn from_link(
        home: RelayAddress,
        name: String,
        link: &str,
        now: UnixTime,
    ) -> Result<AcceptFlow, FlowError> {
        Ok(AcceptFlow::new(home, name, Invitation::parse(link, now)?))
    }

    fn step<R: RngCore + CryptoRng>(
        &self,
        state: AcceptState,
        now: UnixTime,
        input: Input,
        store: &mut dyn KvStore,
        rng: &mut R,
    ) -> Result<AcceptState, FlowError> {
        match (state, input) {
            (AcceptState::Taking, Input::Answer(answer)) => {
                let payload = match answer {
                    Answer::Items { items, .. } => items.into_iter().map(|(_, b)| b).collect(),
                    Answer::Refused(ErrorCode::NoSuchInvite) => {
                        return Err(FlowError::InvitationGone);
                    }
                    Answer::Refused(code) => return Err(FlowError::Refused(code)),
                    _ => return Err(FlowError::UnexpectedAnswer),
                };
                let (keys, public) = new_queue(rng)?;
                Ok(AcceptState::Creating {
                    payload,
                    keys,
                    public,
                })
            }
            (AcceptState::Creating { payload, keys, .. }, Input::Answer(answer)) => {
                let ours = created(answer, &self.home, keys)?;
                match self.introduce(store, &payload, &ours, KeyChange::Refuse, now, rng) {
                    Err(FlowError::Core(Error::IdentityKeyChanged { peer })) => {
                        Ok(AcceptState::KeyChanged {
                            peer,
                            payload,
                            ours,
                        })
                    }
                    r => r,
                }
            }
            (AcceptState::Delivering { id, peer, .. }, Input::Delivered) => {
                outbox::sent(store, id, false, now)?;
                Ok(AcceptState::Done(peer))
            }
            _ => Err(FlowError::OutOfOrder),
        }
    }

    /// Runs the core's acceptance and stores the contact and our
    /// introduction (in the outbox) in one commit, before anything is sent.
    fn introduce<R: RngCore + CryptoRng>(
        &self,
        store: &mut dyn KvStore,
        payload: &[Blob],
        ours: &CreatedQueue,
        key_change: KeyChange,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<AcceptState, FlowError> {
        let (peer, out, cs) = courier::accept_invitation_with(
            &*store,
            &self.invitation,
            payload,
            ours,
            &self.name,
            key_change,
            now,
            rng,
        )?;
        let id = outbox::commit_with(store, cs, peer, &out, rng)?;
        Ok(AcceptState::Delivering { id, peer, out })
    }

    /// The known contact whose identity key changed, when the flow paused
    /// for the user's decision (nothing of the new key was stored).
    pub fn key_changed(&self) -> Option<&Address> {
        match &self.state {
            AcceptState::KeyChanged { peer, .. } => Some(peer),
            _ => None,
        }
    }

    /// The user accepts the contact's new identity key (after comparing
    /// safety numbers by a channel they trust): it is pinned, unverified, a
    /// new session starts and the flow goes on to deliver our
    /// introduction. Only from the paused state.
    pub fn accept_new_key<R: RngCore + CryptoRng>(
        &mut self,
        store: &mut dyn KvStore,
        now: UnixTime,
        rng: &mut R,
    ) -> Result<(), FlowError> {
        let AcceptState::KeyChanged { payload, ours, .. } =
            core::mem::replace(&mut self.state, AcceptState::Failed)
        else {
            return Err(FlowError::OutOfOrder);
        };
        self.state = self.introduce(store, &payload, &ours, KeyChange::Accept, now, rng)?;
        Ok(())
    }

    /// The new contact's address, once our introduction has left. (If
    /// delivery fails, the contact is still added and the introduction
    /// waits in the outbox.)
    pub fn contact(&self) -> Option<&Address> {
        match &self.state {
            AcceptState::Done(a) => Some(a),
            _ => None,
        }
    }
}

impl Flow for AcceptFlow {
    /// The next step, or `None` once the flow has finished or failed.
    fn poll_action(&self) -> Option<Action<'_>> {
        match &self.state {
            AcceptState::Taking => Some(Action::Request {
                relay: &self.invitation.relay,
                command: Command::TakeInvite {
                    sender_id: self.invitation.sender_id,
                },
                key: None,
            }),
            AcceptState::Creating { keys, public, .. } => Some(Action::Request {
                relay: &self.home,
                command: Command::Create {
                    queue_key: public.clone(),
                },
                key: Some(&keys.queue_key),
            }),
            AcceptState::Delivering { id, out, .. } => Some(Action::Deliver { id: *id, out }),
            AcceptState::KeyChanged { .. } | AcceptState::Done(_) | AcceptState::Failed => None,
        }
    }

    /// Takes the result of the last action. An error ends the flow.
    fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: UnixTime,
        input: Input,
        store: &mut dyn KvStore,
        rng: &mut R,
    ) -> Result<(), FlowError> {
        let state = core::mem::replace(&mut self.state, AcceptState::Failed);
        self.state = self.step(state, now, input, store, rng)?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::testing::relay;
    use postern_core::ErrorKind;
    use postern_core::error::HasKind;
    use postern_core::{MemStore, e2e};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T: UnixTime = UnixTime(1_700_000_000_000);

    fn profile(r: &mut ChaCha20Rng) -> (MemStore, Address) {
        let mut s = MemStore::new();
        let (a, cs) = e2e::create_identity(&s, T, r).unwrap();
        s.commit(cs).unwrap();
        (s, a)
    }

    fn created_answer(n: u8) -> Answer {
        Answer::Created {
            recipient_id: [n; 16],
            sender_id: [n | 0x80; 16],
        }
    }

    /// Drives Alice's invitation to the end, playing her home relay; the
    /// blobs it put, in order.
    fn invite(r: &mut ChaCha20Rng, alice: &mut MemStore) -> (Invitation, Vec<Blob>) {
        let mut f = InviteFlow::new(relay(0), "Alice".into(), r).unwrap();
        let mut put = Vec::new();
        while let Some(a) = f.poll_action() {
            let answer = match a {
                Action::Request {
                    relay: at,
                    command: Command::Create { .. },
                    key: Some(_),
                } => {
                    assert_eq!(at, &relay(0));
                    // Nothing is stored before the queue exists.
                    assert!(put.is_empty());
                    created_answer(1)
                }
                Action::Request {
                    command:
                        Command::PutInvite {
                            recipient_id,
                            index,
                            blob,
                            ..
                        },
                    key: Some(_),
                    ..
                } => {
                    assert_eq!(recipient_id, [1; 16]);
                    assert_eq!(index as usize, put.len());
                    put.push(blob);
                    Answer::Ok
                }
                other => panic!("unexpected {other:?}"),
            };
            f.handle(T, Input::Answer(answer), alice, r).unwrap();
        }
        (f.invitation().unwrap().clone(), put)
    }

    #[test]
    fn a_refused_or_odd_answer_stops_the_flow_with_a_typed_error() {
        let mut r = ChaCha20Rng::seed_from_u64(1);
        let (mut alice, _) = profile(&mut r);
        let mut f = InviteFlow::new(relay(0), "Alice".into(), &mut r).unwrap();
        let e = f
            .handle(
                T,
                Input::Answer(Answer::Refused(ErrorCode::TooManyQueues)),
                &mut alice,
                &mut r,
            )
            .unwrap_err();
        assert!(matches!(e, FlowError::Refused(ErrorCode::TooManyQueues)));
        assert_eq!(e.kind(), ErrorKind::Network);
        assert!(f.poll_action().is_none());
        // A stopped flow refuses more input as a bug, not a network error.
        let e = f
            .handle(T, Input::Answer(Answer::Ok), &mut alice, &mut r)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Bug);

        // An answer of the wrong shape is the relay misbehaving.
        let mut f = InviteFlow::new(relay(0), "Alice".into(), &mut r).unwrap();
        let e = f
            .handle(T, Input::Answer(Answer::Ok), &mut alice, &mut r)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::PeerMisbehaved);
        // An input that was not asked for is the shell's bug.
        let mut f = InviteFlow::new(relay(0), "Alice".into(), &mut r).unwrap();
        let e = f
            .handle(T, Input::Delivered, &mut alice, &mut r)
            .unwrap_err();
        assert_eq!(e.kind(), ErrorKind::Bug);
    }

    #[test]
    fn a_used_invitation_is_said_so_and_nothing_is_stored() {
        let mut r = ChaCha20Rng::seed_from_u64(2);
        let (mut alice, _) = profile(&mut r);
        let (inv, _) = invite(&mut r, &mut alice);
        let (mut bob, _) = profile(&mut r);
        let outbox_before = bob.outbox().unwrap().len();
        let mut f = AcceptFlow::from_link(relay(1), "Bob".into(), &inv.to_link(), T).unwrap();
        let e = f
            .handle(
                T,
                Input::Answer(Answer::Refused(ErrorCode::NoSuchInvite)),
                &mut bob,
                &mut r,
            )
            .unwrap_err();
        assert!(matches!(e, FlowError::InvitationGone));
        assert_eq!(e.kind(), ErrorKind::Usage);
        assert_eq!(bob.outbox().unwrap().len(), outbox_before);
        // A garbage link never starts a flow.
        let e = AcceptFlow::from_link(relay(1), "Bob".into(), "postern://nonsense", T).unwrap_err();
        assert_ne!(e.kind(), ErrorKind::Bug);
    }

    #[test]
    fn invite_then_accept_adds_the_contact_and_commits_before_sending() {
        let mut r = ChaCha20Rng::seed_from_u64(3);
        let (mut alice, alice_addr) = profile(&mut r);
        let (inv, put) = invite(&mut r, &mut alice);
        assert!(!put.is_empty());
        let (mut bob, _) = profile(&mut r);
        let mut f = AcceptFlow::from_link(relay(1), "Bob".into(), &inv.to_link(), T).unwrap();
        let mut delivered = None;
        while let Some(a) = f.poll_action() {
            let input = match a {
                Action::Request {
                    relay: at,
                    command: Command::TakeInvite { sender_id },
                    key: None,
                } => {
                    assert_eq!(at, &relay(0));
                    assert_eq!(sender_id, inv.sender_id);
                    let items = (0u64..).zip(put.iter().cloned()).collect();
                    Input::Answer(Answer::Items { items, more: false })
                }
                Action::Request {
                    relay: at,
                    command: Command::Create { .. },
                    key: Some(_),
                } => {
                    assert_eq!(at, &relay(1));
                    Input::Answer(created_answer(2))
                }
                Action::Deliver { id, out } => {
                    // The introduction is in the outbox before it leaves,
                    // addressed to Alice's invitation queue.
                    let waiting = outbox::waiting(&bob).unwrap();
                    assert_eq!(waiting.len(), 1);
                    assert_eq!(waiting[0].0, id);
                    assert_eq!(out.sender_id, inv.sender_id);
                    delivered = Some(out.blobs.clone());
                    Input::Delivered
                }
                other => panic!("unexpected {other:?}"),
            };
            f.handle(T, input, &mut bob, &mut r).unwrap();
        }
        assert_eq!(f.contact(), Some(&alice_addr));
        assert!(outbox::waiting(&bob).unwrap().is_empty());
        assert!(!delivered.unwrap().is_empty());
        assert_eq!(
            courier::route(&bob, &alice_addr)
                .unwrap()
                .unwrap()
                .display_name,
            "Alice"
        );
    }

    #[test]
    fn a_failed_delivery_leaves_the_contact_and_the_introduction_queued() {
        let mut r = ChaCha20Rng::seed_from_u64(4);
        let (mut alice, alice_addr) = profile(&mut r);
        let (inv, put) = invite(&mut r, &mut alice);
        let (mut bob, _) = profile(&mut r);
        let mut f = AcceptFlow::from_link(relay(1), "Bob".into(), &inv.to_link(), T).unwrap();
        let items = (0u64..).zip(put).collect();
        f.handle(
            T,
            Input::Answer(Answer::Items { items, more: false }),
            &mut bob,
            &mut r,
        )
        .unwrap();
        f.handle(T, Input::Answer(created_answer(2)), &mut bob, &mut r)
            .unwrap();
        assert!(matches!(f.poll_action(), Some(Action::Deliver { .. })));
        // The shell's network fails here; the flow is dropped.
        drop(f);
        assert!(courier::route(&bob, &alice_addr).unwrap().is_some());
        assert_eq!(outbox::waiting(&bob).unwrap().len(), 1);
    }
}
