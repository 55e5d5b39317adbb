//! The client half of one relay connection, sans IO: waits for the relay's
//! `Hello`, numbers and signs requests, matches every answer to its
//! request by sequence number (gathering `Item`s until their `Done`), and
//! sets notifications aside. The native link (`postern-net`) and the
//! client engine feed it frames and send what it returns; it never
//! touches a socket or a clock.
//!
//! Anything out of order (a second `Hello`, an answer to no request, an
//! item beyond its bound, a `Done` whose count disagrees) is a protocol
//! violation: the session reports it and is broken from then on, because
//! later answers can no longer be trusted to match their requests.

use std::collections::{BTreeMap, VecDeque};

use rand_core::{CryptoRng, RngCore};

use super::{Blob, ClientAuth, Command, Frame, QueueId, Reply, decode_response};
use crate::consts::{MAX_DIRECTORY_BLOBS, MAX_FETCH, MAX_INVITE_BLOBS};
use crate::crypto::signal::QueueSecret;
use crate::error::{Error, Result};

/// Most requests one connection may have unanswered at once.
pub const MAX_IN_FLIGHT: usize = 64;
/// Most notifications held until the caller takes them; beyond that the
/// oldest is dropped (a notification only says "fetch this queue").
pub const MAX_PENDING_NOTIFICATIONS: usize = 1024;

/// A finished answer to one request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Answer {
    /// `Ok`.
    Ok,
    /// A queue was created.
    Created {
        /// Recipient-side id.
        recipient_id: QueueId,
        /// Sender-side id.
        sender_id: QueueId,
    },
    /// The items of a fetch, an invitation or the directory, and whether
    /// more wait on the relay.
    Items {
        /// `(item id, blob)` in the order received.
        items: Vec<(u64, Blob)>,
        /// Whether the relay holds more.
        more: bool,
    },
    /// The relay refused the request with a typed code.
    Refused(super::ErrorCode),
}

/// What one received frame meant.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// The relay's `Hello` arrived: requests may be sent.
    Ready,
    /// The complete answer to request `seq`.
    Answer {
        /// The request's sequence number.
        seq: u64,
        /// Its answer.
        answer: Answer,
    },
    /// An item arrived in a subscribed queue (also kept for
    /// [`ClientSession::take_notification`]).
    Notify(QueueId),
    /// Part of a multi-frame answer; nothing to do yet.
    Partial,
}

/// How the answer to one request must look.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// `Ok` or `Error`.
    Ok,
    /// `Created` or `Error`.
    Created,
    /// Up to `max` `Item`s then `Done`; `indexed`: item ids are 0, 1, …,
    /// at least one item, and nothing more waits.
    Items { max: usize, indexed: bool },
}

fn shape_of(c: &Command) -> Shape {
    match c {
        Command::Create { .. } => Shape::Created,
        Command::Fetch { max, .. } => Shape::Items {
            max: usize::try_from((*max).min(MAX_FETCH)).unwrap_or(0),
            indexed: false,
        },
        Command::TakeInvite { .. } => Shape::Items {
            max: MAX_INVITE_BLOBS as usize,
            indexed: true,
        },
        Command::GetDirectory => Shape::Items {
            max: MAX_DIRECTORY_BLOBS as usize,
            indexed: true,
        },
        _ => Shape::Ok,
    }
}

#[derive(Debug)]
struct Pending {
    shape: Shape,
    items: Vec<(u64, Blob)>,
}

/// The client's state on one relay connection.
#[derive(Debug, Default)]
pub struct ClientSession {
    auth: Option<ClientAuth>,
    pending: BTreeMap<u64, Pending>,
    notifications: VecDeque<QueueId>,
    broken: bool,
}

fn violation(what: &'static str) -> Error {
    Error::Malformed { what }
}

impl ClientSession {
    /// A session on a fresh connection, waiting for the relay's `Hello`.
    pub fn new() -> ClientSession {
        ClientSession::default()
    }

    /// Whether the `Hello` has arrived and the session is not broken.
    pub fn is_ready(&self) -> bool {
        self.auth.is_some() && !self.broken
    }

    /// Whether a protocol violation ended this session.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// Requests sent and not yet fully answered.
    pub fn in_flight(&self) -> usize {
        self.pending.len()
    }

    /// Encodes `command` as the next request (signed with `key` where the
    /// command needs it): its sequence number and frame.
    pub fn request<R: RngCore + CryptoRng>(
        &mut self,
        command: Command,
        key: Option<&QueueSecret>,
        rng: &mut R,
    ) -> Result<(u64, Frame)> {
        if self.broken {
            return Err(Error::Bug("request on a broken relay session"));
        }
        if self.pending.len() >= MAX_IN_FLIGHT {
            return Err(Error::Bug("too many relay requests in flight"));
        }
        let auth = self
            .auth
            .as_mut()
            .ok_or(Error::Bug("relay request before its Hello"))?;
        let shape = shape_of(&command);
        let (seq, frame) = auth.request(command, key, rng)?;
        self.pending.insert(
            seq,
            Pending {
                shape,
                items: Vec::new(),
            },
        );
        Ok((seq, frame))
    }

