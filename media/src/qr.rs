//! QR codes for safety numbers and invitations: drawn, and read back from
//! a photo, a screenshot or a pasted image (hostile input: decoded within
//! the image limits, the scanner's output bounded).

use postern_core::{Error, Result};

/// Most QR codes read from one image.
pub const MAX_CODES_PER_IMAGE: usize = 8;
/// Most bytes of one scanned code kept (a version-40 code holds less).
pub const MAX_CODE_BYTES: usize = 4096;
/// Most pixels per side an image is scanned at (larger ones are scaled
/// down first; a QR code stays readable).
pub const MAX_SCAN_SIDE: u32 = 2000;

/// Every QR code found in an image file (JPEG or PNG), raw bytes each;
/// an image with none is `Error::Malformed`.
pub fn scan_image(input: &[u8]) -> Result<Vec<Vec<u8>>> {
    let img = crate::images::decode_bounded(input)?;
    let img = if img.width() > MAX_SCAN_SIDE || img.height() > MAX_SCAN_SIDE {
        img.thumbnail(MAX_SCAN_SIDE, MAX_SCAN_SIDE)
    } else {
        img
    };
    let luma = img.to_luma8();
    let (w, h) = luma.dimensions();
    scan_luma(w, h, luma.as_raw())
}

/// Every QR code in a greyscale image (`width * height` bytes, row-major):
/// a pasted image or a camera frame.
pub fn scan_luma(width: u32, height: u32, luma: &[u8]) -> Result<Vec<Vec<u8>>> {
    let (w, h) = (width as usize, height as usize);
    if width == 0 || height == 0 || width > MAX_SCAN_SIDE || height > MAX_SCAN_SIDE {
        return Err(Error::TooLarge {
            what: "image to scan",
            len: w.max(h),
            max: MAX_SCAN_SIDE as usize,
        });
    }
    if luma.len() != w.saturating_mul(h) {
        return Err(Error::Malformed {
            what: "image to scan",
        });
    }
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| {
        luma.get(y * w + x).copied().unwrap_or(255)
    });
    let mut out = Vec::new();
    for grid in prepared
        .detect_grids()
        .into_iter()
        .take(MAX_CODES_PER_IMAGE)
    {
        let mut data = Vec::new();
        if grid.decode_to(&mut data).is_ok() && data.len() <= MAX_CODE_BYTES {
            out.push(data);
        }
    }
    if out.is_empty() {
        return Err(Error::Malformed { what: "QR code" });
    }
    Ok(out)
}

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
