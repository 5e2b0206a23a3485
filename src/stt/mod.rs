//! Speech to text: prepared 16 kHz mono speech in, a [`Transcript`] out.
//!
//! [`SpeechToText`] is the stage's interface; [`whisper::WhisperStt`] is the
//! local whisper.cpp provider. Transcription is CPU-bound and blocking: the
//! pipeline runs it on a blocking thread.

pub mod config;
pub mod guard;
pub mod heard;
pub mod route;
pub mod whisper;

pub use config::SttConfig;
pub use route::{LanguageRouter, Prior, PriorSource, Routing};

use std::sync::Arc;

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
    /// How the language and model were chosen, when a
    /// [`LanguageRouter`] chose them.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routing: Option<Box<Routing>>,
}

/// Per-call options.
#[derive(Debug, Clone, Default)]
pub struct TranscribeOptions {
    /// Force a language (ISO 639-1); `None` uses the configured one (or, on
    /// a [`LanguageRouter`], routes the note).
    pub language: Option<String>,
    /// What is known of the customer's language before the note is heard:
    /// the conversation's, or the one of the number's calling code.
    pub prior: Option<Prior>,
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
    #[error("{0} cannot detect the spoken language (an English-only model)")]
    NoDetection(String),
    #[error("no speech model in this process (`serve --role webhook` runs no turns)")]
    NotLoaded,
}

/// A speech-to-text provider.
pub trait SpeechToText: Send + Sync {
    /// Transcribes 16 kHz mono `speech`. Blocking.
    fn transcribe(
        &self,
        speech: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, SttError>;

    /// The spoken language's probabilities over every language the model
    /// knows, most likely first. Blocking.
    fn detect_language(
        &self,
        _speech: &[f32],
        _abort: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Vec<(String, f32)>, SttError> {
        Err(SttError::NoDetection(self.name().to_string()))
    }

    /// Whether the model transcribes more than English.
    fn is_multilingual(&self) -> bool {
        false
    }

    /// A short name for traces and metrics, e.g. `whisper:tiny.en`.
    fn name(&self) -> &str;
}

/// The speech stage of a process that runs no turns (`serve --role
/// webhook`): no model is loaded, and a transcription is an error.
pub struct NotLoaded;

impl SpeechToText for NotLoaded {
    fn transcribe(&self, _: &[f32], _: &TranscribeOptions) -> Result<Transcript, SttError> {
        Err(SttError::NotLoaded)
    }

    fn name(&self) -> &str {
        "none"
    }
}

/// Loads the configured speech-to-text stage for a business that serves
/// `languages`: with a multilingual model, a [`LanguageRouter`] over it and
/// the English model; with an English-only one, that model alone.
pub fn load(config: &SttConfig, languages: &[String]) -> Result<Arc<dyn SpeechToText>, SttError> {
    let main = whisper::WhisperStt::load(config)?;
    if !main.is_multilingual() {
        if languages.iter().any(|l| l != "en") {
            tracing::warn!(
                model = main.name(),
                "the model is English-only: notes in other languages will not be understood"
            );
        }
        return Ok(Arc::new(main));
    }
    let english = match config.english_model.as_deref() {
        Some(name) if name != "none" && languages.iter().any(|l| l == "en") => {
            let english = SttConfig {
                model: name.to_string(),
                ..config.clone()
            };
            Some(Arc::new(whisper::WhisperStt::load(&english)?) as Arc<dyn SpeechToText>)
        }
        _ => None,
    };
    Ok(Arc::new(LanguageRouter::new(
        Arc::new(main),
        english,
        languages.to_vec(),
        config.routing.clone(),
    )))
}
