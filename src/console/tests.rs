use std::collections::BTreeMap;
use std::sync::Mutex;

use super::*;
use crate::dialog::session::Handoff;
use crate::pipeline::budget::{Action, BudgetStage};
use crate::pipeline::trace::{Span, SpanOutcome, Stage, TurnEnd};

struct Fixed {
    /// Newest first.
    turns: Vec<TurnTrace>,
    handoffs: Result<Vec<HandoffRow>, String>,
    asked: Mutex<Vec<usize>>,
}

#[async_trait::async_trait]
impl ConsoleData for Fixed {
    async fn recent_turns(&self, limit: usize) -> Result<Vec<TurnTrace>, String> {
        self.asked.lock().unwrap().push(limit);
        Ok(self.turns.iter().take(limit).cloned().collect())
    }

    fn budgets(&self) -> (Arc<Budgets>, ReloadStatus) {
        (
            Arc::new(Budgets::default()),
            ReloadStatus {
                applied: 2,
                rejected: 1,
                last_error: Some("budgets.stt: 0 ms is out of range (1 to 3600000)".into()),
            },
        )
    }

    async fn handoffs(&self) -> Result<Vec<HandoffRow>, String> {
        self.handoffs.clone()
    }
}

fn turn(n: usize) -> TurnTrace {
    let span = |stage, start_ms, first_ms, end_ms| Span {
        stage,
        start_ms,
        first_ms,
        end_ms,
        outcome: SpanOutcome::Ok,
    };
    let mut spans = vec![
        span(Stage::Ack, 0.0, None, 1.5),
        span(Stage::Fetch, 3.0, None, 80.0),
        span(Stage::Stt, 95.0, None, 600.0 + n as f64),
        span(Stage::Dialog, 601.0, Some(650.0), 700.0),
        span(Stage::Send, 700.0, None, 760.0),
    ];
    if n == 0 {
        spans[2].outcome = SpanOutcome::Overrun {
            budget: BudgetStage::Stt,
            action: Action::FasterModel,
        };
    }
    TurnTrace {
        message_id: format!("wamid.{n}"),
        from: "15550001842".into(),
        kind: "audio".into(),
        started_unix_ms: 1_760_000_000_000 - n as i64 * 1000,
        turn_ms: 760.0,
        sequential_ms: spans.iter().map(Span::duration_ms).sum(),
        spans,
        end: TurnEnd::Text,
        transcript: Some("where is my order".into()),
        language: Some("en".into()),
        intent: Some("order_status".into()),
        fast_path: Some(true),
        reply_text: Some("Order 1842 ships tomorrow.".into()),
        reply_bytes: None,
        audio_ms: Some(2100.0),
        note: None,
        routing: None,
        budgets_ms: BTreeMap::new(),
    }
}

fn data(turns: usize) -> Arc<Fixed> {
    Arc::new(Fixed {
        turns: (0..turns).map(turn).collect(),
        handoffs: Ok(vec![HandoffRow {
            number: "15550009999".into(),
            since_unix_ms: 1_760_000_000_000,
            reason: "asked".into(),
        }]),
        asked: Mutex::default(),
    })
}

fn token(t: &str) -> OperatorAccess {
    OperatorAccess::new(Some(t), false)
}

fn open() -> OperatorAccess {
    OperatorAccess::new(None, true)
}

/// Every test serves on 127.0.0.1: loopback is no reason to let anyone in.
async fn serve(app: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    base
}

const ROUTES: [&str; 5] = [
    "/console",
    "/console/api/turns",
    "/console/api/stats",
    "/console/api/budgets",
    "/console/api/handoffs",
];

