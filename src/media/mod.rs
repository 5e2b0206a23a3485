//! Customer audio in, 16 kHz mono speech out.
//!
//! The path is [`detect`](mod@detect) → [`decode`] (incremental, chunk by chunk) →
//! [`resample`] (rubato, streaming) → [`prepare`] (level, silence trim,
//! length cap). Every step returns a typed [`MediaError`] for bad input and
//! bounds its allocations. [`load`] runs the whole path on a note already in
//! memory; the pipeline can instead drive [`decode::StreamDecoder`] and
//! [`resample::StreamResampler`] while the note downloads.
//!
//! Which formats stream and which are buffered is described in [`decode`].

pub mod config;
pub mod decode;
pub mod detect;
pub mod error;
pub mod prepare;
pub mod resample;

use std::time::{Duration, Instant};

pub use config::MediaConfig;
pub use detect::{detect, AudioFormat};
pub use error::MediaError;

use decode::StreamDecoder;
use resample::StreamResampler;

/// Interleaved f32 PCM at its native rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Pcm {
    pub sample_rate: u32,
    pub channels: u16,
    pub samples: Vec<f32>,
}

impl Pcm {
    /// Duration in milliseconds.
    pub fn duration_ms(&self) -> u64 {
        if self.sample_rate == 0 || self.channels == 0 {
            return 0;
        }
        let frames = (self.samples.len() / usize::from(self.channels)) as u64;
        frames * 1000 / u64::from(self.sample_rate)
    }
}

/// Result of the whole media path for one note.
#[derive(Debug, Clone)]
pub struct PreparedNote {
    pub format: AudioFormat,
    /// 16 kHz mono, silence trimmed, level normalised, at most
    /// [`MediaConfig::max_note_ms`] long.
    pub samples: Vec<f32>,
    /// Duration of the decoded audio before trimming and capping (itself
    /// capped at [`MediaConfig::max_note_ms`] plus
    /// [`decode::DECODE_MARGIN_MS`]).
    pub source_ms: u64,
    /// Duration of `samples`.
    pub speech_ms: u64,
    pub outcome: SpeechOutcome,
    pub timings: MediaTimings,
}

/// What the note turned out to hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpeechOutcome {
    Speech,
    /// An empty or silent note: not an error, but nothing to transcribe.
    NoSpeech,
    /// Speech longer than the cap; `samples` holds the first `cap_ms`.
    Truncated {
        cap_ms: u64,
    },
}

/// Time spent in each step of [`load`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MediaTimings {
    pub decode: Duration,
    pub resample: Duration,
    pub prepare: Duration,
}

/// Whole-buffer convenience: detect, decode, resample, prepare.
pub fn load(bytes: &[u8], config: &MediaConfig) -> Result<PreparedNote, MediaError> {
    let started = Instant::now();
    let mut decoder = StreamDecoder::new(config);
    decoder.push(bytes)?;
    let decoded = decoder.finish_note()?;
    let decode = started.elapsed();

    let started = Instant::now();
    let pcm = decoded.pcm;
    let source_ms = pcm.duration_ms();
    let mut resampler = StreamResampler::new(pcm.sample_rate, pcm.channels)?;
    let mut mono = resampler.process(&pcm.samples);
    drop(pcm);
    mono.extend(resampler.finish());
    let resample = started.elapsed();

    let started = Instant::now();
    let (samples, mut outcome, speech_ms) = prepare::prepare(mono, config);
    // Decoding stopped early, so the note is longer than what was prepared
    // even if trimming brought it under the cap.
    if decoded.capped && outcome == SpeechOutcome::Speech {
        outcome = SpeechOutcome::Truncated {
            cap_ms: config.max_note_ms,
        };
    }
    let prepare = started.elapsed();

    Ok(PreparedNote {
        format: decoded.format,
        samples,
        source_ms,
        speech_ms,
        outcome,
        timings: MediaTimings {
            decode,
            resample,
            prepare,
        },
    })
}
