//! The relay connection over a scripted in-memory link: the relay side is
//! the core's real server half (`ServerAuth`: the challenge, the sequence
//! check and queue-key signatures), the answers are chosen per test.
//! Timers fire at once whenever the link has nothing to read, so a
//! request the relay leaves unanswered times out without waiting.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::time::Duration;

use postern_core::consts::BLOB_BYTES;
use postern_core::crypto::signal::{QueuePublic, QueueSecret};
use postern_core::relay_proto::{
    Command, ErrorCode, Reply, Request, ServerAuth, decode_request, encode_response,
};
use postern_core::{RelayAddress, UnixTime};
use postern_link::{Connect, Connection, Link, NetError, Runtime};
use rand_chacha::ChaCha20Rng;
use rand_core::{RngCore as _, SeedableRng as _};

/// Timers that have always run out; a fixed clock; a seeded generator.
#[derive(Clone)]
struct Instant(Rc<RefCell<ChaCha20Rng>>);

impl Instant {
    fn new() -> Instant {
        Instant(Rc::new(RefCell::new(ChaCha20Rng::seed_from_u64(1))))
    }
}

impl Runtime for Instant {
    fn sleep(&self, _: Duration) -> impl Future<Output = ()> {
        core::future::ready(())
    }
    fn fill_random(&self, out: &mut [u8]) {
        self.0.borrow_mut().fill_bytes(out);
    }
    fn now(&self) -> UnixTime {
        UnixTime(1_800_000_000_000)
    }
    fn monotonic(&self) -> Duration {
        Duration::ZERO
    }
}

type Script = Box<dyn FnMut(&Request) -> Vec<(u64, Reply)>>;

/// A relay in memory: checks every request as a relay does (sequence,
/// signature by the queue key it knows), then answers what the script
/// says; frames it has not sent yet make `recv` wait forever.
struct Relay {
    auth: ServerAuth,
    key: Option<QueuePublic>,
    script: Script,
    to_client: VecDeque<Vec<u8>>,
    requests: Rc<Cell<usize>>,
}

impl Relay {
    fn new(key: Option<&QueueSecret>, script: Script) -> Relay {
        let auth = ServerAuth::new(&mut ChaCha20Rng::seed_from_u64(2));
        let hello = auth.hello().unwrap().to_vec();
        Relay {
            auth,
            key: key.map(|k| k.public().unwrap()),
            script,
            to_client: VecDeque::from([hello]),
            requests: Rc::default(),
        }
    }

    /// A relay whose first frame is `first` instead of its `Hello`.
    fn opening_with(first: Reply) -> Relay {
        let mut r = Relay::new(None, Box::new(|_| Vec::new()));
        r.to_client = VecDeque::from([encode_response(0, &first).unwrap().to_vec()]);
        r
    }
}

impl Link for Relay {
    async fn send(&mut self, frame: &[u8]) -> Result<(), NetError> {
        self.requests.set(self.requests.get() + 1);
        let req = decode_request(frame).expect("the client sends well-formed requests");
        let key = self.key.as_ref().filter(|_| req.command.is_signed());
        let replies = match self.auth.check(&req, key) {
            Ok(()) => (self.script)(&req),
            Err(code) => vec![(req.seq, Reply::Error(code))],
        };
        for (seq, reply) in replies {
            self.to_client
                .push_back(encode_response(seq, &reply).unwrap().to_vec());
        }
        Ok(())
    }
    async fn recv(&mut self) -> Result<Vec<u8>, NetError> {
        match self.to_client.pop_front() {
            Some(f) => Ok(f),
            None => core::future::pending().await,
        }
    }
    async fn close(&mut self) -> Result<(), NetError> {
        Ok(())
    }
}

async fn open(relay: Relay) -> Connection<Relay, Instant> {
    Connection::open(relay, Instant::new()).await.unwrap()
}

fn blob(n: u8) -> Box<[u8; BLOB_BYTES]> {
    Box::new([n; BLOB_BYTES])
}