#[tokio::test]
async fn with_a_token_every_route_needs_it_on_loopback_too() {
    let base = serve(router(data(3), token("op-token"))).await;
    let client = reqwest::Client::new();
    for route in ROUTES {
        let url = format!("{base}{route}");
        let r = client.get(&url).send().await.unwrap();
        assert_eq!(r.status(), 401, "{route} without a token");
        assert!(r.headers().contains_key("www-authenticate"));
        let r = client
            .get(&url)
            .bearer_auth("op-tokem")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{route} with a wrong token");
        let r = client
            .get(&url)
            .bearer_auth("op-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{route} with the token");
        assert_eq!(r.headers()["cache-control"], "no-store");
    }
    // The page takes the token from its URL; the API only from the header.
    let r = client
        .get(format!("{base}/console?token=op-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["referrer-policy"], "no-referrer");
    let r = client
        .get(format!("{base}/console?token=wrong"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = client
        .get(format!("{base}/console/api/turns?token=op-token"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn without_a_token_the_console_is_closed_and_says_how_to_open_it() {
    for configured in [None, Some("")] {
        let base = serve(router(data(1), OperatorAccess::new(configured, false))).await;
        for route in ROUTES {
            let r = reqwest::Client::new()
                .get(format!("{base}{route}?token=guess"))
                .bearer_auth("guess")
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 403, "{route}");
            assert_eq!(r.headers()["cache-control"], "no-store");
            let body = r.text().await.unwrap();
            assert!(
                body.contains("[service] operator_token") && body.contains("console_open = true"),
                "{body}"
            );
        }
    }
}

#[tokio::test]
async fn console_open_lets_anyone_in() {
    let base = serve(router(data(1), OperatorAccess::new(Some("op-token"), true))).await;
    for route in ROUTES {
        let r = reqwest::get(format!("{base}{route}")).await.unwrap();
        assert_eq!(r.status(), 200, "{route}");
    }
}

#[tokio::test]
async fn the_page_inlines_its_script_under_a_strict_policy() {
    let base = serve(router(data(1), open())).await;
    let r = reqwest::get(format!("{base}/console")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(csp.contains("default-src 'none'") && csp.contains("script-src 'sha256-"));
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = r.text().await.unwrap();
    assert!(!html.contains("/*SCRIPT*/") && !html.contains("/*STYLE*/"));
    for id in [
        "id=\"turns\"",
        "id=\"waterfall\"",
        "id=\"stats\"",
        "id=\"budgets\"",
        "id=\"handoffs\"",
    ] {
        assert!(html.contains(id), "{id}");
    }
    // Nothing is loaded from elsewhere.
    assert!(!html.contains("src=\"http") && !html.contains("href=\"http"));
}

#[tokio::test]
async fn turns_are_newest_first_and_limited() {
    let d = data(80);
    let base = serve(router(d.clone(), open())).await;
    let turns: Vec<TurnTrace> = reqwest::get(format!("{base}/console/api/turns?limit=3"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<_> = turns.iter().map(|t| t.message_id.as_str()).collect();
    assert_eq!(ids, ["wamid.0", "wamid.1", "wamid.2"]);
    assert_eq!(turns[0], turn(0));
    let json: serde_json::Value = reqwest::get(format!("{base}/console/api/turns"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(json.as_array().unwrap().len(), TURNS_DEFAULT);
    let first = &json[0];
    assert_eq!(first["spans"][2]["stage"], "stt");
    assert_eq!(first["spans"][2]["outcome"]["kind"], "overrun");
    assert_eq!(first["spans"][3]["first_ms"], 650.0);
    assert_eq!(first["end"], "text");
    // A limit out of range is clamped, not refused.
    reqwest::get(format!("{base}/console/api/turns?limit=100000"))
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    assert_eq!(*d.asked.lock().unwrap(), [3, TURNS_DEFAULT, TURNS_MAX]);
}

#[tokio::test]
async fn stats_budgets_and_handoffs_have_their_shapes() {
    let d = data(10);
    let base = serve(router(d.clone(), open())).await;
    let get = |path: &'static str| {
        let url = format!("{base}{path}");
        async move {
            reqwest::get(url)
                .await
                .unwrap()
                .json::<serde_json::Value>()
                .await
                .unwrap()
        }
    };

    let s = get("/console/api/stats?last=4").await;
    assert_eq!(s["turns"], 4);
    assert_eq!(s["percentile_method"], "nearest-rank");
    let stt = &s["budgets"][3];
    assert_eq!(stt["stage"], "stt");
    assert_eq!(stt["count"], 4);
    assert_eq!(stt["p50"], 506.0); // 505, 506, 507, 508 ms
    assert_eq!(stt["p99"], 508.0);
    assert_eq!(stt["budget_ms"], 3000);
    assert_eq!(stt["action"], "faster_model");
    assert_eq!(s["budgets"][11]["stage"], "turn");
    assert_eq!(s["budgets"][11]["p95"], 760.0);
    assert_eq!(s["spans"][0]["stage"], "ack");
    assert_eq!(s["overruns"][0]["stage"], "stt");
    assert_eq!(s["overruns"][0]["action"], "faster_model");
    assert_eq!(s["overruns"][0]["count"], 1);
    assert_eq!(s["fast_path"]["share"], 1.0);
    assert_eq!(s["ends"]["text"], 4);
    assert_eq!(d.asked.lock().unwrap().last(), Some(&4));

    let b = get("/console/api/budgets").await;
    assert_eq!(
        b["stages"].as_array().unwrap().len(),
        BudgetStage::ALL.len()
    );
    assert_eq!(b["stages"][0]["stage"], "ack");
    assert_eq!(b["stages"][0]["ms"], 250);
    assert_eq!(b["stages"][0]["action"], "reject");
    assert_eq!(b["reload"]["applied"], 2);
    assert_eq!(b["reload"]["rejected"], 1);
    assert!(b["reload"]["last_error"]
        .as_str()
        .unwrap()
        .contains("out of range"));
    assert!(b["holding_message"]
        .as_str()
        .unwrap()
        .starts_with("One moment"));

    let h = get("/console/api/handoffs").await;
    assert_eq!(
        h,
        serde_json::json!([{
            "number": "15550009999",
            "since_unix_ms": 1_760_000_000_000_i64,
            "reason": "asked",
        }])
    );
}

#[tokio::test]
async fn a_failing_source_is_a_500_with_the_reason() {
    let d = Arc::new(Fixed {
        turns: vec![],
        handoffs: Err("sessions database is locked".into()),
        asked: Mutex::default(),
    });
    let base = serve(router(d, open())).await;
    let r = reqwest::get(format!("{base}/console/api/handoffs"))
        .await
        .unwrap();
    assert_eq!(r.status(), 500);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["error"].as_str().unwrap().contains("locked"));
}

#[test]
fn a_session_with_a_person_becomes_a_row_in_ms() {
    let mut s = Session::new("15550001842");
    assert_eq!(HandoffRow::from_session(&s), None);
    s.handoff = Some(Handoff {
        reason: "low_confidence".into(),
        since: 1_760_000_000,
    });
    assert_eq!(
        HandoffRow::from_session(&s),
        Some(HandoffRow {
            number: "15550001842".into(),
            since_unix_ms: 1_760_000_000_000,
            reason: "low_confidence".into(),
        })
    );
}

#[tokio::test]
async fn merged_into_the_service_it_guards_only_its_own_routes() {
    let service = Router::new().route("/healthz", axum::routing::get(|| async { "ok" }));
    let app = service.merge(router(data(1), token("op-token")));
    let base = serve(app).await;
    let r = reqwest::get(format!("{base}/healthz")).await.unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::get(format!("{base}/favicon.ico")).await.unwrap();
    assert_eq!(r.status(), 404);
    let r = reqwest::get(format!("{base}/console")).await.unwrap();
    assert_eq!(r.status(), 401);
}
