//! Kokoro's native voices (Spanish, Italian, Brazilian Portuguese, French;
//! from the npm package kokoro-js, fetched by `./x setup`) on the int8 model
//! the Japanese voices use: each loads and speaks its language as speech
//! at a sane level. What Whisper `base` makes of them (through an Ogg/Opus
//! voice note and voxline's decoder, told the language) is measured on
//! demand by `native_voice_sweep`, for choosing each language's voice.

use std::path::Path;

use tokio_util::sync::CancellationToken;
use voxline::dialog::calendar::Date;
use voxline::dialog::commerce::OrderStatus;
use voxline::dialog::templates::Templates;
use voxline::encode::EncodeConfig;
use voxline::fixtures::{normalise_words, word_edits};
use voxline::media::decode::StreamDecoder;
use voxline::media::{self, MediaConfig};
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig, TranscribeOptions};
use voxline::tts::config::KokoroConfig;
use voxline::tts::kokoro::{KokoroTts, NATIVE_VOICES};
use voxline::tts::speak::speakable;
use voxline::tts::{voice_note, Language};

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn whisper_base() -> WhisperStt {
    WhisperStt::load(&SttConfig {
        model: "base".into(),
        language: "auto".into(),
        models_dir: Some(crate_dir().join("models")),
        ..SttConfig::default()
    })
    .expect("run ./x setup to fetch the Whisper models")
}

/// Kokoro with `voices`, one per language.
fn kokoro(voices: &[(Language, &str)]) -> KokoroTts {
    let config = KokoroConfig {
        models_dir: Some(crate_dir().join("models")),
        voices: voices.iter().map(|(l, v)| (*l, v.to_string())).collect(),
        ..KokoroConfig::default()
    };
    KokoroTts::load(&config).unwrap_or_else(|e| panic!("{e} (run ./x setup)"))
}

/// What Whisper base hears of `text` spoken as a reply by `tts`.
async fn round_trip(text: &str, language: Language, tts: &KokoroTts, stt: &WhisperStt) -> String {
    let (note, _) = spoken(text, language, tts).await;
    let prepared = media::load(&note, &MediaConfig::default()).unwrap();
    let options = TranscribeOptions {
        language: Some(language.code().into()),
        ..TranscribeOptions::default()
    };
    stt.transcribe(&prepared.samples, &options).unwrap().text
}

/// Word errors and reference words: the written text against the
/// transcript, or both with their numbers spoken, the better of the two
/// (Whisper writes a spoken number as digits or as words).
fn edits(written: &str, heard: &str, language: Language) -> (usize, usize) {
    [
        (written.to_string(), heard.to_string()),
        (speakable(written, language), speakable(heard, language)),
    ]
    .iter()
    .map(|(reference, heard)| {
        let r = normalise_words(reference);
        (word_edits(&r, &normalise_words(heard)), r.len())
    })
    .min_by(|a, b| (a.0 as f64 / a.1 as f64).total_cmp(&(b.0 as f64 / b.1 as f64)))
    .unwrap()
}

/// One short reply per language.
fn sentence(language: Language) -> &'static str {
    match language {
        Language::Es => "Su pedido llega el viernes.",
        Language::It => "Il suo ordine arriva venerdì.",
        Language::Pt => "O seu pedido chega na sexta-feira.",
        Language::Fr => "Votre commande arrive vendredi.",
        Language::En => unreachable!("no native Kokoro voice for English here"),
    }
}

/// Speaks `text` as a reply would be and measures the decoded note.
async fn spoken(text: &str, language: Language, tts: &KokoroTts) -> (Vec<u8>, Levels) {
    let (note, _) = voice_note(
        tts,
        text,
        language,
        &EncodeConfig::default(),
        CancellationToken::new(),
    )
    .await
    .unwrap_or_else(|e| panic!("{language} {text:?}: {e}"));
    let mut decoder = StreamDecoder::new(&MediaConfig::default());
    decoder.push(&note.bytes).unwrap();
    let pcm = decoder.finish().unwrap();
    let levels = Levels::of(&pcm.samples, pcm.sample_rate);
    (note.bytes, levels)
}

/// Levels of decoded audio.
struct Levels {
    seconds: f64,
    rms: f32,
    peak: f32,
    /// Samples at or past full scale.
    clipped: usize,
}

impl Levels {
    fn of(samples: &[f32], rate: u32) -> Self {
        Self {
            seconds: samples.len() as f64 / f64::from(rate),
            rms: (samples.iter().map(|s| s * s).sum::<f32>() / samples.len().max(1) as f32).sqrt(),
            peak: samples.iter().fold(0.0f32, |m, s| m.max(s.abs())),
            clipped: samples.iter().filter(|s| s.abs() >= 0.999).count(),
        }
    }
}

