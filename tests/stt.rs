//! Transcription with the real converted Whisper models on the committed
//! fixtures. The models come from `./x setup` (models/fetch.sh); a missing
//! model fails the test with the command to run.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use voxline::fixtures::{normalise_words, word_edits, Condition, Fixture, Manifest, Source};
use voxline::media::{self, MediaConfig, SpeechOutcome};
use voxline::pipeline;
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig, TranscribeOptions, Window};

fn models_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")
}

fn stt(model: &str, tweak: impl FnOnce(&mut SttConfig)) -> WhisperStt {
    let mut config = SttConfig {
        model: model.into(),
        models_dir: Some(models_dir()),
        ..SttConfig::default()
    };
    tweak(&mut config);
    WhisperStt::load(&config).unwrap_or_else(|e| panic!("{e} (run ./x setup)"))
}

fn tiny() -> Arc<WhisperStt> {
    static TINY: OnceLock<Arc<WhisperStt>> = OnceLock::new();
    TINY.get_or_init(|| Arc::new(stt("tiny.en", |_| {})))
        .clone()
}

/// One transcription-heavy test at a time. Each transcription already uses
/// both cores (`[stt] threads = 2`), and whisper.cpp's threads spin while
/// they wait for each other: nine tests transcribing at once on two cores
/// took 28 minutes in CI, where one after the other takes a few.
fn one_at_a_time() -> MutexGuard<'static, ()> {
    static HEAVY: Mutex<()> = Mutex::new(());
    HEAVY.lock().unwrap_or_else(|p| p.into_inner())
}

fn manifest() -> Manifest {
    Manifest::committed().expect("audio-fixtures/manifest.json")
}

fn speech_of(m: &Manifest, f: &Fixture) -> Vec<f32> {
    let bytes = std::fs::read(m.path_of(f)).unwrap();
    media::load(&bytes, &MediaConfig::default())
        .unwrap()
        .samples
}

fn clean_english(m: &Manifest) -> Vec<&Fixture> {
    m.fixtures
        .iter()
        .filter(|f| f.language == "en" && f.condition == Condition::Clean)
        .filter(|f| f.form == voxline::fixtures::Form::OggOpus)
        .collect()
}

/// Corpus WER: all edits over all reference words.
struct Score {
    edits: usize,
    words: usize,
}

impl Score {
    fn new() -> Self {
        Self { edits: 0, words: 0 }
    }
    fn add(&mut self, reference: &str, hypothesis: &str) {
        let r = normalise_words(reference);
        self.edits += word_edits(&r, &normalise_words(hypothesis));
        self.words += r.len();
    }
    fn wer(&self) -> f64 {
        self.edits as f64 / self.words.max(1) as f64
    }
}

#[test]
fn tiny_en_transcribes_clean_english_fixtures_within_10_percent_wer() {
    let _heavy = one_at_a_time();
    let m = manifest();
    let fixtures = clean_english(&m);
    assert!(
        fixtures.len() >= 10,
        "only {} clean English fixtures",
        fixtures.len()
    );
    let stt = tiny();
    let mut score = Score::new();
    for f in &fixtures {
        let t = stt
            .transcribe(&speech_of(&m, f), &TranscribeOptions::default())
            .unwrap();
        assert_eq!(t.language, "en");
        assert!(
            t.confidence > 0.0 && t.confidence <= 1.0,
            "{}: {}",
            f.file,
            t.confidence
        );
        assert!(!t.segments.is_empty(), "{}", f.file);
        println!("{:<45} {:?} | {}", f.file, t.window, t.text);
        score.add(&f.text, &t.text);
    }
    println!(
        "tiny.en WER on {} clean English notes: {:.3}",
        fixtures.len(),
        score.wer()
    );
    assert!(score.wer() <= 0.10, "WER {:.3}", score.wer());
}

#[test]
fn fitted_window_is_as_accurate_as_the_full_window() {
    let _heavy = one_at_a_time();
    let m = manifest();
    let fitted = tiny();
    let full = stt("tiny.en", |c| c.fit_window = false);
    let (mut s_fit, mut s_full) = (Score::new(), Score::new());
    let mut fitted_used = 0;
    for f in m.fixtures.iter().filter(|f| f.language == "en") {
        let speech = speech_of(&m, f);
        let a = fitted
            .transcribe(&speech, &TranscribeOptions::default())
            .unwrap();
        let b = full
            .transcribe(&speech, &TranscribeOptions::default())
            .unwrap();
        assert_eq!(b.window, Window::Full);
        if matches!(a.window, Window::Fitted { .. }) {
            fitted_used += 1;
        }
        s_fit.add(&f.text, &a.text);
        s_full.add(&f.text, &b.text);
    }
    println!(
        "English fixtures: fitted-window WER {:.3} ({fitted_used} fitted), full-window WER {:.3}",
        s_fit.wer(),
        s_full.wer()
    );
    assert!(fitted_used > 0, "no note used the fitted window");
    assert!(s_fit.wer() <= s_full.wer() + 0.02);
}

