//! The voice stage of a turn: the reply's text chunks in, an Ogg/Opus voice
//! note out, with its three budgets enforced as deadlines.
//!
//! The stages overlap and are joined by bounded channels: the dialog's
//! chunks → the sentence aggregator → the TTS provider → the Opus encoder
//! (on a blocking thread). The clock of `tts_first_audio` and `tts_total`
//! starts when the first speakable text reaches the provider (waiting for
//! the dialog is the dialog's budget); `encode` is the time from the last
//! audio to the finished file. A stage that runs over is cancelled (the
//! token reaches providers' own threads) and the turn sends the reply as
//! text, which is the one action these budgets allow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;

use super::budget::{Action, BudgetStage, Budgets};
use super::trace::{SpanOutcome, Stage, Trace};
use crate::encode::{EncodeConfig, NoteInfo};
use crate::tts::aggregator::{self, AggregatorConfig};
use crate::tts::{AudioChunk, Language, NoteAssembler, SpeechRequest, TextToSpeech};

/// Chunks between the stages; a reply is a few sentences, so these only
/// fill when a stage downstream stalls.
const IN_FLIGHT: usize = 16;

/// A finished voice note.
#[derive(Debug, Clone)]
pub struct SpokenNote {
    pub bytes: Vec<u8>,
    pub info: NoteInfo,
    pub provider: String,
}

/// Why there is no voice note.
#[derive(Debug, Clone, PartialEq)]
pub struct NoVoice {
    /// Where it failed: [`Stage::Tts`] or [`Stage::Encode`].
    pub stage: Stage,
    pub reason: String,
    /// The budget that ran out, when one did.
    pub overrun: Option<BudgetStage>,
}

/// What the voice stage did, with the instants the trace needs.
#[derive(Debug)]
pub struct VoiceRun {
    pub note: Result<SpokenNote, NoVoice>,
    /// When the first text reached the provider (the TTS span's start).
    pub first_text: Option<Instant>,
    pub first_audio: Option<Instant>,
    pub last_audio: Option<Instant>,
    /// When the stage ended, note finished or not.
    pub ended: Instant,
}

impl VoiceRun {
    /// Adds the `tts` and `encode` spans to `trace`; the one that failed
    /// carries the overrun or the error.
    pub fn record(&self, trace: &mut Trace) {
        let Some(start) = self.first_text else {
            return;
        };
        let outcome = |stage| match &self.note {
            Err(e) if e.stage == stage => match e.overrun {
                Some(budget) => SpanOutcome::Overrun {
                    budget,
                    action: Action::SendText,
                },
                None => SpanOutcome::Error {
                    reason: e.reason.clone(),
                },
            },
            _ => SpanOutcome::Ok,
        };
        let tts_end = self.last_audio.unwrap_or(self.ended);
        trace.record_full(
            Stage::Tts,
            start,
            self.first_audio,
            tts_end,
            outcome(Stage::Tts),
        );
        if let Some(first_audio) = self.first_audio {
            let encode = outcome(Stage::Encode);
            trace.record_full(Stage::Encode, first_audio, None, self.ended, encode);
        }
    }
}

