//! What the speech benches share: one text spoken through a provider, the
//! audio counted. Included by `benches/tts.rs` and `benches/onnx_tuning.rs`.

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxline::tts::{AudioChunk, Language, SpeechReport, SpeechRequest, TextToSpeech};

/// Speaks `text`; returns the report and the seconds of audio.
pub async fn say(tts: &dyn TextToSpeech, text: &str, language: Language) -> (SpeechReport, f64) {
    let (text_tx, text_rx) = mpsc::channel(1);
    text_tx.send(text.to_string()).await.unwrap();
    drop(text_tx);
    let (audio_tx, mut audio_rx) = mpsc::channel::<AudioChunk>(64);
    let request = SpeechRequest { language };
    let collect = async {
        let mut seconds = 0.0;
        while let Some(chunk) = audio_rx.recv().await {
            if chunk.is_restart() {
                seconds = 0.0;
            }
            seconds += chunk.duration().as_secs_f64();
        }
        seconds
    };
    let (report, seconds) = tokio::join!(
        tts.speak(&request, text_rx, audio_tx, CancellationToken::new()),
        collect
    );
    (report.unwrap_or_else(|e| panic!("{e}")), seconds)
}
