//! The page: eframe's web runner drawing the screens, fed by the
//! backend's events, handing it the screens' commands.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::rc::Rc;

use postern_core::UnixTime;
use postern_ui::{App, Command, Event, Prefs};
use wasm_bindgen::prelude::wasm_bindgen;
use wasm_bindgen::{JsCast as _, JsValue};

use crate::{accesskit, backend};

struct Page {
    app: App,
    events: Rc<RefCell<VecDeque<Event>>>,
    commands: async_channel::Sender<Command>,
}

impl eframe::App for Page {
    fn ui(&mut self, ui: &mut egui::Ui, _frame: &mut eframe::Frame) {
        let events: Vec<Event> = self.events.borrow_mut().drain(..).collect();
        for e in events {
            self.app.apply(e);
        }
        let now = js_sys::Date::now();
        let offset = -(js_sys::Date::new_0().get_timezone_offset() as i32);
        let ms = if now.is_finite() && now > 0.0 {
            now as u64
        } else {
            0
        };
        self.app.set_clock(UnixTime(ms), offset);
        self.app.ui(ui);
        for c in self.app.take_commands() {
            let _ = self.commands.try_send(c);
        }
    }
}

thread_local! {
    static RUNNER: RefCell<Option<eframe::WebRunner>> = const { RefCell::new(None) };
}

/// Starts Postern on the canvas with id `canvas_id`.
#[wasm_bindgen]
pub async fn start(canvas_id: String) -> Result<(), JsValue> {
    let canvas: web_sys::HtmlCanvasElement = web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.get_element_by_id(&canvas_id))
        .ok_or_else(|| JsValue::from_str("no canvas"))?
        .dyn_into()?;
    let events = Rc::new(RefCell::new(VecDeque::new()));
    let (tx, rx) = async_channel::unbounded();
    let runner = eframe::WebRunner::new();
    let page_events = events.clone();
    runner
        .start(
            canvas,
            eframe::WebOptions::default(),
            Box::new(move |cc| {
                if accesskit::wanted() {
                    cc.egui_ctx.add_plugin(accesskit::Export);
                }
                let ctx = cc.egui_ctx.clone();
                let sink = page_events.clone();
                let tell: backend::Tell = Rc::new(move |e: Event| {
                    sink.borrow_mut().push_back(e);
                    ctx.request_repaint();
                });
                wasm_bindgen_futures::spawn_local(backend::run(tell, rx));
                Ok(Box::new(Page {
                    app: App::new(Prefs::default()),
                    events: page_events,
                    commands: tx,
                }))
            }),
        )
        .await?;
    RUNNER.with(|r| *r.borrow_mut() = Some(runner));
    Ok(())
}
