//! The operator console at `/console`: a page that shows the turns as they
//! finish, each turn's waterfall of stage spans against its budgets, the
//! latency percentiles per stage over recent turns, the overruns and their
//! actions, the hand-offs waiting for a person and the budgets in force.
//!
//! The page is one HTML file with its script and styles inlined (no build
//! step, nothing loaded from elsewhere); it polls four JSON endpoints:
//!
//! - `GET /console/api/turns?limit=N`: the newest `N` [`TurnTrace`]s, newest
//!   first (default 50, at most 500).
//! - `GET /console/api/stats?last=N`: [`stats::Stats`] over the newest `N`
//!   turns (default 200, at most 2000).
//! - `GET /console/api/budgets`: the budgets in force and the last reload.
//! - `GET /console/api/handoffs`: the conversations waiting for a person.
//! - `GET /console/api/intents` and `POST /console/api/label` (`{"message_id",
//!   "intent"}`): the operator teaches the classifier a turn's right intent.
//!
//! What it reads comes through [`ConsoleData`], so the console knows
//! nothing of the store or the sessions. Every console route needs the
//! operator token, whatever address the service listens on, unless
//! `[service] console_open = true` ([`access`], [`router`]).

pub mod access;
pub mod stats;

use std::sync::{Arc, LazyLock};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::dialog::session::Session;
use crate::pipeline::budget::{Budgets, ReloadStatus};
use crate::record::TurnTrace;
pub use access::OperatorAccess;

/// What the console shows, supplied by the service.
#[async_trait::async_trait]
pub trait ConsoleData: Send + Sync {
    /// Newest first, at most `limit`.
    async fn recent_turns(&self, limit: usize) -> Result<Vec<TurnTrace>, String>;
    /// The budgets in force and how the last reload went.
    fn budgets(&self) -> (Arc<Budgets>, ReloadStatus);
    /// Conversations waiting for a person, oldest first.
    async fn handoffs(&self) -> Result<Vec<HandoffRow>, String>;
    /// What waits in the outbox, and whether sending is paused.
    async fn outbox(&self) -> Result<OutboxView, String> {
        Ok(OutboxView::default())
    }
    /// The intents a turn can be labelled with; none when this service
    /// has no intents to teach.
    fn intents(&self) -> Vec<String> {
        Vec::new()
    }
    /// Records that the message `message_id` meant `intent`; the classifier
    /// retrains on it. `Err` says why not, for the operator.
    async fn label(&self, message_id: &str, intent: &str) -> Result<LabelDone, String> {
        let _ = (message_id, intent);
        Err("this service has no intents to teach".into())
    }
}

/// A label recorded from the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelDone {
    pub message_id: String,
    pub intent: String,
    pub lang: String,
    pub text: String,
}

/// `POST /console/api/label`'s body.
#[derive(Debug, Deserialize)]
struct LabelRequest {
    message_id: String,
    intent: String,
}

/// The outbox as the console shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxView {
    /// Why sending is paused (the access token was rejected), when it is.
    pub paused: Option<String>,
    /// Oldest first.
    pub waiting: Vec<OutboxRow>,
}

/// A turn waiting to be tried again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutboxRow {
    pub message_id: String,
    /// Masked (`34*******78`).
    pub customer: String,
    pub state: String,
    pub attempts: u32,
    pub received_unix_ms: i64,
    pub retry_at_unix_ms: Option<i64>,
    pub reason: String,
}

/// A conversation handed to a person.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandoffRow {
    pub number: String,
    /// When the hand-off happened, unix ms.
    pub since_unix_ms: i64,
    pub reason: String,
}

impl HandoffRow {
    /// The row for a session that is with a person (sessions keep unix
    /// seconds).
    pub fn from_session(session: &Session) -> Option<Self> {
        let h = session.handoff.as_ref()?;
        Some(Self {
            number: session.number.clone(),
            since_unix_ms: h.since.saturating_mul(1000),
            reason: h.reason.clone(),
        })
    }
}

const TURNS_DEFAULT: usize = 50;
const TURNS_MAX: usize = 500;
const STATS_DEFAULT: usize = 200;
const STATS_MAX: usize = 2000;

#[derive(Clone)]
struct Console {
    data: Arc<dyn ConsoleData>,
}

/// The console's routes, behind `access` ([`OperatorAccess::new`] from
/// `[service] operator_token` and `console_open`). With a token every route
/// needs `Authorization: Bearer <token>`, compared in constant time; the
/// page also takes `?token=`, which its script then sends as that header.
/// Without a token and not open every route answers 403 with
/// [`access::CLOSED_MESSAGE`].
pub fn router(data: Arc<dyn ConsoleData>, access: OperatorAccess) -> Router {
    if matches!(access, OperatorAccess::Closed) {
        tracing::info!(
            "the operator console and API are closed: set [service] operator_token, \
             or console_open = true"
        );
    }
    Router::new()
        .route("/console", get(page))
        .route("/console/api/turns", get(turns))
        .route("/console/api/stats", get(stats_handler))
        .route("/console/api/budgets", get(budgets))
        .route("/console/api/handoffs", get(handoffs))
        .route("/console/api/outbox", get(outbox))
        .route("/console/api/intents", get(intents))
        .route("/console/api/label", axum::routing::post(label))
        .with_state(Console { data })
        // route_layer, not layer: the guard must not reach the fallback, or
        // once merged into the service it would guard every unknown path.
        .route_layer(middleware::from_fn_with_state(access, guard))
        .route_layer(middleware::map_response(no_store))
}