/// Every native voice loads beside the int8 model and speaks a reply of
/// its language as speech: a plausible length, audible, not clipped. (What
/// Whisper makes of them is `native_voice_sweep`'s and the natural-voice
/// fixtures' measure; it costs a Whisper run per sentence.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_native_voice_speaks_its_language() {
    // Two loads: the first voice of each language, then the second where
    // there is one.
    let firsts: Vec<(Language, &str)> = NATIVE_VOICES.iter().map(|(l, v)| (*l, v[0])).collect();
    let seconds: Vec<(Language, &str)> = NATIVE_VOICES
        .iter()
        .filter_map(|(l, v)| v.get(1).map(|v| (*l, *v)))
        .collect();
    let mut problems = Vec::new();
    for set in [firsts, seconds] {
        let tts = kokoro(&set);
        for (language, voice) in set {
            let (_, heard) = spoken(sentence(language), language, &tts).await;
            println!(
                "{language} {voice:<10} {:.1} s, rms {:.3}, peak {:.2}, {} clipped",
                heard.seconds, heard.rms, heard.peak, heard.clipped
            );
            // Five words or so.
            if !(1.0..8.0).contains(&heard.seconds) {
                problems.push(format!("{voice}: {:.1} s of audio", heard.seconds));
            }
            if heard.rms < 0.02 {
                problems.push(format!("{voice}: too quiet (rms {:.3})", heard.rms));
            }
            if heard.clipped > 16 {
                problems.push(format!("{voice}: {} samples clipped", heard.clipped));
            }
        }
    }
    assert!(problems.is_empty(), "{problems:#?}");
}

/// The six replies `tests/tts_roundtrip.rs` measures the Japanese voices
/// with: rendered from `data/templates` for es, it and pt; French, which
/// had no templates then, translated.
fn replies(language: Language) -> Vec<String> {
    let friday = Date::from_ymd(2025, 3, 14).unwrap();
    let tuesday = Date::from_ymd(2025, 3, 18).unwrap();
    if language == Language::Fr {
        return [
            "La commande 1842 est en route. Elle devrait arriver le vendredi 14 mars.",
            "Le sac à dos bleu coûte 39,90 €.",
            "Je peux annuler la commande 2417, de 54,80 €. Répondez oui pour confirmer.",
            "Je peux déplacer la commande 1842 au mardi 18 mars. Répondez oui pour confirmer.",
            "Les chaussures de course sont disponibles. Si vous commandez aujourd'hui, elles arrivent le vendredi 14 mars.",
            "De quelle commande parlez-vous ? Envoyez-moi le numéro de commande, s'il vous plaît.",
        ]
        .map(String::from)
        .to_vec();
    }
    let templates = Templates::load(&crate_dir().join("data/templates")).unwrap();
    let lang = language.code();
    let (backpack, shoes) = match language {
        Language::Es => ("La mochila azul", "Las zapatillas de correr"),
        Language::It => ("Lo zaino blu", "Le scarpe da corsa"),
        _ => ("A mochila azul", "O tênis de corrida"),
    };
    let shipped = templates.status(lang, OrderStatus::Shipped);
    let render = |key: &str, vars: &[(&str, &str)]| templates.render(lang, key, vars);
    vec![
        render(
            "order_status",
            &[
                ("order", "1842"),
                ("status", &shipped),
                ("date", &templates.date(lang, friday)),
            ],
        ),
        render(
            "price",
            &[("name", backpack), ("price", &templates.money(lang, 3990))],
        ),
        render(
            "cancel_confirm",
            &[("order", "2417"), ("total", &templates.money(lang, 5480))],
        ),
        render(
            "delivery_confirm",
            &[("order", "1842"), ("date", &templates.date(lang, tuesday))],
        ),
        render(
            "availability_in",
            &[("name", shoes), ("date", &templates.date(lang, friday))],
        ),
        render("order_ask", &[]),
    ]
}

/// Every native voice on its language's six replies (or those of the
/// languages `VOXLINE_SWEEP` names, "it,fr"), corpus WER through Whisper
/// base, comparable with the Japanese voices' table in the README ("The
/// Kokoro voice"). Several minutes on 2 cores:
/// `cargo test --release --test tts_kokoro_native -- --ignored --nocapture`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for choosing voices, not a check; run it on demand"]
async fn native_voice_sweep() {
    let stt = whisper_base();
    let wanted: Option<Vec<Language>> = std::env::var("VOXLINE_SWEEP")
        .ok()
        .map(|list| list.split(',').filter_map(Language::from_code).collect());
    let mut table = Vec::new();
    for (language, voices) in NATIVE_VOICES {
        if wanted.as_ref().is_some_and(|w| !w.contains(&language)) {
            continue;
        }
        for voice in voices {
            let tts = kokoro(&[(language, voice)]);
            let (mut errors, mut words) = (0, 0);
            for reply in replies(language) {
                let heard = round_trip(&reply, language, &tts, &stt).await;
                let (e, n) = edits(&reply, &heard, language);
                println!(
                    "{language} {voice:<10} WER {:>5.1}%  said  {:?}\n                          heard {:?}",
                    e as f64 / n as f64 * 100.0,
                    speakable(&reply, language),
                    heard
                );
                errors += e;
                words += n;
            }
            table.push(format!(
                "{language} {voice:<10} {:>5.1}% ({errors}/{words})",
                errors as f64 / words as f64 * 100.0
            ));
        }
    }
    println!("{}", table.join("\n"));
}
