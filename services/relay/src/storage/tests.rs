#![allow(clippy::unwrap_used, clippy::panic, clippy::indexing_slicing)]
use super::*;

const DAY: u64 = 24 * 3600;
const T0: u64 = 1_700_000_000;

fn open(limits: Limits) -> (tempfile::TempDir, Storage) {
    let d = tempfile::tempdir().unwrap();
    let s = Storage::open(&d.path().join("relay.sqlite"), limits).unwrap();
    (d, s)
}

fn create(s: &mut Storage, n: u8, now: u64) -> (QueueId, QueueId) {
    let (rid, sid) = ([n; 16], [n | 0x80; 16]);
    s.run(
        &Op::Register {
            recipient_id: rid,
            sender_id: sid,
            queue_key: vec![5; 33],
        },
        now,
    )
    .unwrap();
    (rid, sid)
}

fn blob(b: u8) -> Blob {
    Box::new([b; BLOB_BYTES])
}

#[test]
fn rejects_unknown_queues_and_over_quota() {
    let limits = Limits {
        queue_max_messages: 2,
        max_queues: 1,
        ..Limits::default()
    };
    let (_d, mut s) = open(limits);
    let (rid, sid) = create(&mut s, 1, T0);
    let again = Op::Register {
        recipient_id: [2; 16],
        sender_id: [3; 16],
        queue_key: vec![5; 33],
    };
    assert_eq!(s.run(&again, T0), Err(ErrorCode::TooManyQueues));
    let send = |b| {
        Op::Client(Command::Send {
            sender_id: sid,
            blob: blob(b),
        })
    };
    assert!(s.run(&send(1), T0).is_ok());
    assert!(s.run(&send(2), T0).is_ok());
    assert_eq!(s.run(&send(3), T0), Err(ErrorCode::QueueFull));
    let unknown = Op::Client(Command::Send {
        sender_id: rid, // a recipient id is not a sender id
        blob: blob(1),
    });
    assert_eq!(s.run(&unknown, T0), Err(ErrorCode::NoSuchQueue));
    assert_eq!(
        s.run(&Op::Client(Command::TakeInvite { sender_id: sid }), T0),
        Err(ErrorCode::NoSuchInvite)
    );
    // Byte quota.
    let limits = Limits {
        queue_max_bytes: BLOB_BYTES as u64,
        ..Limits::default()
    };
    let (_d, mut s) = open(limits);
    let (_, sid) = create(&mut s, 1, T0);
    let send = Op::Client(Command::Send {
        sender_id: sid,
        blob: blob(1),
    });
    assert!(s.run(&send, T0).is_ok());
    assert_eq!(s.run(&send, T0), Err(ErrorCode::QueueFull));
}

#[test]
fn fetch_ack_and_batches() {
    let (_d, mut s) = open(Limits::default());
    let (rid, sid) = create(&mut s, 1, T0);
    let ops: Vec<Op> = (0..5)
        .map(|i| {
            Op::Client(Command::Send {
                sender_id: sid,
                blob: blob(i),
            })
        })
        .chain([Op::Client(Command::Send {
            sender_id: [9; 16],
            blob: blob(9),
        })])
        .collect();
    let r = s.run_batch(&ops, T0);
    assert_eq!(r.iter().filter(|r| r.is_ok()).count(), 5);
    assert_eq!(r.last().unwrap(), &Err(ErrorCode::NoSuchQueue));
    let Ok(Outcome::Items { items, more }) = s.run(
        &Op::Client(Command::Fetch {
            recipient_id: rid,
            max: 3,
        }),
        T0,
    ) else {
        panic!()
    };
    assert!(more);
    assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), [1, 2, 3]);
    assert_eq!(items[2].1[0], 2);
    s.run(
        &Op::Client(Command::Ack {
            recipient_id: rid,
            item_ids: vec![1, 2, 3, 77, u64::MAX],
        }),
        T0,
    )
    .unwrap();
    assert_eq!(s.totals().items, 2);
    let Ok(Outcome::Items { items, more }) = s.run(
        &Op::Client(Command::Fetch {
            recipient_id: rid,
            max: 64,
        }),
        T0,
    ) else {
        panic!()
    };
    assert!(!more);
    assert_eq!(items.iter().map(|i| i.0).collect::<Vec<_>>(), [4, 5]);
}

