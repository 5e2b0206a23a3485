//! The Piper voice (en_US-joe-medium on ONNX Runtime, both from
//! `./x setup`): its English sounds like speech, survives the voice-note
//! round trip (speakable pass, synthesis, Ogg/Opus, the project's decoder,
//! Whisper tiny.en) at 8% WER or better, stops promptly when cancelled,
//! hands other languages to espeak-ng in the default chain, and reports
//! missing files clearly.

mod support;

use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::speech::{rms, say, Cancels};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxline::encode::EncodeConfig;
use voxline::fixtures::{normalise_words, word_edits};
use voxline::media::{self, MediaConfig};
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig, TranscribeOptions};
use voxline::tts::config::PiperConfig;
use voxline::tts::piper::PiperTts;
use voxline::tts::speak::speakable;
use voxline::tts::{
    from_config, voice_note, Language, ProviderKind, SpeechRequest, TextToSpeech, TtsConfig,
    TtsError,
};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn config() -> PiperConfig {
    PiperConfig {
        models_dir: Some(models_dir()),
        ..PiperConfig::default()
    }
}

/// One voice for every test here: loading it takes a second or so.
fn piper() -> &'static PiperTts {
    static PIPER: OnceLock<PiperTts> = OnceLock::new();
    PIPER.get_or_init(|| PiperTts::load(&config()).unwrap_or_else(|e| panic!("{e}")))
}