/// Speaks `tokens` (the reply as it is written) into a voice note within
/// the `tts_first_audio`, `tts_total` and `encode` budgets.
pub async fn speak(
    tts: Arc<dyn TextToSpeech>,
    tokens: mpsc::Receiver<String>,
    language: Language,
    encode: &EncodeConfig,
    budgets: &Budgets,
    cancel: CancellationToken,
) -> VoiceRun {
    let (chunks_tx, mut chunks_rx) = mpsc::channel::<String>(IN_FLIGHT);
    let chunking = tokio::spawn(aggregator::speakable_chunks(
        tokens,
        chunks_tx,
        language,
        AggregatorConfig::default(),
    ));
    let (text_tx, text_rx) = mpsc::channel::<String>(IN_FLIGHT);
    let (audio_tx, mut audio_rx) = mpsc::channel::<AudioChunk>(IN_FLIGHT);
    let speaking = {
        let (tts, cancel) = (tts.clone(), cancel.clone());
        tokio::spawn(async move {
            tts.speak(&SpeechRequest { language }, text_rx, audio_tx, cancel)
                .await
        })
    };
    let (pcm_tx, pcm_rx) = mpsc::channel::<AudioChunk>(IN_FLIGHT);
    let encoding = {
        let config = encode.clone();
        tokio::task::spawn_blocking(move || encode_all(pcm_rx, &config))
    };

    let first_audio_budget = budgets.get(BudgetStage::TtsFirstAudio).duration();
    let total = budgets.get(BudgetStage::TtsTotal);
    // The audio spoken so far: `tts_total` grows with it.
    let mut spoken = Duration::ZERO;
    let mut run = VoiceRun {
        note: Err(NoVoice {
            stage: Stage::Tts,
            reason: "no speech".into(),
            overrun: None,
        }),
        first_text: None,
        first_audio: None,
        last_audio: None,
        ended: Instant::now(),
    };
    let mut text_tx = Some(text_tx);
    let mut pcm_tx = Some(pcm_tx);
    let mut text_open = true;
    let stopped: Option<NoVoice> = loop {
        let total_budget = total.for_audio(spoken.as_millis() as u64);
        // The deadline in force: none until text reaches the provider.
        let deadline = run.first_text.map(|t| match run.first_audio {
            None => (t + first_audio_budget).min(t + total_budget),
            Some(_) => t + total_budget,
        });
        let overrun_stage = if run.first_audio.is_none() && first_audio_budget <= total_budget {
            BudgetStage::TtsFirstAudio
        } else {
            BudgetStage::TtsTotal
        };
        let expired = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            chunk = chunks_rx.recv(), if text_open => match chunk {
                Some(chunk) => {
                    run.first_text.get_or_insert_with(Instant::now);
                    let Some(tx) = &text_tx else { continue };
                    let limit = deadline.unwrap_or_else(|| Instant::now() + total_budget);
                    match timeout_at(limit.into(), tx.send(chunk)).await {
                        Ok(Ok(())) => {}
                        // The provider stopped reading: its result says why.
                        Ok(Err(_)) => text_tx = None,
                        Err(_) => break Some(NoVoice {
            stage: Stage::Tts,
                            reason: "the speech provider stopped taking text".into(),
                            overrun: Some(overrun_stage),
                        }),
                    }
                }
                None => {
                    text_open = false;
                    text_tx = None;
                }
            },
            audio = audio_rx.recv() => match audio {
                Some(chunk) => {
                    let now = Instant::now();
                    run.first_audio.get_or_insert(now);
                    run.last_audio = Some(now);
                    spoken += chunk.duration();
                    if let Some(tx) = &pcm_tx {
                        if tx.send(chunk).await.is_err() {
                            // The encoder failed; its result says why.
                            pcm_tx = None;
                        }
                    }
                }
                None => break None,
            },
            () = expired => break Some(NoVoice {
            stage: Stage::Tts,
                reason: format!(
                    "speech ran over the {} budget",
                    overrun_stage.name()
                ),
                overrun: Some(overrun_stage),
            }),
        }
    };
    drop(pcm_tx);
    drop(text_tx);
    if let Some(stop) = stopped {
        cancel.cancel();
        speaking.abort();
        chunking.abort();
        run.ended = Instant::now();
        run.note = Err(stop);
        return run;
    }
    chunking.abort();
    let report = match speaking.await {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => {
            run.ended = Instant::now();
            run.note = Err(NoVoice {
                stage: Stage::Tts,
                reason: e.to_string(),
                overrun: None,
            });
            return run;
        }
        Err(e) => {
            run.ended = Instant::now();
            run.note = Err(NoVoice {
                stage: Stage::Tts,
                reason: format!("speech task failed: {e}"),
                overrun: None,
            });
            return run;
        }
    };
    let encode_deadline = Instant::now()
        + budgets
            .get(BudgetStage::Encode)
            .for_audio(spoken.as_millis() as u64);
    let encoded = timeout_at(encode_deadline.into(), encoding).await;
    run.ended = Instant::now();
    run.note = match encoded {
        Ok(Ok(Ok(Some((bytes, info))))) => Ok(SpokenNote {
            bytes,
            info,
            provider: report.provider,
        }),
        Ok(Ok(Ok(None))) => Err(NoVoice {
            stage: Stage::Tts,
            reason: format!("{} produced no audio", report.provider),
            overrun: None,
        }),
        Ok(Ok(Err(e))) => Err(NoVoice {
            stage: Stage::Encode,
            reason: format!("encoding failed: {e}"),
            overrun: None,
        }),
        Ok(Err(e)) => Err(NoVoice {
            stage: Stage::Encode,
            reason: format!("encoder thread failed: {e}"),
            overrun: None,
        }),
        Err(_) => Err(NoVoice {
            stage: Stage::Encode,
            reason: "encoding ran over its budget".into(),
            overrun: Some(BudgetStage::Encode),
        }),
    };
    run
}

