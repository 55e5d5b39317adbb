//! `postern-desktop`: Postern's screens (`postern-ui`) in a desktop
//! window, on the native platform. The window thread only draws; a
//! worker thread ([`worker`]) owns the profile, the network and the disk,
//! and wakes the window when something happened — no busy repaint, and
//! the window never waits on I/O.

pub mod notify;
pub mod worker;

use std::sync::mpsc;

use postern_core::UnixTime;
use postern_ui::{App, Event};

pub use worker::{Config, ToWorker};

/// The window's side: the screens, fed by the worker.
pub struct Desktop {
    app: App,
    from_worker: mpsc::Receiver<Event>,
    to_worker: async_channel::Sender<ToWorker>,
    worker: Option<std::thread::JoinHandle<()>>,
}

impl core::fmt::Debug for Desktop {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Desktop")
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl Desktop {
    /// The window's state, with its worker started.
    pub fn new(ctx: &egui::Context, mut cfg: Config) -> std::io::Result<Desktop> {
        if let Some(root) = &cfg.root {
            std::fs::create_dir_all(root)?;
            cfg.profile = worker::initial_profile(root);
        }
        let prefs = worker::load_prefs(&cfg.profile);
        let (tx, rx) = mpsc::channel();
        let (to_worker, handle) = worker::spawn(cfg, ctx.clone(), tx)?;
        Ok(Desktop {
            app: App::new(prefs),
            from_worker: rx,
            to_worker,
            worker: Some(handle),
        })
    }

    /// The screens (for tests).
    pub fn app(&self) -> &App {
        &self.app
    }

    /// Takes what the worker sent, draws, and hands the worker what the
    /// screens asked for.
    pub fn frame(&mut self, ui: &mut egui::Ui) {
        while let Ok(e) = self.from_worker.try_recv() {
            self.app.apply(e);
        }
        let now = chrono::Utc::now();
        let offset = chrono::Local::now().offset().local_minus_utc() / 60;
        let ms = u64::try_from(now.timestamp_millis()).unwrap_or(0);
        self.app.set_clock(UnixTime(ms), offset);
        self.app.ui(ui);
        for c in self.app.take_commands() {
            let _ = self.to_worker.try_send(ToWorker::Ui(c));
        }
    }

    /// Closes the profile and waits for the worker to finish.
    pub fn shut_down(&mut self) {
        let _ = self.to_worker.try_send(ToWorker::Quit);
        if let Some(h) = self.worker.take() {
            let _ = h.join();
        }
    }
}

impl Drop for Desktop {
    fn drop(&mut self) {
        self.shut_down();
    }
}

impl eframe::App for Desktop {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        self.frame(ui);
    }

    fn on_exit(&mut self, _gl: Option<&eframe::glow::Context>) {
        self.shut_down();
    }
}
