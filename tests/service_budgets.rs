//! Each budget's declared action, in the real service: a slow LLM, an LLM
//! chain whose first provider is slow, a TTS server that never answers, a
//! slow media server, a transcription over budget (asked for text, or
//! redone with the faster model), and a turn slow enough for a holding
//! message. Every turn ends within its budgets plus a margin, with the
//! declared degraded reply, and the metrics count the overrun.

mod support;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use support::fake_graph::{FakeGraph, Faults};
use support::*;
use voxline::bench::fake_llm::{FakeLlm, REPLY};
use voxline::config::Config;
use voxline::dialog::llm::ProviderConfig;
use voxline::pipeline::budget::{Action, Budget, BudgetStage};
use voxline::pipeline::reply::notices;
use voxline::pipeline::trace::{SpanOutcome, Stage, TurnTrace};
use voxline::service::Service;
use voxline::stt::{SpeechToText, SttError, TranscribeOptions, Transcript};
use voxline::tts::ProviderKind;

const WAIT: Duration = Duration::from_secs(30);
/// Scheduling, the fake peers and a loaded 2-core machine.
const MARGIN_MS: f64 = 1_000.0;
/// Maria, who placed order 1842 (shipped), in `data/catalogue.toml`.
const MARIA: &str = "15550001842";

fn set(config: &mut Config, stage: BudgetStage, ms: u64, action: Action) {
    config
        .budgets
        .set(stage, Budget::fixed(ms, action))
        .unwrap();
}

fn llm(name: &str, base_url: String) -> ProviderConfig {
    ProviderConfig {
        name: name.into(),
        base_url,
        model: "fake".into(),
        api_key_env: None,
        first_token_timeout_ms: 10_000,
        total_timeout_ms: 20_000,
    }
}

