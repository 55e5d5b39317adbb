//! Presentation: names, message lines, QR images, progress bars. No
//! protocol logic here.

use std::path::Path;

use postern_core::message::Body;
use postern_core::{Address, UnixTime};
use postern_media::qr::QrMatrix;

use crate::{CliError, Result, io_err};

/// Pixels per QR module in PNG output.
const QR_SCALE: u32 = 8;
/// Quiet zone around a QR code, in modules.
const QR_QUIET: u32 = 4;

/// The contact's suggested name, or its address when it has none.
pub fn name_or(name: &str, addr: &Address) -> String {
    if name.is_empty() {
        addr.to_string()
    } else {
        // Names come from the network: show them without control
        // characters (they are refused on decode; this is belt and braces).
        name.chars().filter(|c| !c.is_control()).collect()
    }
}

/// A one-line description of a message body (None for control messages).
pub fn describe(body: &Body) -> Option<String> {
    Some(match body {
        Body::Text(t) => {
            t.0.chars()
                .map(|c| {
                    if c.is_control() && c != '\n' {
                        '\u{fffd}'
                    } else {
                        c
                    }
                })
                .collect()
        }
        Body::Image(i) => format!(
            "image {}x{} ({}, {} bytes)",
            i.width, i.height, i.mime, i.attachment.size
        ),
        Body::File(f) => format!("file {} ({}, {} bytes)", f.name, f.mime, f.attachment.size),
        Body::Voice(v) => format!(
            "voice clip {}.{:01} s ({} bytes)",
            v.duration_ms / 1000,
            (v.duration_ms % 1000) / 100,
            v.attachment.size
        ),
        Body::Receipt(ids) => format!("✓ {} of your message(s) delivered", ids.len()),
        _ => return None,
    })
}

/// Writes a QR code as a PNG image.
pub fn write_qr_png(qr: &QrMatrix, path: &Path) -> Result<()> {
    let w = u32::try_from(qr.width).map_err(|_| CliError::Usage("QR code too large".into()))?;
    let side = (w + 2 * QR_QUIET) * QR_SCALE;
    let img = image::GrayImage::from_fn(side, side, |x, y| {
        let (mx, my) = (x / QR_SCALE, y / QR_SCALE);
        let dark = mx >= QR_QUIET
            && my >= QR_QUIET
            && mx < w + QR_QUIET
            && my < w + QR_QUIET
            && qr
                .dark
                .get(((my - QR_QUIET) * w + (mx - QR_QUIET)) as usize)
                == Some(&true);
        image::Luma([if dark { 0 } else { 255 }])
    });
    img.save_with_format(path, image::ImageFormat::Png)
        .map_err(|e| CliError::Usage(format!("{}: {e}", path.display())))
}

/// Reads every QR code in an image file (raw bytes of each).
pub fn scan_qr(path: &Path) -> Result<Vec<Vec<u8>>> {
    let bytes = std::fs::read(path).map_err(io_err(path))?;
    postern_media::qr::scan_image(&bytes).map_err(|e| match e {
        postern_core::Error::Malformed { what: "QR code" } => {
            CliError::Usage(format!("{}: no QR code found", path.display()))
        }
        _ => CliError::Usage(format!("{}: not a readable image ({e})", path.display())),
    })
}

/// A progress bar on stderr (hidden when stderr is not a terminal).
pub fn progress(total: u64, what: &'static str) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(total);
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} chunks")
    {
        bar.set_style(style.progress_chars("=> "));
    }
    bar.set_message(what);
    bar
}

/// 60 digits as 12 groups of 5.
pub fn group_digits(digits: &str) -> String {
    let chars: Vec<char> = digits.chars().collect();
    chars
        .chunks(5)
        .map(|c| c.iter().collect::<String>())
        .collect::<Vec<_>>()
        .chunks(4)
        .map(|row| row.join(" "))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `YYYY-MM-DD HH:MM` (UTC) for a timestamp.
pub fn time(t: UnixTime) -> String {
    let secs = t.millis() / 1000;
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    let rem = secs % 86_400;
    // Civil date from days since the epoch (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rem / 3600,
        (rem % 3600) / 60
    )
}
