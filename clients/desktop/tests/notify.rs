//! Desktop notifications reach a notification server over D-Bus: a
//! private bus (`dbus-daemon` started here, stopped at the end) with a
//! server that records what it is asked to show.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use postern_desktop::notify::Notifier;

/// What the server was asked to show: (application, title, body).
type Shown = Arc<Mutex<Vec<(String, String, String)>>>;

struct Server {
    shown: Shown,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Server {
    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        app: String,
        _replaces: u32,
        _icon: String,
        title: String,
        body: String,
        _actions: Vec<String>,
        _hints: std::collections::HashMap<String, zbus::zvariant::OwnedValue>,
        _expire: i32,
    ) -> u32 {
        let mut s = self.shown.lock().unwrap();
        s.push((app, title, body));
        u32::try_from(s.len()).unwrap()
    }
}

struct Bus(Child);

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private bus; its address.
fn private_bus() -> (Bus, String) {
    let mut child = Command::new("dbus-daemon")
        .args(["--session", "--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .spawn()
        .expect("dbus-daemon (scripts/setup installs dbus)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (Bus(child), line.trim().to_owned())
}

#[test]
fn a_notification_reaches_the_server_as_plain_text_and_none_without_a_bus() {
    let (_bus, address) = private_bus();
    let shown: Shown = Arc::default();
    let _server = zbus::blocking::connection::Builder::address(address.as_str())
        .unwrap()
        .name("org.freedesktop.Notifications")
        .unwrap()
        .serve_at(
            "/org/freedesktop/Notifications",
            Server {
                shown: shown.clone(),
            },
        )
        .unwrap()
        .build()
        .unwrap();
    let failed = Arc::new(Mutex::new(None));
    let f = failed.clone();
    let n = Notifier::start_on(Some(address), move |why| {
        *f.lock().unwrap() = Some(why);
    })
    .unwrap();
    n.notify("Postern", "New message");
    n.notify("Carol", "<b>bold</b> & co");
    let deadline = Instant::now() + Duration::from_secs(20);
    while shown.lock().unwrap().len() < 2 {
        assert!(Instant::now() < deadline, "the server was not reached");
        std::thread::sleep(Duration::from_millis(20));
    }
    let shown = shown.lock().unwrap().clone();
    assert_eq!(
        shown,
        vec![
            ("Postern".into(), "Postern".into(), "New message".into()),
            (
                "Postern".into(),
                "Carol".into(),
                "&lt;b&gt;bold&lt;/b&gt; &amp; co".into()
            ),
        ]
    );
    assert!(failed.lock().unwrap().is_none());

    // No bus at that address: said once, nothing else happens.
    let failed = Arc::new(Mutex::new(Vec::new()));
    let f = failed.clone();
    let n = Notifier::start_on(Some("unix:path=/nonexistent/bus".into()), move |why| {
        f.lock().unwrap().push(why);
    })
    .unwrap();
    n.notify("a", "b");
    n.notify("c", "d");
    let deadline = Instant::now() + Duration::from_secs(20);
    while failed.lock().unwrap().is_empty() {
        assert!(Instant::now() < deadline, "the failure was not said");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(failed.lock().unwrap().len(), 1);
}
