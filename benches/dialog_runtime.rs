//! How long the dialog stage keeps the runtime's threads from other tasks.
//!
//! `cargo bench --bench dialog_runtime`: on a runtime of two worker threads
//! (the service's on this machine), 25 rounds of four customers answered at
//! once, two of them with a 4,096-character text (as much as the sentence
//! encoder reads of a message, about 8 ms of classification),
//! while another task sleeps 1 ms again and again and records how late it
//! wakes. A task starved by arithmetic on the runtime's threads (a webhook
//! to acknowledge, a TTS stream to forward) wakes that much late. Prints
//! the classification's time and the lateness p50 / p99 / max; then the
//! same with a peer in place of the answers: the same messages only
//! classified, on the runtime's threads, as the stage did before it moved
//! classification to the blocking pool (less work than an answer).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxline::console::stats::percentiles;
use voxline::dialog::stage::{bundled_data, DialogStage};
use voxline::dialog::{DialogConfig, Message};

const SENTENCE: &str = "Hi, this is Maria. Last Monday I ordered a blue backpack and two water \
    bottles, order 3057, and nothing came. Could you please check what happened with the delivery? ";

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(run());
}

async fn run() {
    let dir = tempfile::tempdir().expect("temporary folder");
    let config = DialogConfig {
        data_dir: bundled_data(),
        database: Some(dir.path().join("dialog.sqlite")),
        ..Default::default()
    };
    let stage = DialogStage::open(config).await.expect("dialog stage");
    assert!(
        stage.intents().encoder().is_some(),
        "models/use-m3 is missing: ./x setup"
    );
    let long: String = SENTENCE.repeat(40).chars().take(4096).collect();
    let model = stage.intents();
    let took: Vec<f64> = (0..30)
        .map(|_| {
            let t = Instant::now();
            std::hint::black_box(model.classify(&long, None));
            t.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    let took = percentiles(&took);
    println!(
        "classify 4,096 characters: p50 {:.1} ms, max {:.1} ms",
        took.p50.unwrap_or(f64::NAN),
        took.max.unwrap_or(f64::NAN)
    );
    // Customers 0 and 2 of each round send the long text, 1 and 3 a sentence.
    let texts = [long, SENTENCE.to_string()];
    let text = move |c: usize| texts[c % 2].clone();

    let stage_turns = {
        let (stage, text) = (stage.clone(), text.clone());
        move |round: usize, c: usize| {
            let (stage, text) = (stage.clone(), text(c));
            tokio::spawn(async move {
                stage
                    .answer(Message::text(
                        &format!("m{round}-{c}"),
                        &format!("3460000000{c}"),
                        &text,
                    ))
                    .await;
            })
        }
    };
    let inline_turns = move |_: usize, c: usize| {
        let (model, text) = (Arc::clone(&model), text(c));
        tokio::spawn(async move {
            std::hint::black_box(model.classify(&text, None));
        })
    };
    report("answered by the stage", stage_turns).await;
    report(
        "peer: only classified, on the runtime's threads",
        inline_turns,
    )
    .await;
}

/// Runs 25 rounds of four `turn`s at once beside the sleeper and prints
/// how late it woke.
async fn report(name: &str, turn: impl Fn(usize, usize) -> tokio::task::JoinHandle<()>) {
    let done = Arc::new(AtomicBool::new(false));
    let stop = Arc::clone(&done);
    let sleeper = tokio::spawn(async move {
        let mut late = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            tokio::time::sleep(Duration::from_millis(1)).await;
            late.push(t.elapsed().as_secs_f64() * 1e3 - 1.0);
        }
        late
    });
    let started = Instant::now();
    for round in 0..25 {
        let turns: Vec<_> = (0..4).map(|c| turn(round, c)).collect();
        for t in turns {
            t.await.expect("turn");
        }
    }
    let elapsed = started.elapsed();
    done.store(true, Ordering::Relaxed);
    let late = percentiles(&sleeper.await.expect("sleeper"));
    let ms = |v: Option<f64>| v.unwrap_or(f64::NAN);
    println!(
        "{name}: 100 in {:.2} s; a 1 ms sleep woke late by p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({} sleeps)",
        elapsed.as_secs_f64(),
        ms(late.p50),
        ms(late.p99),
        ms(late.max),
        late.count
    );
}
