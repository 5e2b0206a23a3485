//! The operator console in headless Chromium: a console router on
//! 127.0.0.1 over turns built here, behind the operator token (needed on
//! loopback too), and `tests/browser/console.mjs` driving
//! the page: the turn appears in the live list after the page has loaded,
//! its waterfall shows its spans, the latency table has rows, and a
//! screenshot lands in `target/console.png`.
//!
//! Needs node, `npm ci` (playwright-core) and Debian's chromium, which
//! `./x setup` installs; without them this test fails and says so.

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use voxline::console::{self, ConsoleData, HandoffRow, OutboxRow, OutboxView};
use voxline::pipeline::budget::{Action, BudgetStage, Budgets, ReloadStatus};
use voxline::pipeline::trace::{Span, SpanOutcome, Stage, TurnEnd, TurnTrace};

const TOKEN: &str = "console-test-token";
/// A wamid as WhatsApp writes them, `=` padding included.
const TARGET: &str = "wamid.HBgLMTU1NTAwMDE4NDIVAgASGBQzRUIwQTFDMkQzRTRGNTY3ODkwQUIA==";

fn now_ms() -> i64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as i64)
}

fn span(stage: Stage, start_ms: f64, first_ms: Option<f64>, end_ms: f64) -> Span {
    Span {
        stage,
        start_ms,
        first_ms,
        end_ms,
        outcome: SpanOutcome::Ok,
    }
}

fn overrun(mut s: Span, budget: BudgetStage, action: Action) -> Span {
    s.outcome = SpanOutcome::Overrun { budget, action };
    s
}

fn budgets_ms() -> BTreeMap<String, u64> {
    Budgets::default()
        .iter()
        .map(|(s, b)| (s.name().to_string(), b.ms))
        .collect()
}

fn trace(
    id: &str,
    from: &str,
    kind: &str,
    at_ms: i64,
    spans: Vec<Span>,
    end: TurnEnd,
) -> TurnTrace {
    let turn_ms = spans.iter().find(|s| s.stage == Stage::Send).map_or_else(
        || spans.iter().map(|s| s.end_ms).fold(0.0, f64::max),
        |s| s.start_ms,
    );
    let sequential_ms = spans
        .iter()
        .filter(|s| !matches!(s.stage, Stage::Queue | Stage::Hold))
        .map(Span::duration_ms)
        .sum();
    TurnTrace {
        message_id: id.into(),
        from: from.into(),
        kind: kind.into(),
        started_unix_ms: at_ms,
        spans,
        turn_ms,
        sequential_ms,
        end,
        transcript: None,
        language: Some("en".into()),
        intent: None,
        fast_path: None,
        reply_text: None,
        reply_bytes: None,
        audio_ms: None,
        note: None,
        routing: None,
        budgets_ms: budgets_ms(),
    }
}

/// A voice note answered with a voice note, dialog, speech and packing
/// overlapping as they do in the service.
fn voice_turn(id: &str, at_ms: i64, stt_ms: f64) -> TurnTrace {
    let s = 118.0 + stt_ms;
    let mut t = trace(
        id,
        "15550001842",
        "audio",
        at_ms,
        vec![
            span(Stage::Ack, 0.0, None, 1.8),
            span(Stage::Queue, 1.8, None, 2.4),
            span(Stage::Fetch, 2.4, Some(31.0), 96.0),
            span(Stage::Decode, 31.0, None, 104.0),
            span(Stage::Resample, 104.0, None, 117.5),
            span(Stage::Stt, 118.0, None, s),
            span(Stage::Dialog, s + 1.0, Some(s + 212.0), s + 690.0),
            span(Stage::Tts, s + 215.0, Some(s + 262.0), s + 910.0),
            span(Stage::Encode, s + 262.0, None, s + 935.0),
            span(Stage::Upload, s + 936.0, None, s + 1_180.0),
            span(Stage::Send, s + 1_181.0, None, s + 1_402.0),
        ],
        TurnEnd::Voice,
    );
    t.transcript = Some("Hi, where is my order 1842? It was due on Monday.".into());
    t.intent = Some("order_status".into());
    t.fast_path = Some(false);
    t.reply_text =
        Some("Order 1842 left our warehouse on Monday and arrives tomorrow before noon.".into());
    t.reply_bytes = Some(21_734);
    t.audio_ms = Some(3_400.0);
    t
}

