//! Small pieces the screens share: textures, badges, the delivery mark.

use std::collections::HashMap;

use egui::{Color32, Pos2, Sense, Stroke, Vec2};
use postern_app::{DeliveryState, MessageId, Pixels};
use postern_core::Address;

/// Textures made once and kept: QR codes by their payload, thumbnails by
/// message id. Dropped with the screens' state (on lock).
#[derive(Default)]
pub(crate) struct Textures {
    qr: HashMap<Vec<u8>, egui::TextureHandle>,
    thumbs: HashMap<MessageId, egui::TextureHandle>,
}

impl core::fmt::Debug for Textures {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "Textures({} qr, {} thumbs)",
            self.qr.len(),
            self.thumbs.len()
        )
    }
}

/// Quiet zone around a QR code, in modules.
const QR_QUIET: usize = 4;

impl Textures {
    /// The QR code of `payload` (one pixel per module, drawn scaled with
    /// nearest-neighbour filtering so it stays crisp), or `None` when it
    /// cannot be encoded.
    pub(crate) fn qr(
        &mut self,
        ctx: &egui::Context,
        payload: &[u8],
    ) -> Option<egui::TextureHandle> {
        if let Some(t) = self.qr.get(payload) {
            return Some(t.clone());
        }
        let m = postern_media::qr::encode(payload).ok()?;
        let side = m.width + 2 * QR_QUIET;
        let mut px = vec![Color32::WHITE; side * side];
        for y in 0..m.width {
            for x in 0..m.width {
                if m.dark.get(y * m.width + x) == Some(&true)
                    && let Some(p) = px.get_mut((y + QR_QUIET) * side + x + QR_QUIET)
                {
                    *p = Color32::BLACK;
                }
            }
        }
        let img = egui::ColorImage::new([side, side], px);
        let t = ctx.load_texture("qr", img, egui::TextureOptions::NEAREST);
        self.qr.insert(payload.to_vec(), t.clone());
        Some(t)
    }

    /// A message's decoded thumbnail as a texture.
    pub(crate) fn thumb(
        &mut self,
        ctx: &egui::Context,
        id: &MessageId,
        p: &Pixels,
    ) -> egui::TextureHandle {
        if let Some(t) = self.thumbs.get(id) {
            return t.clone();
        }
        let img = egui::ColorImage::from_rgba_unmultiplied(
            [p.width as usize, p.height as usize],
            &p.rgba,
        );
        let t = ctx.load_texture("thumbnail", img, egui::TextureOptions::LINEAR);
        self.thumbs.insert(*id, t.clone());
        t
    }
}

/// The first 8 hex digits of an address, for a contact without a name.
pub(crate) fn short_address(a: &Address) -> String {
    a.to_string().chars().take(8).collect()
}

/// The accent colour (our bubbles, badges).
pub(crate) fn accent(dark: bool) -> Color32 {
    if dark {
        Color32::from_rgb(0x2c, 0x6b, 0xed)
    } else {
        Color32::from_rgb(0x1b, 0x5f, 0xd8)
    }
}

/// Draws the delivery mark of a message we sent: a clock for queued, one
/// tick in the network, two ticks stored at their relay, two ticks on a
/// filled disc delivered, an exclamation mark failed. Its words are in
/// the message's accessible name.
pub(crate) fn delivery_mark(ui: &mut egui::Ui, state: Option<DeliveryState>, on: Color32) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(22.0, 14.0), Sense::hover());
    let p = ui.painter();
    let c = rect.center();
    let stroke = Stroke::new(1.5, on);
    let tick = |p: &egui::Painter, dx: f32, s: Stroke| {
        p.line_segment(
            [
                Pos2::new(c.x - 6.0 + dx, c.y),
                Pos2::new(c.x - 3.0 + dx, c.y + 3.0),
            ],
            s,
        );
        p.line_segment(
            [
                Pos2::new(c.x - 3.0 + dx, c.y + 3.0),
                Pos2::new(c.x + 3.0 + dx, c.y - 4.0),
            ],
            s,
        );
    };
    match state {
        None | Some(DeliveryState::Queued) => {
            p.circle_stroke(c, 5.0, stroke);
            p.line_segment([c, Pos2::new(c.x, c.y - 3.5)], stroke);
            p.line_segment([c, Pos2::new(c.x + 2.5, c.y)], stroke);
        }
        Some(DeliveryState::Sent) => tick(p, 2.0, stroke),
        Some(DeliveryState::Stored) => {
            tick(p, 0.0, stroke);
            tick(p, 5.0, stroke);
        }
        Some(DeliveryState::Delivered) => {
            p.circle_filled(Pos2::new(c.x + 2.0, c.y), 7.0, on);
            let ink = Stroke::new(1.5, ui.visuals().extreme_bg_color);
            tick(p, 0.0, ink);
            tick(p, 4.0, ink);
        }
        Some(DeliveryState::Failed) => {
            let red = Color32::from_rgb(0xe0, 0x3c, 0x31);
            p.circle_filled(c, 6.0, red);
            p.line_segment(
                [Pos2::new(c.x, c.y - 3.5), Pos2::new(c.x, c.y + 1.0)],
                Stroke::new(1.8, Color32::WHITE),
            );
            p.circle_filled(Pos2::new(c.x, c.y + 3.2), 1.0, Color32::WHITE);
        }
    }
}