async fn guard(State(access): State<OperatorAccess>, req: Request, next: Next) -> Response {
    // Only the page takes the token from its URL; the API calls send the
    // header, so the token stays out of request logs after the first load.
    let from_query = (req.uri().path() == "/console")
        .then(|| query_token(req.uri()))
        .flatten();
    let given = access::bearer(req.headers()).or(from_query.as_deref());
    match access.admit(given) {
        Ok(()) => next.run(req).await,
        Err(refused) => refused.into_response(),
    }
}

fn query_token(uri: &Uri) -> Option<String> {
    #[derive(Deserialize)]
    struct TokenQuery {
        token: Option<String>,
    }
    Query::<TokenQuery>::try_from_uri(uri).ok()?.0.token
}

/// Nothing the console answers is to be cached: it is live and private.
async fn no_store(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The page URL may carry the token: never send it on.
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    res
}

const HTML: &str = include_str!("console.html");
const SCRIPT: &str = include_str!("console.js");
const STYLE: &str = include_str!("console.css");

/// The page with its script and styles inlined, and a Content-Security-Policy
/// that allows exactly those two (by hash) and requests to this origin.
static PAGE: LazyLock<(String, String)> = LazyLock::new(|| {
    let hash = |s: &str| base64::engine::general_purpose::STANDARD.encode(Sha256::digest(s));
    let html = HTML
        .replace("/*STYLE*/", STYLE)
        .replace("/*SCRIPT*/", SCRIPT);
    let csp = format!(
        "default-src 'none'; script-src 'sha256-{}'; style-src 'sha256-{}'; \
         connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
         frame-ancestors 'none'",
        hash(SCRIPT),
        hash(STYLE)
    );
    (html, csp)
});

async fn page() -> Response {
    let (html, csp) = &*PAGE;
    let mut res = Html(html.as_str()).into_response();
    if let Ok(v) = HeaderValue::from_str(csp) {
        res.headers_mut().insert(header::CONTENT_SECURITY_POLICY, v);
    }
    res
}

async fn intents(State(c): State<Console>) -> Response {
    Json(c.data.intents()).into_response()
}

/// Labels a turn's intent. A refusal (unknown intent, a message without
/// text) is 422 with the reason, so the page can show it.
async fn label(State(c): State<Console>, Json(req): Json<LabelRequest>) -> Response {
    match c.data.label(&req.message_id, &req.intent).await {
        Ok(done) => Json(done).into_response(),
        Err(e) => (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(serde_json::json!({ "error": e })),
        )
            .into_response(),
    }
}

fn failed(what: &str, e: String) -> Response {
    tracing::error!(error = %e, "console: {what} failed");
    (
        StatusCode::INTERNAL_SERVER_ERROR,
        Json(serde_json::json!({ "error": format!("{what}: {e}") })),
    )
        .into_response()
}

#[derive(Deserialize)]
struct TurnsQuery {
    limit: Option<usize>,
}

async fn turns(State(c): State<Console>, Query(q): Query<TurnsQuery>) -> Response {
    let limit = q.limit.unwrap_or(TURNS_DEFAULT).clamp(1, TURNS_MAX);
    match c.data.recent_turns(limit).await {
        Ok(mut turns) => {
            turns.truncate(limit);
            Json(turns).into_response()
        }
        Err(e) => failed("reading the turns", e),
    }
}

#[derive(Deserialize)]
struct StatsQuery {
    last: Option<usize>,
}

async fn stats_handler(State(c): State<Console>, Query(q): Query<StatsQuery>) -> Response {
    let last = q.last.unwrap_or(STATS_DEFAULT).clamp(1, STATS_MAX);
    let turns = match c.data.recent_turns(last).await {
        Ok(t) => t,
        Err(e) => return failed("reading the turns", e),
    };
    let (budgets, _) = c.data.budgets();
    let turns = &turns[..turns.len().min(last)];
    Json(stats::compute(turns, &budgets)).into_response()
}

/// `GET /console/api/budgets`.
#[derive(Debug, Serialize)]
struct BudgetsView {
    stages: Vec<BudgetEntry>,
    holding_message: String,
    reload: ReloadStatus,
}

#[derive(Debug, Serialize)]
struct BudgetEntry {
    stage: &'static str,
    ms: u64,
    /// Added per second of the customer's note.
    per_audio_s_ms: u64,
    action: &'static str,
}

async fn budgets(State(c): State<Console>) -> Json<BudgetsView> {
    let (budgets, reload) = c.data.budgets();
    Json(BudgetsView {
        stages: budgets
            .iter()
            .map(|(stage, b)| BudgetEntry {
                stage: stage.name(),
                ms: b.ms,
                per_audio_s_ms: b.per_audio_s_ms,
                action: b.action.name(),
            })
            .collect(),
        holding_message: budgets.holding_message.clone().unwrap_or_else(|| {
            format!(
                "{} (the holding template, in the conversation's language)",
                crate::pipeline::budget::HOLDING_MESSAGE
            )
        }),
        reload,
    })
}

async fn handoffs(State(c): State<Console>) -> Response {
    match c.data.handoffs().await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => failed("reading the hand-offs", e),
    }
}

async fn outbox(State(c): State<Console>) -> Response {
    match c.data.outbox().await {
        Ok(view) => Json(view).into_response(),
        Err(e) => failed("reading the outbox", e),
    }
}

#[cfg(test)]
mod tests;