/// The turns, newest first; `TARGET` is the newest, and only shows once
/// the page has polled a few times.
fn turns() -> (TurnTrace, Vec<TurnTrace>) {
    let now = now_ms();
    let target = voice_turn(TARGET, now, 1_240.0);

    let mut late_speech = voice_turn("wamid.late-speech", now - 40_000, 1_610.0);
    late_speech.spans[7] = overrun(
        span(Stage::Tts, 1_943.0, Some(3_590.0), 6_943.0),
        BudgetStage::TtsTotal,
        Action::SendText,
    );
    late_speech
        .spans
        .retain(|s| !matches!(s.stage, Stage::Encode | Stage::Upload));
    late_speech.spans.last_mut().unwrap().start_ms = 6_944.0;
    late_speech.spans.last_mut().unwrap().end_ms = 7_101.0;
    late_speech.turn_ms = 6_944.0;
    late_speech.end = TurnEnd::Text;
    late_speech.reply_bytes = None;
    late_speech.note = Some("speech ran over tts_total; sent as text".into());

    let mut text = trace(
        "wamid.text-hours",
        "15550007777",
        "text",
        now - 95_000,
        vec![
            span(Stage::Ack, 0.0, None, 1.1),
            span(Stage::Queue, 1.1, None, 1.3),
            span(Stage::Dialog, 1.3, Some(3.9), 4.2),
            span(Stage::Send, 4.3, None, 180.0),
        ],
        TurnEnd::Text,
    );
    text.intent = Some("opening_hours".into());
    text.fast_path = Some(true);
    text.transcript = None;
    text.reply_text = Some("We're open 9:00 to 18:00, Monday to Saturday.".into());

    let mut slow_llm = voice_turn("wamid.slow-llm", now - 180_000, 1_020.0);
    slow_llm.spans[6] = overrun(
        span(Stage::Dialog, 1_139.0, Some(2_640.0), 3_010.0),
        BudgetStage::DialogFirstToken,
        Action::NextProvider,
    );
    slow_llm.intent = None;

    let mut failed = trace(
        "wamid.fetch-failed",
        "15550004242",
        "audio",
        now - 300_000,
        vec![
            span(Stage::Ack, 0.0, None, 2.0),
            Span {
                outcome: SpanOutcome::Error {
                    reason: "graph media download: 404 <not found> & gone".into(),
                },
                ..span(Stage::Fetch, 2.5, None, 410.0)
            },
        ],
        TurnEnd::Failed,
    );
    failed.note = Some("the voice note could not be downloaded".into());

    let mut older: Vec<TurnTrace> = vec![late_speech, text, slow_llm, failed];
    for i in 0..12 {
        older.push(voice_turn(
            &format!("wamid.older-{i}"),
            now - 400_000 - i * 60_000,
            900.0 + (i as f64 * 137.0) % 800.0,
        ));
    }
    (target, older)
}

struct Fake {
    target: TurnTrace,
    older: Vec<TurnTrace>,
    calls: AtomicUsize,
}

#[async_trait::async_trait]
impl ConsoleData for Fake {
    async fn recent_turns(&self, limit: usize) -> Result<Vec<TurnTrace>, String> {
        // The page's first round asks for the stats and the turns; the turn
        // under test arrives after that, as a turn finishing while the
        // operator watches.
        let shown = self.calls.fetch_add(1, Ordering::SeqCst) >= 2;
        let newest = shown.then(|| self.target.clone());
        Ok(newest
            .into_iter()
            .chain(self.older.iter().cloned())
            .take(limit)
            .collect())
    }

    fn budgets(&self) -> (Arc<Budgets>, ReloadStatus) {
        (
            Arc::new(Budgets::default()),
            ReloadStatus {
                applied: 1,
                rejected: 1,
                last_error: Some(
                    "budgets.turn: action \"send_text\" is not one this stage can take (hold)"
                        .into(),
                ),
            },
        )
    }

    async fn handoffs(&self) -> Result<Vec<HandoffRow>, String> {
        Ok(vec![HandoffRow {
            number: "15550004242".into(),
            since_unix_ms: now_ms() - 720_000,
            reason: "asked for a person: <b>now</b>".into(),
        }])
    }

    async fn outbox(&self) -> Result<OutboxView, String> {
        Ok(OutboxView {
            paused: Some("Error validating access token: Session has expired".into()),
            waiting: vec![OutboxRow {
                message_id: "wamid.WAITING".into(),
                customer: "34*******78".into(),
                state: "transcribed".into(),
                attempts: 3,
                received_unix_ms: now_ms() - 90_000,
                retry_at_unix_ms: Some(now_ms() + 2_000),
                reason: "send failed: access token rejected (190)".into(),
            }],
        })
    }
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// What the browser test needs, or why it cannot run.
fn check_tools() -> Result<(), String> {
    let node = Command::new("node").arg("--version").output();
    match node {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(format!(
                "`node --version` failed: {}",
                String::from_utf8_lossy(&o.stderr)
            ))
        }
        Err(e) => return Err(format!("node is not installed ({e})")),
    }
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("no chromium at {chromium}"));
    }
    if !repo()
        .join("node_modules/playwright-core/package.json")
        .exists()
    {
        return Err("node_modules/playwright-core is missing (npm ci)".into());
    }
    Ok(())
}

