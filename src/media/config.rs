//! Settings of the media stage, with the defaults a WhatsApp voice note needs.

use serde::Deserialize;

/// Limits and levels for decoding and preparing one note.
///
/// The resampler has no settings: it is rubato's FFT resampler, whose
/// anti-alias filter is fixed by the input and output rates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MediaConfig {
    /// Largest note accepted, in bytes; more is [`MediaError::TooLarge`](super::MediaError).
    /// Default: 16 MiB (WhatsApp's own limit for audio).
    pub max_input_bytes: usize,
    /// Longest speech passed on, in milliseconds; a longer note is cut and
    /// reported as [`SpeechOutcome::Truncated`](super::SpeechOutcome). Decoding
    /// stops shortly after this much audio. Default: 120 000 (two minutes).
    pub max_note_ms: u64,
    /// A 20 ms frame whose RMS level is below this is silence. Default: -45 dBFS
    /// (full scale is an RMS of 1.0).
    pub silence_threshold_dbfs: f32,
    /// A note with less speech than this in total is treated as silent, so a
    /// click or a cough does not count. Default: 100 ms.
    pub min_speech_ms: u64,
    /// Silence kept before the first and after the last speech frame, so word
    /// onsets and endings are not clipped. Default: 150 ms.
    pub trim_margin_ms: u64,
    /// RMS level of the speech frames after normalisation. Default: -20 dBFS.
    pub target_rms_dbfs: f32,
    /// Largest gain normalisation applies, so a faint note full of noise is
    /// not blown up. Default: 20 dB.
    pub max_gain_db: f32,
    /// Normalisation never lifts a sample above this level. Default: -1 dBFS.
    pub peak_ceiling_dbfs: f32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_input_bytes: 16 * 1024 * 1024,
            max_note_ms: 120_000,
            silence_threshold_dbfs: -45.0,
            min_speech_ms: 100,
            trim_margin_ms: 150,
            target_rms_dbfs: -20.0,
            max_gain_db: 20.0,
            peak_ceiling_dbfs: -1.0,
        }
    }
}
