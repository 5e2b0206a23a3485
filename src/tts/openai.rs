//! The OpenAI-compatible speech API: `POST {base}/v1/audio/speech` with
//! `model`, `input`, `voice` and `response_format`, answered with a streamed
//! body. OpenAI serves it, and so do self-hosted speech servers.
//!
//! One request per text chunk, in order; the body is read as it arrives,
//! with a timeout on the response head and on each body chunk, so a server
//! that stops sending is noticed within `read_timeout_ms`. `pcm` is signed
//! 16-bit little-endian mono at 24 kHz; `opus` is an Ogg/Opus stream,
//! decoded by [`crate::media::decode::StreamDecoder`] as it arrives.

use std::time::Duration;

use async_trait::async_trait;
use serde_json::json;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::{OpenAiConfig, OpenAiFormat};
use super::{AudioChunk, AudioClock, SpeechReport, SpeechRequest, TextToSpeech, TtsError};
use crate::media::decode::StreamDecoder;
use crate::media::MediaConfig;

const PROVIDER: &str = "openai";

/// The rate of `response_format: pcm`.
pub const PCM_RATE: u32 = 24_000;

/// The OpenAI-compatible HTTP provider.
#[derive(Debug, Clone)]
pub struct OpenAiTts {
    client: reqwest::Client,
    config: OpenAiConfig,
    url: String,
}

impl OpenAiTts {
    pub fn new(config: &OpenAiConfig) -> Result<Self, TtsError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.connect_timeout_ms))
            .build()
            .map_err(|e| TtsError::Unavailable {
                provider: PROVIDER.into(),
                reason: e.to_string(),
            })?;
        Ok(Self {
            client,
            url: format!("{}/v1/audio/speech", config.base_url.trim_end_matches('/')),
            config: config.clone(),
        })
    }

    fn transport(reason: impl ToString) -> TtsError {
        TtsError::Transport {
            provider: PROVIDER.into(),
            reason: reason.to_string(),
        }
    }

    fn timeout(&self, what: &'static str) -> TtsError {
        TtsError::Timeout {
            provider: PROVIDER.into(),
            what,
            after: Duration::from_millis(self.config.read_timeout_ms),
        }
    }

    /// Speaks one chunk, sending its audio on.
    async fn speak_chunk(
        &self,
        input: &str,
        audio: &mpsc::Sender<AudioChunk>,
        clock: &mut AudioClock,
    ) -> Result<(), TtsError> {
        let format = match self.config.format {
            OpenAiFormat::Pcm => "pcm",
            OpenAiFormat::Opus => "opus",
        };
        let mut request = self.client.post(&self.url).json(&json!({
            "model": self.config.model,
            "input": input,
            "voice": self.config.voice,
            "response_format": format,
        }));
        if let Some(key) = &self.config.api_key {
            request = request.bearer_auth(key);
        }
        let read_timeout = Duration::from_millis(self.config.read_timeout_ms);
        let mut response = tokio::time::timeout(read_timeout, request.send())
            .await
            .map_err(|_| self.timeout("response"))?
            .map_err(Self::transport)?;
        let status = response.status();
        if !status.is_success() {
            let body = tokio::time::timeout(read_timeout, response.text())
                .await
                .ok()
                .and_then(Result::ok)
                .unwrap_or_default();
            return Err(TtsError::Refused {
                provider: PROVIDER.into(),
                status: status.to_string(),
                message: error_message(&body),
            });
        }

        let mut body = Body::new(self.config.format);
        loop {
            let chunk = tokio::time::timeout(read_timeout, response.chunk())
                .await
                .map_err(|_| self.timeout("audio"))?
                .map_err(Self::transport)?;
            let Some(bytes) = chunk else { break };
            if let Some(samples) = body.push(&bytes)? {
                clock.audio(&samples);
                audio.send(samples).await.map_err(|_| TtsError::Cancelled)?;
            }
        }
        if let Some(samples) = body.finish()? {
            clock.audio(&samples);
            audio.send(samples).await.map_err(|_| TtsError::Cancelled)?;
        }
        Ok(())
    }
}

/// Turns body bytes into audio chunks.
enum Body {
    /// 16-bit samples may be split across body chunks.
    Pcm {
        odd_byte: Option<u8>,
    },
    Opus {
        decoder: Box<StreamDecoder>,
    },
}

impl Body {
    fn new(format: OpenAiFormat) -> Self {
        match format {
            OpenAiFormat::Pcm => Self::Pcm { odd_byte: None },
            OpenAiFormat::Opus => Self::Opus {
                decoder: Box::new(StreamDecoder::new(&MediaConfig::default())),
            },
        }
    }

    fn push(&mut self, bytes: &[u8]) -> Result<Option<AudioChunk>, TtsError> {
        match self {
            Self::Pcm { odd_byte } => {
                let mut joined = Vec::with_capacity(bytes.len() + 1);
                joined.extend(odd_byte.take());
                joined.extend_from_slice(bytes);
                let pairs = joined.chunks_exact(2);
                *odd_byte = pairs.remainder().first().copied();
                let samples: Vec<i16> = pairs.map(|p| i16::from_le_bytes([p[0], p[1]])).collect();
                Ok((!samples.is_empty()).then(|| AudioChunk::from_i16(PCM_RATE, &samples)))
            }
            Self::Opus { decoder } => {
                decoder.push(bytes).map_err(OpenAiTts::transport)?;
                Ok(decoder.take_pcm().and_then(mono))
            }
        }
    }

    fn finish(self) -> Result<Option<AudioChunk>, TtsError> {
        match self {
            Self::Pcm { .. } => Ok(None),
            Self::Opus { decoder } => Ok(mono(decoder.finish().map_err(OpenAiTts::transport)?)),
        }
    }
}

/// Downmixes decoded PCM to a mono chunk.
fn mono(pcm: crate::media::Pcm) -> Option<AudioChunk> {
    let channels = usize::from(pcm.channels.max(1));
    let samples: Vec<f32> = pcm
        .samples
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect();
    (!samples.is_empty()).then_some(AudioChunk {
        sample_rate: pcm.sample_rate,
        samples,
    })
}

/// The `error.message` of an OpenAI error body, else the body itself.
fn error_message(body: &str) -> String {
    serde_json::from_str::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v["error"]["message"].as_str().map(str::to_string))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

#[async_trait]
impl TextToSpeech for OpenAiTts {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn speak(
        &self,
        _request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
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
            tokio::select! {
                result = self.speak_chunk(&chunk, &audio, &mut clock) => result?,
                () = cancel.cancelled() => return Err(TtsError::Cancelled),
            }
        }
        Ok(clock.report(PROVIDER))
    }
}
