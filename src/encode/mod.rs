//! Reply speech in, a WhatsApp voice note out: Ogg/Opus as RFC 7845 defines
//! it (Ogg Encapsulation for the Opus Audio Codec).
//!
//! [`VoiceNoteEncoder`] streams: the TTS stage pushes PCM chunks as they are
//! synthesised and gets Ogg pages back as they fill, so the note is complete
//! a few milliseconds after the last audio arrives. [`encode`] is the
//! whole-buffer convenience. Audio at an Opus rate (8, 12, 16, 24 or 48 kHz)
//! is encoded at that rate; any other rate is first resampled to 16 kHz by
//! [`crate::media::resample::StreamResampler`].

pub mod config;
pub mod error;
pub mod ogg_opus;

pub use config::EncodeConfig;
pub use error::EncodeError;
pub use ogg_opus::{NoteInfo, VoiceNoteEncoder, OPUS_RATE};

/// A finished voice note.
#[derive(Debug, Clone, PartialEq)]
pub struct VoiceNote {
    /// The Ogg/Opus file, ready to upload as `audio/ogg`.
    pub bytes: Vec<u8>,
    pub info: NoteInfo,
}

/// Encodes mono f32 PCM (full scale ±1.0) at `sample_rate` into one voice
/// note.
pub fn encode(
    samples: &[f32],
    sample_rate: u32,
    config: &EncodeConfig,
) -> Result<VoiceNote, EncodeError> {
    let mut encoder = VoiceNoteEncoder::new(sample_rate, config)?;
    let mut bytes = encoder.push(samples)?;
    let (tail, info) = encoder.finish()?;
    bytes.extend_from_slice(&tail);
    Ok(VoiceNote { bytes, info })
}
