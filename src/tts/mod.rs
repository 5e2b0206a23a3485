//! Reply text in, speech out, as a stream.
//!
//! The dialog stage's tokens go through the [`aggregator`] (speakable
//! chunks, cut as early as a sentence or a long first clause is complete)
//! and [`speak`] (numbers, prices, dates and order numbers in words), then
//! to a [`TextToSpeech`] provider, which sends PCM chunks on as it
//! synthesises them:
//!
//! - [`piper`]: a Piper voice run by ONNX Runtime in process, the natural
//!   English voice, no network;
//! - [`kokoro`]: Kokoro-82M run by ONNX Runtime in process, natural voices
//!   for Spanish, Italian, Portuguese and French, no network;
//! - [`espeak`]: libespeak-ng in process, every reply language, no network,
//!   the fastest and the default;
//! - [`openai`]: `POST {base}/v1/audio/speech`, the OpenAI-compatible HTTP
//!   API, with a streamed body;
//! - [`elevenlabs`]: the ElevenLabs `stream-input` WebSocket protocol;
//! - [`fallback`]: a chain of the above; when every provider fails before
//!   the first audio, the caller sends the reply as text.
//!
//! [`speak_reply`] is the voice side of a turn with its stages overlapping:
//! dialog tokens → aggregator → provider → Ogg/Opus encoder, connected by
//! bounded channels, so the note is finished shortly after the last token.
//! [`voice_note`] does the same for a reply text that is already complete;
//! [`from_config`] builds the provider chain from [`TtsConfig`].

pub mod aggregator;
pub mod cache;
pub mod config;
pub mod elevenlabs;
pub mod error;
pub mod espeak;
pub mod fallback;
pub mod kokoro;
pub mod language;
pub mod numbers;
mod onnx;
pub mod openai;
pub(crate) mod phonemes;
pub mod piper;
pub mod speak;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub use aggregator::{AggregatorConfig, SentenceAggregator};
pub use config::{ProviderKind, TtsConfig};
pub use error::TtsError;
pub use language::Language;

use crate::encode::{EncodeConfig, VoiceNote, VoiceNoteEncoder};

/// Mono speech from a provider, full scale ±1.0.
#[derive(Debug, Clone, PartialEq)]
pub struct AudioChunk {
    pub sample_rate: u32,
    pub samples: Vec<f32>,
}

impl AudioChunk {
    /// From signed 16-bit samples, the format every provider here sends.
    pub fn from_i16(sample_rate: u32, samples: &[i16]) -> Self {
        Self {
            sample_rate,
            samples: samples.iter().map(|&s| f32::from(s) / 32_768.0).collect(),
        }
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.samples.len() as f64 / f64::from(self.sample_rate.max(1)))
    }

    /// Not audio but a mark in the stream: the audio sent before it is void
    /// and the reply starts again with the chunks after it. A chain sends it
    /// when a voice fails mid-reply and the next voice speaks the whole
    /// reply again, since one note cannot change voice halfway. It is the
    /// one chunk at 0 Hz, a rate no audio has.
    pub fn restart() -> Self {
        Self {
            sample_rate: 0,
            samples: Vec::new(),
        }
    }

    pub fn is_restart(&self) -> bool {
        self.sample_rate == 0
    }
}

/// Encodes a reply's chunks into one voice note as they come, starting the
/// note again at an [`AudioChunk::restart`].
pub struct NoteAssembler<'a> {
    config: &'a EncodeConfig,
    encoder: Option<VoiceNoteEncoder>,
    bytes: Vec<u8>,
}

impl<'a> NoteAssembler<'a> {
    pub fn new(config: &'a EncodeConfig) -> Self {
        Self {
            config,
            encoder: None,
            bytes: Vec::new(),
        }
    }

    pub fn push(&mut self, chunk: &AudioChunk) -> Result<(), crate::encode::EncodeError> {
        if chunk.is_restart() {
            self.encoder = None;
            self.bytes.clear();
            return Ok(());
        }
        let encoder = match &mut self.encoder {
            Some(encoder) => encoder,
            None => self
                .encoder
                .insert(VoiceNoteEncoder::new(chunk.sample_rate, self.config)?),
        };
        self.bytes.extend(encoder.push(&chunk.samples)?);
        Ok(())
    }

