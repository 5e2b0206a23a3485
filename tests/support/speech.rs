//! Shared by the local-voice tests: speaking text chunks with a provider
//! and measuring the audio.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxline::tts::{AudioChunk, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError};

/// Speaks `chunks` with `tts`; returns the audio and the report.
pub async fn say(
    tts: &dyn TextToSpeech,
    chunks: &[&str],
    language: Language,
) -> (Vec<AudioChunk>, Result<SpeechReport, TtsError>) {
    let (text_tx, text_rx) = mpsc::channel(8);
    for chunk in chunks {
        text_tx.send(chunk.to_string()).await.unwrap();
    }
    drop(text_tx);
    let (audio_tx, mut audio_rx) = mpsc::channel::<AudioChunk>(8);
    let collect = async {
        let mut out = Vec::new();
        while let Some(chunk) = audio_rx.recv().await {
            // A chain restarting the reply with its next voice voids the
            // audio before.
            if chunk.is_restart() {
                out.clear();
            } else {
                out.push(chunk);
            }
        }
        out
    };
    let request = SpeechRequest { language };
    let (report, audio) = tokio::join!(
        tts.speak(&request, text_rx, audio_tx, CancellationToken::new()),
        collect
    );
    (audio, report)
}

/// Root mean square of `samples`.
pub fn rms(samples: &[f32]) -> f32 {
    (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt()
}

/// The cancelled-inference counts before a cancel, to check after it that
/// the cancelled run was terminated rather than left to finish.
pub struct Cancels {
    terminated: u64,
    finished: u64,
}

impl Cancels {
    pub fn now() -> Self {
        let metrics = voxline::metrics::global();
        Self {
            terminated: metrics.cancelled_inferences(true),
            finished: metrics.cancelled_inferences(false),
        }
    }

    /// Waits up to `within` for the cancelled run to end, then asserts it
    /// ended terminated: it stops at its current graph node, however loaded
    /// the cores are, so how it ended is checked, not when.
    pub async fn assert_one_terminated(&self, within: Duration) {
        let metrics = voxline::metrics::global();
        let deadline = Instant::now() + within;
        while metrics.cancelled_inferences(true) + metrics.cancelled_inferences(false)
            == self.terminated + self.finished
        {
            assert!(Instant::now() < deadline, "the cancelled run never ended");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(metrics.cancelled_inferences(true), self.terminated + 1);
        assert_eq!(metrics.cancelled_inferences(false), self.finished);
    }
}
