//! What ONNX Runtime's settings change for the local neural voices, measured
//! side by side on this machine: `cargo bench --bench onnx_tuning`.
//!
//! 1. **Session settings**: graph optimisation level, CPU memory arena and
//!    memory patterns, each variant a session of its own, the variants taking
//!    turns round by round (so that the machine's noise falls on all alike);
//!    the median real-time factor (seconds of synthesis per second of
//!    speech) of Piper (English, 1 thread) and Kokoro (Spanish, 2 threads).
//! 2. **The first inference**: a fresh session's first reply against its
//!    second, without the warm-up and after it.
//! 3. **Two sentences**: one session of 2 threads speaking them one after
//!    the other, against two sessions of 1 thread speaking one each at the
//!    same time (wall time until both are done).
//!
//! `ROUNDS` (default 7) sets the rounds of each.

use std::time::{Duration, Instant};

use voxline::tts::config::{GraphOptimization, KokoroConfig, OnnxTuning, PiperConfig};
use voxline::tts::kokoro::KokoroTts;
use voxline::tts::piper::PiperTts;
use voxline::tts::{Language, TextToSpeech};

#[path = "common/speech.rs"]
mod speech;

const EN: &str = "Your order has been shipped and will arrive on Friday morning. Reply yes to confirm the new delivery address.";
const ES: [&str; 2] = [
    "Su pedido ha sido enviado y llegará el viernes por la mañana.",
    "Responda sí para confirmar la nueva dirección de entrega.",
];

/// Speaks `text`; returns the wall time and the seconds of audio.
async fn say(tts: &dyn TextToSpeech, text: &str, language: Language) -> (Duration, f64) {
    let started = Instant::now();
    let (_, seconds) = speech::say(tts, text, language).await;
    (started.elapsed(), seconds)
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn variants() -> Vec<(&'static str, OnnxTuning)> {
    let base = OnnxTuning {
        warm_up: false,
        ..OnnxTuning::default()
    };
    let level = |optimization| OnnxTuning {
        optimization,
        ..base.clone()
    };
    vec![
        ("default (all, arena, patterns)", base.clone()),
        ("optimization extended", level(GraphOptimization::Extended)),
        ("optimization basic", level(GraphOptimization::Basic)),
        ("optimization disable", level(GraphOptimization::Disable)),
        (
            "no CPU arena",
            OnnxTuning {
                cpu_arena: false,
                ..base.clone()
            },
        ),
        (
            "no memory patterns",
            OnnxTuning {
                memory_pattern: false,
                ..base.clone()
            },
        ),
    ]
}

fn piper(tuning: OnnxTuning, threads: u16) -> PiperTts {
    PiperTts::load(&PiperConfig {
        threads,
        onnx: tuning,
        ..PiperConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn kokoro(tuning: OnnxTuning, threads: u16) -> KokoroTts {
    KokoroTts::load(&KokoroConfig {
        threads,
        onnx: tuning,
        ..KokoroConfig::default()
    })
    .unwrap_or_else(|e| panic!("{e}"))
}

fn main() {
    // `cargo bench` passes `--bench`; nothing here takes arguments.
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(7);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let es = ES.join(" ");

    println!("1. session settings, median RTF over {rounds} rounds (lower is faster)");
    let voices: Vec<(&str, PiperTts, KokoroTts)> = variants()
        .into_iter()
        .map(|(name, tuning)| (name, piper(tuning.clone(), 1), kokoro(tuning, 2)))
        .collect();
    let mut rtf = vec![(Vec::new(), Vec::new()); voices.len()];
    // One reply each first: the first inference is measured apart (2.).
    for (_, p, k) in &voices {
        runtime.block_on(say(p, EN, Language::En));
        runtime.block_on(say(k, &es, Language::Es));
    }
    for _ in 0..rounds {
        for (i, (_, p, k)) in voices.iter().enumerate() {
            let (took, seconds) = runtime.block_on(say(p, EN, Language::En));
            rtf[i].0.push(took.as_secs_f64() / seconds);
            let (took, seconds) = runtime.block_on(say(k, &es, Language::Es));
            rtf[i].1.push(took.as_secs_f64() / seconds);
        }
    }
    println!("| setting | Piper en, 1 thread | Kokoro es, 2 threads |");
    println!("|---|---:|---:|");
    for ((name, _, _), (p, k)) in voices.iter().zip(rtf) {
        println!("| {name} | {:.3} | {:.3} |", median(p), median(k));
    }
    drop(voices);

    println!("\n2. a fresh session's first reply, median ms over {rounds} sessions");
    let cold = OnnxTuning {
        warm_up: false,
        ..OnnxTuning::default()
    };
    let mut table: Vec<(&str, Vec<f64>, Vec<f64>)> = vec![
        ("first reply, no warm-up", Vec::new(), Vec::new()),
        ("second reply", Vec::new(), Vec::new()),
        (
            "first reply, 3 s after load with warm-up",
            Vec::new(),
            Vec::new(),
        ),
    ];
    for _ in 0..rounds {
        for (k, warmed) in [(0usize, false), (2, true)] {
            let tuning = OnnxTuning {
                warm_up: warmed,
                ..cold.clone()
            };
            let (p, ko) = (piper(tuning.clone(), 1), kokoro(tuning, 2));
            if warmed {
                std::thread::sleep(Duration::from_secs(3));
            }
            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
            table[k]
                .1
                .push(ms(runtime.block_on(say(&p, EN, Language::En)).0));
            table[k]
                .2
                .push(ms(runtime.block_on(say(&ko, &es, Language::Es)).0));
            if !warmed {
                table[1]
                    .1
                    .push(ms(runtime.block_on(say(&p, EN, Language::En)).0));
                table[1]
                    .2
                    .push(ms(runtime.block_on(say(&ko, &es, Language::Es)).0));
            }
        }
    }
    println!("| reply | Piper en (ms) | Kokoro es (ms) |");
    println!("|---|---:|---:|");
    for (name, p, k) in table {
        println!("| {name} | {:.0} | {:.0} |", median(p), median(k));
    }

    println!("\n3. two Spanish sentences, median wall ms over {rounds} rounds");
    let two_threads = kokoro(cold.clone(), 2);
    let (one_a, one_b) = (kokoro(cold.clone(), 1), kokoro(cold, 1));
    runtime.block_on(say(&two_threads, &es, Language::Es));
    runtime.block_on(say(&one_a, ES[0], Language::Es));
    runtime.block_on(say(&one_b, ES[1], Language::Es));
    let (mut serial, mut parallel) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let started = Instant::now();
        runtime.block_on(async {
            say(&two_threads, ES[0], Language::Es).await;
            say(&two_threads, ES[1], Language::Es).await;
        });
        serial.push(started.elapsed().as_secs_f64() * 1000.0);
        let started = Instant::now();
        runtime.block_on(async {
            tokio::join!(
                say(&one_a, ES[0], Language::Es),
                say(&one_b, ES[1], Language::Es)
            )
        });
        parallel.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let (serial, parallel) = (median(serial), median(parallel));
    println!("| | wall ms |");
    println!("|---|---:|");
    println!("| one session, 2 threads, one sentence after the other | {serial:.0} |");
    println!("| two sessions, 1 thread each, both at once | {parallel:.0} |");
    println!("| ratio parallel / serial | {:.2} |", parallel / serial);
}
