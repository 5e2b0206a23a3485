//! A chain of providers, tried in order. Each attempt must produce its first
//! audio within `first_audio_timeout_ms` of its first text; a provider that
//! fails or stays silent before that is abandoned and the next one gets the
//! whole text so far. A provider that fails or stalls (`stall_timeout_ms`)
//! after its audio has gone out is abandoned too: one note cannot change
//! voice halfway, so the chain sends [`AudioChunk::restart`] and the next
//! provider speaks the whole reply again (with `restart_mid_reply`, the
//! default). When the last provider fails mid-reply the error is
//! [`TtsError::Interrupted`]; when every provider fails before any audio it
//! is [`TtsError::AllFailed`]. Either way the caller sends the reply as
//! text.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::config::FallbackConfig;
use super::{AudioChunk, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError};

pub struct FallbackTts {
    providers: Vec<Arc<dyn TextToSpeech>>,
    config: FallbackConfig,
}

impl FallbackTts {
    pub fn new(providers: Vec<Arc<dyn TextToSpeech>>, config: FallbackConfig) -> Self {
        Self { providers, config }
    }

    pub fn providers(&self) -> impl Iterator<Item = &str> {
        self.providers.iter().map(|p| p.name())
    }
}

/// Why an attempt stopped.
enum Outcome {
    Spoke(SpeechReport),
    /// Failed with no audio sent: the next provider may try.
    FailedSilently(TtsError),
    /// Failed after some of its audio went out: the next provider may speak
    /// the reply again from its start.
    FailedMidReply(TtsError),
    Failed(TtsError),
}

#[async_trait]
impl TextToSpeech for FallbackTts {
    fn name(&self) -> &str {
        "fallback"
    }

    fn speaks(&self, language: Language) -> bool {
        self.providers.iter().any(|p| p.speaks(language))
    }

    async fn speak(
        &self,
        request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        // Every chunk read so far, to replay to the next provider.
        let mut replay: Vec<String> = Vec::new();
        let mut text_done = false;
        let mut failures = Vec::new();
        // Providers without a voice for the language are passed over, not
        // tried and counted as failing.
        let able: Vec<&Arc<dyn TextToSpeech>> = self
            .providers
            .iter()
            .filter(|p| p.speaks(request.language))
            .collect();
        if able.is_empty() {
            return Err(TtsError::AllFailed(vec![format!(
                "no provider speaks {}",
                request.language.code()
            )]));
        }
        for (index, provider) in able.iter().enumerate() {
            let last = index + 1 == able.len();
            let outcome = self
                .attempt(
                    provider.as_ref(),
                    request,
                    &mut replay,
                    &mut text,
                    &mut text_done,
                    &audio,
                    &cancel,
                )
                .await;
            match outcome {
                Outcome::Spoke(report) => return Ok(report),
                Outcome::Failed(TtsError::Cancelled)
                | Outcome::FailedSilently(TtsError::Cancelled)
                | Outcome::FailedMidReply(TtsError::Cancelled) => return Err(TtsError::Cancelled),
                Outcome::Failed(error) => {
                    crate::metrics::global().provider_error("tts", provider.name());
                    return Err(error);
                }
                Outcome::FailedMidReply(error) if last || !self.config.restart_mid_reply => {
                    crate::metrics::global().provider_error("tts", provider.name());
                    return Err(TtsError::Interrupted {
                        provider: provider.name().to_string(),
                        reason: error.to_string(),
                    });
                }
                Outcome::FailedMidReply(error) => {
                    let metrics = crate::metrics::global();
                    metrics.provider_error("tts", provider.name());
                    metrics.provider_fallback("tts", provider.name());
                    tracing::warn!(provider = provider.name(), %error, "TTS provider failed mid-reply; the next speaks it again");
                    if audio.send(AudioChunk::restart()).await.is_err() {
                        return Err(TtsError::Cancelled);
                    }
                    failures.push(format!("{}: {error}", provider.name()));
                }
                Outcome::FailedSilently(error) => {
                    let metrics = crate::metrics::global();
                    metrics.provider_error("tts", provider.name());
                    metrics.provider_fallback("tts", provider.name());
                    tracing::warn!(provider = provider.name(), %error, "TTS provider failed; trying the next");
                    failures.push(format!("{}: {error}", provider.name()));
                }
            }
        }
        Err(TtsError::AllFailed(failures))
    }
}

