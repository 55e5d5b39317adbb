//! The service over a store in memory and relays that cannot be reached:
//! every request is answered (a view, or a typed failure), nothing is
//! lost, and the service ends when its requests end.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::cell::RefCell;
use std::rc::Rc;

use postern_app::{Failure, Image, Purpose, Request, Service, ServiceConfig, Update};
use postern_core::{Address, ErrorKind, KvStore, MemStore, RelayAddress, UnixTime, e2e, settings};
use postern_driver::testing::Unreachable;
use rand_chacha::ChaCha20Rng;
use rand_core::SeedableRng;

const T: UnixTime = UnixTime(1_800_000_000_000);

fn profile() -> MemStore {
    let mut s = MemStore::new();
    let mut r = ChaCha20Rng::seed_from_u64(1);
    let (_, cs) = e2e::create_identity(&s, T, &mut r).unwrap();
    s.commit(cs).unwrap();
    let home = RelayAddress::new("127.0.0.1", 9, Some([1; 32])).unwrap();
    s.commit(settings::set_home_relay(&home)).unwrap();
    s.commit(settings::set_display_name("Ada").unwrap())
        .unwrap();
    s
}

/// Runs the service over `requests`, returning every update.
async fn run(requests: Vec<Request>) -> Vec<Update> {
    let mut p = profile();
    let got: Rc<RefCell<Vec<Update>>> = Rc::default();
    let sink = got.clone();
    let (tx, rx) = async_channel::unbounded();
    let mut service = Service::new(rx, move |u| sink.borrow_mut().push(u));
    for r in requests {
        tx.send(r).await.unwrap();
    }
    drop(tx);
    let net = Unreachable::at(T);
    service
        .run(&mut p, net, ServiceConfig::default())
        .await
        .unwrap();
    got.take()
}

fn failures(u: &[Update]) -> Vec<Failure> {
    u.iter()
        .filter_map(|u| match u {
            Update::Failed(f) => Some(f.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn hostile_or_impossible_requests_are_typed_failures_and_the_service_goes_on() {
    let stranger = Address::from_bytes([7; 16]);
    let got = run(vec![
        Request::SendText {
            to: stranger,
            text: "hello".into(),
            reply_to: None,
        },
        Request::AcceptInvite("postern:not-a-link".into()),
        Request::Scan {
            image: Image::File(b"\x89PNG but not really".to_vec()),
            purpose: Purpose::Invitation,
        },
        Request::Scan {
            image: Image::Luma {
                width: 3,
                height: 3,
                pixels: vec![0; 8],
            },
            purpose: Purpose::Verify(stranger),
        },
        Request::Safety(stranger),
        Request::Attachment {
            peer: stranger,
            id: [1; 16],
        },
        Request::CreateInvite,
        Request::Refresh,
    ])
    .await;
    let f = failures(&got);
    let actions: Vec<&str> = f.iter().map(|f| f.action.as_str()).collect();
    assert_eq!(
        actions,
        [
            "send",
            "accept the invitation",
            "read the QR code",
            "read the QR code",
            "show the safety number",
            "open the attachment",
            "make an invitation",
        ]
    );
    // The relay is out of reach: a network failure, worth trying again.
    assert_eq!(f[6].kind, ErrorKind::Network);
    // It answered the refresh at the end: it was still running.
    let me = got
        .iter()
        .rev()
        .find_map(|u| match u {
            Update::Me(m) => Some(m.clone()),
            _ => None,
        })
        .unwrap();
    assert_eq!(me.name, "Ada");
    assert!(matches!(got.last(), Some(Update::Status(_))));
}

#[tokio::test]
async fn a_new_profile_shows_itself_no_contacts_and_an_idle_connection() {
    let got = run(Vec::new()).await;
    assert!(matches!(&got[0], Update::Me(m) if m.home.is_some()));
    assert!(matches!(&got[1], Update::Contacts(c) if c.is_empty()));
    let Some(Update::Status(s)) = got.iter().rev().find(|u| matches!(u, Update::Status(_))) else {
        panic!("no status")
    };
    assert_eq!(s.connection, postern_app::Connection::Idle);
    assert!(!s.onion);
}
