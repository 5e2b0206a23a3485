//! Speech to text: prepared 16 kHz mono speech in, a [`Transcript`] out.
//!
//! [`SpeechToText`] is the stage's interface; [`whisper::WhisperStt`] is the
//! local whisper.cpp provider. Transcription is CPU-bound and blocking: the
//! pipeline runs it on a blocking thread.

pub mod config;
pub mod guard;
pub mod whisper;

pub use config::SttConfig;

use serde::Serialize;

/// One stretch of the transcript with its place in the (trimmed) audio.
#[derive(Debug, Clone, Serialize)]
pub struct Segment {
    pub start_ms: u64,
    pub end_ms: u64,
    pub text: String,
    /// Geometric mean of the segment's text-token probabilities.
    pub confidence: f32,
}

/// How much of Whisper's 30 s encoder window a transcription used.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Window {
    /// The encoder ran on `audio_ctx` frames (20 ms each) fitted to the speech.
    Fitted { audio_ctx: u32 },
    /// The full 30 s window.
    Full,
    /// The fitted window's output failed a safety check; this is the full
    /// window's answer.
    FullAfterRejection { audio_ctx: u32, reason: String },
}

/// What the stage hands on to the dialog stage.
#[derive(Debug, Clone, Serialize)]
pub struct Transcript {
    /// ISO 639-1 code, fixed by config or detected.
    pub language: String,
    pub text: String,
    pub segments: Vec<Segment>,
    /// 0 to 1: the token probabilities' geometric mean times the chance that
    /// the note holds speech at all.
    pub confidence: f32,
    pub no_speech_probability: f32,
    pub window: Window,
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    /// Force a language (ISO 639-1); `None` uses the configured one.
    pub language: Option<String>,
    /// Set to stop the transcription early (its budget ran out); the call
    /// then returns [`SttError::Aborted`].
    pub abort: Option<std::sync::Arc<std::sync::atomic::AtomicBool>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SttError {
    #[error(transparent)]
    Model(#[from] crate::models::ModelError),
    #[error("whisper.cpp could not load {path}: {reason}")]
    Load { path: String, reason: String },
    #[error("language {0:?} is not one Whisper knows")]
    Language(String),
    #[error("model {model} is English-only; it cannot transcribe {language:?}")]
    EnglishOnly { model: String, language: String },
    #[error("whisper.cpp failed: {0}")]
    Whisper(String),
    #[error("no audio to transcribe")]
    Empty,
    #[error("transcription stopped before it finished")]
    Aborted,
}

/// A speech-to-text provider.
pub trait SpeechToText: Send + Sync {
    /// Transcribes 16 kHz mono `speech`. Blocking.
    fn transcribe(
        &self,
        speech: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, SttError>;

    /// A short name for traces and metrics, e.g. `whisper:tiny.en`.
    fn name(&self) -> &str;
}
