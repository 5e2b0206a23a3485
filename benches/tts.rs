//! Local TTS speed: espeak-ng's speed per reply language (audio seconds per
//! second of synthesis, on its one dedicated thread), and the Piper voice's
//! real-time factor on English (seconds of synthesis per second of audio,
//! with one and two ONNX Runtime threads), and Kokoro's on Spanish,
//! Italian, Portuguese and French, each with its time to first audio. Run
//! with `cargo bench --bench tts`, or `cargo bench --bench tts -- piper` (or
//! `kokoro`) for one voice alone.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use voxline::tts::config::{EspeakConfig, KokoroConfig, PiperConfig};
use voxline::tts::espeak::EspeakTts;
use voxline::tts::kokoro::KokoroTts;
use voxline::tts::piper::PiperTts;
use voxline::tts::{Language, TextToSpeech};

#[path = "common/speech.rs"]
mod speech;
use speech::say;

fn reply(language: Language) -> &'static str {
    match language {
        Language::En => "Your order has been shipped and will arrive on Friday morning. Reply yes to confirm the new delivery address.",
        Language::Es => "Su pedido ha sido enviado y llegará el viernes por la mañana. Responda sí para confirmar la nueva dirección.",
        Language::It => "Il suo ordine è stato spedito e arriverà venerdì mattina. Risponda sì per confermare il nuovo indirizzo.",
        Language::Pt => "O seu pedido foi enviado e chegará na sexta-feira de manhã. Responda sim para confirmar o novo endereço.",
        Language::Fr => "Votre commande a été expédiée et arrivera vendredi matin. Répondez oui pour confirmer la nouvelle adresse.",
    }
}

fn bench_espeak(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tts = EspeakTts::start(&EspeakConfig::default()).unwrap();
    let mut group = c.benchmark_group("espeak_reply");
    group.sample_size(20);
    for language in Language::ALL {
        let text = reply(language);
        group.bench_with_input(BenchmarkId::from_parameter(language), &text, |b, text| {
            b.iter(|| runtime.block_on(say(&tts, text, language)))
        });
    }
    group.finish();

    for language in Language::ALL {
        let (took, first_audio, seconds) = median_run(&runtime, &tts, reply(language), language);
        println!(
            "espeak {language}: {seconds:.1} s of speech in {:.0} ms ({:.0}x real time), first audio after {:.1} ms",
            took.as_secs_f64() * 1000.0,
            seconds / took.as_secs_f64(),
            first_audio.as_secs_f64() * 1000.0
        );
    }
}

/// Median of seven runs: wall time, first audio, seconds of audio.
fn median_run(
    runtime: &tokio::runtime::Runtime,
    tts: &dyn TextToSpeech,
    text: &str,
    language: Language,
) -> (Duration, Duration, f64) {
    let mut runs: Vec<(Duration, Duration, f64)> = (0..7)
        .map(|_| {
            let started = std::time::Instant::now();
            let (report, seconds) = runtime.block_on(say(tts, text, language));
            (
                started.elapsed(),
                report.first_audio.unwrap_or_default(),
                seconds,
            )
        })
        .collect();
    runs.sort_by_key(|r| r.0);
    runs[runs.len() / 2]
}

fn bench_piper(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let text = reply(Language::En);
    let mut group = c.benchmark_group("piper_reply");
    group.sample_size(10);
    for threads in [1, 2] {
        let config = PiperConfig {
            threads,
            ..PiperConfig::default()
        };
        let tts = PiperTts::load(&config).unwrap_or_else(|e| panic!("{e}"));
        group.bench_with_input(BenchmarkId::new("en", threads), &text, |b, text| {
            b.iter(|| runtime.block_on(say(&tts, text, Language::En)))
        });
        let (took, first_audio, seconds) = median_run(&runtime, &tts, text, Language::En);
        println!(
            "piper en_US-joe-medium, {threads} thread(s): {seconds:.1} s of speech in {:.0} ms (RTF {:.3}), first audio after {:.0} ms",
            took.as_secs_f64() * 1000.0,
            took.as_secs_f64() / seconds,
            first_audio.as_secs_f64() * 1000.0
        );
    }
    group.finish();
}

fn bench_kokoro(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("kokoro_reply");
    group.sample_size(10);
    for threads in [1, 2] {
        let config = KokoroConfig {
            threads,
            ..KokoroConfig::default()
        };
        let tts = KokoroTts::load(&config).unwrap_or_else(|e| panic!("{e}"));
        let text = reply(Language::It);
        group.bench_with_input(BenchmarkId::new("it", threads), &text, |b, text| {
            b.iter(|| runtime.block_on(say(&tts, text, Language::It)))
        });
        for language in [Language::Es, Language::It, Language::Pt, Language::Fr] {
            let (took, first_audio, seconds) =
                median_run(&runtime, &tts, reply(language), language);
            println!(
                "kokoro {language}, {threads} thread(s): {seconds:.1} s of speech in {:.0} ms (RTF {:.3}), first audio after {:.0} ms",
                took.as_secs_f64() * 1000.0,
                took.as_secs_f64() / seconds,
                first_audio.as_secs_f64() * 1000.0
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench_espeak, bench_piper, bench_kokoro);
criterion_main!(benches);