/// Runs `cmd` to completion or kills it after `limit`; returns whether it
/// succeeded and what it printed.
fn run_with_timeout(mut cmd: Command, limit: Duration) -> (bool, String) {
    let out = tempfile::NamedTempFile::new().unwrap();
    let err = tempfile::NamedTempFile::new().unwrap();
    let mut child = cmd
        .stdout(Stdio::from(out.reopen().unwrap()))
        .stderr(Stdio::from(err.reopen().unwrap()))
        .stdin(Stdio::null())
        .spawn()
        .expect("cannot start node");
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let printed = format!(
        "{}{}",
        std::fs::read_to_string(out.path()).unwrap_or_default(),
        std::fs::read_to_string(err.path()).unwrap_or_default()
    );
    match status {
        Some(s) => (s.success(), printed),
        None => (false, format!("{printed}\n(killed after {limit:?})")),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_sees_a_new_turn_and_its_waterfall() {
    if let Err(why) = check_tools() {
        panic!("the console's browser test cannot run: {why}. Run ./x setup, which installs chromium and runs npm ci.");
    }
    let (target, older) = turns();
    let data = Arc::new(Fake {
        target,
        older,
        calls: AtomicUsize::new(0),
    });
    // The page must carry the token, on loopback as anywhere.
    let app = console::router(
        data.clone(),
        console::OperatorAccess::new(Some(TOKEN), false),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let screenshot = repo().join("target/console.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut cmd = Command::new("node");
    cmd.current_dir(repo())
        .arg("tests/browser/console.mjs")
        .arg(&base)
        .arg(TARGET)
        .env("CONSOLE_TOKEN", TOKEN)
        .env("CONSOLE_EXPECT_OUTBOX", "wamid.WAITING")
        .env("CONSOLE_SCREENSHOT", &screenshot);
    let (ok, printed) =
        tokio::task::spawn_blocking(move || run_with_timeout(cmd, Duration::from_secs(90)))
            .await
            .unwrap();
    assert!(ok, "the browser test failed:\n{printed}");
    assert!(printed.contains("console browser test: ok"), "{printed}");
    assert!(
        data.calls.load(Ordering::SeqCst) >= 3,
        "the page did not poll again"
    );

    let png = std::fs::read(&screenshot).expect("no screenshot");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "target/console.png is not a PNG"
    );
    let width = u32::from_be_bytes(png[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(png[20..24].try_into().unwrap());
    assert!(
        width >= 1000 && height >= 600,
        "screenshot is {width}×{height}"
    );
}

/// The same page on the real service: a voice note answered just now, by
/// the webhook, the worker, the dialog and the voice stage, shows up in the
/// console with its stages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_the_service_just_ran_shows_in_its_console() {
    if let Err(why) = check_tools() {
        panic!("the console's browser test cannot run: {why}. Run ./x setup, which installs chromium and runs npm ci.");
    }
    let graph = support::fake_graph::FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = support::config_for(&graph, dir.path());
    config.service.operator_token = Some(voxline::channel::whatsapp::Secret::new(TOKEN));
    // The operator teaches this turn's intent below: on a copy of the data.
    let data = dir.path().join("dialog-data");
    let copied = Command::new("cp")
        .arg("-r")
        .arg(&config.dialog.data_dir)
        .arg(&data)
        .status()
        .unwrap();
    assert!(copied.success());
    config.dialog.data_dir = data.clone();
    let service = support::start(&config, support::FixedStt::new(" Where is my order 1842?")).await;
    graph.add_media(
        "media-order",
        support::fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    let body = support::voice_note("wamid.CONSOLE1", "15550001842", "media-order");
    assert_eq!(
        support::deliver(&support::client(), service.addr(), &body).await,
        200
    );
    support::wait_final(service.store(), "wamid.CONSOLE1").await;

    let screenshot = repo().join("target/console-service.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut cmd = Command::new("node");
    cmd.current_dir(repo())
        .arg("tests/browser/console.mjs")
        .arg(format!("http://{}", service.addr()))
        .arg("wamid.CONSOLE1")
        .env("CONSOLE_TOKEN", TOKEN)
        .env("CONSOLE_EXPECT_STAGES", "fetch,stt,dialog,tts,upload,send")
        .env("CONSOLE_TEACH", "complaint")
        .env("CONSOLE_SCREENSHOT", &screenshot);
    let (ok, printed) =
        tokio::task::spawn_blocking(move || run_with_timeout(cmd, Duration::from_secs(90)))
            .await
            .unwrap();
    service.stop().await.unwrap();
    assert!(ok, "the browser test failed:\n{printed}");
    assert!(printed.contains("console browser test: ok"), "{printed}");
    // The label the operator chose is on disk, with the transcript.
    let labels = std::fs::read_to_string(
        data.join("intents")
            .join(voxline::dialog::intent::LABELS_FILE),
    )
    .expect("no labels file");
    assert!(
        labels.contains("Where is my order 1842?\tcomplaint\twamid.CONSOLE1\t"),
        "{labels}"
    );
    let png = std::fs::read(&screenshot).expect("no screenshot");
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"));
}