impl FallbackTts {
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        provider: &dyn TextToSpeech,
        request: &SpeechRequest,
        replay: &mut Vec<String>,
        text: &mut mpsc::Receiver<String>,
        text_done: &mut bool,
        audio: &mpsc::Sender<AudioChunk>,
        cancel: &CancellationToken,
    ) -> Outcome {
        let first_audio_timeout = Duration::from_millis(self.config.first_audio_timeout_ms);
        let stall_timeout = Duration::from_millis(self.config.stall_timeout_ms);
        let (to_provider, provider_text) = mpsc::channel(64);
        let mut to_provider = Some(to_provider);
        for chunk in replay.iter() {
            if let Some(tx) = &to_provider {
                let _ = tx.send(chunk.clone()).await;
            }
        }
        if *text_done {
            to_provider = None;
        }
        let (provider_audio, mut from_provider) = mpsc::channel::<AudioChunk>(32);
        let attempt_cancel = cancel.child_token();
        let speaking = provider.speak(
            request,
            provider_text,
            provider_audio,
            attempt_cancel.clone(),
        );
        tokio::pin!(speaking);

        // The first-audio clock starts with the first text the provider has.
        let mut deadline = (!replay.is_empty()).then(|| Instant::now() + first_audio_timeout);
        let mut audio_sent = false;
        let mut result = None;
        let mut audio_open = true;
        loop {
            let timer = deadline.unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
            tokio::select! {
                () = cancel.cancelled() => {
                    attempt_cancel.cancel();
                    return Outcome::Failed(TtsError::Cancelled);
                }
                chunk = text.recv(), if !*text_done => match chunk {
                    Some(chunk) => {
                        if deadline.is_none() {
                            deadline = Some(Instant::now() + first_audio_timeout);
                        }
                        replay.push(chunk.clone());
                        if let Some(tx) = &to_provider {
                            let _ = tx.send(chunk).await;
                        }
                    }
                    None => {
                        *text_done = true;
                        to_provider = None;
                    }
                },
                samples = from_provider.recv(), if audio_open => match samples {
                    Some(samples) => {
                        audio_sent = true;
                        deadline = Some(Instant::now() + stall_timeout);
                        if audio.send(samples).await.is_err() {
                            attempt_cancel.cancel();
                            return Outcome::Failed(TtsError::Cancelled);
                        }
                    }
                    None => audio_open = false,
                },
                done = &mut speaking, if result.is_none() => {
                    result = Some(done);
                    // Audio still queued in the channel is forwarded first.
                    deadline = Some(Instant::now() + stall_timeout);
                }
                () = tokio::time::sleep_until(timer), if deadline.is_some() => {
                    attempt_cancel.cancel();
                    let (what, after) = if audio_sent {
                        ("audio for a while", stall_timeout)
                    } else {
                        ("first audio", first_audio_timeout)
                    };
                    let error = TtsError::Timeout { provider: provider.name().to_string(), what, after };
                    return Self::failed(error, audio_sent);
                }
            }
            if audio_open {
                continue;
            }
            if let Some(done) = result.take() {
                return match done {
                    Ok(report) if audio_sent => Outcome::Spoke(report),
                    Ok(_) if replay.is_empty() => Outcome::Spoke(SpeechReport {
                        provider: provider.name().to_string(),
                        first_audio: None,
                        audio: Duration::ZERO,
                    }),
                    Ok(_) => Outcome::FailedSilently(TtsError::NoAudio),
                    Err(error) => Self::failed(error, audio_sent),
                };
            }
        }
    }

    fn failed(error: TtsError, audio_sent: bool) -> Outcome {
        if audio_sent {
            Outcome::FailedMidReply(error)
        } else {
            Outcome::FailedSilently(error)
        }
    }
}
