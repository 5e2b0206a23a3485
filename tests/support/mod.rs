//! Shared by the service tests: the fake Graph API, Meta-shaped webhook
//! payloads, signing, a stand-in speech-to-text provider and a service
//! started on 127.0.0.1 port 0.

#![allow(dead_code)]

pub mod fake_graph;
pub mod processes;
pub mod speech;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use voxline::channel::whatsapp::webhook::sign;
use voxline::config::Config;
use voxline::pipeline::budget::{Budget, BudgetStage, Budgets};
use voxline::service::{ReplyProvider, Service};
use voxline::store::Turn;
use voxline::stt::{SpeechToText, SttError, TranscribeOptions, Transcript, Window};

use fake_graph::FakeGraph;

pub const APP_SECRET: &str = "app-secret-for-tests";
pub const VERIFY_TOKEN: &str = "verify-me";
pub const PHONE_NUMBER_ID: &str = "106540352242922";

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A voice note from the committed fixtures.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(crate_dir().join("audio-fixtures").join(name)).unwrap()
}

/// The environment `voxline serve` reads, pointed at `graph`.
pub fn env_for(graph: &FakeGraph, data_dir: &Path) -> Vec<(&'static str, String)> {
    vec![
        ("WHATSAPP_ACCESS_TOKEN", fake_graph::TOKEN.to_string()),
        ("WHATSAPP_APP_SECRET", APP_SECRET.to_string()),
        ("WHATSAPP_VERIFY_TOKEN", VERIFY_TOKEN.to_string()),
        ("WHATSAPP_PHONE_NUMBER_ID", PHONE_NUMBER_ID.to_string()),
        ("WHATSAPP_GRAPH_URL", graph.url()),
        // The fake serves media over plain http on loopback: allowed here
        // explicitly, as the token goes only to https hosts otherwise.
        ("WHATSAPP_MEDIA_HOSTS", format!("http://{}", graph.addr)),
        ("VOXLINE_ADDR", "127.0.0.1:0".to_string()),
        ("VOXLINE_DATA_DIR", data_dir.display().to_string()),
    ]
}

/// A loopback port free now, for a process this test starts.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `voxline --config CONFIG serve` on 127.0.0.1:`port` against the fake
/// Graph API, its data in `data_dir`, appending its log to `log`.
pub fn serve_command(
    graph: &FakeGraph,
    data_dir: &Path,
    config: &Path,
    log: &Path,
    port: u16,
) -> std::process::Command {
    use std::process::Stdio;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_voxline"));
    cmd.arg("--config")
        .arg(config)
        .arg("serve")
        .env("VOXLINE_MODELS_DIR", crate_dir().join("models"))
        .env("RUST_LOG", "info,whisper_rs=error")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .unwrap(),
        );
    for (k, v) in env_for(graph, data_dir) {
        cmd.env(k, v);
    }
    cmd.env("VOXLINE_ADDR", format!("127.0.0.1:{port}"));
    cmd
}

/// A configuration for an in-process service with quick retries, answered
/// by the dialog stage (the default) with the committed `data/` folder and
/// its database in `data_dir`.
pub fn config_for(graph: &FakeGraph, data_dir: &Path) -> Config {
    let env = env_for(graph, data_dir);
    let mut config = Config::default();
    config
        .apply_env(|name| env.iter().find(|(k, _)| *k == name).map(|(_, v)| v.clone()))
        .unwrap();
    config.whatsapp.backoff_base_ms = 20;
    config.whatsapp.backoff_max_ms = 100;
    config.whatsapp.pair_rate_wait_ms = 50;
    config.outbox.retry_base_ms = 100;
    config.outbox.retry_max_ms = 400;
    config.service.shutdown_grace_ms = 5_000;
    config.dialog.data_dir = crate_dir().join("data");
    config.budgets = generous_budgets();
    quick_voice(&mut config);
    config
}

/// espeak-ng only, nothing rendered ahead: the tests of delivery mechanics
/// share two cores and need a reply's audio, not a natural voice (the
/// voice tests and `a_voice_note_is_answered_in_the_default_voice` use the
/// default chain).
pub fn quick_voice(config: &mut Config) {
    config.tts.providers = vec![voxline::tts::ProviderKind::Espeak];
    config.tts.cache.warm = false;
}

/// [`quick_voice`] as TOML, for tests that run the binary.
pub const QUICK_VOICE_TOML: &str = "[tts]\nproviders = [\"espeak\"]\n[tts.cache]\nwarm = false\n";