/// The encoder's thread: PCM chunks in until the channel closes, the
/// finished file out (`None` when no audio came).
fn encode_all(
    mut pcm: mpsc::Receiver<AudioChunk>,
    config: &EncodeConfig,
) -> Result<Option<(Vec<u8>, NoteInfo)>, crate::encode::EncodeError> {
    let mut note = NoteAssembler::new(config);
    while let Some(chunk) = pcm.blocking_recv() {
        note.push(&chunk)?;
    }
    Ok(note.finish()?.map(|note| (note.bytes, note.info)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::budget::Budget;
    use crate::tts::{SpeechReport, TtsError};
    use std::time::Duration;

    /// A provider that speaks a tone per chunk, fails, never answers, or
    /// answers once and then stalls.
    enum Fake {
        Tone,
        Fails,
        Hangs,
        Stalls,
        /// Four 500 ms tones per chunk of text, each 200 ms after the last:
        /// 2.5 times faster than real time, and slower than a fixed budget.
        Steady,
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
            let tone = || AudioChunk {
                sample_rate: 16_000,
                samples: (0..8_000).map(|i| (i as f32 * 0.1).sin() * 0.3).collect(),
            };
            match self {
                Fake::Tone => {
                    while text.recv().await.is_some() {
                        audio.send(tone()).await.map_err(|_| TtsError::Cancelled)?;
                    }
                    Ok(SpeechReport {
                        provider: "fake".into(),
                        first_audio: Some(Duration::ZERO),
                        audio: Duration::from_millis(500),
                    })
                }
                Fake::Steady => {
                    while text.recv().await.is_some() {
                        for _ in 0..4 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            audio.send(tone()).await.map_err(|_| TtsError::Cancelled)?;
                        }
                    }
                    Ok(SpeechReport {
                        provider: "fake".into(),
                        first_audio: Some(Duration::from_millis(200)),
                        audio: Duration::from_millis(4_000),
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
                Fake::Stalls => {
                    text.recv().await;
                    audio.send(tone()).await.map_err(|_| TtsError::Cancelled)?;
                    cancel.cancelled().await;
                    Err(TtsError::Cancelled)
                }
            }
        }
    }

    fn budgets(first_audio_ms: u64, total_ms: u64) -> Budgets {
        let mut b = Budgets::default();
        let send_text = |ms| Budget::fixed(ms, Action::SendText);
        b.set(BudgetStage::TtsFirstAudio, send_text(first_audio_ms))
            .unwrap();
        b.set(BudgetStage::TtsTotal, send_text(total_ms)).unwrap();
        b
    }

    async fn run(tts: Fake, b: &Budgets) -> VoiceRun {
        run_with(Arc::new(tts), b).await
    }

    async fn run_with(tts: Arc<dyn TextToSpeech>, b: &Budgets) -> VoiceRun {
        let (tx, rx) = mpsc::channel(8);
        for t in ["Order 1842 ", "is on its way. ", "It arrives on Friday."] {
            tx.send(t.to_string()).await.unwrap();
        }
        drop(tx);
        speak(
            tts,
            rx,
            Language::En,
            &EncodeConfig::default(),
            b,
            CancellationToken::new(),
        )
        .await
    }

    #[tokio::test]
    async fn text_becomes_a_voice_note_with_its_spans() {
        let r = run(Fake::Tone, &Budgets::default()).await;
        let note = r.note.as_ref().expect("a voice note");
        assert!(note.bytes.starts_with(b"OggS"));
        assert!(note.info.duration_ms >= 500, "{:?}", note.info);
        let mut trace = Trace::start();
        r.record(&mut trace);
        let stages: Vec<_> = trace.spans.iter().map(|s| s.stage).collect();
        assert_eq!(stages, [Stage::Tts, Stage::Encode]);
        assert!(trace.spans.iter().all(|s| s.outcome == SpanOutcome::Ok));
        assert!(trace.spans[0].first_ms.is_some());
    }

    #[tokio::test]
    async fn a_provider_that_never_answers_is_cut_at_first_audio() {
        let b = budgets(150, 2_000);
        let started = Instant::now();
        let r = run(Fake::Hangs, &b).await;
        let waited = started.elapsed();
        assert!(waited < Duration::from_millis(1_000), "{waited:?}");
        let e = r.note.as_ref().unwrap_err();
        assert_eq!(e.overrun, Some(BudgetStage::TtsFirstAudio));
        let mut trace = Trace::start();
        r.record(&mut trace);
        assert_eq!(
            trace.spans[0].outcome,
            SpanOutcome::Overrun {
                budget: BudgetStage::TtsFirstAudio,
                action: Action::SendText
            }
        );
    }

    #[tokio::test]
    async fn a_stalled_stream_is_cut_at_the_total_budget() {
        let b = budgets(1_000, 300);
        let started = Instant::now();
        let r = run(Fake::Stalls, &b).await;
        assert!(started.elapsed() < Duration::from_millis(1_200));
        let e = r.note.unwrap_err();
        assert_eq!(e.overrun, Some(BudgetStage::TtsTotal), "{e:?}");
    }

    #[tokio::test]
    async fn the_total_budget_grows_with_the_audio_spoken() {
        // 8 tones of 500 ms over about 1.6 s: past a fixed 800 ms budget,
        // within 800 ms plus a second for every second spoken.
        let fixed = run(Fake::Steady, &budgets(5_000, 800)).await;
        let e = fixed.note.unwrap_err();
        assert_eq!(e.overrun, Some(BudgetStage::TtsTotal), "{e:?}");
        let mut b = budgets(5_000, 800);
        b.set(
            BudgetStage::TtsTotal,
            Budget {
                ms: 800,
                per_audio_s_ms: 1_000,
                action: Action::SendText,
            },
        )
        .unwrap();
        let grown = run(Fake::Steady, &b).await;
        let note = grown.note.expect("a voice note within the grown budget");
        assert!(note.info.duration_ms >= 2_000, "{:?}", note.info);
    }

    #[tokio::test]
    async fn a_voice_stalling_mid_reply_is_thrown_away_and_the_next_speaks_it_all() {
        let alone = run(Fake::Tone, &Budgets::default()).await;
        let alone = alone.note.expect("a voice note").info.duration_ms;
        let chain = crate::tts::fallback::FallbackTts::new(
            vec![Arc::new(Fake::Stalls), Arc::new(Fake::Tone)],
            crate::tts::config::FallbackConfig {
                first_audio_timeout_ms: 1_000,
                stall_timeout_ms: 200,
                restart_mid_reply: true,
            },
        );
        let r = run_with(Arc::new(chain), &Budgets::default()).await;
        let note = r.note.expect("a voice note");
        // The stalled voice's 500 ms are not in the note.
        assert_eq!(note.info.duration_ms, alone);
        let decoded = crate::media::load(&note.bytes, &crate::media::MediaConfig::default());
        assert!(decoded.is_ok(), "the note decodes: {:?}", decoded.err());
    }

    #[tokio::test]
    async fn a_failing_provider_gives_its_reason() {
        let r = run(Fake::Fails, &Budgets::default()).await;
        let e = r.note.unwrap_err();
        assert_eq!(e.overrun, None);
        assert!(e.reason.contains("connection refused"), "{e:?}");
    }
}
