//! A reply spoken by a local voice, encoded as a voice note, decoded by the
//! project's own decoder and transcribed by Whisper comes back as the words
//! that were meant: WER at most 25% (tiny.en for English, base for the other
//! languages, told the reply's language as a listener knows it). The
//! natural voices: Kokoro for Spanish, Italian, Portuguese and French (here)
//! and Piper for English (`tests/tts_piper.rs`). The default espeak-ng
//! voice meets 25% in English and Spanish; its Italian, Portuguese and
//! French are held to their measured figures.

use std::path::Path;

use tokio_util::sync::CancellationToken;
use voxline::dialog::calendar::Date;
use voxline::dialog::commerce::OrderStatus;
use voxline::dialog::templates::Templates;
use voxline::encode::EncodeConfig;
use voxline::fixtures::{normalise_words, word_edits, word_error_rate};
use voxline::media::{self, MediaConfig};
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig, TranscribeOptions};
use voxline::tts::config::EspeakConfig;
use voxline::tts::config::KokoroConfig;
use voxline::tts::espeak::EspeakTts;
use voxline::tts::kokoro::KokoroTts;
use voxline::tts::speak::speakable;
use voxline::tts::{voice_note, Language, TextToSpeech};

/// Whisper `model` from `VOXLINE_MODELS_DIR` (else `models/`).
/// One round-trip test at a time: each speaks and transcribes on both
/// cores, and four at once on two cores spin against each other (see
/// tests/stt.rs).
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

pub fn stt(model: &str, language: &str) -> WhisperStt {
    let config = SttConfig {
        model: model.into(),
        language: language.into(),
        ..SttConfig::default()
    };
    WhisperStt::load(&config).expect("run ./x setup to fetch the Whisper models")
}