    /// The finished note, or `None` when no audio came after the last
    /// restart.
    pub fn finish(self) -> Result<Option<VoiceNote>, crate::encode::EncodeError> {
        let Some(encoder) = self.encoder else {
            return Ok(None);
        };
        let mut bytes = self.bytes;
        let (tail, info) = encoder.finish()?;
        bytes.extend(tail);
        Ok(Some(VoiceNote { bytes, info }))
    }
}

/// What one reply is spoken as.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechRequest {
    pub language: Language,
}

/// How a reply went.
#[derive(Debug, Clone, PartialEq)]
pub struct SpeechReport {
    /// The provider that produced the audio.
    pub provider: String,
    /// From the first text chunk to the first audio chunk.
    pub first_audio: Option<Duration>,
    /// Length of the audio sent.
    pub audio: Duration,
}

/// A text-to-speech provider.
///
/// `speak` reads text chunks until the channel closes, sends audio on
/// `audio` as soon as it has some, and returns once all of it is sent. When
/// `cancel` fires it stops quickly and returns [`TtsError::Cancelled`].
/// Every chunk of one call has the same sample rate.
#[async_trait]
pub trait TextToSpeech: Send + Sync {
    /// Name in traces and metrics ("espeak", "openai", ...).
    fn name(&self) -> &str;

    /// Whether it has a voice for `language`. A chain passes over a
    /// provider that has none without counting a failure (Piper for a
    /// Spanish reply). Default: every language.
    fn speaks(&self, _language: Language) -> bool {
        true
    }

