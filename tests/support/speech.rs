//! Shared by the local-voice tests: speaking text chunks with a provider
//! and measuring the audio.

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
    let (audio_tx, mut audio_rx) = mpsc::channel(8);
    let collect = async {
        let mut out = Vec::new();
        while let Some(chunk) = audio_rx.recv().await {
            out.push(chunk);
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