/// Every budget at a minute, with its default action: tests of delivery
/// mechanics run on a loaded machine and must not trip a budget; tests of
/// the budgets set the one they test.
pub fn generous_budgets() -> Budgets {
    let mut budgets = Budgets::default();
    for stage in BudgetStage::ALL {
        let action = budgets.get(stage).action;
        budgets.set(stage, Budget::fixed(60_000, action)).unwrap();
    }
    budgets
}

/// [`generous_budgets`] as a `[budgets]` section, for tests that run the
/// binary with a config file.
pub fn generous_budgets_toml() -> String {
    let budgets = generous_budgets();
    let lines: String = budgets
        .iter()
        .map(|(stage, b)| {
            format!(
                "{} = {{ ms = {}, action = \"{}\" }}\n",
                stage.name(),
                b.ms,
                b.action.name()
            )
        })
        .collect();
    format!("[budgets]\n{lines}")
}

/// [`config_for`], answered by the echo: for tests of delivery mechanics
/// that check what was understood, word for word.
pub fn echo_config_for(graph: &FakeGraph, data_dir: &Path) -> Config {
    let mut config = config_for(graph, data_dir);
    config.service.reply = ReplyProvider::Echo;
    config
}

/// Waits until the turn of `id` is final (replied, silent or failed).
pub async fn wait_final(store: &dyn voxline::store::Queue, id: &str) -> Turn {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let turn = store.turn(id).await.unwrap();
        if turn.state.is_final() {
            return turn;
        }
        assert!(tokio::time::Instant::now() < deadline, "{id} not finished");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

pub async fn start(config: &Config, stt: Arc<dyn SpeechToText>) -> Service {
    Service::start(config, stt).await.unwrap()
}

/// Says the same words for every note, counting the calls.
pub struct FixedStt {
    pub text: String,
    pub calls: std::sync::atomic::AtomicUsize,
}

impl FixedStt {
    pub fn new(text: &str) -> Arc<Self> {
        Arc::new(Self {
            text: text.into(),
            calls: Default::default(),
        })
    }
}

impl SpeechToText for FixedStt {
    fn transcribe(&self, speech: &[f32], _: &TranscribeOptions) -> Result<Transcript, SttError> {
        assert!(!speech.is_empty());
        self.calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Ok(Transcript {
            language: "en".into(),
            text: self.text.clone(),
            segments: Vec::new(),
            confidence: 0.9,
            no_speech_probability: 0.0,
            window: Window::Full,
            routing: None,
        })
    }

    fn name(&self) -> &str {
        "fixed"
    }
}

/// One webhook notification in Meta's shape, carrying `messages`.
pub fn notification(messages: serde_json::Value, contacts: serde_json::Value) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{
            "id": "102290129340398",
            "changes": [{
                "field": "messages",
                "value": {
                    "messaging_product": "whatsapp",
                    "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
                    "contacts": contacts,
                    "messages": messages,
                }
            }]
        }]
    })
    .to_string()
}

fn contact(from: &str) -> serde_json::Value {
    json!([{"profile": {"name": "Kerry Fisher"}, "wa_id": from}])
}

pub fn voice_note(wamid: &str, from: &str, media_id: &str) -> String {
    notification(
        json!([{
            "from": from, "id": wamid, "timestamp": now_s(), "type": "audio",
            "audio": {"mime_type": "audio/ogg; codecs=opus", "sha256": "ignored-by-voxline", "id": media_id, "voice": true}
        }]),
        contact(from),
    )
}

/// Now, in Unix seconds, as Meta writes a message's `timestamp`: a
/// message older than the inbox's replay horizon is dropped.
pub fn now_s() -> String {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        .to_string()
}

pub fn text(wamid: &str, from: &str, body: &str) -> String {
    notification(
        json!([{"from": from, "id": wamid, "timestamp": now_s(), "type": "text", "text": {"body": body}}]),
        contact(from),
    )
}

pub fn statuses(value: serde_json::Value) -> String {
    json!({
        "object": "whatsapp_business_account",
        "entry": [{"id": "102290129340398", "changes": [{"field": "messages", "value": {
            "messaging_product": "whatsapp",
            "metadata": {"display_phone_number": "15550783881", "phone_number_id": PHONE_NUMBER_ID},
            "statuses": value
        }}]}]
    })
    .to_string()
}

pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap()
}

/// POSTs `body` to the webhook signed with the app secret, as Meta does.
pub async fn deliver(client: &reqwest::Client, addr: std::net::SocketAddr, body: &str) -> u16 {
    client
        .post(format!("http://{addr}/webhook"))
        .header("content-type", "application/json")
        .header("x-hub-signature-256", sign(APP_SECRET, body.as_bytes()))
        .body(body.to_string())
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}
