//! The voice side of a turn overlaps with the dialog: a fake streaming LLM
//! writes three sentences over 1.5 s, and the voice note must be finished
//! less than 400 ms after its last token. Only the last sentence is left to
//! speak by then; the test also prints the voice stage's time on the whole
//! text, what a sequential turn would add after the LLM.

use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxline::encode::EncodeConfig;
use voxline::media::{self, MediaConfig};
use voxline::tts::config::EspeakConfig;
use voxline::tts::espeak::EspeakTts;
use voxline::tts::{speak_reply, voice_note, Language};

const REPLY: &str = "Your order 1842 left our warehouse this morning. \
    It should reach you on Friday, 2026-11-27, before 14:30. \
    The total was €12.50, and nothing else is due.";

/// Sends `REPLY` a few characters at a time, evenly over `over`.
async fn fake_llm(tokens: mpsc::Sender<String>, over: Duration) -> Instant {
    let chars: Vec<char> = REPLY.chars().collect();
    let pieces: Vec<String> = chars.chunks(4).map(|c| c.iter().collect()).collect();
    let gap = over / pieces.len() as u32;
    for piece in pieces {
        tokio::time::sleep(gap).await;
        if tokens.send(piece).await.is_err() {
            break;
        }
    }
    Instant::now()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_note_is_ready_soon_after_the_last_token() {
    let tts = EspeakTts::start(&EspeakConfig::default()).unwrap();
    let encode = EncodeConfig::default();

    // Sequential reference: the whole text first, then speech and encoding.
    let started = Instant::now();
    let (note, _) = voice_note(&tts, REPLY, Language::En, &encode, CancellationToken::new())
        .await
        .unwrap();
    let sequential_voice = started.elapsed();

    let (tokens_tx, tokens_rx) = mpsc::channel(16);
    let started = Instant::now();
    let (last_token, result) = tokio::join!(
        fake_llm(tokens_tx, Duration::from_millis(1500)),
        speak_reply(
            &tts,
            tokens_rx,
            Language::En,
            &encode,
            CancellationToken::new()
        )
    );
    let finished = Instant::now();
    let (streamed, report) = result.unwrap();
    let after_last_token = finished - last_token;
    println!(
        "first audio {:?} after the first chunk; note ready {after_last_token:?} after the last token; \
         turn {:?}; voice stage alone after the text {sequential_voice:?} (sequential turn ≈ {:?})",
        report.first_audio.unwrap(),
        finished - started,
        Duration::from_millis(1500) + sequential_voice,
    );
    assert!(
        after_last_token < Duration::from_millis(400),
        "{after_last_token:?}"
    );
    assert!(streamed.info.duration_ms > 5_000);
    // The streamed note holds the same speech as the sequential one.
    let a = streamed.info.duration_ms as i64;
    let b = note.info.duration_ms as i64;
    assert!((a - b).abs() < 300, "{a} ms vs {b} ms");
    let prepared = media::load(&streamed.bytes, &MediaConfig::default()).unwrap();
    assert_eq!(prepared.outcome, media::SpeechOutcome::Speech);
}