#[test]
fn invitations_are_taken_once_and_expire() {
    let (_d, mut s) = open(Limits::default());
    let (rid, sid) = create(&mut s, 1, T0);
    let put = |index, total, ttl_secs| {
        Op::Client(Command::PutInvite {
            recipient_id: rid,
            index,
            total,
            ttl_secs,
            blob: blob(index as u8),
        })
    };
    // Incomplete payload: not takeable.
    s.run(&put(0, 2, 60), T0).unwrap();
    let take = Op::Client(Command::TakeInvite { sender_id: sid });
    assert_eq!(s.run(&take, T0), Err(ErrorCode::NoSuchInvite));
    s.run(&put(1, 2, 60), T0).unwrap();
    let Ok(Outcome::Invite(b)) = s.run(&take, T0 + 1) else {
        panic!()
    };
    assert_eq!((b.len(), b[1][0]), (2, 1));
    assert_eq!(s.run(&take, T0 + 1), Err(ErrorCode::NoSuchInvite));
    // Expired.
    s.run(&put(0, 1, 60), T0).unwrap();
    assert_eq!(s.run(&take, T0 + 60), Err(ErrorCode::NoSuchInvite));
    // Re-putting index 0 replaces an old payload.
    s.run(&put(0, 2, 60), T0).unwrap();
    s.run(&put(0, 1, 60), T0).unwrap();
    assert!(matches!(s.run(&take, T0), Ok(Outcome::Invite(b)) if b.len() == 1));
}

#[test]
fn gc_removes_expired_items_invites_and_idle_queues() {
    let limits = Limits {
        ttl_secs: 2 * DAY,
        ..Limits::default()
    };
    let (_d, mut s) = open(limits);
    let (rid, sid) = create(&mut s, 1, T0);
    let (idle, idle_sid) = create(&mut s, 2, T0);
    for t in [T0, T0 + DAY] {
        for sid in [sid, idle_sid] {
            s.run(
                &Op::Client(Command::Send {
                    sender_id: sid,
                    blob: blob(1),
                }),
                t,
            )
            .unwrap();
        }
    }
    s.run(
        &Op::Client(Command::PutInvite {
            recipient_id: rid,
            index: 0,
            total: 1,
            ttl_secs: 60,
            blob: blob(1),
        }),
        T0,
    )
    .unwrap();
    // The owner of `rid` keeps it active.
    s.run(
        &Op::Client(Command::Subscribe { recipient_id: rid }),
        T0 + DAY,
    )
    .unwrap();
    let Ok(Outcome::Gc(r)) = s.run(&Op::Gc, T0 + 2 * DAY + TIME_GRANULARITY_SECS) else {
        panic!()
    };
    assert_eq!(
        r,
        GcReport {
            items: 1,
            queues: 1,
            invites: 1
        }
    );
    assert_eq!(
        s.totals(),
        Totals {
            queues: 1,
            items: 1
        }
    );
    assert_eq!(
        s.run(&Op::Client(Command::Subscribe { recipient_id: idle }), T0),
        Err(ErrorCode::NoSuchQueue)
    );
    let Ok(Outcome::Items { items, .. }) = s.run(
        &Op::Client(Command::Fetch {
            recipient_id: rid,
            max: 10,
        }),
        T0,
    ) else {
        panic!()
    };
    assert_eq!(items.len(), 1);
}

#[test]
fn totals_survive_reopen_and_newer_schema_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let p = d.path().join("relay.sqlite");
    {
        let mut s = Storage::open(&p, Limits::default()).unwrap();
        let (_, sid) = create(&mut s, 1, T0);
        s.run(
            &Op::Client(Command::Send {
                sender_id: sid,
                blob: blob(1),
            }),
            T0,
        )
        .unwrap();
    }
    let s = Storage::open(&p, Limits::default()).unwrap();
    assert_eq!(
        s.totals(),
        Totals {
            queues: 1,
            items: 1
        }
    );
    s.conn.pragma_update(None, "user_version", 2).unwrap();
    drop(s);
    assert!(matches!(
        Storage::open(&p, Limits::default()),
        Err(StorageError::SchemaTooNew { found: 2 })
    ));
}

#[test]
fn commands_that_do_not_touch_storage_are_refused() {
    let (_d, mut s) = open(Limits::default());
    let (rid, _) = create(&mut s, 1, T0);
    let before = s.totals();
    // `Create` must go through `Register` (the relay draws the ids);
    // the others have no stored state at all.
    let key = postern_core::crypto::signal::QueueSecret::generate(&mut rand::rng())
        .public()
        .unwrap();
    for c in [
        Command::Create { queue_key: key },
        Command::Ping,
        Command::GetDirectory,
    ] {
        assert_eq!(s.run(&Op::Client(c), T0), Err(ErrorCode::UnknownCommand));
    }
    // A refused op in a batch leaves the others applied.
    let batch = [
        Op::Client(Command::Ping),
        Op::Client(Command::Subscribe { recipient_id: rid }),
    ];
    let r = s.run_batch(&batch, T0);
    assert_eq!(r[0], Err(ErrorCode::UnknownCommand));
    assert!(matches!(r[1], Ok(Outcome::Done)));
    assert_eq!(s.totals(), before);
}
