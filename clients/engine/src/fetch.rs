//! Collecting what waits in a client's queues on one relay, as a
//! [`Flow`] with no I/O.
//!
//! ```text
//! for each queue:  Fetch (FETCH_BATCH) -> inbox::receive (commits) -> Ack the ids
//!                  -> again while the relay says more and the batch was acknowledged
//! ```
//!
//! Every blob is committed by [`inbox::receive`] before its id is
//! acknowledged, so a connection lost between the two only makes the
//! relay hand the item out again (the courier recognises a duplicate).
//! What happened comes out as [`inbox::Event`]s ([`FetchFlow::poll_event`]),
//! to be shown as they come; the delivery receipts owed to contacts are
//! collected ([`FetchFlow::take_receipts`]) and stay available when the
//! flow stops on an error, so what was processed is still confirmed.

use std::collections::VecDeque;

use postern_core::courier::OwnQueue;
use postern_core::relay_proto::Command;
use postern_core::relay_proto::client::Answer;
use postern_core::{KvStore, UnixTime};
use rand_core::{CryptoRng, RngCore};

use crate::flow::{Action, Flow, FlowError, Input};
use crate::inbox::{self, Event, FETCH_BATCH, Receipts};

/// Where the flow stands.
#[derive(Debug)]
enum Step {
    /// Fetch the current queue.
    Fetch,
    /// Acknowledge these ids; then fetch the same queue again or not.
    Ack { ids: Vec<u64>, again: bool },
    /// Finished, or stopped on an error.
    Done,
}

/// Fetches, hands to the inbox and acknowledges each queue in turn.
#[derive(Debug)]
pub struct FetchFlow<'q> {
    queues: &'q [OwnQueue],
    at: usize,
    step: Step,
    events: VecDeque<Event>,
    receipts: Receipts,
    received: usize,
    loops_back: usize,
    duplicates: usize,
}