    /// Takes one frame from the relay. An error is a protocol violation
    /// and leaves the session broken.
    pub fn receive(&mut self, frame: &[u8]) -> Result<Event> {
        if self.broken {
            return Err(violation("frame on a broken relay session"));
        }
        let r = self.step(frame);
        if r.is_err() {
            self.broken = true;
            self.pending.clear();
        }
        r
    }

    fn step(&mut self, frame: &[u8]) -> Result<Event> {
        let r = decode_response(frame)?;
        match r.reply {
            Reply::Hello { challenge } if r.seq == 0 && self.auth.is_none() => {
                self.auth = Some(ClientAuth::new(challenge));
                return Ok(Event::Ready);
            }
            _ if self.auth.is_none() => return Err(violation("relay hello")),
            Reply::Hello { .. } => return Err(violation("relay hello")),
            Reply::Notify { recipient_id } if r.seq == 0 => {
                self.keep_notification(recipient_id);
                return Ok(Event::Notify(recipient_id));
            }
            _ => {}
        }
        let seq = r.seq;
        let p = self
            .pending
            .get_mut(&seq)
            .ok_or(violation("relay reply sequence"))?;
        let answer = match (p.shape, r.reply) {
            (_, Reply::Error(code)) if p.items.is_empty() => Answer::Refused(code),
            (Shape::Ok, Reply::Ok) => Answer::Ok,
            (
                Shape::Created,
                Reply::Created {
                    recipient_id,
                    sender_id,
                },
            ) => Answer::Created {
                recipient_id,
                sender_id,
            },
            (Shape::Items { max, indexed }, Reply::Item { item_id, blob }) => {
                if p.items.len() >= max || (indexed && item_id != p.items.len() as u64) {
                    return Err(violation("relay items"));
                }
                p.items.push((item_id, blob));
                return Ok(Event::Partial);
            }
            (Shape::Items { indexed, .. }, Reply::Done { count, more }) => {
                if count as usize != p.items.len() || (indexed && (more || p.items.is_empty())) {
                    return Err(violation("relay items"));
                }
                Answer::Items {
                    items: core::mem::take(&mut p.items),
                    more,
                }
            }
            _ => return Err(violation("relay reply kind")),
        };
        self.pending.remove(&seq);
        Ok(Event::Answer { seq, answer })
    }

    fn keep_notification(&mut self, id: QueueId) {
        if self.notifications.contains(&id) {
            return;
        }
        if self.notifications.len() >= MAX_PENDING_NOTIFICATIONS {
            self.notifications.pop_front();
        }
        self.notifications.push_back(id);
    }

