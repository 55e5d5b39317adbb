//! Desktop notifications through the freedesktop notification service
//! (`org.freedesktop.Notifications` on the session bus), on a thread of
//! their own so that a slow or absent notification daemon never holds up
//! the worker. What a notification says was decided by the screens from
//! the preferences ("New message" unless the user asked for content).

use std::collections::HashMap;
use std::sync::mpsc;

/// The freedesktop notification service.
const SERVICE: &str = "org.freedesktop.Notifications";
const PATH: &str = "/org/freedesktop/Notifications";
/// How long a notification shows (milliseconds).
const EXPIRE_MS: i32 = 8000;
/// Notifications waiting to be shown at most; more are dropped.
const QUEUE: usize = 16;
/// Longest title or body passed on (characters).
const MAX_CHARS: usize = 200;

/// Shows notifications; cheap to clone.
#[derive(Debug, Clone)]
pub struct Notifier {
    tx: mpsc::SyncSender<(String, String)>,
}

impl Notifier {
    /// Starts the notification thread. It connects to the session bus
    /// when the first notification comes; without one, notifications are
    /// dropped and `unavailable` is told why, once.
    pub fn start(unavailable: impl FnOnce(String) + Send + 'static) -> std::io::Result<Notifier> {
        Notifier::start_on(None, unavailable)
    }

    /// [`Notifier::start`] on the bus at `address` (`None`: the session
    /// bus of the environment).
    pub fn start_on(
        address: Option<String>,
        unavailable: impl FnOnce(String) + Send + 'static,
    ) -> std::io::Result<Notifier> {
        let (tx, rx) = mpsc::sync_channel::<(String, String)>(QUEUE);
        std::thread::Builder::new()
            .name("postern-notify".into())
            .spawn(move || {
                let mut bus: Option<zbus::blocking::Connection> = None;
                let mut unavailable = Some(unavailable);
                while let Ok((title, body)) = rx.recv() {
                    if bus.is_none() {
                        bus = connect(address.as_deref()).ok();
                    }
                    let sent = bus
                        .as_ref()
                        .ok_or_else(|| "no session bus".to_owned())
                        .and_then(|b| show(b, &title, &body).map_err(|e| e.to_string()));
                    if let Err(e) = sent {
                        if let Some(tell) = unavailable.take() {
                            tell(e);
                        }
                        bus = None;
                    }
                }
            })?;
        Ok(Notifier { tx })
    }

    /// Shows a notification (dropped if too many wait).
    pub fn notify(&self, title: &str, body: &str) {
        let _ = self.tx.try_send((clip(title), clip(body)));
    }
}

fn connect(address: Option<&str>) -> zbus::Result<zbus::blocking::Connection> {
    match address {
        Some(a) => zbus::blocking::connection::Builder::address(a)?.build(),
        None => zbus::blocking::Connection::session(),
    }
}

fn clip(s: &str) -> String {
    s.chars().take(MAX_CHARS).collect()
}

/// One `Notify` call: no actions, no icon, plain text (the body is not
/// markup: `<` and `&` are escaped for servers that read it as such).
fn show(bus: &zbus::blocking::Connection, title: &str, body: &str) -> zbus::Result<u32> {
    let hints: HashMap<&str, zbus::zvariant::Value<'_>> = HashMap::new();
    let body = body
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let reply = bus.call_method(
        Some(SERVICE),
        PATH,
        Some(SERVICE),
        "Notify",
        &(
            "Postern",
            0u32,
            "",
            title,
            body.as_str(),
            Vec::<&str>::new(),
            hints,
            EXPIRE_MS,
        ),
    )?;
    reply.body().deserialize::<u32>()
}