fn english() -> SpeechRequest {
    SpeechRequest {
        language: Language::En,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_english_reply_sounds_like_speech() {
    let tts = piper();
    let text = [
        "Thanks for waiting. Your parcel left our warehouse this morning, \
                 and the courier will bring it to your door tomorrow afternoon.",
    ];
    let (chunks, report) = say(tts, &text, Language::En).await;
    let report = report.unwrap();
    assert_eq!(report.provider, "piper");
    assert!(report.first_audio.is_some());
    // One chunk per sentence, all at the voice's rate.
    assert_eq!(chunks.len(), 2, "{} chunks", chunks.len());
    assert!(chunks.iter().all(|c| c.sample_rate == 22_050));
    let samples: Vec<f32> = chunks.iter().flat_map(|c| c.samples.clone()).collect();

    // About 2 to 4 words a second, as people speak.
    let words = text[0].split_whitespace().count() as f32;
    let seconds = samples.len() as f32 / 22_050.0;
    println!("{words} words in {seconds:.2} s; RMS {:.3}", rms(&samples));
    assert!(
        seconds > words / 5.0 && seconds < words / 1.5,
        "{seconds:.2} s for {words} words"
    );
    assert!(rms(&samples) > 0.02, "RMS {:.4}: too quiet", rms(&samples));

    // Speech alternates loud voiced stretches with quiet ones (stops,
    // pauses); noise or a tone would not.
    let frames: Vec<f32> = samples.chunks(441).map(rms).collect();
    let loudest = frames.iter().cloned().fold(0.0, f32::max);
    let quiet = frames.iter().filter(|&&f| f < loudest * 0.1).count() as f32;
    let loud = frames.iter().filter(|&&f| f > loudest * 0.3).count() as f32;
    let n = frames.len() as f32;
    println!(
        "20 ms frames: {:.0}% quiet, {:.0}% loud",
        quiet / n * 100.0,
        loud / n * 100.0
    );
    assert!(quiet / n > 0.05, "no quiet frames: not speech-like");
    assert!(loud / n > 0.2, "few loud frames: not speech-like");
}

/// Corpus word errors of a transcript: each reply is scored against its
/// written form and its spoken form (numbers in words, as synthesised), the
/// better of the two, since Whisper writes numbers either way.
fn edits(written: &str, spoken: &str, heard: &str) -> (usize, usize) {
    let heard = normalise_words(heard);
    [written, spoken]
        .iter()
        .map(|reference| {
            let r = normalise_words(reference);
            (word_edits(&r, &heard), r.len())
        })
        .min_by(|a, b| (a.0 as f64 / a.1 as f64).total_cmp(&(b.0 as f64 / b.1 as f64)))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_replies_survive_the_voice_note_round_trip_within_8_percent_wer() {
    let stt = WhisperStt::load(&SttConfig {
        model: "tiny.en".into(),
        models_dir: Some(models_dir()),
        language: "en".into(),
        ..SttConfig::default()
    })
    .expect("run ./x setup to fetch the Whisper models");
    let replies = [
        "Your order 1842 is on its way and should arrive on Thursday.",
        "The blue running shoes are back in stock in size 42 and cost $59.99.",
        "We have 3 of those left. Would you like me to reserve one for you?",
        "Your refund of 25 dollars was sent today and should reach your card within 5 working days.",
        "Your delivery is booked for Monday at 10:30. Reply yes to confirm.",
    ];
    let (mut errors, mut words) = (0, 0);
    for reply in replies {
        // voice_note runs the same aggregator and speakable pass as a turn.
        let spoken = speakable(reply, Language::En);
        let (note, report) = voice_note(
            piper(),
            reply,
            Language::En,
            &EncodeConfig::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap();
        assert_eq!(report.provider, "piper");
        let prepared = media::load(&note.bytes, &MediaConfig::default()).unwrap();
        let options = TranscribeOptions {
            language: Some("en".into()),
            ..TranscribeOptions::default()
        };
        let heard = stt.transcribe(&prepared.samples, &options).unwrap().text;
        let (e, n) = edits(reply, &spoken, &heard);
        println!(
            "WER {:>5.1}%  said {spoken:?}\n             heard {heard:?}",
            e as f64 / n as f64 * 100.0
        );
        errors += e;
        words += n;
    }
    let wer = errors as f64 / words as f64;
    println!(
        "piper en_US-joe-medium → Ogg/Opus → tiny.en: corpus WER {:.1}% ({errors}/{words} words)",
        wer * 100.0
    );
    assert!(wer <= 0.08, "WER {:.1}%", wer * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_stops_promptly() {
    let tts = piper();
    let long = "This is a long sentence about your order, the parcel, the courier, \
                the roads they take and the time it will all take, \
                which goes on for quite a while before it ends.";
    let started = Instant::now();
    let (chunks, report) = say(tts, &[long], Language::En).await;
    report.unwrap();
    let full = started.elapsed();
    assert_eq!(chunks.len(), 1, "one sentence, one chunk");

    // Cancelled a tenth of the way into the same sentence's inference:
    // past phonemisation (a few ms), and early enough that a second run
    // faster than the first (the other tests here load the cores) is still
    // synthesising.
    let (text_tx, text_rx) = mpsc::channel(1);
    text_tx.send(long.to_string()).await.unwrap();
    let (audio_tx, mut audio_rx) = mpsc::channel(8);
    let cancel = CancellationToken::new();
    let request = english();
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
    assert!(took < Duration::from_millis(300), "took {took:?}");
    drop(text_tx);

    // The inference itself was terminated, not left to finish: it ends at
    // its current graph node, however loaded the cores are.
    cancels.assert_one_terminated(Duration::from_secs(30)).await;

    // The voice still speaks afterwards.
    let (chunks, report) = say(tts, &["Still here."], Language::En).await;
    report.unwrap();
    assert!(!chunks.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_languages_fall_back_to_espeak_in_the_natural_chain() {
    let (_, report) = say(piper(), &["Hola."], Language::Es).await;
    let error = report.unwrap_err().to_string();
    assert!(error.contains("English only"), "{error}");

    let mut config = natural_chain();
    config.piper.models_dir = Some(models_dir());
    let chain = from_config(&config).unwrap();
    assert_eq!(chain.providers().collect::<Vec<_>>(), ["piper", "espeak"]);
    let piper_failures = || {
        voxline::metrics::global()
            .encode()
            .lines()
            .filter(|l| l.contains("provider_errors") || l.contains("provider_fallbacks"))
            .filter(|l| l.contains("provider=\"piper\"") && !l.starts_with('#'))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>()
    };
    let before = piper_failures();
    let (chunks, report) = say(&chain, &["Su pedido está en camino."], Language::Es).await;
    assert_eq!(report.unwrap().provider, "espeak");
    assert!(!chunks.is_empty());
    // Piper has no Spanish voice: it is passed over, not tried and counted
    // as a failing provider.
    assert_eq!(piper_failures(), before);
    let (_, report) = say(&chain, &["Your order is on its way."], Language::En).await;
    assert_eq!(report.unwrap().provider, "piper");
}

/// `[tts] providers = ["piper", "espeak"]`: the Piper voice for English.
/// The tests here share two cores, so the chain waits long for Piper's
/// first audio rather than move on to espeak-ng because of the load.
fn natural_chain() -> TtsConfig {
    let mut config = TtsConfig {
        providers: vec![ProviderKind::Piper, ProviderKind::Espeak],
        ..TtsConfig::default()
    };
    config.fallback.first_audio_timeout_ms = 30_000;
    config.fallback.stall_timeout_ms = 30_000;
    config
}

#[test]
fn a_missing_model_or_library_is_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let missing = PiperConfig {
        models_dir: Some(empty.path().to_path_buf()),
        ..PiperConfig::default()
    };
    let error = PiperTts::load(&missing).unwrap_err().to_string();
    println!("{error}");
    assert!(error.contains("en_US-joe-medium.onnx"), "{error}");
    assert!(error.contains("./x setup"), "{error}");

    let no_library = PiperConfig {
        onnxruntime: empty.path().join("libonnxruntime.so"),
        ..config()
    };
    let error = PiperTts::load(&no_library).unwrap_err().to_string();
    println!("{error}");
    assert!(error.contains("ONNX Runtime library"), "{error}");
    assert!(error.contains("./x setup"), "{error}");

    // A chain that names Piper names the file too, rather than hiding a
    // broken set-up behind espeak-ng.
    let mut chain = natural_chain();
    chain.piper.models_dir = Some(empty.path().to_path_buf());
    let Err(error) = from_config(&chain) else {
        panic!("the chain started without the Piper voice");
    };
    let error = error.to_string();
    assert!(error.contains("./x setup"), "{error}");
}