    /// The oldest notification not yet taken.
    pub fn take_notification(&mut self) -> Option<QueueId> {
        self.notifications.pop_front()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::indexing_slicing)]
    use super::super::{ServerAuth, encode_response};
    use super::*;
    use rand::SeedableRng as _;

    fn rng() -> rand_chacha::ChaCha20Rng {
        rand_chacha::ChaCha20Rng::seed_from_u64(9)
    }

    fn ready() -> ClientSession {
        let server = ServerAuth::new(&mut rng());
        let mut s = ClientSession::new();
        assert_eq!(
            s.receive(&server.hello().unwrap()[..]).unwrap(),
            Event::Ready
        );
        s
    }

    fn frame(seq: u64, reply: Reply) -> Frame {
        encode_response(seq, &reply).unwrap()
    }

    fn blob(b: u8) -> Blob {
        Box::new([b; crate::consts::BLOB_BYTES])
    }

    #[test]
    fn rejects_requests_before_hello() {
        let mut s = ClientSession::new();
        let e = s.request(Command::Ping, None, &mut rng()).unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Bug);
    }

    #[test]
    fn rejects_anything_but_hello_first() {
        let mut s = ClientSession::new();
        assert!(s.receive(&frame(0, Reply::Ok)[..]).is_err());
        assert!(s.is_broken());
        // Broken for good, even when the Hello comes after.
        let server = ServerAuth::new(&mut rng());
        assert!(s.receive(&server.hello().unwrap()[..]).is_err());
    }

    #[test]
    fn rejects_a_second_hello() {
        let mut s = ready();
        let server = ServerAuth::new(&mut rng());
        assert!(s.receive(&server.hello().unwrap()[..]).is_err());
        assert!(s.is_broken());
    }

    #[test]
    fn rejects_an_answer_to_no_request() {
        let mut s = ready();
        assert!(s.receive(&frame(1, Reply::Ok)[..]).is_err());
        let mut s = ready();
        let (seq, _) = s.request(Command::Ping, None, &mut rng()).unwrap();
        assert!(s.receive(&frame(seq + 1, Reply::Ok)[..]).is_err());
    }

    #[test]
    fn rejects_a_reply_of_the_wrong_kind() {
        let mut s = ready();
        let (seq, _) = s.request(Command::Ping, None, &mut rng()).unwrap();
        let created = Reply::Created {
            recipient_id: [1; 16],
            sender_id: [2; 16],
        };
        assert!(s.receive(&frame(seq, created)[..]).is_err());
    }

    #[test]
    fn rejects_more_items_than_asked_and_a_wrong_count() {
        let key = QueueSecret::generate(&mut rng());
        let fetch = Command::Fetch {
            recipient_id: [3; 16],
            max: 1,
        };
        let mut s = ready();
        let (seq, _) = s.request(fetch.clone(), Some(&key), &mut rng()).unwrap();
        let item = |id| Reply::Item {
            item_id: id,
            blob: blob(1),
        };
        assert_eq!(s.receive(&frame(seq, item(7))[..]).unwrap(), Event::Partial);
        assert!(s.receive(&frame(seq, item(8))[..]).is_err());

        let mut s = ready();
        let (seq, _) = s.request(fetch, Some(&key), &mut rng()).unwrap();
        s.receive(&frame(seq, item(7))[..]).unwrap();
        let done = Reply::Done {
            count: 2,
            more: false,
        };
        assert!(s.receive(&frame(seq, done)[..]).is_err());
    }

    #[test]
    fn rejects_an_invitation_out_of_order_or_empty() {
        let take = Command::TakeInvite { sender_id: [4; 16] };
        let mut s = ready();
        let (seq, _) = s.request(take.clone(), None, &mut rng()).unwrap();
        let item = Reply::Item {
            item_id: 1,
            blob: blob(1),
        };
        assert!(s.receive(&frame(seq, item)[..]).is_err());
        let mut s = ready();
        let (seq, _) = s.request(take, None, &mut rng()).unwrap();
        let done = Reply::Done {
            count: 0,
            more: false,
        };
        assert!(s.receive(&frame(seq, done)[..]).is_err());
    }

    #[test]
    fn rejects_an_error_after_items() {
        let mut s = ready();
        let (seq, _) = s.request(Command::GetDirectory, None, &mut rng()).unwrap();
        let item = Reply::Item {
            item_id: 0,
            blob: blob(1),
        };
        s.receive(&frame(seq, item)[..]).unwrap();
        let err = Reply::Error(super::super::ErrorCode::Internal);
        assert!(s.receive(&frame(seq, err)[..]).is_err());
    }

    #[test]
    fn rejects_garbage_frames() {
        let mut s = ready();
        assert!(s.receive(&[0u8; 10]).is_err());
        assert!(s.is_broken());
    }

    #[test]
    fn matches_interleaved_answers_and_keeps_notifications() {
        let key = QueueSecret::generate(&mut rng());
        let mut s = ready();
        let (a, _) = s.request(Command::Ping, None, &mut rng()).unwrap();
        let (b, _) = s
            .request(
                Command::Fetch {
                    recipient_id: [5; 16],
                    max: 4,
                },
                Some(&key),
                &mut rng(),
            )
            .unwrap();
        assert_eq!(s.in_flight(), 2);
        let item = Reply::Item {
            item_id: 42,
            blob: blob(9),
        };
        assert_eq!(s.receive(&frame(b, item)[..]).unwrap(), Event::Partial);
        let notify = Reply::Notify {
            recipient_id: [6; 16],
        };
        assert_eq!(
            s.receive(&frame(0, notify.clone())[..]).unwrap(),
            Event::Notify([6; 16])
        );
        // The same queue twice is kept once.
        s.receive(&frame(0, notify)[..]).unwrap();
        assert_eq!(
            s.receive(&frame(a, Reply::Ok)[..]).unwrap(),
            Event::Answer {
                seq: a,
                answer: Answer::Ok
            }
        );
        let done = Reply::Done {
            count: 1,
            more: true,
        };
        let Event::Answer {
            seq,
            answer: Answer::Items { items, more },
        } = s.receive(&frame(b, done)[..]).unwrap()
        else {
            panic!("no items")
        };
        assert_eq!((seq, items.len(), items[0].0, more), (b, 1, 42, true));
        assert_eq!(s.in_flight(), 0);
        assert_eq!(s.take_notification(), Some([6; 16]));
        assert_eq!(s.take_notification(), None);
        // A refusal is an answer, not a violation.
        let (c, _) = s.request(Command::Ping, None, &mut rng()).unwrap();
        let refused = Reply::Error(super::super::ErrorCode::RateLimited);
        assert_eq!(
            s.receive(&frame(c, refused)[..]).unwrap(),
            Event::Answer {
                seq: c,
                answer: Answer::Refused(super::super::ErrorCode::RateLimited)
            }
        );
        assert!(s.is_ready());
    }
}
