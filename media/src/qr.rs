//! QR codes for safety numbers (and, later, invitations).

use postern_core::{Error, Result};

/// A rendered QR code: a square of dark/light modules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QrMatrix {
    /// Modules per side.
    pub width: usize,
    /// Row-major, `true` = dark.
    pub dark: Vec<bool>,
}

/// The QR code of `data` (binary), with medium error correction.
fn code(data: &[u8]) -> Result<qrcode::QrCode> {
    qrcode::QrCode::with_error_correction_level(data, qrcode::EcLevel::M).map_err(|_| {
        Error::TooLarge {
            what: "QR payload",
            len: data.len(),
            max: 2331,
        }
    })
}

/// Encodes `data` (binary) as a QR code with medium error correction.
pub fn encode(data: &[u8]) -> Result<QrMatrix> {
    let code = code(data)?;
    let width = code.width();
    let dark = code
        .to_colors()
        .into_iter()
        .map(|c| c == qrcode::Color::Dark)
        .collect();
    Ok(QrMatrix { width, dark })
}

/// Encodes `data` as an SVG document.
pub fn svg(data: &[u8]) -> Result<String> {
    let code = code(data)?;
    Ok(code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(240, 240)
        .build())
}

impl QrMatrix {
    /// Renders the code with Unicode half blocks for a terminal (two rows
    /// per line), with a quiet zone.
    pub fn to_terminal(&self) -> String {
        let at = |x: isize, y: isize| -> bool {
            if x < 0 || y < 0 {
                return false;
            }
            let (x, y) = (x as usize, y as usize);
            x < self.width && y < self.width && self.dark.get(y * self.width + x) == Some(&true)
        };
        let w = self.width as isize;
        let mut out = String::new();
        let mut y = -2;
        while y < w + 2 {
            for x in -2..w + 2 {
                out.push(match (at(x, y), at(x, y + 1)) {
                    (true, true) => ' ',
                    (true, false) => '▄',
                    (false, true) => '▀',
                    (false, false) => '█',
                });
            }
            out.push('\n');
            y += 2;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_payload_too_large_for_any_qr() {
        assert!(matches!(encode(&[0u8; 4000]), Err(Error::TooLarge { .. })));
    }

    #[test]
    fn encodes_binary() {
        let m = encode(&[0, 1, 2, 255]).unwrap();
        assert_eq!(m.dark.len(), m.width * m.width);
        assert!(svg(&[1, 2, 3]).unwrap().starts_with("<?xml"));
        assert!(m.to_terminal().lines().count() > 10);
    }
}
