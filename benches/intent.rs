//! The fast intent path: one message through folding, rules, slot
//! extraction and the classifier. Target: under 2 ms p99 on 2 cores.
//!
//! `cargo bench --bench intent` prints criterion's estimates, then the
//! p50/p99/max over 20,000 single classifications of the mixed messages,
//! with the sentence encoder (the default) and without it (n-grams alone),
//! the two interleaved call by call.

use std::path::Path;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use voxline::console::stats::percentiles;
use voxline::dialog::intent::IntentModel;

const MESSAGES: &[(&str, &str)] = &[
    ("en", "where's my order eighteen forty two"),
    ("es", "¿Cuánto cuesta la mochila azul?"),
    ("it", "potete consegnare l'ordine 1842 sabato invece"),
    ("pt", "quero mudar o endereço de entrega para Rua das Flores 20"),
    ("en", "Hi, this is Maria. Last Monday I ordered a blue backpack and two water bottles, order 3057, and nothing came. Could you please check what happened with the delivery?"),
    ("en", "stop"),
];

/// The model as the service builds it; `encoder: false` turns the sentence
/// encoder off.
fn model(encoder: bool) -> IntentModel {
    let config = voxline::dialog::DialogConfig {
        data_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
        sentence_encoder: (!encoder).then(std::path::PathBuf::new),
        ..Default::default()
    };
    let started = Instant::now();
    let m = voxline::dialog::cli::intent_model(&config).expect("intent data");
    eprintln!(
        "start-up (load + train), sentence encoder {}: {:.0} ms",
        if encoder { "on" } else { "off" },
        started.elapsed().as_secs_f64() * 1e3
    );
    m
}

fn intent(c: &mut Criterion) {
    let m = model(true);
    let ngrams = model(false);
    assert!(m.encoder().is_some(), "models/use-m3 is missing: ./x setup");
    for (lang, text) in MESSAGES {
        c.bench_function(
            &format!(
                "classify {lang} {}",
                text.chars().take(24).collect::<String>()
            ),
            |b| b.iter(|| black_box(m.classify(black_box(text), None))),
        );
    }
    // The mixed messages above, then every message of the labelled set
    // (347 real-length messages in five languages); the two models take
    // turns in blocks of 500 calls, so that neither runs on a cache the
    // other just filled.
    let labelled = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/intents/labelled.tsv"),
    )
    .expect("labelled set");
    let labelled: Vec<&str> = labelled
        .lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with("lang\t"))
        .filter_map(|l| l.split('\t').nth(1))
        .collect();
    let mixed: Vec<&str> = MESSAGES.iter().map(|(_, t)| *t).collect();
    for (set, texts, calls) in [("mixed", &mixed, 20_000), ("labelled", &labelled, 3_470)] {
        let mut with = Vec::with_capacity(calls);
        let mut without = Vec::with_capacity(calls);
        for block in (0..calls).collect::<Vec<_>>().chunks(500) {
            for (model, samples) in [(&m, &mut with), (&ngrams, &mut without)] {
                for &i in block {
                    let text = texts[i % texts.len()];
                    let t = Instant::now();
                    black_box(model.classify(text, None));
                    samples.push(t.elapsed().as_secs_f64() * 1e6);
                }
            }
        }
        for (name, samples) in [
            ("with the sentence encoder", &with),
            ("n-grams alone", &without),
        ] {
            let q = percentiles(samples);
            let us = |v: Option<f64>| v.unwrap_or(f64::NAN);
            eprintln!(
                "classify the {set} messages {name}, over {} calls: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
                q.count,
                us(q.p50),
                us(q.p99),
                us(q.max)
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = intent
}
criterion_main!(benches);