fn key() -> QueueSecret {
    QueueSecret::generate(&mut ChaCha20Rng::seed_from_u64(3))
}

#[tokio::test]
async fn a_first_frame_that_is_not_hello_is_refused() {
    let r = Connection::open(Relay::opening_with(Reply::Ok), Instant::new()).await;
    assert!(matches!(r, Err(NetError::Protocol(_))), "{r:?}");
    let r = Connection::open(
        Relay::opening_with(Reply::Notify {
            recipient_id: [1; 16],
        }),
        Instant::new(),
    )
    .await;
    assert!(matches!(r, Err(NetError::Protocol(_))), "{r:?}");
}

#[tokio::test]
async fn an_answer_to_another_request_breaks_the_connection() {
    let relay = Relay::new(None, Box::new(|req| vec![(req.seq + 1, Reply::Ok)]));
    let mut c = open(relay).await;
    assert!(matches!(c.ping().await, Err(NetError::Protocol(_))));
    // Its replies would be out of step: nothing more goes out on it.
    assert!(matches!(c.ping().await, Err(NetError::Closed)));
}

#[tokio::test]
async fn a_request_left_unanswered_times_out_and_closes_the_connection() {
    let relay = Relay::new(None, Box::new(|_| Vec::new()));
    let sent = relay.requests.clone();
    let mut c = open(relay).await;
    assert!(matches!(c.ping().await, Err(NetError::Timeout)));
    assert!(matches!(c.ping().await, Err(NetError::Closed)));
    assert_eq!(sent.get(), 1, "a broken connection sends nothing");
}

#[tokio::test]
async fn a_wrong_kind_of_answer_is_a_protocol_error() {
    // `Created` answers a `Ping`.
    let relay = Relay::new(
        None,
        Box::new(|req| {
            vec![(
                req.seq,
                Reply::Created {
                    recipient_id: [1; 16],
                    sender_id: [2; 16],
                },
            )]
        }),
    );
    let mut c = open(relay).await;
    assert!(matches!(c.ping().await, Err(NetError::Protocol(_))));
}

#[tokio::test]
async fn a_refusal_is_a_typed_relay_error_and_the_connection_goes_on() {
    let relay = Relay::new(
        None,
        Box::new(|req| match req.command {
            Command::Send { .. } => vec![(req.seq, Reply::Error(ErrorCode::QueueFull))],
            _ => vec![(req.seq, Reply::Ok)],
        }),
    );
    let mut c = open(relay).await;
    assert!(matches!(
        c.send(&[1; 16], &blob(1)).await,
        Err(NetError::Relay(ErrorCode::QueueFull))
    ));
    c.ping().await.unwrap();
}

#[tokio::test]
async fn arguments_out_of_bounds_are_refused_before_anything_is_sent() {
    let relay = Relay::new(None, Box::new(|req| vec![(req.seq, Reply::Ok)]));
    let sent = relay.requests.clone();
    let mut c = open(relay).await;
    let k = key();
    assert!(matches!(
        c.fetch(&[1; 16], &k, 0).await,
        Err(NetError::Usage(_))
    ));
    assert!(matches!(
        c.fetch(&[1; 16], &k, postern_core::consts::MAX_FETCH + 1)
            .await,
        Err(NetError::Usage(_))
    ));
    assert!(matches!(
        c.ack(&[1; 16], &k, &[]).await,
        Err(NetError::Usage(_))
    ));
    assert!(matches!(
        c.put_invite(&[1; 16], &k, &[], 60).await,
        Err(NetError::Usage(_))
    ));
    assert!(matches!(
        c.put_invite(&[1; 16], &k, &[blob(1)], 0).await,
        Err(NetError::Usage(_))
    ));
    assert_eq!(sent.get(), 0);
    c.ping().await.unwrap();
}