    async fn speak(
        &self,
        request: &SpeechRequest,
        text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError>;
}

/// Builds the provider chain the configuration asks for, without a speech
/// cache.
pub fn from_config(config: &TtsConfig) -> Result<fallback::FallbackTts, TtsError> {
    chain(config, None)
}

/// Builds the provider chain the configuration asks for; with `cache`, the
/// in-process voices (Piper, Kokoro, espeak-ng) reuse what they rendered.
pub fn chain(
    config: &TtsConfig,
    cache: Option<Arc<cache::SpeechCache>>,
) -> Result<fallback::FallbackTts, TtsError> {
    let mut providers: Vec<Arc<dyn TextToSpeech>> = Vec::new();
    for kind in &config.providers {
        let provider: Arc<dyn TextToSpeech> = match kind {
            ProviderKind::Piper => Arc::new(piper::PiperTts::load(&config.piper)?),
            ProviderKind::Kokoro => Arc::new(kokoro::KokoroTts::load(&config.kokoro)?),
            ProviderKind::Espeak => Arc::new(espeak::EspeakTts::start(&config.espeak)?),
            ProviderKind::Openai => Arc::new(openai::OpenAiTts::new(&config.openai)?),
            ProviderKind::Elevenlabs => {
                Arc::new(elevenlabs::ElevenLabsTts::new(&config.elevenlabs)?)
            }
        };
        let voices = voice_names(*kind, config);
        providers.push(match &cache {
            Some(cache) if !voices.is_empty() => {
                Arc::new(cache::CachedTts::new(provider, voices, Arc::clone(cache)))
            }
            _ => provider,
        });
    }
    Ok(fallback::FallbackTts::new(
        providers,
        config.fallback.clone(),
    ))
}

/// What an in-process voice's audio depends on besides the text, per
/// language it speaks: the model file (path and size), the voice, speed and
/// pauses. Remote providers have none: their audio is not cached.
fn voice_names(
    kind: ProviderKind,
    config: &TtsConfig,
) -> std::collections::HashMap<Language, String> {
    let model = |path: &std::path::Path, dir: &Option<std::path::PathBuf>| {
        let dir = dir.clone().unwrap_or_else(crate::models::default_dir);
        let path = onnx::resolve(path, &dir);
        let size = std::fs::metadata(&path).map_or(0, |m| m.len());
        format!("{}:{size}", path.display())
    };
    match kind {
        ProviderKind::Piper => {
            let piper = &config.piper;
            [(
                Language::En,
                format!(
                    "{}|{}ms",
                    model(&piper.model, &piper.models_dir),
                    piper.sentence_silence_ms
                ),
            )]
            .into()
        }
        ProviderKind::Kokoro => {
            let kokoro = &config.kokoro;
            let file = model(&kokoro.model, &kokoro.models_dir);
            kokoro
                .voices
                .iter()
                .map(|(language, voice)| {
                    (
                        *language,
                        format!(
                            "{file}|{voice}|{}|{}ms",
                            kokoro.speed, kokoro.sentence_silence_ms
                        ),
                    )
                })
                .collect()
        }
        ProviderKind::Espeak => match espeak::EspeakTts::start(&config.espeak) {
            Ok(espeak) => Language::ALL
                .iter()
                .map(|&language| (language, format!("{:?}", espeak.voice(language))))
                .collect(),
            Err(_) => Default::default(),
        },
        ProviderKind::Openai | ProviderKind::Elevenlabs => Default::default(),
    }
}

/// Speaks a whole reply text and encodes it as a voice note.
pub async fn voice_note(
    tts: &dyn TextToSpeech,
    text: &str,
    language: Language,
    encode: &EncodeConfig,
    cancel: CancellationToken,
) -> Result<(VoiceNote, SpeechReport), TtsError> {
    let (tokens_tx, tokens_rx) = mpsc::channel(1);
    // The channel has room for the one message.
    let _ = tokens_tx.try_send(text.to_string());
    drop(tokens_tx);
    speak_reply(tts, tokens_rx, language, encode, cancel).await
}

/// The voice side of a turn, with its stages overlapping: the dialog's
/// tokens are cut into speakable chunks as they arrive, each chunk is
/// synthesised while the next is still being written, and the audio is
/// encoded as it comes out, so the note is finished shortly after the last
/// token. On error the caller sends the reply as text.
pub async fn speak_reply(
    tts: &dyn TextToSpeech,
    tokens: mpsc::Receiver<String>,
    language: Language,
    encode: &EncodeConfig,
    cancel: CancellationToken,
) -> Result<(VoiceNote, SpeechReport), TtsError> {
    let (text_tx, text_rx) = mpsc::channel(8);
    let chunking =
        aggregator::speakable_chunks(tokens, text_tx, language, AggregatorConfig::default());

    let (audio_tx, mut audio_rx) = mpsc::channel::<AudioChunk>(32);
    let request = SpeechRequest { language };
    let speaking = tts.speak(&request, text_rx, audio_tx, cancel);

    let encoding = async {
        let mut note = NoteAssembler::new(encode);
        while let Some(chunk) = audio_rx.recv().await {
            note.push(&chunk)?;
        }
        Ok::<_, TtsError>(note)
    };
    let ((), report, encoded) = tokio::join!(chunking, speaking, encoding);
    // An encoder error stops the provider with a closed channel, so it is
    // the cause to report.
    let note = encoded?;
    let report = report?;
    let note = note.finish()?.ok_or(TtsError::NoAudio)?;
    Ok((note, report))
}

/// Tracks when audio started and how much went out, for a [`SpeechReport`].
#[derive(Debug)]
pub(crate) struct AudioClock {
    text_at: Option<Instant>,
    first_audio: Option<Duration>,
    audio_secs: f64,
}

impl AudioClock {
    pub(crate) fn new() -> Self {
        Self {
            text_at: None,
            first_audio: None,
            audio_secs: 0.0,
        }
    }

    pub(crate) fn text(&mut self) {
        self.text_at.get_or_insert_with(Instant::now);
    }

    pub(crate) fn audio(&mut self, chunk: &AudioChunk) {
        if self.first_audio.is_none() {
            self.first_audio = Some(self.text_at.map_or(Duration::ZERO, |t| t.elapsed()));
        }
        self.audio_secs += chunk.duration().as_secs_f64();
    }

    pub(crate) fn sent_audio(&self) -> bool {
        self.first_audio.is_some()
    }

    pub(crate) fn report(&self, provider: &str) -> SpeechReport {
        SpeechReport {
            provider: provider.to_string(),
            first_audio: self.first_audio,
            audio: Duration::from_secs_f64(self.audio_secs),
        }
    }
}
