//! QR codes read back from images: rejections first, then round trips.
#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use postern_core::Error;
use postern_media::qr::{self, MAX_SCAN_SIDE, QrMatrix};

/// `m` drawn as greyscale pixels, `scale` per module, with a quiet zone.
fn draw(m: &QrMatrix, scale: usize) -> (u32, u32, Vec<u8>) {
    let quiet = 4;
    let side = (m.width + 2 * quiet) * scale;
    let mut px = vec![255u8; side * side];
    for y in 0..side {
        for x in 0..side {
            let (mx, my) = (x / scale, y / scale);
            let inside = mx >= quiet && my >= quiet && mx < m.width + quiet && my < m.width + quiet;
            if inside && m.dark[(my - quiet) * m.width + (mx - quiet)] {
                px[y * side + x] = 0;
            }
        }
    }
    (side as u32, side as u32, px)
}

#[test]
fn rejects_what_is_not_an_image_or_holds_no_code() {
    assert!(qr::scan_image(b"not an image").is_err());
    assert!(qr::scan_image(&[]).is_err());
    let blank = vec![255u8; 100 * 100];
    assert!(matches!(
        qr::scan_luma(100, 100, &blank),
        Err(Error::Malformed { what: "QR code" })
    ));
    // Sizes that do not match, or exceed the bound, are refused before
    // anything is scanned.
    assert!(qr::scan_luma(100, 100, &blank[..99]).is_err());
    assert!(qr::scan_luma(0, 0, &[]).is_err());
    assert!(matches!(
        qr::scan_luma(MAX_SCAN_SIDE + 1, 1, &vec![0; MAX_SCAN_SIDE as usize + 1]),
        Err(Error::TooLarge { .. })
    ));
}

/// Found by the `qr` fuzz target (FUZZING.md): a 90-pixel-wide camera
/// frame whose capstones form a degenerate perspective. rqrr asserted
/// that the mapped points fit an `i32` and panicked, which aborts a
/// release build (third_party/rqrr/POSTERN.md). Now: a typed error.
#[test]
fn a_frame_with_a_degenerate_perspective_is_an_error_not_a_panic() {
    // The fuzz input: a mode byte (1: greyscale frame), the width, pixels.
    let input = include_bytes!("data/qr-degenerate-perspective.bin");
    let (w, luma) = (usize::from(input[1]), &input[2..]);
    let h = luma.len() / w;
    let frame = &luma[..w * h];
    assert!(qr::scan_luma(w as u32, h as u32, frame).is_err());
    // The same pixels as a PNG file.
    let img = image::GrayImage::from_raw(w as u32, h as u32, frame.to_vec()).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert!(qr::scan_image(&png).is_err());
}

#[test]
fn a_drawn_code_reads_back_from_pixels_and_from_a_png_file() {
    let payload = b"postern:AQIDBAUGBwgJCgsMDQ4PEA".to_vec();
    let m = qr::encode(&payload).unwrap();
    let (w, h, px) = draw(&m, 4);
    assert_eq!(
        qr::scan_luma(w, h, &px).unwrap(),
        std::slice::from_ref(&payload)
    );
    let img = image::GrayImage::from_raw(w, h, px).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert_eq!(qr::scan_image(&png).unwrap(), [payload]);
}

#[test]
fn a_large_photo_is_scaled_down_and_still_read() {
    let payload = vec![0x42u8; 60];
    let m = qr::encode(&payload).unwrap();
    // About 2,600 pixels per side: over the scan bound, scaled down first.
    let (w, h, px) = draw(&m, 70);
    assert!(w > MAX_SCAN_SIDE);
    let img = image::GrayImage::from_raw(w, h, px).unwrap();
    let mut png = Vec::new();
    img.write_to(&mut std::io::Cursor::new(&mut png), image::ImageFormat::Png)
        .unwrap();
    assert_eq!(qr::scan_image(&png).unwrap(), [payload]);
}