/// Speaks `reply` with `tts` as a turn would (speakable pass, Ogg/Opus),
/// decodes the note and transcribes it in `language`. A voice that fails
/// is heard as silence: every word of the reply missed.
pub async fn round_trip(
    reply: &str,
    language: Language,
    tts: &dyn TextToSpeech,
    stt: &WhisperStt,
) -> String {
    let spoken = voice_note(
        tts,
        reply,
        language,
        &EncodeConfig::default(),
        CancellationToken::new(),
    )
    .await;
    let (note, report) = match spoken {
        Ok(spoken) => spoken,
        Err(e) => {
            println!("{} failed: {e}", tts.name());
            return String::new();
        }
    };
    assert!(report.first_audio.is_some());
    assert!(note.bytes.len() < 512 * 1024);
    let prepared = media::load(&note.bytes, &MediaConfig::default()).unwrap();
    let options = TranscribeOptions {
        language: Some(language.code().into()),
        ..TranscribeOptions::default()
    };
    stt.transcribe(&prepared.samples, &options).unwrap().text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn english_reply_survives_speech_encoding_and_transcription() {
    let _heavy = HEAVY.lock().await;
    let stt = stt("tiny.en", "en");
    let reply = "Your order has been shipped and will arrive on Friday morning. \
                 Reply yes to confirm the new delivery address.";
    let espeak = EspeakTts::start(&EspeakConfig::default()).unwrap();
    let heard = round_trip(reply, Language::En, &espeak, &stt).await;
    let wer = word_error_rate(reply, &heard);
    println!("en WER {:.1}%: {heard}", wer * 100.0);
    assert!(wer <= 0.25, "WER {:.1}%: heard {heard:?}", wer * 100.0);
}

/// The replies the dialog stage sends, rendered from `data/templates` with
/// the demo shop's kind of values: an order's status with its number and
/// delivery date, a price, a cancellation with its total, a new delivery
/// date, availability, and a question. French has no templates (its replies
/// come from the LLM), so its replies are the same templates translated.
pub fn replies(language: Language) -> Vec<String> {
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
    let templates =
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/templates")).unwrap();
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

/// Word errors of a transcript and the reference's length: the written
/// reply against the transcript, and the spoken reply (numbers in words, as
/// synthesised) against the transcript with its numbers spoken the same way,
/// the better of the two. Whisper writes a spoken number as digits or as
/// words, or both in one sentence ("39 euros con 90").
pub fn edits(written: &str, heard: &str, language: Language) -> (usize, usize) {
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

/// Corpus word errors and reference words of `language`'s replies.
pub async fn corpus(
    language: Language,
    tts: &dyn TextToSpeech,
    stt: &WhisperStt,
) -> (usize, usize) {
    let (mut errors, mut words) = (0, 0);
    for reply in replies(language) {
        let spoken = speakable(&reply, language);
        let heard = round_trip(&reply, language, tts, stt).await;
        let (e, n) = edits(&reply, &heard, language);
        println!(
            "{language} WER {:>5.1}%  said  {spoken:?}\n                 heard {heard:?}",
            e as f64 / n as f64 * 100.0
        );
        errors += e;
        words += n;
    }
    (errors, words)
}

/// Corpus WER of `language`'s replies with the default espeak-ng voice.
async fn corpus_wer(language: Language, stt: &WhisperStt) -> f64 {
    let espeak = EspeakTts::start(&EspeakConfig::default()).unwrap();
    let (errors, words) = corpus(language, &espeak, stt).await;
    let wer = errors as f64 / words as f64;
    println!(
        "espeak-ng {language} → Ogg/Opus → base: corpus WER {:.1}% ({errors}/{words} words)",
        wer * 100.0
    );
    wer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spanish_replies_survive_with_the_base_model() {
    let _heavy = HEAVY.lock().await;
    let stt = stt("base", "auto");
    let wer = corpus_wer(Language::Es, &stt).await;
    assert!(wer <= 0.25, "es: WER {:.1}%", wer * 100.0);
}

/// Not met: espeak-ng's Italian, Portuguese and French stay far over 25%
/// with Whisper base even at their best rate and word gap: measured 38-42%,
/// 44-53% and 68-77% (the figure moves between runs: the same reply spoken
/// twice did not give the same length of audio; see the README). Whisper mishears espeak's consonants
/// ("ordine" as "oltine", "commande" as "commandement"), not the numbers or
/// the language. The natural-sounding voices (a Piper model, or an
/// HTTP/WebSocket provider) are the way to meet 25%. Until then this holds
/// each language to the worst figure measured, rounded up, so a change that
/// makes them worse fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn italian_portuguese_and_french_miss_25_percent_and_get_no_worse() {
    let _heavy = HEAVY.lock().await;
    let stt = stt("base", "auto");
    let mut worse = Vec::new();
    for (language, measured) in [
        (Language::It, 0.45),
        (Language::Pt, 0.56),
        (Language::Fr, 0.80),
    ] {
        let wer = corpus_wer(language, &stt).await;
        if wer > measured {
            worse.push(format!(
                "{language}: WER {:.1}%, worst measured {:.0}%",
                wer * 100.0,
                measured * 100.0
            ));
        }
    }
    assert!(worse.is_empty(), "{worse:#?}");
}

/// Kokoro with `voices` (every language's voice when `None`), from the
/// models `./x setup` fetched.
fn kokoro(voices: Option<(Language, &str)>) -> KokoroTts {
    let mut config = KokoroConfig {
        models_dir: Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("models")),
        ..KokoroConfig::default()
    };
    if let Some((language, voice)) = voices {
        config.voices = [(language, voice.to_string())].into();
    }
    KokoroTts::load(&config).unwrap_or_else(|e| panic!("{e}"))
}

/// Corpus WER of `language`'s replies spoken by `tts`.
async fn kokoro_wer(language: Language, voice: &str, tts: &KokoroTts, stt: &WhisperStt) -> f64 {
    let (errors, words) = corpus(language, tts, stt).await;
    let wer = errors as f64 / words as f64;
    println!(
        "kokoro {voice} {language} → Ogg/Opus → base: corpus WER {:.1}% ({errors}/{words} words)",
        wer * 100.0
    );
    wer
}

/// The natural local voice for the languages espeak-ng cannot carry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kokoro_replies_in_spanish_italian_portuguese_and_french_come_back_within_15_percent() {
    let _heavy = HEAVY.lock().await;
    let stt = stt("base", "auto");
    let tts = kokoro(None);
    let voices = voxline::tts::kokoro::default_voices();
    let mut missed = Vec::new();
    for language in [Language::Es, Language::It, Language::Pt, Language::Fr] {
        let wer = kokoro_wer(language, &voices[&language], &tts, &stt).await;
        if wer > 0.15 {
            missed.push(format!("{language}: WER {:.1}%", wer * 100.0));
        }
    }
    assert!(missed.is_empty(), "{missed:#?}");
}

/// How the default voices were chosen: every voice in every language (or
/// in the languages `VOXLINE_SWEEP` names, "it,fr"). About 10 minutes on 2
/// cores, so it runs on demand:
/// `cargo test --release --test tts_roundtrip -- --ignored --nocapture kokoro_voice_sweep`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement for choosing voices, not a check; run it on demand"]
async fn kokoro_voice_sweep() {
    let _heavy = HEAVY.lock().await;
    let stt = stt("base", "auto");
    let mut table = Vec::new();
    let languages: Vec<Language> = match std::env::var("VOXLINE_SWEEP") {
        Ok(list) => list.split(',').filter_map(Language::from_code).collect(),
        Err(_) => vec![Language::Es, Language::It, Language::Pt, Language::Fr],
    };
    for language in languages {
        for voice in [
            "jf_alpha",
            "jf_gongitsune",
            "jf_nezumi",
            "jf_tebukuro",
            "jm_kumo",
        ] {
            let tts = kokoro(Some((language, voice)));
            let wer = kokoro_wer(language, voice, &tts, &stt).await;
            table.push(format!("{language} {voice:<14} {:>5.1}%", wer * 100.0));
        }
    }
    println!("{}", table.join("\n"));
}
