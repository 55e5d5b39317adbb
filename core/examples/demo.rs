//! Postern's E2E core in one run: two identities establish a PQXDH
//! session, exchange messages both ways, exchange sealed-sender messages,
//! and print matching safety numbers.
//!
//! `cargo run -p postern-core --example demo`
//!
//! This is a shell around the sans-IO core: it owns the clock, the OS
//! randomness and the (in-memory) stores, and hands them to the core.
#![allow(clippy::print_stdout, clippy::unwrap_used, clippy::expect_used)]

use std::time::{SystemTime, UNIX_EPOCH};

use postern_core::{Address, KvStore, MemStore, UnixTime, e2e};

struct User {
    name: &'static str,
    store: MemStore,
    addr: Address,
}

fn now() -> UnixTime {
    let ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_millis();
    UnixTime(u64::try_from(ms).expect("time fits u64"))
}

fn main() -> Result<(), postern_core::Error> {
    let mut rng = rand::rng();
    let mut new_user = |name| -> Result<User, postern_core::Error> {
        let mut store = MemStore::new();
        let (addr, cs) = e2e::create_identity(&store, now(), &mut rng)?;
        store.commit(cs)?;
        println!("{name:>5}: new identity, address {addr}");
        Ok(User { name, store, addr })
    };
    let mut alice = new_user("alice")?;
    let mut bob = new_user("bob")?;
    let mut rng = rand::rng();

    // Bob publishes a prekey bundle (signed prekey, Kyber1024 prekey,
    // one-time prekey); Alice runs PQXDH with it.
    let (bundle, cs) = e2e::publish_bundle(&bob.store)?;
    bob.store.commit(cs)?;
    println!(
        "  bob: published a prekey bundle ({} bytes, with a Kyber1024 prekey)",
        bundle.len()
    );
    let (_, cs) = e2e::start_session(&alice.store, &bundle, now(), &mut rng)?;
    alice.store.commit(cs)?;
    println!("alice: PQXDH session with bob established");
    let (bundle, cs) = e2e::publish_bundle(&alice.store)?;
    alice.store.commit(cs)?;
    let (_, cs) = e2e::add_contact(&bob.store, &bundle)?;
    bob.store.commit(cs)?;

    let mut send = |from: &mut User,
                    to: &mut User,
                    text: &str,
                    sealed: bool|
     -> Result<(), postern_core::Error> {
        let (ct, cs) = if sealed {
            e2e::seal(&from.store, &to.addr, text.as_bytes(), now(), &mut rng)?
        } else {
            e2e::encrypt(&from.store, &to.addr, text.as_bytes(), now(), &mut rng)?
        };
        from.store.commit(cs)?;
        let (sender, pt) = if sealed {
            let (sender, pt, cs) = e2e::open(&to.store, &ct, now(), &mut rng)?;
            to.store.commit(cs)?;
            (sender, pt)
        } else {
            let (pt, cs) = e2e::decrypt(&to.store, &from.addr, &ct, &mut rng)?;
            to.store.commit(cs)?;
            (from.addr, pt)
        };
        let kind = match (sealed, ct.first()) {
            (true, _) => "sealed sender",
            (false, Some(&postern_core::crypto::signal::CIPHERTEXT_PREKEY)) => "PreKey message",
            (false, _) => "ratchet message",
        };
        let who = if sender == from.addr { from.name } else { "?" };
        println!(
            "{:>5} -> {:<5} {:<15} {:>5} bytes on the wire; {} reads from {}: {:?}",
            from.name,
            to.name,
            kind,
            ct.len(),
            to.name,
            who,
            String::from_utf8_lossy(&pt)
        );
        Ok(())
    };
    send(&mut alice, &mut bob, "Hi Bob, this is Alice.", false)?;
    send(&mut bob, &mut alice, "Hello Alice! Got it.", false)?;
    send(&mut alice, &mut bob, "Ratchet turning.", false)?;
    send(
        &mut alice,
        &mut bob,
        "Now without saying who I am to anyone but you.",
        true,
    )?;
    send(
        &mut bob,
        &mut alice,
        "Sealed reply: only you know it is me.",
        true,
    )?;

    let a = e2e::safety_number(&alice.store, &bob.addr)?;
    let b = e2e::safety_number(&bob.store, &alice.addr)?;
    let group = |d: &str| {
        d.as_bytes()
            .chunks(5)
            .map(|c| String::from_utf8_lossy(c).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    println!("alice sees safety number: {}", group(&a.digits));
    println!("  bob sees safety number: {}", group(&b.digits));
    let (matched, cs) = e2e::verify_scanned(&alice.store, &bob.addr, &b.scannable)?;
    alice.store.commit(cs)?;
    println!(
        "alice scans bob's QR code: {}",
        if matched {
            "match, bob is now verified"
        } else {
            "MISMATCH"
        }
    );
    let qr = postern_media::qr::encode(&b.scannable)?;
    println!(
        "bob's safety-number QR code ({}x{} modules):",
        qr.width, qr.width
    );
    print!("{}", qr.to_terminal());
    if a.digits != b.digits || !matched {
        return Err(postern_core::Error::Bug("safety numbers differ"));
    }
    Ok(())
}
