//! The fast intent path: one message through folding, rules, slot
//! extraction and the classifier. Target: under 2 ms p99 on 2 cores.
//!
//! `cargo bench --bench intent` prints criterion's estimates, then the
//! p50/p99/max over 20,000 single classifications of the mixed messages.

use std::path::Path;
use std::time::Instant;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use voxline::dialog::intent::IntentModel;

const MESSAGES: &[(&str, &str)] = &[
    ("en", "where's my order eighteen forty two"),
    ("es", "¿Cuánto cuesta la mochila azul?"),
    ("it", "potete consegnare l'ordine 1842 sabato invece"),
    ("pt", "quero mudar o endereço de entrega para Rua das Flores 20"),
    ("en", "Hi, this is Maria. Last Monday I ordered a blue backpack and two water bottles, order 3057, and nothing came. Could you please check what happened with the delivery?"),
    ("en", "stop"),
];

fn model() -> IntentModel {
    let config = voxline::dialog::DialogConfig {
        data_dir: Path::new(env!("CARGO_MANIFEST_DIR")).join("data"),
        ..Default::default()
    };
    voxline::dialog::cli::intent_model(&config).expect("intent data")
}

fn intent(c: &mut Criterion) {
    let started = Instant::now();
    let m = model();
    eprintln!(
        "start-up (load + train): {:.0} ms",
        started.elapsed().as_secs_f64() * 1e3
    );
    for (lang, text) in MESSAGES {
        c.bench_function(
            &format!(
                "classify {lang} {}",
                text.chars().take(24).collect::<String>()
            ),
            |b| b.iter(|| black_box(m.classify(black_box(text), None))),
        );
    }
    let mut samples: Vec<f64> = (0..20_000)
        .map(|i| {
            let (_, text) = MESSAGES[i % MESSAGES.len()];
            let t = Instant::now();
            black_box(m.classify(text, None));
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    let q = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize];
    eprintln!(
        "classify over {} calls: p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        samples.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(30).measurement_time(std::time::Duration::from_secs(2)).warm_up_time(std::time::Duration::from_millis(500));
    targets = intent
}
criterion_main!(benches);
