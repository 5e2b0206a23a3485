//! Graph API outages, the size: 100 voice notes from 20 customers,
//! with every Graph call answered 500 for 60 s in the middle of them; then
//! 20 more notes while the access token is rejected (190) for 30 s, after
//! which the operator writes the new token into the config file. Every note
//! must be answered exactly once, in each customer's order. The service runs
//! in process against the fake Graph API on 127.0.0.1 (`tests/support`), its
//! speech-to-text a stand-in that names the note (this measures delivery,
//! not transcription), its replies the echo.
//!
//! `cargo bench --bench outage`; `OUTAGE_S` (60), `TOKEN_S` (30), `NOTES`
//! (100) and `CUSTOMERS` (20) size it. The exit code says whether it held.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::fake_graph::{FakeGraph, Faults, Sent};
use support::*;
use voxline::store::TurnState;
use voxline::stt::{SpeechToText, SttError, TranscribeOptions, Transcript, Window};

fn env(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Says "note N", N counting the calls: each note's reply names it.
struct Counting(AtomicUsize);

impl SpeechToText for Counting {
    fn transcribe(&self, _: &[f32], _: &TranscribeOptions) -> Result<Transcript, SttError> {
        let n = self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Transcript {
            language: "en".into(),
            text: format!("note {n}"),
            segments: Vec::new(),
            confidence: 0.9,
            no_speech_probability: 0.0,
            window: Window::Full,
            routing: None,
        })
    }

    fn name(&self) -> &str {
        "counting"
    }
}

struct Phase {
    name: &'static str,
    notes: usize,
    fault_s: u64,
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let held = runtime.block_on(run());
    std::process::exit(if held { 0 } else { 1 });
}

async fn run() -> bool {
    let (notes, customers) = (env("NOTES", 100) as usize, env("CUSTOMERS", 20) as usize);
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("voxline.toml");
    let token_line = |t: &str| format!("[whatsapp]\naccess_token = \"{t}\"\n");
    std::fs::write(&config_file, token_line(support::fake_graph::TOKEN)).unwrap();
    let mut config = echo_config_for(&graph, dir.path());
    // The production retry policy, not the tests' quick one.
    config.outbox = Default::default();
    config.whatsapp.backoff_base_ms = 250;
    config.whatsapp.backoff_max_ms = 8_000;
    let stt = Arc::new(Counting(AtomicUsize::new(0)));
    let service = start(&config, stt).await;
    service.watch_access_token(config_file.clone());
    graph.add_media(
        "media-outage",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg",
    );
    let c = client();
    let phases = [
        Phase {
            name: "graph outage (500)",
            notes,
            fault_s: env("OUTAGE_S", 60),
        },
        Phase {
            name: "token rejected (190)",
            notes: notes / 5,
            fault_s: env("TOKEN_S", 30),
        },
    ];
    let mut held = true;
    let mut sent_before = 0;
    let mut answers_before = 0;
    for (p, phase) in phases.iter().enumerate() {
        let started = Instant::now();
        let fault_from = phase.notes / 5;
        let mut fault_started = None;
        for i in 0..phase.notes {
            if i == fault_from {
                if p == 0 {
                    graph.set_faults(Faults {
                        outage: true,
                        ..Faults::default()
                    });
                } else {
                    graph.set_token("EAAG-renewed-token");
                }
                fault_started = Some(Instant::now());
            }
            let from = format!("1555000{:04}", i % customers);
            let body = voice_note(&format!("wamid.P{p}N{i:04}"), &from, "media-outage");
            let status = deliver(&c, service.addr(), &body).await;
            assert_eq!(status, 200, "note {i} not acknowledged");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let fault_started = fault_started.unwrap_or_else(Instant::now);
        let left = Duration::from_secs(phase.fault_s).saturating_sub(fault_started.elapsed());
        tokio::time::sleep(left).await;
        let waiting = service.store().waiting().await.unwrap().len();
        let recovered = Instant::now();
        if p == 0 {
            graph.set_faults(Faults::default());
        } else {
            std::fs::write(&config_file, token_line("EAAG-renewed-token")).unwrap();
        }
        let expected = answers_before + phase.notes;
        let done = tokio::time::timeout(Duration::from_secs(300), async {
            loop {
                let answers = graph
                    .sent()
                    .iter()
                    .filter(|s| s.text.as_deref().is_some_and(|t| t.contains("note ")))
                    .count();
                if answers >= expected {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .is_ok();
        let drained = recovered.elapsed();
        tokio::time::sleep(Duration::from_secs(3)).await;
        let sent = graph.sent();
        let mine = &sent[sent_before.min(sent.len())..];
        let (duplicates, disorder) = check(mine);
        let holding = mine
            .iter()
            .filter(|s| s.text.as_deref().is_some_and(|t| t.contains("One moment")))
            .count();
        let answered = mine.len() - holding;
        let mut failed = 0;
        for i in 0..phase.notes {
            let turn = service
                .store()
                .turn(&format!("wamid.P{p}N{i:04}"))
                .await
                .unwrap();
            failed += usize::from(turn.state != TurnState::Replied);
        }
        let ok = done && answered == phase.notes && duplicates == 0 && disorder == 0 && failed == 0;
        held &= ok;
        println!(
            "{}: {} notes from {customers} customers, fault {} s from note {fault_from}; {waiting} turns waiting when it ended; \
             answered {answered} of {} ({} not replied, {holding} holding messages), {duplicates} duplicates, {disorder} out of order; \
             all out {:.1} s after recovery; phase {:.0} s: {}",
            phase.name,
            phase.notes,
            phase.fault_s,
            phase.notes,
            failed,
            drained.as_secs_f64(),
            started.elapsed().as_secs_f64(),
            if ok { "held" } else { "FAILED" }
        );
        sent_before = sent.len();
        answers_before += answered;
    }
    service.stop().await.unwrap();
    held
}

/// Duplicates (a note answered twice) and order violations (a customer's
/// later note answered before an earlier one). Each reply is an audio note
/// or the echo text; the echo names the note, and notes are numbered in the
/// order the stand-in heard them, which is each customer's order.
fn check(sent: &[Sent]) -> (usize, usize) {
    let mut seen = std::collections::HashSet::new();
    let mut duplicates = 0;
    let mut last: BTreeMap<&str, usize> = BTreeMap::new();
    let mut disorder = 0;
    for s in sent {
        let text = s.text.as_deref().unwrap_or_default();
        let Some(n) = text.split_whitespace().last().and_then(|w| {
            w.trim_matches(|c: char| !c.is_ascii_digit())
                .parse::<usize>()
                .ok()
        }) else {
            continue;
        };
        if !seen.insert(n) {
            duplicates += 1;
        }
        if last.get(s.to.as_str()).is_some_and(|&prev| prev > n) {
            disorder += 1;
        }
        last.insert(&s.to, n);
    }
    (duplicates, disorder)
}
