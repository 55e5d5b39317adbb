//! A test hook: the labels and bounds of the screens' widgets, as egui
//! describes them to screen readers (AccessKit), written to
//! `globalThis.__posternWidgets` as JSON after every frame, so that
//! browser tests find widgets by their names rather than by guessed
//! coordinates (eframe's web runner has no AccessKit backend). Installed
//! only when the page is opened with `#accesskit-export`; it exposes to
//! the page nothing but what the page itself drew.

use js_sys::Reflect;
use wasm_bindgen::JsValue;

/// The egui plugin that exports the tree.
#[derive(Debug, Default)]
pub struct Export;

impl egui::Plugin for Export {
    fn debug_name(&self) -> &'static str {
        "postern-accesskit-export"
    }

    fn setup(&mut self, ctx: &egui::Context) {
        ctx.enable_accesskit();
    }

    fn output_hook(&mut self, ctx: &egui::Context, output: &mut egui::FullOutput) {
        let Some(update) = &output.platform_output.accesskit_update else {
            return;
        };
        let labels: std::collections::HashMap<_, _> = update
            .nodes
            .iter()
            .filter_map(|(id, n)| n.label().or_else(|| n.value()).map(|l| (*id, l.to_owned())))
            .collect();
        let mut items = Vec::new();
        for (_, node) in &update.nodes {
            // A text field is named by the label it is `labelled_by`.
            let by: Vec<&str> = node
                .labelled_by()
                .iter()
                .filter_map(|id| labels.get(id).map(String::as_str))
                .collect();
            let label = if by.is_empty() {
                node.label()
                    .or_else(|| node.value())
                    .unwrap_or_default()
                    .to_owned()
            } else {
                by.join(" ")
            };
            if label.is_empty() && !wanted_all() {
                continue;
            }
            let b = node.bounds().unwrap_or(accesskit::Rect {
                x0: -1.0,
                y0: -1.0,
                x1: -1.0,
                y1: -1.0,
            });
            items.push(serde_json::json!({
                "label": label,
                "role": format!("{:?}", node.role()),
                // egui points: CSS pixels of the canvas, which fills
                // the page.
                "x": b.x0, "y": b.y0, "w": b.x1 - b.x0, "h": b.y1 - b.y0,
                "disabled": node.is_disabled(),

            }));
        }
        let json = serde_json::Value::Array(items).to_string();
        let _ = Reflect::set(
            &js_sys::global(),
            &JsValue::from_str("__posternWidgets"),
            &JsValue::from_str(&json),
        );
        // Ask for the next frame's tree too.
        ctx.enable_accesskit();
    }
}

/// Whether the page asked for the export.
pub fn wanted() -> bool {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .is_some_and(|h| h.contains("accesskit-export"))
}

fn wanted_all() -> bool {
    web_sys::window()
        .and_then(|w| w.location().hash().ok())
        .is_some_and(|h| h.contains("accesskit-all"))
}

/// Test hook: a figure for the benchmark (`globalThis.__posternTimings`),
/// with the export only.
pub fn timing(name: &str, ms: f64) {
    if !wanted() {
        return;
    }
    let global = js_sys::global();
    let key = JsValue::from_str("__posternTimings");
    let obj = Reflect::get(&global, &key)
        .ok()
        .filter(|o| o.is_object())
        .unwrap_or_else(|| js_sys::Object::new().into());
    let _ = Reflect::set(&obj, &JsValue::from_str(name), &JsValue::from_f64(ms));
    let _ = Reflect::set(&global, &key, &obj);
}
