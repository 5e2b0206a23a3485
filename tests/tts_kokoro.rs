//! The Kokoro voice (Kokoro-82M int8 on ONNX Runtime, both from
//! `./x setup`): its Italian sounds like speech at 24 kHz, a sentence at a
//! time; cancelling stops it promptly; English goes on to the next provider
//! in the natural chain; and missing files are clear errors. Its round trip
//! through Whisper is in `tests/tts_roundtrip.rs`.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::speech::{rms, say, Cancels};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxline::tts::config::KokoroConfig;
use voxline::tts::kokoro::{KokoroTts, SAMPLE_RATE};
use voxline::tts::{
    from_config, Language, ProviderKind, SpeechRequest, TextToSpeech, TtsConfig, TtsError,
};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn config() -> KokoroConfig {
    KokoroConfig {
        models_dir: Some(models_dir()),
        ..KokoroConfig::default()
    }
}

/// One voice for every test here: loading it takes a second or so.
fn kokoro() -> &'static KokoroTts {
    static KOKORO: OnceLock<KokoroTts> = OnceLock::new();
    KOKORO.get_or_init(|| KokoroTts::load(&config()).unwrap_or_else(|e| panic!("{e}")))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_italian_reply_sounds_like_speech_one_sentence_at_a_time() {
    let (chunks, report) = say(
        kokoro(),
        &["Il suo ordine è in viaggio. Arriva venerdì mattina."],
        Language::It,
    )
    .await;
    let report = report.unwrap();
    assert_eq!(report.provider, "kokoro");
    assert_eq!(chunks.len(), 2, "one chunk per sentence");
    assert!(chunks.iter().all(|c| c.sample_rate == SAMPLE_RATE));
    let samples: Vec<f32> = chunks.iter().flat_map(|c| c.samples.clone()).collect();
    let seconds = samples.len() as f64 / f64::from(SAMPLE_RATE);
    assert!((1.5..12.0).contains(&seconds), "{seconds:.1} s of audio");
    assert!(samples.iter().all(|s| s.is_finite() && s.abs() <= 1.0));

    // Speech comes in syllables: loud 20 ms frames and quiet ones, not a
    // steady tone or noise, and not silence.
    let frames: Vec<f32> = samples.chunks(SAMPLE_RATE as usize / 50).map(rms).collect();
    let loudest = frames.iter().copied().fold(0.0, f32::max);
    let loud = frames.iter().filter(|&&r| r > loudest * 0.3).count();
    let quiet = frames.iter().filter(|&&r| r < loudest * 0.05).count();
    println!(
        "{seconds:.1} s, first audio after {:?}, loudest frame rms {loudest:.3}, {loud} loud and {quiet} quiet of {} frames",
        report.first_audio,
        frames.len()
    );
    assert!(loudest > 0.05, "too quiet: {loudest}");
    assert!(
        loud * 5 > frames.len(),
        "{loud} loud frames of {}",
        frames.len()
    );
    assert!(
        quiet * 20 > frames.len(),
        "{quiet} quiet frames of {}",
        frames.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_promptly() {
    let tts = kokoro();
    // One sentence with no clause to speak apart: one inference.
    let long = "Questa è una frase lunga sul suo ordine e il pacco e il corriere \
                e le strade che prende e il tempo che ci vorrà per tutto quanto.";
    let started = Instant::now();
    let (chunks, report) = say(tts, &[long], Language::It).await;
    report.unwrap();
    let full = started.elapsed();
    assert_eq!(chunks.len(), 1, "one sentence, one chunk");

    // Cancelled a tenth of the way in, as for Piper (tests/tts_piper.rs).
    let (text_tx, text_rx) = mpsc::channel(1);
    text_tx.send(long.to_string()).await.unwrap();
    let (audio_tx, mut audio_rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let request = SpeechRequest {
        language: Language::It,
    };
    let cancels = Cancels::now();
    let speaking = tts.speak(&request, text_rx, audio_tx, cancel.clone());
    let stopper = async {
        tokio::time::sleep(full / 10).await;
        let at = Instant::now();
        cancel.cancel();
        let mut heard = 0;
        while audio_rx.recv().await.is_some() {
            heard += 1;
        }
        (at, heard)
    };
    let (result, (cancelled_at, heard)) = tokio::join!(speaking, stopper);
    let took = cancelled_at.elapsed();
    println!(
        "the sentence takes {:.0} ms; cancelled at {:.0} ms, stopped {:.0} ms later",
        full.as_secs_f64() * 1000.0,
        (full / 10).as_secs_f64() * 1000.0,
        took.as_secs_f64() * 1000.0
    );
    assert!(matches!(result, Err(TtsError::Cancelled)), "{result:?}");
    assert_eq!(heard, 0, "no audio after the cancel");
    // The call returns at once; ONNX Runtime sees the terminate flag
    // between kernels, and one of Kokoro's (the duration LSTM, the
    // decoder's convolutions over 24 kHz audio) can run a second or more on
    // two loaded cores, so the run itself is checked by how it ended, not
    // by when.
    assert!(took < Duration::from_millis(300), "took {took:?}");
    cancels.assert_one_terminated(Duration::from_secs(60)).await;
    drop(text_tx);

    let (chunks, report) = say(tts, &["Ci sono ancora."], Language::It).await;
    report.unwrap();
    assert!(!chunks.is_empty());
}

/// `[tts] providers = ["piper", "kokoro", "espeak"]`: a natural voice for
/// every reply language. The tests here share the two cores and one model,
/// so the chain waits long for first audio, as a deployment of Kokoro on a
/// small machine must too (README, "The Kokoro voice").
fn natural_chain() -> TtsConfig {
    let mut config = TtsConfig {
        providers: vec![
            ProviderKind::Piper,
            ProviderKind::Kokoro,
            ProviderKind::Espeak,
        ],
        ..TtsConfig::default()
    };
    config.piper.models_dir = Some(models_dir());
    config.kokoro.models_dir = Some(models_dir());
    config.fallback.first_audio_timeout_ms = 30_000;
    config.fallback.stall_timeout_ms = 30_000;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_language_goes_to_its_natural_voice_in_the_chain() {
    let (_, report) = say(kokoro(), &["Hello."], Language::En).await;
    let error = report.unwrap_err().to_string();
    assert!(error.contains("no Kokoro voice"), "{error}");

    let chain = from_config(&natural_chain()).unwrap();
    assert_eq!(
        chain.providers().collect::<Vec<_>>(),
        ["piper", "kokoro", "espeak"]
    );
    for (language, text, provider) in [
        (Language::En, "Your order is on its way.", "piper"),
        (Language::Fr, "Votre commande est en route.", "kokoro"),
        (Language::Pt, "O seu pedido está a caminho.", "kokoro"),
    ] {
        let (chunks, report) = say(&chain, &[text], language).await;
        assert_eq!(report.unwrap().provider, provider, "{language}");
        assert!(!chunks.is_empty());
    }

    // A language without a Kokoro voice in the config goes on to espeak-ng.
    let mut config = natural_chain();
    config.kokoro.voices.remove(&Language::Es);
    let chain = from_config(&config).unwrap();
    let (_, report) = say(&chain, &["Su pedido está en camino."], Language::Es).await;
    assert_eq!(report.unwrap().provider, "espeak");
}

#[test]
fn missing_or_wrong_files_are_clear_errors() {
    let empty = tempfile::tempdir().unwrap();
    let missing = KokoroConfig {
        models_dir: Some(empty.path().to_path_buf()),
        ..KokoroConfig::default()
    };
    let error = KokoroTts::load(&missing).unwrap_err().to_string();
    println!("{error}");
    assert!(error.contains("kokoro-v1.0.int8.onnx"), "{error}");
    assert!(error.contains("./x setup"), "{error}");

    let mut no_voice = config();
    no_voice.voices.insert(Language::It, "it_nobody".into());
    let error = KokoroTts::load(&no_voice).unwrap_err().to_string();
    assert!(error.contains("it_nobody.npy"), "{error}");

    let bad = empty.path().join("bad.npy");
    std::fs::write(&bad, b"\x93NUMPY\x01\x00\x10\x00{'descr': '<f8'}").unwrap();
    let mut bad_voice = config();
    bad_voice.voices_dir = empty.path().to_path_buf();
    bad_voice.voices = [(Language::It, "bad".to_string())].into();
    let error = KokoroTts::load(&bad_voice).unwrap_err().to_string();
    println!("{error}");
    assert!(error.contains("bad.npy"), "{error}");

    let fast = KokoroConfig {
        speed: 5.0,
        ..config()
    };
    let error = KokoroTts::load(&fast).unwrap_err().to_string();
    assert!(error.contains("speed"), "{error}");
}
