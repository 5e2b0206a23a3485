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
//!
//! What it reads comes through [`ConsoleData`], so the console knows
//! nothing of the store or the sessions. When the service listens on an
//! address other than loopback every console route needs the operator
//! token (see [`router`]).

pub mod stats;

use std::sync::{Arc, LazyLock};

use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode, Uri};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::dialog::session::Session;
use crate::pipeline::budget::{Budgets, ReloadStatus};
use crate::pipeline::trace::TurnTrace;

/// What the console shows, supplied by the service.
#[async_trait::async_trait]
pub trait ConsoleData: Send + Sync {
    /// Newest first, at most `limit`.
    async fn recent_turns(&self, limit: usize) -> Result<Vec<TurnTrace>, String>;
    /// The budgets in force and how the last reload went.
    fn budgets(&self) -> (Arc<Budgets>, ReloadStatus);
    /// Conversations waiting for a person, oldest first.
    async fn handoffs(&self) -> Result<Vec<HandoffRow>, String>;
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

/// What the 404 says when the console is off for want of a token.
pub const NO_TOKEN_MESSAGE: &str =
    "The operator console is off: the service listens on an address \
other than loopback and no operator token is configured. Set [service] operator_token \
(VOXLINE_OPERATOR_TOKEN) and open /console?token=<token>.\n";

#[derive(Clone)]
struct Console {
    data: Arc<dyn ConsoleData>,
}

/// Who may see the console.
#[derive(Clone)]
enum Access {
    /// Loopback: anyone who can reach the port is on this machine.
    Open,
    /// Non-loopback without a token: the console does not exist.
    Off,
    Token(Arc<str>),
}

/// The console's routes. `token` is the operator token; `require_token` is
/// true when the service is bound to an address other than loopback. Then
/// every route needs `Authorization: Bearer <token>` (the page also takes
/// `?token=`, which its script then sends as that header), compared in
/// constant time, and without a configured token every route answers 404
/// with [`NO_TOKEN_MESSAGE`]. On loopback the console is open.
pub fn router(data: Arc<dyn ConsoleData>, token: Option<String>, require_token: bool) -> Router {
    let token = token.filter(|t| !t.is_empty());
    let access = match (require_token, token) {
        (false, _) => Access::Open,
        (true, None) => Access::Off,
        (true, Some(t)) => Access::Token(Arc::from(t)),
    };
    Router::new()
        .route("/console", get(page))
        .route("/console/api/turns", get(turns))
        .route("/console/api/stats", get(stats_handler))
        .route("/console/api/budgets", get(budgets))
        .route("/console/api/handoffs", get(handoffs))
        .with_state(Console { data })
        // route_layer, not layer: the guard must not reach the fallback, or
        // once merged into the service it would guard every unknown path.
        .route_layer(middleware::from_fn_with_state(access, guard))
        .route_layer(middleware::map_response(no_store))
}

async fn guard(State(access): State<Access>, req: Request, next: Next) -> Response {
    match &access {
        Access::Open => next.run(req).await,
        Access::Off => (StatusCode::NOT_FOUND, NO_TOKEN_MESSAGE).into_response(),
        Access::Token(token) => {
            let from_header = bearer(req.headers());
            // Only the page takes the token from its URL; the API calls send
            // the header, so the token stays out of request logs after the
            // first load.
            let from_query = (req.uri().path() == "/console")
                .then(|| query_token(req.uri()))
                .flatten();
            let given = from_header.or(from_query).unwrap_or_default();
            if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
                next.run(req).await
            } else {
                (
                    StatusCode::UNAUTHORIZED,
                    [(header::WWW_AUTHENTICATE, "Bearer realm=\"voxline console\"")],
                    "The operator console needs the operator token: \
                     Authorization: Bearer <token>, or open /console?token=<token>.\n",
                )
                    .into_response()
            }
        }
    }
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_string)
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

#[cfg(test)]
mod tests;
