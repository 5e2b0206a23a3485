//! Why a voice note could not be encoded.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum EncodeError {
    /// The sample rate is outside what the resampler accepts, or zero.
    #[error("cannot encode audio at {sample_rate} Hz: {reason}")]
    SampleRate { sample_rate: u32, reason: String },
    /// A setting libopus refused.
    #[error("invalid encoder setting {setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
    #[error("opus encoder: {0}")]
    Opus(#[from] opus::Error),
    #[error("ogg writer: {0}")]
    Ogg(#[from] std::io::Error),
}
