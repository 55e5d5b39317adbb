//! `postern-audio`: voice clips on native platforms.
//!
//! - [`codec`]: mono 48 kHz sound to Opus packets in the Ogg container the
//!   core checks ([`codec::Encoder`]), and a clip back to sound
//!   ([`codec::decode`]), with libopus. The container itself is
//!   `postern-media`'s ([`postern_media::voice::mux`] and
//!   [`postern_media::voice::packets`]); every clip decoded here passed
//!   its check first.
//! - [`device`]: the microphone ([`device::Recorder`]) and the speaker
//!   ([`device::Player`]) through cpal, converting whatever the device
//!   offers to and from mono 48 kHz.
//!
//! A machine without a sound card is an ordinary case: opening a device
//! fails with [`AudioError::NoDevice`], and the shells offer attaching an
//! `.ogg` clip instead. The browser has its own recorder and player; this
//! crate is native only.

pub mod codec;
pub mod device;

/// What can go wrong with sound.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AudioError {
    /// There is no such device (no sound card, or none by that name).
    #[error("no {0} found")]
    NoDevice(&'static str),
    /// The device refused or failed.
    #[error("the {what} failed: {why}")]
    Device {
        /// "microphone" or "speaker".
        what: &'static str,
        /// The system's words.
        why: String,
    },
    /// The codec refused (a bug, or a clip that decodes to nothing).
    #[error("Opus: {0}")]
    Codec(String),
    /// The clip is not a valid voice clip.
    #[error(transparent)]
    Clip(#[from] postern_core::Error),
    /// The recording reached the longest clip allowed.
    #[error("voice clips are at most {} minutes", postern_core::consts::MAX_VOICE_MS / 60_000)]
    TooLong,
}

impl postern_core::error::HasKind for AudioError {
    fn kind(&self) -> postern_core::ErrorKind {
        use postern_core::ErrorKind;
        match self {
            AudioError::Clip(e) => e.kind(),
            AudioError::TooLong | AudioError::NoDevice(_) => ErrorKind::Usage,
            AudioError::Device { .. } => ErrorKind::Storage,
            AudioError::Codec(_) => ErrorKind::Bug,
        }
    }
}

/// Results of this crate.
pub type Result<T> = core::result::Result<T, AudioError>;