async fn trace_of(service: &Service, id: &str) -> TurnTrace {
    let deadline = Instant::now() + WAIT;
    loop {
        let traces = service.store().recent_traces(100).await.unwrap();
        if let Some(t) = traces.into_iter().find(|t| t.message_id == id) {
            return t;
        }
        assert!(Instant::now() < deadline, "no trace for {id}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn overrun(trace: &TurnTrace, stage: Stage) -> Vec<(BudgetStage, Action)> {
    trace
        .spans
        .iter()
        .filter(|s| s.stage == stage)
        .filter_map(|s| match s.outcome {
            SpanOutcome::Overrun { budget, action } => Some((budget, action)),
            _ => None,
        })
        .collect()
}

async fn metrics_text(service: &Service) -> String {
    client()
        .get(format!("http://{}/metrics", service.addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

const OPEN_QUESTION: &str = "tell me something about your company";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_llm_is_cut_at_its_first_token_budget_and_the_template_answers() {
    let graph = FakeGraph::start().await;
    let fake = FakeLlm::start(REPLY).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    config.dialog.llm.providers = vec![llm("slow", fake.base_url(Duration::from_secs(5), 50))];
    set(
        &mut config,
        BudgetStage::DialogFirstToken,
        400,
        Action::Template,
    );
    let service = start(&config, FixedStt::new("unused")).await;
    let before = voxline::metrics::global().overruns("dialog_first_token", "template");

    let body = text("wamid.SLOWLLM", "15550007001", OPEN_QUESTION);
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    let trace = trace_of(&service, "wamid.SLOWLLM").await;
    let metrics = metrics_text(&service).await;
    service.stop().await.unwrap();

    assert_eq!(sent[0].text.as_deref(), Some(notices::LATE_ANSWER));
    assert_eq!(
        overrun(&trace, Stage::Dialog),
        [(BudgetStage::DialogFirstToken, Action::Template)]
    );
    assert!(trace.turn_ms < 400.0 + MARGIN_MS, "{}", trace.turn_ms);
    let after = voxline::metrics::global().overruns("dialog_first_token", "template");
    assert!(after > before, "overrun not counted");
    assert!(
        metrics.contains(
            "voxline_budget_overruns_total{stage=\"dialog_first_token\",action=\"template\"}"
        ),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_first_provider_hands_over_to_the_next() {
    let graph = FakeGraph::start().await;
    let fake = FakeLlm::start(REPLY).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    config.dialog.llm.providers = vec![
        llm("laggard", fake.base_url(Duration::from_secs(5), 50)),
        llm("quick", fake.base_url(Duration::from_millis(50), 100)),
    ];
    set(
        &mut config,
        BudgetStage::DialogFirstToken,
        400,
        Action::NextProvider,
    );
    let service = start(&config, FixedStt::new("unused")).await;

    let body = text("wamid.NEXT", "15550007002", OPEN_QUESTION);
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    let trace = trace_of(&service, "wamid.NEXT").await;
    let metrics = metrics_text(&service).await;
    service.stop().await.unwrap();

    let reply = sent[0].text.clone().unwrap();
    assert!(reply.starts_with("We are an online shop"), "{reply}");
    assert_eq!(trace.fast_path, Some(false), "answered by the LLM");
    // 400 ms on the laggard, then the quick one's whole answer.
    assert!(
        trace.turn_ms < 400.0 + 600.0 + MARGIN_MS,
        "{}",
        trace.turn_ms
    );
    assert!(
        metrics.contains("voxline_provider_fallbacks_total{kind=\"llm\",provider=\"laggard\"}"),
        "{metrics}"
    );
}

/// Accepts connections and never answers: a TTS server that hangs.
async fn hanging_server() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((sock, _)) = listener.accept().await {
            held.push(sock);
        }
    });
    (url, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_tts_sends_the_reply_as_text() {
    let graph = FakeGraph::start().await;
    let (url, _server) = hanging_server().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    config.tts.providers = vec![ProviderKind::Openai];
    config.tts.openai.base_url = url;
    config.tts.openai.api_key = Some("sk-test".into());
    set(
        &mut config,
        BudgetStage::TtsFirstAudio,
        500,
        Action::SendText,
    );
    let service = start(&config, FixedStt::new(" Where is my order 1842?")).await;
    graph.add_media(
        "media-order",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    let before = voxline::metrics::global().overruns("tts_first_audio", "send_text");

    let body = voice_note("wamid.TTSHANG", MARIA, "media-order");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    let trace = trace_of(&service, "wamid.TTSHANG").await;
    service.stop().await.unwrap();

    assert_eq!(sent[0].kind, "text", "{sent:?}");
    let reply = sent[0].text.clone().unwrap();
    assert!(reply.starts_with("Order 1842 is on its way."), "{reply}");
    assert_eq!(
        overrun(&trace, Stage::Tts),
        [(BudgetStage::TtsFirstAudio, Action::SendText)]
    );
    let tts = trace.spans.iter().find(|s| s.stage == Stage::Tts).unwrap();
    assert!(
        tts.duration_ms() < 500.0 + MARGIN_MS,
        "{}",
        tts.duration_ms()
    );
    let dialog_end = trace
        .spans
        .iter()
        .find(|s| s.stage == Stage::Dialog)
        .unwrap()
        .end_ms;
    assert!(
        trace.turn_ms < dialog_end + 500.0 + MARGIN_MS,
        "{} after dialog end {dialog_end}",
        trace.turn_ms
    );
    assert!(voxline::metrics::global().overruns("tts_first_audio", "send_text") > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_media_server_is_retried_once_then_apologised_for() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    set(
        &mut config,
        BudgetStage::Fetch,
        300,
        Action::RetryThenApologise,
    );
    set(&mut config, BudgetStage::Decode, 100, Action::Apologise);
    let stt = FixedStt::new(" Where is my order 1842?");
    let service = start(&config, stt.clone()).await;
    graph.add_media(
        "media-slow",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    graph.set_faults(Faults {
        slow_media: Some(Duration::from_millis(200)),
        ..Faults::default()
    });

    let body = voice_note("wamid.SLOWMEDIA", MARIA, "media-slow");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    let trace = trace_of(&service, "wamid.SLOWMEDIA").await;
    service.stop().await.unwrap();

    assert_eq!(sent[0].text.as_deref(), Some(notices::UNPLAYABLE));
    assert_eq!(
        overrun(&trace, Stage::Fetch),
        [
            (BudgetStage::Fetch, Action::RetryThenApologise),
            (BudgetStage::Fetch, Action::Apologise)
        ]
    );
    assert_eq!(graph.downloads_started(), 2);
    assert_eq!(stt.calls.load(Ordering::SeqCst), 0);
    assert!(trace.turn_ms < 2.0 * 400.0 + MARGIN_MS, "{}", trace.turn_ms);
}

#[tokio::test]
async fn a_slow_media_server_is_retried_once_then_left_to_the_outbox() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    // The default action.
    set(
        &mut config,
        BudgetStage::Fetch,
        300,
        Action::RetryThenOutbox,
    );
    set(&mut config, BudgetStage::Decode, 100, Action::Apologise);
    let stt = FixedStt::new(" Where is my order 1842?");
    let service = start(&config, stt.clone()).await;
    graph.add_media(
        "media-slow2",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    graph.set_faults(Faults {
        slow_media: Some(Duration::from_millis(200)),
        ..Faults::default()
    });
    let body = voice_note("wamid.SLOWOUTBOX", MARIA, "media-slow2");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let deadline = tokio::time::Instant::now() + WAIT;
    let turn = loop {
        let turn = service.store().turn("wamid.SLOWOUTBOX").await.unwrap();
        if turn.waiting.is_some() {
            break turn;
        }
        assert!(tokio::time::Instant::now() < deadline, "not deferred");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(
        turn.waiting
            .as_deref()
            .unwrap()
            .contains("fetch over budget"),
        "{:?}",
        turn.waiting
    );
    assert_eq!(turn.reply_text, None, "no apology stored");
    assert!(graph.sent().is_empty(), "no apology sent");
    // The network recovers: the note is fetched again and answered.
    graph.set_faults(Faults::default());
    let sent = graph.wait_for_sends(1, WAIT).await;
    assert_ne!(sent[0].text.as_deref(), Some(notices::UNPLAYABLE));
    assert_eq!(stt.calls.load(Ordering::SeqCst), 1);
    service.stop().await.unwrap();
}

/// Takes its time: listens for the abort flag and gives up when it is set.
struct SlowStt;

impl SpeechToText for SlowStt {
    fn transcribe(&self, _: &[f32], options: &TranscribeOptions) -> Result<Transcript, SttError> {
        let abort = options
            .abort
            .clone()
            .unwrap_or_else(|| Arc::new(AtomicBool::new(false)));
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(20) {
            if abort.load(Ordering::Relaxed) {
                return Err(SttError::Aborted);
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Err(SttError::Whisper("never finishes".into()))
    }

    fn name(&self) -> &str {
        "slow"
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcription_over_budget_asks_the_customer_to_type() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    set(&mut config, BudgetStage::Stt, 300, Action::AskForText);
    let service = start(&config, Arc::new(SlowStt)).await;
    graph.add_media(
        "media-order",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    let before = voxline::metrics::global().overruns("stt", "ask_for_text");

    let body = voice_note("wamid.SLOWSTT", MARIA, "media-order");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    let trace = trace_of(&service, "wamid.SLOWSTT").await;
    service.stop().await.unwrap();

    assert_eq!(sent[0].text.as_deref(), Some(notices::TYPE_PLEASE));
    assert_eq!(
        overrun(&trace, Stage::Stt),
        [(BudgetStage::Stt, Action::AskForText)]
    );
    let stt_end = trace.spans.iter().find(|s| s.stage == Stage::Stt).unwrap();
    assert!(stt_end.duration_ms() < 300.0 + MARGIN_MS, "{stt_end:?}");
    assert!(voxline::metrics::global().overruns("stt", "ask_for_text") > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transcription_over_budget_is_redone_with_the_faster_model() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    config.stt.models_dir = Some(crate_dir().join("models"));
    config.stt.fallback_model = Some("tiny.en".into());
    // The faster model gets the same budget: 10 s, so that tiny.en finishes
    // within it even with the other tests loading both cores.
    set(&mut config, BudgetStage::Stt, 10_000, Action::FasterModel);
    let service = start(&config, Arc::new(SlowStt)).await;
    graph.add_media(
        "media-order",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );

    let body = voice_note("wamid.FASTER", MARIA, "media-order");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    let trace = trace_of(&service, "wamid.FASTER").await;
    service.stop().await.unwrap();

    // tiny.en heard the question, and the shop answered it.
    let transcript = trace.transcript.clone().unwrap_or_default();
    assert!(transcript.contains("1842"), "{transcript}");
    assert!(
        trace
            .reply_text
            .as_deref()
            .unwrap_or("")
            .starts_with("Order 1842 is on its way."),
        "{trace:?}"
    );
    assert_eq!(sent.len(), 1);
    let stt: Vec<_> = trace
        .spans
        .iter()
        .filter(|s| s.stage == Stage::Stt)
        .collect();
    assert_eq!(stt.len(), 2, "{stt:?}");
    assert_eq!(
        stt[0].outcome,
        SpanOutcome::Overrun {
            budget: BudgetStage::Stt,
            action: Action::FasterModel
        }
    );
    assert_eq!(stt[1].outcome, SpanOutcome::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_turn_sends_a_holding_message_then_the_answer() {
    let graph = FakeGraph::start().await;
    let fake = FakeLlm::start(REPLY).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    config.dialog.llm.providers = vec![llm(
        "thoughtful",
        fake.base_url(Duration::from_millis(1_500), 100),
    )];
    set(&mut config, BudgetStage::Turn, 500, Action::Hold);
    config.budgets.holding_message = Some("One moment please.".into());
    let service = start(&config, FixedStt::new("unused")).await;

    let body = text("wamid.HOLD", "15550007003", OPEN_QUESTION);
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(2, WAIT).await;
    let trace = trace_of(&service, "wamid.HOLD").await;
    service.stop().await.unwrap();

    assert_eq!(sent[0].text.as_deref(), Some("One moment please."));
    let answer = sent[1].text.clone().unwrap();
    assert!(answer.starts_with("We are an online shop"), "{answer}");
    let hold = trace.spans.iter().find(|s| s.stage == Stage::Hold).unwrap();
    assert!(
        (500.0..500.0 + MARGIN_MS).contains(&hold.start_ms),
        "{hold:?}"
    );
    assert_eq!(
        hold.outcome,
        SpanOutcome::Overrun {
            budget: BudgetStage::Turn,
            action: Action::Hold
        }
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_holding_message_for_a_customer_who_said_stop() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    set(&mut config, BudgetStage::Turn, 100, Action::Hold);
    set(&mut config, BudgetStage::Stt, 60_000, Action::AskForText);
    // Each transcription takes 400 ms: past the turn budget.
    struct Sleepy;
    impl SpeechToText for Sleepy {
        fn transcribe(&self, _: &[f32], _: &TranscribeOptions) -> Result<Transcript, SttError> {
            std::thread::sleep(Duration::from_millis(400));
            Ok(Transcript {
                language: "en".into(),
                text: " Where is my order 1842?".into(),
                segments: Vec::new(),
                confidence: 0.9,
                no_speech_probability: 0.0,
                window: voxline::stt::Window::Full,
                routing: None,
            })
        }
        fn name(&self) -> &str {
            "sleepy"
        }
    }
    let service = start(&config, Arc::new(Sleepy)).await;
    graph.add_media(
        "media-order",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    let stop = text("wamid.STOP", MARIA, "STOP");
    assert_eq!(deliver(&client(), service.addr(), &stop).await, 200);
    graph.wait_for_sends(1, WAIT).await;
    let body = voice_note("wamid.AFTERSTOP", MARIA, "media-order");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    let trace = trace_of(&service, "wamid.AFTERSTOP").await;
    service.stop().await.unwrap();
    assert_eq!(graph.sent().len(), 1, "{:?}", graph.sent());
    assert!(trace.spans.iter().all(|s| s.stage != Stage::Hold));
}
