//! The voice-reply stage: a [`Respond`] wrapper that speaks a reply its
//! provider marked [spoken](Reply::spoken) and packs it as an Ogg/Opus voice
//! note ([`Reply::voice`]), in the language of the customer's note.
//!
//! The wrapped provider (the dialog) knows nothing of speech, and the
//! [`TextToSpeech`] provider knows nothing of turns: this module composes
//! them and owns the deadline. Speech that fails, or takes longer than
//! `[tts] budget_ms`, is cancelled and the reply goes out as its text, with
//! the reason in the log. Only a voice note with speech is answered by
//! voice; typed messages keep getting text.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;

use super::reply::{Reply, Respond, Said};
use crate::channel::InboundMessage;
use crate::encode::EncodeConfig;
use crate::tts::{self, Language, TextToSpeech};

/// Speaks the replies of `respond` that are meant to be spoken.
pub struct VoiceReply {
    respond: Arc<dyn Respond>,
    tts: Arc<dyn TextToSpeech>,
    encode: EncodeConfig,
    budget: Duration,
}

impl VoiceReply {
    pub fn new(
        respond: Arc<dyn Respond>,
        tts: Arc<dyn TextToSpeech>,
        encode: EncodeConfig,
        budget: Duration,
    ) -> Self {
        Self {
            respond,
            tts,
            encode,
            budget,
        }
    }

    /// The voice note for `text`, or why there is none.
    async fn speak(&self, text: &str, language: Language) -> Result<Bytes, String> {
        let cancel = CancellationToken::new();
        let spoken = tokio::time::timeout(
            self.budget,
            tts::voice_note(
                self.tts.as_ref(),
                text,
                language,
                &self.encode,
                cancel.clone(),
            ),
        )
        .await;
        match spoken {
            Ok(Ok((note, report))) => {
                tracing::info!(
                    provider = %report.provider,
                    first_audio_ms = report.first_audio.map(|d| d.as_millis() as u64),
                    audio_ms = report.audio.as_millis() as u64,
                    bytes = note.bytes.len(),
                    truncated = note.info.truncated,
                    "reply spoken"
                );
                Ok(Bytes::from(note.bytes))
            }
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => {
                // Dropping the future already stops it; the token also
                // reaches work a provider runs on other threads.
                cancel.cancel();
                Err(format!(
                    "no voice note within the budget of {} ms",
                    self.budget.as_millis()
                ))
            }
        }
    }
}

#[async_trait::async_trait]
impl Respond for VoiceReply {
    async fn respond(&self, message: &InboundMessage, said: &Said) -> Reply {
        let mut reply = self.respond.respond(message, said).await;
        let Said::Speech(transcript) = said else {
            return reply;
        };
        if !reply.spoken || reply.voice.is_some() || reply.is_silent() {
            return reply;
        }
        let Some(language) = Language::from_code(&transcript.language) else {
            tracing::warn!(
                language = %transcript.language,
                "no voice for the note's language; sending the reply as text"
            );
            return reply;
        };
        let started = Instant::now();
        match self.speak(&reply.text, language).await {
            Ok(voice) => reply.voice = Some(voice),
            Err(reason) => tracing::warn!(
                reason = %reason,
                tts_ms = started.elapsed().as_millis() as u64,
                "could not speak the reply; sending it as text"
            ),
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Content;
    use crate::stt::{Transcript, Window};
    use crate::tts::{AudioChunk, SpeechReport, SpeechRequest, TtsError};
    use tokio::sync::mpsc;

    /// Answers every message with a reply the provider wants spoken.
    struct Spoken;

    #[async_trait::async_trait]
    impl Respond for Spoken {
        async fn respond(&self, _: &InboundMessage, said: &Said) -> Reply {
            match said {
                Said::Speech(_) => Reply::spoken("Order 1842 is on its way."),
                _ => Reply::text("Order 1842 is on its way."),
            }
        }
    }

    /// A provider that speaks a tone, fails, or never answers.
    enum Fake {
        Tone,
        Fails,
        Hangs,
    }

    #[async_trait::async_trait]
    impl TextToSpeech for Fake {
        fn name(&self) -> &str {
            "fake"
        }

        async fn speak(
            &self,
            _: &SpeechRequest,
            mut text: mpsc::Receiver<String>,
            audio: mpsc::Sender<AudioChunk>,
            cancel: CancellationToken,
        ) -> Result<SpeechReport, TtsError> {
            match self {
                Fake::Tone => {
                    while text.recv().await.is_some() {
                        let samples = (0..16_000).map(|i| (i as f32 * 0.1).sin() * 0.3).collect();
                        let chunk = AudioChunk {
                            sample_rate: 16_000,
                            samples,
                        };
                        audio.send(chunk).await.map_err(|_| TtsError::Cancelled)?;
                    }
                    Ok(SpeechReport {
                        provider: "fake".into(),
                        first_audio: Some(Duration::ZERO),
                        audio: Duration::from_secs(1),
                    })
                }
                Fake::Fails => Err(TtsError::Unavailable {
                    provider: "fake".into(),
                    reason: "connection refused".into(),
                }),
                Fake::Hangs => {
                    cancel.cancelled().await;
                    Err(TtsError::Cancelled)
                }
            }
        }
    }

    fn voice(tts: Fake) -> VoiceReply {
        VoiceReply::new(
            Arc::new(Spoken),
            Arc::new(tts),
            EncodeConfig::default(),
            Duration::from_millis(200),
        )
    }

    fn inbound() -> InboundMessage {
        InboundMessage {
            id: "w1".into(),
            from: "15550001842".into(),
            to: "106540352242922".into(),
            timestamp: 1_744_344_496,
            profile_name: None,
            content: Content::Text {
                body: String::new(),
            },
        }
    }

    fn speech(language: &str) -> Said {
        Said::Speech(Transcript {
            language: language.into(),
            text: "Where is my order 1842?".into(),
            segments: Vec::new(),
            confidence: 0.9,
            no_speech_probability: 0.0,
            window: Window::Full,
        })
    }

    #[tokio::test]
    async fn a_spoken_reply_to_a_voice_note_carries_a_voice_note() {
        let reply = voice(Fake::Tone).respond(&inbound(), &speech("en")).await;
        let ogg = reply.voice.expect("a voice note");
        assert!(ogg.starts_with(b"OggS"));
        assert_eq!(reply.text, "Order 1842 is on its way.");
    }

    #[tokio::test]
    async fn typed_messages_and_unknown_languages_get_text() {
        let v = voice(Fake::Tone);
        let typed = v.respond(&inbound(), &Said::Text("x".into())).await;
        assert!(typed.voice.is_none());
        let klingon = v.respond(&inbound(), &speech("tlh")).await;
        assert!(klingon.voice.is_none());
        assert_eq!(klingon.text, "Order 1842 is on its way.");
    }

    #[tokio::test]
    async fn failed_or_late_speech_falls_back_to_text() {
        for tts in [Fake::Fails, Fake::Hangs] {
            let started = Instant::now();
            let reply = voice(tts).respond(&inbound(), &speech("en")).await;
            assert!(reply.voice.is_none());
            assert_eq!(reply.text, "Order 1842 is on its way.");
            assert!(started.elapsed() < Duration::from_secs(2));
        }
    }
}
