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

/// Builds a [`PreparedNote`] from bytes as they arrive: each chunk is
/// decoded and its PCM resampled at once, so decoding and resampling keep
/// pace with a download; [`NoteBuilder::finish`] flushes and prepares.
pub struct NoteBuilder {
    decoder: StreamDecoder,
    to_mono: ToMono,
    timings: MediaTimings,
    config: MediaConfig,
}

/// The resampling half of [`NoteBuilder`]: native-rate PCM in, 16 kHz mono
/// out, with the source's length kept for [`PreparedNote::source_ms`].
#[derive(Default)]
struct ToMono {
    resampler: Option<StreamResampler>,
    mono: Vec<f32>,
    frames: u64,
    rate: u32,
}

impl ToMono {
    fn feed(&mut self, pcm: &Pcm) -> Result<Duration, MediaError> {
        if pcm.samples.is_empty() {
            return Ok(Duration::ZERO);
        }
        let started = Instant::now();
        if self.resampler.is_none() {
            self.resampler = Some(StreamResampler::new(pcm.sample_rate, pcm.channels)?);
            self.rate = pcm.sample_rate;
        }
        if let Some(r) = &mut self.resampler {
            self.mono.extend(r.process(&pcm.samples));
        }
        self.frames += (pcm.samples.len() / usize::from(pcm.channels.max(1))) as u64;
        Ok(started.elapsed())
    }

    /// The 16 kHz mono audio and the source's duration in ms.
    fn finish(mut self) -> (Vec<f32>, u64) {
        if let Some(r) = self.resampler.take() {
            self.mono.extend(r.finish());
        }
        let ms = if self.rate == 0 {
            0
        } else {
            self.frames * 1000 / u64::from(self.rate)
        };
        (self.mono, ms)
    }
}

impl NoteBuilder {
    pub fn new(config: &MediaConfig) -> Self {
        Self {
            decoder: StreamDecoder::new(config),
            to_mono: ToMono::default(),
            timings: MediaTimings::default(),
            config: config.clone(),
        }
    }

    /// Decodes `chunk` and resamples what it yields.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), MediaError> {
        let started = Instant::now();
        self.decoder.push(chunk)?;
        let pcm = self.decoder.take_pcm();
        self.timings.decode += started.elapsed();
        if let Some(pcm) = pcm {
            self.timings.resample += self.to_mono.feed(&pcm)?;
        }
        Ok(())
    }

    /// End of input: flushes the decoder and the resampler and prepares the
    /// note.
    pub fn finish(self) -> Result<PreparedNote, MediaError> {
        let Self {
            decoder,
            mut to_mono,
            mut timings,
            config,
        } = self;
        let started = Instant::now();
        let decoded = decoder.finish_note()?;
        timings.decode += started.elapsed();
        timings.resample += to_mono.feed(&decoded.pcm)?;
        drop(decoded.pcm);
        let started = Instant::now();
        let (mono, source_ms) = to_mono.finish();
        timings.resample += started.elapsed();

        let started = Instant::now();
        let (samples, mut outcome, speech_ms) = prepare::prepare(mono, &config);
        // Decoding stopped early, so the note is longer than what was prepared
        // even if trimming brought it under the cap.
        if decoded.capped && outcome == SpeechOutcome::Speech {
            outcome = SpeechOutcome::Truncated {
                cap_ms: config.max_note_ms,
            };
        }
        timings.prepare = started.elapsed();
        Ok(PreparedNote {
            format: decoded.format,
            samples,
            source_ms,
            speech_ms,
            outcome,
            timings,
        })
    }
}

/// Whole-buffer convenience: detect, decode, resample, prepare.
pub fn load(bytes: &[u8], config: &MediaConfig) -> Result<PreparedNote, MediaError> {
    let mut note = NoteBuilder::new(config);
    note.push(bytes)?;
    note.finish()
}
