//! Images before they leave the device: decoded under strict limits and
//! re-encoded from pixels, so EXIF, GPS and every other metadata block of
//! the original is dropped; plus a small thumbnail.
//!
//! The only importer of the `image` crate. Input is hostile (a file the
//! user picked may have been crafted): dimensions and memory are bounded
//! before decoding, and every failure is a typed error.

use std::io::Cursor;

use image::{DynamicImage, ImageFormat, ImageReader, Limits};

use postern_core::consts::{MAX_IMAGE_PIXELS_PER_SIDE, MAX_THUMBNAIL_BYTES, THUMBNAIL_SIDE};
use postern_core::{Error, Result};

/// Largest image file accepted for re-encoding.
pub const MAX_IMAGE_INPUT_BYTES: usize = 50 * 1024 * 1024;
/// Most memory the decoder may allocate.
const MAX_DECODE_ALLOC: u64 = 512 * 1024 * 1024;
/// JPEG quality of re-encoded photos.
const JPEG_QUALITY: u8 = 85;

/// A re-encoded image, free of the original's metadata.
#[derive(Clone, PartialEq, Eq)]
pub struct SanitizedImage {
    /// `image/jpeg` (opaque images) or `image/png` (with transparency).
    pub mime: &'static str,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The re-encoded image.
    pub bytes: Vec<u8>,
    /// A JPEG thumbnail, at most [`MAX_THUMBNAIL_BYTES`].
    pub thumbnail: Vec<u8>,
}

impl core::fmt::Debug for SanitizedImage {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(
            f,
            "SanitizedImage({} {}x{}, {} bytes)",
            self.mime,
            self.width,
            self.height,
            self.bytes.len()
        )
    }
}

fn bad() -> Error {
    Error::Malformed { what: "image" }
}

fn encode(img: &DynamicImage, jpeg_quality: u8) -> Result<(Vec<u8>, &'static str)> {
    let mut out = Cursor::new(Vec::new());
    if img.color().has_alpha() {
        img.write_to(&mut out, ImageFormat::Png)
            .map_err(|_| bad())?;
        Ok((out.into_inner(), "image/png"))
    } else {
        let rgb = img.to_rgb8();
        let enc = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, jpeg_quality);
        rgb.write_with_encoder(enc).map_err(|_| bad())?;
        Ok((out.into_inner(), "image/jpeg"))
    }
}

/// Whether `input` starts like an image Postern re-encodes (JPEG or PNG);
/// only the signature is read.
pub fn is_image(input: &[u8]) -> bool {
    matches!(
        image::guess_format(input),
        Ok(ImageFormat::Jpeg | ImageFormat::Png)
    )
}

/// Decodes `input` (JPEG or PNG) within limits and re-encodes it.
pub fn sanitize_image(input: &[u8]) -> Result<SanitizedImage> {
    let img = decode_bounded(input)?;
    let (width, height) = (img.width(), img.height());
    // Re-encoding from pixels is what drops every metadata block.
    let (bytes, mime) = encode(&img, JPEG_QUALITY)?;
    let thumbnail = thumbnail(&img)?;
    Ok(SanitizedImage {
        mime,
        width,
        height,
        bytes,
        thumbnail,
    })
}

fn thumbnail(img: &DynamicImage) -> Result<Vec<u8>> {
    let mut side = THUMBNAIL_SIDE;
    let mut quality = 60;
    loop {
        let t = DynamicImage::ImageRgb8(img.thumbnail(side, side).to_rgb8());
        let (bytes, _) = encode(&t, quality)?;
        if bytes.len() <= MAX_THUMBNAIL_BYTES {
            return Ok(bytes);
        }
        if quality > 30 {
            quality -= 15;
        } else if side > 32 {
            side /= 2;
        } else {
            return Err(Error::Bug("thumbnail does not fit its bound"));
        }
    }
}

/// Pixels to show: RGBA, 8 bits per channel, row-major.
#[derive(Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Pixels {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// `width * height * 4` bytes.
    pub rgba: Vec<u8>,
}

impl core::fmt::Debug for Pixels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Pixels({}x{})", self.width, self.height)
    }
}

/// Most pixels per side a decoded image is shown at (larger ones are
/// scaled down, keeping their aspect).
pub const MAX_DISPLAY_SIDE: u32 = 2048;

/// Decodes a JPEG or PNG from a contact (a thumbnail, a received image)
/// for display, within the same limits as [`sanitize_image`], scaled down
/// to at most `max_side` (≤ [`MAX_DISPLAY_SIDE`]) per side.
pub fn decode_for_display(input: &[u8], max_side: u32) -> Result<Pixels> {
    let img = decode_bounded(input)?;
    let side = max_side.clamp(1, MAX_DISPLAY_SIDE);
    let img = if img.width() > side || img.height() > side {
        img.thumbnail(side, side)
    } else {
        img
    };
    let rgba = img.to_rgba8();
    Ok(Pixels {
        width: rgba.width(),
        height: rgba.height(),
        rgba: rgba.into_raw(),
    })
}

/// Decodes a JPEG or PNG within the limits every hostile image gets.
pub(crate) fn decode_bounded(input: &[u8]) -> Result<DynamicImage> {
    if input.len() > MAX_IMAGE_INPUT_BYTES {
        return Err(Error::TooLarge {
            what: "image",
            len: input.len(),
            max: MAX_IMAGE_INPUT_BYTES,
        });
    }
    let mut reader = ImageReader::new(Cursor::new(input))
        .with_guessed_format()
        .map_err(|_| bad())?;
    match reader.format() {
        Some(ImageFormat::Jpeg) | Some(ImageFormat::Png) => {}
        _ => return Err(Error::UnsupportedMessageKind),
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_PIXELS_PER_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_PIXELS_PER_SIDE);
    limits.max_alloc = Some(MAX_DECODE_ALLOC);
    reader.limits(limits);
    reader.decode().map_err(|_| bad())
}
