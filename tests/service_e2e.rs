//! End to end with the real speech model: a signed voice-note webhook with a
//! fixture note → the fake Graph API receives exactly one reply, to the
//! right number, echoing the words of the note (`[service] reply = "echo"`).
//! Then the real `voxline serve` binary with its default configuration (the
//! dialog stage answers), killed with SIGKILL in the middle of a turn and
//! restarted on the same data folder, answers the message once, with a
//! voice note (the order's status from the demo shop, spoken by espeak-ng).
//!
//! Needs `models/ggml-tiny.en.bin` (`./x setup`).

mod support;

use std::process::{Child, Command};
use std::sync::Arc;
use std::time::Duration;

use support::fake_graph::{FakeGraph, Faults};
use support::*;
use voxline::store::sqlite::SqliteStore;
use voxline::store::{Queue, StoreConfig, TurnState};
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig};

fn tiny_en() -> Arc<dyn SpeechToText> {
    let config = SttConfig {
        model: "tiny.en".into(),
        models_dir: Some(crate_dir().join("models")),
        ..SttConfig::default()
    };
    Arc::new(WhisperStt::load(&config).expect("models/ggml-tiny.en.bin is missing: run ./x setup"))
}

fn words(text: &str) -> Vec<String> {
    voxline::fixtures::normalise_words(text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_delivered_three_times_is_answered_once_with_its_words() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&echo_config_for(&graph, dir.path()), tiny_en()).await;
    graph.add_media(
        "1003383421387256",
        fixture("commerce/en/faq_opening_hours.ogg"),
        "audio/ogg; codecs=opus",
    );
    let c = client();
    let body = voice_note(
        "wamid.HBgLMTU1NTAwMDAwMDEVAgASGBQzQTRF",
        "15551234567",
        "1003383421387256",
    );
    for _ in 0..3 {
        assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    }
    let sent = graph.wait_for_sends(1, Duration::from_secs(60)).await;
    service.stop().await.unwrap();
    let sent_after_drain = graph.sent();
    assert_eq!(sent_after_drain.len(), 1, "{sent_after_drain:?}");
    let reply = &sent[0];
    assert_eq!(reply.to, "15551234567");
    assert_eq!(reply.kind, "text");
    let text = reply.text.clone().unwrap();
    assert!(text.starts_with("I heard: "), "{text}");
    let heard = words(&text);
    for w in ["opening", "hours"] {
        assert!(heard.iter().any(|h| h == w), "{w:?} missing from {text:?}");
    }
}

/// The `voxline serve` binary, logging to a file.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(graph: &FakeGraph, data_dir: &std::path::Path, log: &std::path::Path) -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        // The download is slowed on purpose and the machine may be loaded:
        // no budget may cut this turn short or add a holding message.
        let config = data_dir.with_extension("toml");
        std::fs::write(&config, generous_budgets_toml() + support::QUICK_VOICE_TOML).unwrap();
        Self {
            child: serve_command(graph, data_dir, &config, log, port)
                .spawn()
                .unwrap(),
            port,
        }
    }

    fn addr(&self) -> std::net::SocketAddr {
        ([127, 0, 0, 1], self.port).into()
    }

    async fn wait_ready(&mut self, log: &std::path::Path) {
        let c = client();
        for _ in 0..300 {
            if let Ok(r) = c.get(format!("http://{}/readyz", self.addr())).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!(
                    "voxline serve exited with {status}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("voxline serve not ready after 30 s");
    }

    fn terminate(&self) {
        let ok = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }

    async fn wait_exit(mut self) -> std::process::ExitStatus {
        for _ in 0..600 {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.child.kill().unwrap();
        panic!("voxline serve did not stop within 60 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_turn_and_restarted_answers_once() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("serve.log");
    graph.add_media(
        "media-kill",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    // About 0.2 s per 4 KB chunk: the download takes seconds, so SIGKILL
    // lands mid-turn.
    graph.set_faults(Faults {
        slow_media: Some(Duration::from_millis(200)),
        ..Faults::default()
    });

    let mut first = Server::start(&graph, &data, &log);
    first.wait_ready(&log).await;
    // Maria, whose order 1842 is shipped in `data/catalogue.toml`.
    let body = voice_note("wamid.KILL1", "15550001842", "media-kill");
    assert_eq!(deliver(&client(), first.addr(), &body).await, 200);
    graph.wait_for_downloads(1, Duration::from_secs(30)).await;
    first.child.kill().unwrap(); // SIGKILL
    first.child.wait().unwrap();
    assert!(
        graph.sent().is_empty(),
        "replied before the kill: {:?}",
        graph.sent()
    );
    {
        let store = SqliteStore::open(&StoreConfig {
            data_dir: data.clone(),
            ..StoreConfig::default()
        })
        .unwrap();
        let turn = store.turn("wamid.KILL1").await.unwrap();
        assert_eq!(turn.state, TurnState::Fetching, "killed mid-turn");
    }

    // Restarted on the same data: resumes the turn. SIGTERM while it is
    // fetching again: the drain lets it finish before the process exits.
    let mut second = Server::start(&graph, &data, &log);
    second.wait_ready(&log).await;
    graph.wait_for_downloads(2, Duration::from_secs(30)).await;
    second.terminate();
    let status = second.wait_exit().await;
    let logs = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(status.success(), "exit {status}: {logs}");

    let sent = graph.sent();
    assert_eq!(sent.len(), 1, "{sent:?}\n{logs}");
    assert_eq!(sent[0].to, "15550001842");
    // Heard by tiny.en, answered by the dialog stage from the demo shop and
    // spoken: a voice note, whose upload the fake checked is Ogg/Opus.
    assert_eq!(sent[0].kind, "audio", "{sent:?}\n{logs}");
    assert!(sent[0].voice, "{sent:?}");
    let note = sent[0].audio.as_deref().expect("the uploaded note");
    let heard = voxline::media::load(note, &voxline::media::MediaConfig::default()).unwrap();
    assert_eq!(heard.outcome, voxline::media::SpeechOutcome::Speech);
    assert!(logs.contains("reply spoken"), "{logs}");
    assert!(logs.contains("resuming unfinished turns"), "{logs}");
    assert!(
        logs.contains("wamid.KILL1"),
        "the turn's span names its wamid: {logs}"
    );
    assert!(
        !logs.contains(support::fake_graph::TOKEN),
        "the access token was logged"
    );
    assert!(!logs.contains(APP_SECRET), "the app secret was logged");

    // The store says so too, and a third start has nothing to do.
    let store = SqliteStore::open(&StoreConfig {
        data_dir: data.clone(),
        ..StoreConfig::default()
    })
    .unwrap();
    assert_eq!(
        store.turn("wamid.KILL1").await.unwrap().state,
        TurnState::Replied
    );
    assert!(store.unfinished().await.unwrap().is_empty());
}

#[test]
fn serve_refuses_to_start_without_its_settings_and_names_them() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .arg("serve")
        .env_remove("WHATSAPP_ACCESS_TOKEN")
        .env("WHATSAPP_APP_SECRET", APP_SECRET)
        .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
        .env("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
        .env("VOXLINE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("WHATSAPP_ACCESS_TOKEN"), "{err}");

    let out = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .arg("serve")
        .env("WHATSAPP_ACCESS_TOKEN", "EAAG-secret-token-value")
        .env("WHATSAPP_APP_SECRET", APP_SECRET)
        .env("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN)
        .env("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID)
        .env("VOXLINE_ADDR", "not-an-address")
        .env("VOXLINE_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("VOXLINE_ADDR"), "{err}");
    assert!(!err.contains("EAAG-secret-token-value"), "{err}");
}