#[test]
fn a_window_too_small_for_the_speech_is_caught_and_redone_in_full() {
    let _heavy = one_at_a_time();
    // With no margin and no floor, the window ends before the speech does
    // for notes longer than a few seconds; whatever the decoder makes of it
    // must either pass the checks or be redone on the full window, and never
    // come back as a loop.
    let m = manifest();
    let risky = stt("tiny.en", |c| {
        c.min_audio_ctx = 1;
        c.window_margin_ms = 0;
    });
    let mut score = Score::new();
    let mut rejected = 0;
    for f in m.fixtures.iter().filter(|f| f.language == "en") {
        let t = risky
            .transcribe(&speech_of(&m, f), &TranscribeOptions::default())
            .unwrap();
        if let Window::FullAfterRejection { reason, .. } = &t.window {
            rejected += 1;
            println!("{}: fell back ({reason})", f.file);
        }
        let text = &t.text;
        assert!(
            text.len() < 100 || voxline::stt::guard::compression_ratio(text) <= 2.4,
            "{}: loop in {text:?}",
            f.file
        );
        assert!(
            normalise_words(text).len() <= 2 * normalise_words(&f.text).len() + 5,
            "{}: runaway {text:?}",
            f.file
        );
        score.add(&f.text, &t.text);
    }
    println!("tight window: WER {:.3}, {rejected} fallbacks", score.wer());
    assert!(score.wer() <= 0.25, "WER {:.3}", score.wer());
}

#[test]
fn q8_0_weights_stay_close_to_f16() {
    let _heavy = one_at_a_time();
    let m = manifest();
    let q8 = stt("tiny.en-q8_0", |_| {});
    let f16 = tiny();
    let (mut s_q8, mut s_f16) = (Score::new(), Score::new());
    for f in clean_english(&m) {
        let speech = speech_of(&m, f);
        s_q8.add(
            &f.text,
            &q8.transcribe(&speech, &TranscribeOptions::default())
                .unwrap()
                .text,
        );
        s_f16.add(
            &f.text,
            &f16.transcribe(&speech, &TranscribeOptions::default())
                .unwrap()
                .text,
        );
    }
    println!(
        "clean English WER: q8_0 {:.3}, f16 {:.3}",
        s_q8.wer(),
        s_f16.wer()
    );
    assert!(s_q8.wer() <= s_f16.wer() + 0.03);
}

#[test]
fn base_detects_and_transcribes_other_languages() {
    let _heavy = one_at_a_time();
    let m = manifest();
    let base = stt("base", |_| {});
    assert!(base.is_multilingual());
    let mut detected = 0;
    let mut total = 0;
    let mut score = Score::new();
    for f in m.fixtures.iter().filter(|f| {
        ["es", "it", "pt", "fr"].contains(&f.language.as_str())
            && f.condition == Condition::Clean
            && f.source == Source::PytestAudioeval
    }) {
        let t = base
            .transcribe(&speech_of(&m, f), &TranscribeOptions::default())
            .unwrap();
        total += 1;
        detected += usize::from(t.language == f.language);
        score.add(&f.text, &t.text);
        println!("{} → {} | {}", f.file, t.language, t.text);
    }
    println!(
        "base: language detected {detected}/{total}, WER {:.3}",
        score.wer()
    );
    assert!(total >= 8);
    assert!(detected * 10 >= total * 8, "{detected}/{total}");
    assert!(score.wer() <= 0.5, "WER {:.3}", score.wer());
}

#[test]
fn english_only_model_refuses_other_languages() {
    let err = tiny()
        .transcribe(
            &[0.1; 16_000],
            &TranscribeOptions {
                language: Some("es".into()),
                ..TranscribeOptions::default()
            },
        )
        .unwrap_err();
    assert!(err.to_string().contains("English-only"), "{err}");
}

#[test]
fn one_model_serves_concurrent_workers() {
    let _heavy = one_at_a_time();
    let m = manifest();
    let f = clean_english(&m)[0].clone();
    let speech = Arc::new(speech_of(&m, &f));
    let stt = tiny();
    let alone = stt
        .transcribe(&speech, &TranscribeOptions::default())
        .unwrap()
        .text;
    let handles: Vec<_> = (0..2)
        .map(|_| {
            let (stt, speech) = (stt.clone(), speech.clone());
            std::thread::spawn(move || {
                stt.transcribe(&speech, &TranscribeOptions::default())
                    .unwrap()
                    .text
            })
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), alone);
    }
}

#[test]
fn a_silent_note_is_no_speech_not_an_error() {
    let _heavy = one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silence.ogg");
    let status = std::process::Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "anullsrc=r=16000:cl=mono",
            "-t",
            "3",
        ])
        .args(["-c:a", "libopus", "-b:a", "24k"])
        .arg(&path)
        .status()
        .expect("ffmpeg");
    assert!(status.success());
    let bytes = std::fs::read(&path).unwrap();
    let r = pipeline::transcribe_note(
        &bytes,
        &MediaConfig::default(),
        &*tiny(),
        &TranscribeOptions::default(),
    )
    .unwrap();
    assert!(r.transcript.is_none());
    let note = media::load(&bytes, &MediaConfig::default()).unwrap();
    assert!(matches!(note.outcome, SpeechOutcome::NoSpeech));
}

#[test]
fn the_model_path_can_be_any_ggml_file() {
    let path = models_dir().join("ggml-tiny.en.bin");
    let by_path = stt(path.to_str().unwrap(), |_| {});
    assert_eq!(by_path.name(), "whisper:tiny.en");
    let missing = WhisperStt::load(&SttConfig {
        model: "no-such-model".into(),
        models_dir: Some(models_dir()),
        ..SttConfig::default()
    });
    let err = missing.err().expect("missing model must fail").to_string();
    assert!(
        err.contains("no-such-model") && err.contains("fetch"),
        "{err}"
    );
}