/// A voice clip's waveform bars (or a flat line when it has none); the
/// part before `played` (0.0–1.0) is drawn solid, the rest faded.
pub(crate) fn waveform(ui: &mut egui::Ui, bars: &[u8], color: Color32, played: f32) {
    let (rect, _) = ui.allocate_exact_size(Vec2::new(140.0, 24.0), Sense::hover());
    let p = ui.painter();
    if bars.is_empty() {
        p.line_segment(
            [rect.left_center(), rect.right_center()],
            Stroke::new(1.0, color),
        );
        return;
    }
    let n = bars.len().min(48);
    let w = rect.width() / n as f32;
    let faded = color.gamma_multiply(0.45);
    for (i, b) in bars.iter().take(n).enumerate() {
        let h = (f32::from(*b) / 255.0).max(0.05) * rect.height();
        let x = rect.left() + w * (i as f32 + 0.5);
        let color = if played > 0.0 && (i as f32 + 0.5) / n as f32 > played {
            faded
        } else {
            color
        };
        p.line_segment(
            [
                Pos2::new(x, rect.center().y - h / 2.0),
                Pos2::new(x, rect.center().y + h / 2.0),
            ],
            Stroke::new((w * 0.6).max(1.0), color),
        );
    }
}

/// A coloured dot (connection state).
pub(crate) fn dot(ui: &mut egui::Ui, color: Color32) {
    let (rect, _) = ui.allocate_exact_size(Vec2::splat(10.0), Sense::hover());
    ui.painter().circle_filled(rect.center(), 4.0, color);
}

/// A round play or pause button drawn by hand (no font needed), named
/// for screen readers and tests.
pub(crate) fn play_button(
    ui: &mut egui::Ui,
    playing: bool,
    enabled: bool,
    color: Color32,
) -> egui::Response {
    let sense = if enabled {
        Sense::click()
    } else {
        Sense::hover()
    };
    let (rect, r) = ui.allocate_exact_size(Vec2::splat(28.0), sense);
    let name = if playing {
        "Pause voice message"
    } else {
        "Play voice message"
    };
    r.widget_info(|| egui::WidgetInfo::labeled(egui::Role::Button, enabled, name));
    let c = rect.center();
    let ink = if enabled {
        color
    } else {
        color.gamma_multiply(0.4)
    };
    let p = ui.painter();
    let ring = if r.hovered() || r.has_focus() {
        2.0
    } else {
        1.2
    };
    p.circle_stroke(c, 12.5, Stroke::new(ring, ink));
    if playing {
        for dx in [-3.0, 3.0] {
            p.line_segment(
                [
                    Pos2::new(c.x + dx, c.y - 5.5),
                    Pos2::new(c.x + dx, c.y + 5.5),
                ],
                Stroke::new(3.0, ink),
            );
        }
    } else {
        p.add(egui::Shape::convex_polygon(
            vec![
                Pos2::new(c.x - 3.5, c.y - 6.5),
                Pos2::new(c.x + 6.5, c.y),
                Pos2::new(c.x - 3.5, c.y + 6.5),
            ],
            ink,
            Stroke::NONE,
        ));
    }
    r
}
