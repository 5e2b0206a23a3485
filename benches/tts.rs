//! Local TTS speed: espeak-ng's real-time factor per reply language (audio
//! seconds per second of synthesis, on its one dedicated thread), and its
//! time to first audio. Run with `cargo bench --bench tts`.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxline::tts::config::EspeakConfig;
use voxline::tts::espeak::EspeakTts;
use voxline::tts::{AudioChunk, Language, SpeechReport, SpeechRequest, TextToSpeech};

fn reply(language: Language) -> &'static str {
    match language {
        Language::En => "Your order has been shipped and will arrive on Friday morning. Reply yes to confirm the new delivery address.",
        Language::Es => "Su pedido ha sido enviado y llegará el viernes por la mañana. Responda sí para confirmar la nueva dirección.",
        Language::It => "Il suo ordine è stato spedito e arriverà venerdì mattina. Risponda sì per confermare il nuovo indirizzo.",
        Language::Pt => "O seu pedido foi enviado e chegará na sexta-feira de manhã. Responda sim para confirmar o novo endereço.",
        Language::Fr => "Votre commande a été expédiée et arrivera vendredi matin. Répondez oui pour confirmer la nouvelle adresse.",
    }
}

/// Speaks `text`; returns the report and the seconds of audio.
async fn say(tts: &EspeakTts, text: &str, language: Language) -> (SpeechReport, f64) {
    let (text_tx, text_rx) = mpsc::channel(1);
    text_tx.send(text.to_string()).await.unwrap();
    drop(text_tx);
    let (audio_tx, mut audio_rx) = mpsc::channel::<AudioChunk>(64);
    let request = SpeechRequest { language };
    let collect = async {
        let mut seconds = 0.0;
        while let Some(chunk) = audio_rx.recv().await {
            seconds += chunk.duration().as_secs_f64();
        }
        seconds
    };
    let (report, seconds) = tokio::join!(
        tts.speak(&request, text_rx, audio_tx, CancellationToken::new()),
        collect
    );
    (report.unwrap(), seconds)
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
        let mut runs: Vec<(Duration, Duration, f64)> = (0..7)
            .map(|_| {
                let started = std::time::Instant::now();
                let (report, seconds) = runtime.block_on(say(&tts, reply(language), language));
                (
                    started.elapsed(),
                    report.first_audio.unwrap_or_default(),
                    seconds,
                )
            })
            .collect();
        runs.sort_by_key(|r| r.0);
        let (took, first_audio, seconds) = runs[runs.len() / 2];
        println!(
            "espeak {language}: {seconds:.1} s of speech in {:.0} ms ({:.0}x real time), first audio after {:.1} ms",
            took.as_secs_f64() * 1000.0,
            seconds / took.as_secs_f64(),
            first_audio.as_secs_f64() * 1000.0
        );
    }
}

criterion_group!(benches, bench_espeak);
criterion_main!(benches);
