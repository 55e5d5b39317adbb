//! Images are re-encoded so that no metadata of the original leaves the
//! device; hostile image files are typed errors.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic
)]

use postern_core::Error;
use postern_media::images::{self, sanitize_image};

/// A JPEG of a gradient, as a camera would write it, with an EXIF block
/// (APP1) holding a GPS IFD whose latitude is recognisable.
fn jpeg_with_gps_exif() -> (Vec<u8>, Vec<u8>) {
    let img = image::RgbImage::from_fn(320, 240, |x, y| image::Rgb([x as u8, y as u8, 128]));
    let mut jpeg = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgb8(img)
        .write_to(&mut jpeg, image::ImageFormat::Jpeg)
        .unwrap();
    let jpeg = jpeg.into_inner();
    // TIFF (big-endian): IFD0 with one entry GPSInfo (0x8825) -> GPS IFD with
    // GPSLatitudeRef 'N' and GPSLatitude 48/1 51/1 2388/100.
    let marker = b"LAT48N51-23.88".to_vec();
    let mut tiff = Vec::new();
    tiff.extend_from_slice(b"MM\x00\x2a\x00\x00\x00\x08");
    tiff.extend_from_slice(&[0, 1, 0x88, 0x25, 0, 4, 0, 0, 0, 1, 0, 0, 0, 26, 0, 0, 0, 0]);
    tiff.extend_from_slice(&[0, 2, 0, 1, 0, 2, 0, 0, 0, 2, b'N', 0, 0, 0]);
    tiff.extend_from_slice(&[0, 2, 0, 5, 0, 0, 0, 3, 0, 0, 0, 56, 0, 0, 0, 0]);
    for (n, d) in [(48u32, 1u32), (51, 1), (2388, 100)] {
        tiff.extend_from_slice(&n.to_be_bytes());
        tiff.extend_from_slice(&d.to_be_bytes());
    }
    tiff.extend_from_slice(&marker);
    let mut app1 = b"Exif\x00\x00".to_vec();
    app1.extend_from_slice(&tiff);
    let len = u16::try_from(app1.len() + 2).unwrap();
    let mut out = jpeg[..2].to_vec(); // SOI
    out.extend_from_slice(&[0xff, 0xe1]);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&app1);
    out.extend_from_slice(&jpeg[2..]);
    (out, marker)
}

#[test]
fn rejects_garbage_truncated_and_unsupported_images() {
    assert!(sanitize_image(b"not an image at all").is_err());
    let (jpeg, marker) = jpeg_with_gps_exif();
    for cut in [0, 2, 10, 200] {
        assert!(sanitize_image(&jpeg[..cut]).is_err(), "cut {cut}");
    }
    // The JPEG decoder fills in a file cut in the middle of its scan data;
    // what comes out is still a clean re-encoding (and nothing panics).
    for cut in (300..jpeg.len()).step_by(97) {
        if let Ok(s) = sanitize_image(&jpeg[..cut]) {
            assert!(
                !s.bytes
                    .windows(marker.len())
                    .any(|w| w == marker.as_slice())
            );
        }
    }
    // A GIF is not accepted for re-encoding.
    assert!(sanitize_image(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;").is_err());
    // A PNG header claiming 100,000 x 100,000 pixels is refused by the limits.
    let mut png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR".to_vec();
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&100_000u32.to_be_bytes());
    png.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    assert!(matches!(sanitize_image(&png), Err(Error::Malformed { .. })));
}

#[test]
fn image_with_exif_gps_comes_out_without_it() {
    let (jpeg, marker) = jpeg_with_gps_exif();
    assert!(jpeg.windows(6).any(|w| w == b"Exif\x00\x00"));
    assert!(jpeg.windows(marker.len()).any(|w| w == marker.as_slice()));
    let s = sanitize_image(&jpeg).unwrap();
    assert_eq!((s.mime, s.width, s.height), ("image/jpeg", 320, 240));
    for out in [&s.bytes, &s.thumbnail] {
        assert!(!out.windows(4).any(|w| w == b"Exif"), "EXIF block survived");
        assert!(
            !out.windows(marker.len()).any(|w| w == marker.as_slice()),
            "GPS data survived"
        );
        assert!(
            !out.windows(2).any(|w| w == [0xff, 0xe1]),
            "APP1 segment survived"
        );
    }
    assert!(s.thumbnail.len() <= postern_core::consts::MAX_THUMBNAIL_BYTES);
    let t = image::load_from_memory(&s.thumbnail).unwrap();
    assert!(
        t.width() <= postern_core::consts::THUMBNAIL_SIDE
            && t.height() <= postern_core::consts::THUMBNAIL_SIDE
    );
}

#[test]
fn png_with_transparency_stays_png() {
    let img = image::RgbaImage::from_fn(40, 30, |x, _| image::Rgba([255, 0, 0, (x * 6) as u8]));
    let mut png = std::io::Cursor::new(Vec::new());
    image::DynamicImage::ImageRgba8(img)
        .write_to(&mut png, image::ImageFormat::Png)
        .unwrap();
    let s = sanitize_image(&png.into_inner()).unwrap();
    assert_eq!((s.mime, s.width, s.height), ("image/png", 40, 30));
}

#[test]
fn display_decoding_refuses_what_is_not_an_image_and_scales_large_ones_down() {
    assert!(images::decode_for_display(b"\xFF\xD8\xFF junk", 256).is_err());
    assert!(images::decode_for_display(b"GIF89a", 256).is_err());
    let (jpeg, _) = jpeg_with_gps_exif();
    let s = images::sanitize_image(&jpeg).unwrap();
    let full = images::decode_for_display(&s.bytes, images::MAX_DISPLAY_SIDE).unwrap();
    assert_eq!((full.width, full.height), (s.width, s.height));
    assert_eq!(full.rgba.len(), (full.width * full.height * 4) as usize);
    let small = images::decode_for_display(&s.bytes, 16).unwrap();
    assert!(small.width <= 16 && small.height <= 16);
    let thumb = images::decode_for_display(&s.thumbnail, 256).unwrap();
    assert!(thumb.width > 0 && thumb.height > 0);
}
