//! A Piper voice in process: the natural-sounding local English voice.
//!
//! Text is phonemised by libespeak-ng as Piper expects ([`phonemes`]),
//! mapped to the model's input ids by the voice's JSON config ([`voice`]),
//! and run through the voice's VITS model by ONNX Runtime, one sentence at
//! a time, so the first sentence is heard while the next is synthesised.
//! ONNX Runtime is the shared library that `models/fetch.sh` unpacks from
//! its wheel, loaded at start-up from the configured path; nothing is
//! linked or downloaded at build time.
//!
//! Inference is CPU-bound and runs on tokio's blocking threads; one model
//! is shared by all turns, one sentence at a time. Cancelling terminates the
//! running inference through its `RunOptions`.

pub mod voice;

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use ort::session::{RunOptions, Session};
use ort::value::Tensor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::PiperConfig;
use super::onnx::{infer_cancellable, not_found, resolve, session, warm_up, WARM_UP_PHONEMES};
use super::phonemes;
use super::{
    AudioChunk, AudioClock, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError,
};
use crate::models;
use voice::Voice;

const PROVIDER: &str = "piper";

fn unavailable(reason: impl ToString) -> TtsError {
    TtsError::Unavailable {
        provider: PROVIDER.into(),
        reason: reason.to_string(),
    }
}

/// A loaded voice: its config and its model.
struct Model {
    voice: Voice,
    session: Mutex<Session>,
    /// Multi-speaker models take a speaker id input.
    takes_speaker: bool,
}

impl Model {
    /// Synthesises one sentence's ids; blocking.
    fn synthesize(&self, ids: Vec<i64>, run: &RunOptions) -> Result<Vec<f32>, String> {
        let n = ids.len();
        let err = |e: ort::Error| e.to_string();
        let mut inputs = ort::inputs! {
            "input" => Tensor::from_array(([1usize, n], ids)).map_err(err)?,
            "input_lengths" => Tensor::from_array(([1usize], vec![n as i64])).map_err(err)?,
            "scales" => Tensor::from_array(([3usize], self.voice.scales.to_vec())).map_err(err)?,
        };
        if self.takes_speaker {
            let sid = Tensor::from_array(([1usize], vec![0i64])).map_err(err)?;
            inputs.push(("sid".into(), sid.into()));
        }
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run_with_options(inputs, run).map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        // Each sentence is brought to full scale, as Piper does: the model's
        // raw level is low and varies from sentence to sentence.
        let peak = audio.iter().fold(0.01f32, |m, s| m.max(s.abs()));
        Ok(audio.iter().map(|s| (s / peak).clamp(-1.0, 1.0)).collect())
    }
}

/// The Piper provider.
#[derive(Clone)]
pub struct PiperTts {
    model: Arc<Model>,
    sentence_silence: usize,
}

impl std::fmt::Debug for PiperTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PiperTts")
            .field("voice", &self.model.voice.espeak_voice)
            .field("sample_rate", &self.model.voice.sample_rate)
            .finish()
    }
}

impl PiperTts {
    /// Loads ONNX Runtime (once per process) and the voice. A missing file
    /// is an error naming it and the command that fetches it.
    pub fn load(config: &PiperConfig) -> Result<Self, TtsError> {
        let dir = config
            .models_dir
            .clone()
            .unwrap_or_else(models::default_dir);
        let model_path = resolve(&config.model, &dir);
        let mut json_path = OsString::from(model_path.as_os_str());
        json_path.push(".json");
        let json_path = PathBuf::from(json_path);
        let library = resolve(&config.onnxruntime, &dir);
        for (what, path) in [
            ("Piper voice model", &model_path),
            ("Piper voice config", &json_path),
            ("ONNX Runtime library", &library),
        ] {
            if !path.is_file() {
                return Err(unavailable(not_found(what, path)));
            }
        }
        let json = std::fs::read_to_string(&json_path)
            .map_err(|e| unavailable(format!("cannot read {}: {e}", json_path.display())))?;
        let voice = Voice::parse(&json)
            .map_err(|e| unavailable(format!("{}: {e}", json_path.display())))?;

        let (session, names) = session(
            &library,
            &model_path,
            config.threads,
            &config.onnx,
            "Piper",
            &["input", "input_lengths", "scales"],
        )
        .map_err(unavailable)?;
        let takes_speaker = names.iter().any(|n| n == "sid");
        let sentence_silence =
            (u64::from(voice.sample_rate) * u64::from(config.sentence_silence_ms) / 1000) as usize;
        let model = Arc::new(Model {
            voice,
            session: Mutex::new(session),
            takes_speaker,
        });
        if config.onnx.warm_up {
            let model = Arc::clone(&model);
            warm_up("piper", move |run| {
                let ids = model.voice.phoneme_ids(WARM_UP_PHONEMES);
                model.synthesize(ids, run).map(drop)
            });
        }
        Ok(Self {
            model,
            sentence_silence,
        })
    }

    pub fn sample_rate(&self) -> u32 {
        self.model.voice.sample_rate
    }

    /// The sentences of a text chunk, as IPA phonemes.
    async fn phonemes(
        &self,
        text: String,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, TtsError> {
        let voice = self.model.voice.espeak_voice.clone();
        let task = tokio::task::spawn_blocking(move || phonemes::sentences(&text, &voice, false));
        tokio::select! {
            done = task => done.map_err(|e| unavailable(format!("phonemizer: {e}")))?,
            () = cancel.cancelled() => Err(TtsError::Cancelled),
        }
    }

    /// Speaks one sentence of phonemes, on a blocking thread; cancelling
    /// terminates the inference.
    async fn sentence(
        &self,
        phonemes: &str,
        cancel: &CancellationToken,
    ) -> Result<AudioChunk, TtsError> {
        let ids = self.model.voice.phoneme_ids(phonemes);
        let model = Arc::clone(&self.model);
        let mut samples = infer_cancellable(cancel, move |run| model.synthesize(ids, run))
            .await
            .map_err(|s| s.into_tts(PROVIDER))?;
        samples.resize(samples.len() + self.sentence_silence, 0.0);
        Ok(AudioChunk {
            sample_rate: self.sample_rate(),
            samples,
        })
    }
}

#[async_trait]
impl TextToSpeech for PiperTts {
    fn name(&self) -> &str {
        PROVIDER
    }

    fn speaks(&self, language: Language) -> bool {
        language == Language::En
    }

    async fn speak(
        &self,
        request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        // The fallback chain moves on to the next provider (espeak-ng).
        if request.language != Language::En {
            return Err(unavailable(format!(
                "the Piper voice speaks English only, not {}",
                request.language
            )));
        }
        let mut clock = AudioClock::new();
        loop {
            let chunk = tokio::select! {
                chunk = text.recv() => chunk,
                () = cancel.cancelled() => return Err(TtsError::Cancelled),
            };
            let Some(chunk) = chunk else { break };
            if chunk.trim().is_empty() {
                continue;
            }
            clock.text();
            for sentence in self.phonemes(chunk, &cancel).await? {
                let samples = self.sentence(&sentence, &cancel).await?;
                clock.audio(&samples);
                if audio.send(samples).await.is_err() {
                    return Err(TtsError::Cancelled);
                }
            }
        }
        Ok(clock.report(PROVIDER))
    }
}