#[tokio::test]
async fn requests_are_signed_by_the_queue_key_the_relay_checks() {
    let k = key();
    let relay = Relay::new(
        Some(&k),
        Box::new(|req| match req.command {
            Command::Create { .. } => vec![(
                req.seq,
                Reply::Created {
                    recipient_id: [1; 16],
                    sender_id: [2; 16],
                },
            )],
            _ => vec![(req.seq, Reply::Ok)],
        }),
    );
    let mut c = open(relay).await;
    let ids = c.create_queue(&k).await.unwrap();
    assert_eq!((ids.recipient_id, ids.sender_id), ([1; 16], [2; 16]));
    c.subscribe(&ids.recipient_id, &k).await.unwrap();
    // Signed by another key: the relay's check refuses it.
    let other = QueueSecret::generate(&mut ChaCha20Rng::seed_from_u64(4));
    assert!(matches!(
        c.subscribe(&ids.recipient_id, &other).await,
        Err(NetError::Relay(ErrorCode::BadSignature))
    ));
}

#[tokio::test]
async fn notifications_during_a_call_are_kept_and_returned_first() {
    let relay = Relay::new(
        None,
        Box::new(|req| {
            vec![
                (
                    0,
                    Reply::Notify {
                        recipient_id: [7; 16],
                    },
                ),
                (
                    0,
                    Reply::Notify {
                        recipient_id: [8; 16],
                    },
                ),
                (req.seq, Reply::Ok),
            ]
        }),
    );
    let mut c = open(relay).await;
    c.ping().await.unwrap();
    assert_eq!(c.next_notification().await.unwrap(), [7; 16]);
    assert_eq!(c.next_notification().await.unwrap(), [8; 16]);
}

#[tokio::test]
async fn a_fetch_returns_its_items_in_order_and_whether_more_wait() {
    let k = key();
    let relay = Relay::new(
        Some(&k),
        Box::new(|req| {
            vec![
                (
                    req.seq,
                    Reply::Item {
                        item_id: 5,
                        blob: blob(5),
                    },
                ),
                (
                    req.seq,
                    Reply::Item {
                        item_id: 6,
                        blob: blob(6),
                    },
                ),
                (
                    req.seq,
                    Reply::Done {
                        count: 2,
                        more: true,
                    },
                ),
            ]
        }),
    );
    let mut c = open(relay).await;
    let (items, more) = c.fetch(&[1; 16], &k, 2).await.unwrap();
    assert!(more);
    assert_eq!(items.iter().map(|i| i.id).collect::<Vec<_>>(), [5, 6]);
    assert_eq!(items[1].blob, blob(6));
}

#[tokio::test]
async fn more_items_than_asked_for_is_a_protocol_error() {
    let k = key();
    let relay = Relay::new(
        Some(&k),
        Box::new(|req| {
            let mut r: Vec<(u64, Reply)> = (0..3)
                .map(|i| {
                    (
                        req.seq,
                        Reply::Item {
                            item_id: i,
                            blob: blob(1),
                        },
                    )
                })
                .collect();
            r.push((
                req.seq,
                Reply::Done {
                    count: 3,
                    more: false,
                },
            ));
            r
        }),
    );
    let mut c = open(relay).await;
    assert!(matches!(
        c.fetch(&[1; 16], &k, 2).await,
        Err(NetError::Protocol(_))
    ));
}

/// A connector whose relays never say `Hello`.
struct Silent(Instant);

impl Connect for Silent {
    type Link = Relay;
    type Runtime = Instant;
    fn runtime(&self) -> &Instant {
        &self.0
    }
    async fn open(&self, _: &RelayAddress) -> Result<Relay, NetError> {
        let mut r = Relay::new(None, Box::new(|_| Vec::new()));
        r.to_client.clear();
        Ok(r)
    }
}

#[tokio::test]
async fn connecting_to_a_relay_that_never_says_hello_times_out() {
    let addr = RelayAddress::new("127.0.0.1", 7000, Some([1; 32])).unwrap();
    assert!(matches!(
        Silent(Instant::new()).connect(&addr).await,
        Err(NetError::Timeout)
    ));
}