impl<'q> FetchFlow<'q> {
    /// A flow over `queues` (normally all on one relay, as a shell then
    /// needs one connection), in the order given.
    pub fn new(queues: &'q [OwnQueue]) -> FetchFlow<'q> {
        let step = if queues.is_empty() {
            Step::Done
        } else {
            Step::Fetch
        };
        FetchFlow {
            queues,
            at: 0,
            step,
            events: VecDeque::new(),
            receipts: Receipts::new(),
            received: 0,
            loops_back: 0,
            duplicates: 0,
        }
    }

    /// The next thing to show the user, in the order it happened.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The receipts owed for what was processed so far (taken: a second
    /// call returns only what came since).
    pub fn take_receipts(&mut self) -> Receipts {
        core::mem::take(&mut self.receipts)
    }

    /// Items fetched from message queues (not acknowledgement queues).
    pub fn received(&self) -> usize {
        self.received
    }

    /// Loop cover packets that came back.
    pub fn loops_back(&self) -> usize {
        self.loops_back
    }

    /// Items recognised as already received (handed out again).
    pub fn duplicates(&self) -> usize {
        self.duplicates
    }

    /// Whether every queue has been fetched to its end.
    pub fn is_done(&self) -> bool {
        matches!(self.step, Step::Done)
    }

    fn next_queue(&mut self) {
        self.at = self.at.saturating_add(1);
        self.step = if self.at < self.queues.len() {
            Step::Fetch
        } else {
            Step::Done
        };
    }

    fn fail(&mut self, e: FlowError) -> Result<(), FlowError> {
        self.step = Step::Done;
        Err(e)
    }
}

impl Flow for FetchFlow<'_> {
    fn poll_action(&self) -> Option<Action<'_>> {
        let q = self.queues.get(self.at)?;
        let command = match &self.step {
            Step::Fetch => Command::Fetch {
                recipient_id: q.recipient_id,
                max: FETCH_BATCH,
            },
            Step::Ack { ids, .. } => Command::Ack {
                recipient_id: q.recipient_id,
                item_ids: ids.clone(),
            },
            Step::Done => return None,
        };
        Some(Action::Request {
            relay: &q.relay,
            command,
            key: Some(&q.queue_key),
        })
    }

    fn handle<R: RngCore + CryptoRng>(
        &mut self,
        now: UnixTime,
        input: Input,
        store: &mut dyn KvStore,
        rng: &mut R,
    ) -> Result<(), FlowError> {
        let answer = match input {
            Input::Answer(a) => a,
            _ => return self.fail(FlowError::OutOfOrder),
        };
        if let Answer::Refused(code) = answer {
            return self.fail(FlowError::Refused(code));
        }
        match (core::mem::replace(&mut self.step, Step::Done), answer) {
            (Step::Fetch, Answer::Items { items, more }) => {
                if items.len() > FETCH_BATCH as usize {
                    return self.fail(FlowError::UnexpectedAnswer);
                }
                let Some(q) = self.queues.get(self.at) else {
                    return self.fail(FlowError::OutOfOrder);
                };
                if items.is_empty() {
                    self.next_queue();
                    return Ok(());
                }
                if !q.acks {
                    self.received = self.received.saturating_add(items.len());
                }
                let batch = match inbox::receive(
                    store,
                    q,
                    items.iter().map(|(id, b)| (*id, b)),
                    now,
                    rng,
                    &mut self.receipts,
                ) {
                    Ok(b) => b,
                    Err(e) => return self.fail(e.into()),
                };
                self.loops_back = self.loops_back.saturating_add(batch.loops_back);
                self.duplicates = self.duplicates.saturating_add(batch.duplicates);
                self.events.extend(batch.events);
                if batch.ack.is_empty() {
                    self.next_queue();
                } else {
                    let again = inbox::fetch_again(items.len(), batch.ack.len(), more);
                    self.step = Step::Ack {
                        ids: batch.ack,
                        again,
                    };
                }
                Ok(())
            }
            (Step::Ack { again, .. }, Answer::Ok) => {
                if again {
                    self.step = Step::Fetch;
                } else {
                    self.next_queue();
                }
                Ok(())
            }
            (Step::Done, _) => self.fail(FlowError::OutOfOrder),
            _ => self.fail(FlowError::UnexpectedAnswer),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
mod tests {
    use super::*;
    use crate::testing::{Pair, pair};
    use postern_core::consts::BLOB_BYTES;
    use postern_core::courier;
    use postern_core::relay_proto::{Blob, ErrorCode};
    use rand_chacha::ChaCha20Rng;
    use rand_core::SeedableRng;

    const T: UnixTime = UnixTime(1_800_000_000_000);

    fn queues(p: &Pair) -> Vec<OwnQueue> {
        courier::own_queues(&p.alice).unwrap()
    }

    /// Plays a relay holding `held` (id, blob) in Alice's invitation
    /// queue: answers fetches in batches of `batch`, deletes on ack.
    /// Returns the requests seen, by name.
    fn play(
        p: &mut Pair,
        f: &mut FetchFlow<'_>,
        held: &mut Vec<(u64, Blob)>,
        batch: usize,
        r: &mut ChaCha20Rng,
    ) -> Vec<&'static str> {
        let invitation_queue = p.alice_queue.recipient_id;
        let mut seen = Vec::new();
        for _ in 0..100 {
            let Some(Action::Request {
                command,
                key: Some(_),
                ..
            }) = f.poll_action()
            else {
                break;
            };
            let answer = match command {
                Command::Fetch { recipient_id, max } => {
                    seen.push("fetch");
                    assert_eq!(max, FETCH_BATCH);
                    if recipient_id == invitation_queue {
                        let n = held.len().min(batch);
                        Answer::Items {
                            items: held[..n].to_vec(),
                            more: held.len() > n,
                        }
                    } else {
                        Answer::Items {
                            items: vec![],
                            more: false,
                        }
                    }
                }
                Command::Ack { item_ids, .. } => {
                    seen.push("ack");
                    held.retain(|(id, _)| !item_ids.contains(id));
                    Answer::Ok
                }
                other => panic!("unexpected {other:?}"),
            };
            f.handle(T, Input::Answer(answer), &mut p.alice, r).unwrap();
        }
        seen
    }

    #[test]
    fn a_refusal_or_a_wrong_answer_stops_the_flow_with_a_typed_error() {
        let mut r = ChaCha20Rng::seed_from_u64(1);
        let mut p = pair(&mut r, T);
        let qs = queues(&p);
        let mut f = FetchFlow::new(&qs);
        let e = f
            .handle(
                T,
                Input::Answer(Answer::Refused(ErrorCode::RateLimited)),
                &mut p.alice,
                &mut r,
            )
            .unwrap_err();
        assert!(matches!(e, FlowError::Refused(ErrorCode::RateLimited)));
        assert!(f.poll_action().is_none() && f.is_done());

        let mut f = FetchFlow::new(&qs);
        let e = f
            .handle(T, Input::Answer(Answer::Ok), &mut p.alice, &mut r)
            .unwrap_err();
        assert!(matches!(e, FlowError::UnexpectedAnswer), "Ok to a fetch");
        assert!(f.poll_action().is_none());

        let mut f = FetchFlow::new(&qs);
        let e = f
            .handle(T, Input::Delivered, &mut p.alice, &mut r)
            .unwrap_err();
        assert!(matches!(e, FlowError::OutOfOrder));

        // More items than asked for is a relay out of bounds.
        let junk: Blob = Box::new([0u8; BLOB_BYTES]);
        let items = (0..=u64::from(FETCH_BATCH))
            .map(|i| (i, junk.clone()))
            .collect();
        let mut f = FetchFlow::new(&qs);
        let e = f
            .handle(
                T,
                Input::Answer(Answer::Items { items, more: false }),
                &mut p.alice,
                &mut r,
            )
            .unwrap_err();
        assert!(matches!(e, FlowError::UnexpectedAnswer));
        assert_eq!(f.received(), 0);
    }

    #[test]
    fn nothing_to_fetch_is_no_request() {
        let f = FetchFlow::new(&[]);
        assert!(f.poll_action().is_none() && f.is_done());
    }

    #[test]
    fn hostile_items_are_dropped_acknowledged_and_the_queue_is_emptied_in_batches() {
        let mut r = ChaCha20Rng::seed_from_u64(2);
        let mut p = pair(&mut r, T);
        let qs = queues(&p);
        // Junk first, then Bob's introduction: every item is acknowledged,
        // the junk reported as dropped, Bob becomes a contact.
        let mut held: Vec<(u64, Blob)> = (0..3)
            .map(|i| (i, Box::new([0x5au8; BLOB_BYTES]) as Blob))
            .collect();
        held.extend(
            p.intro
                .clone()
                .into_iter()
                .enumerate()
                .map(|(i, b)| (100 + i as u64, b)),
        );
        let total = held.len();
        let mut f = FetchFlow::new(&qs);
        let seen = play(&mut p, &mut f, &mut held, 2, &mut r);
        assert!(f.is_done());
        assert!(held.is_empty(), "every item acknowledged");
        assert_eq!(f.received(), total);
        let fetches = seen.iter().filter(|s| **s == "fetch").count();
        assert!(fetches >= total / 2, "fetched in batches: {seen:?}");
        let mut dropped = 0;
        let mut new_contact = false;
        while let Some(e) = f.poll_event() {
            match e {
                Event::Dropped { .. } => dropped += 1,
                Event::NewContact { peer, .. } => {
                    assert_eq!(peer, p.bob_addr);
                    new_contact = true;
                }
                _ => {}
            }
        }
        assert_eq!(dropped, 3);
        assert!(new_contact);
        // Committed before acknowledged: Bob is a contact in the store.
        assert!(courier::route(&p.alice, &p.bob_addr).unwrap().is_some());
    }

    #[test]
    fn a_lost_connection_mid_batch_loses_nothing_and_the_retry_is_a_duplicate() {
        let mut r = ChaCha20Rng::seed_from_u64(3);
        let mut p = pair(&mut r, T);
        let qs = queues(&p);
        let mut held: Vec<(u64, Blob)> = p
            .intro
            .clone()
            .into_iter()
            .enumerate()
            .map(|(i, b)| (i as u64, b))
            .collect();
        // First run: the fetch is handled, the ack never answered (the
        // connection dropped). The flow is abandoned.
        let mut f = FetchFlow::new(&qs);
        let invitation_at = qs
            .iter()
            .position(|q| q.recipient_id == p.alice_queue.recipient_id)
            .unwrap();
        for _ in 0..invitation_at {
            f.handle(
                T,
                Input::Answer(Answer::Items {
                    items: vec![],
                    more: false,
                }),
                &mut p.alice,
                &mut r,
            )
            .unwrap();
        }
        f.handle(
            T,
            Input::Answer(Answer::Items {
                items: held.clone(),
                more: false,
            }),
            &mut p.alice,
            &mut r,
        )
        .unwrap();
        assert!(matches!(
            f.poll_action(),
            Some(Action::Request {
                command: Command::Ack { .. },
                ..
            })
        ));
        assert!(courier::route(&p.alice, &p.bob_addr).unwrap().is_some());
        // Second run: the relay hands the same items out again; they are
        // recognised, acknowledged, and no second contact appears.
        let qs = queues(&p);
        let mut f = FetchFlow::new(&qs);
        let n = held.len();
        play(&mut p, &mut f, &mut held, 10, &mut r);
        assert!(held.is_empty());
        assert_eq!(
            f.duplicates(),
            n,
            "every item handed out again is a duplicate"
        );
        while let Some(e) = f.poll_event() {
            assert!(
                !matches!(e, Event::NewContact { .. }),
                "a duplicate introduction made a second contact"
            );
        }
    }
}
