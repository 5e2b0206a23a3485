//! The chat page, `GET /sandbox`, and the small JSON API behind it. The page
//! is one HTML file and one script, embedded in the binary: no build step,
//! nothing fetched from elsewhere.
//!
//! - `POST /sandbox/api/voice?from=NUMBER[&voice=false]`: the raw audio as
//!   the body, its type in `Content-Type`; at most 16 MB (413 beyond).
//! - `POST /sandbox/api/text`: `{"from": NUMBER, "text": "…"}`, at most
//!   4 KB (413 beyond).
//! - `GET /sandbox/api/conversation?from=NUMBER&after=SEQ[&wait_ms=N]`: the
//!   messages both ways after `SEQ`; with `wait_ms`, waits up to that long
//!   (25 s at most) for one to arrive.
//! - `GET /sandbox/api/media/{id}`: a stored note, with its type (voxline's
//!   replies are `audio/ogg`).
//! - `GET /sandbox/api/info`: the business number and the default customer.
//!
//! Sends go through [`Sandbox::send_audio`] and [`Sandbox::send_text`]: the
//! signed webhook, as a customer's phone would. Errors are
//! `{"error": "…"}`. There is no authentication: the page is for a
//! service listening on loopback.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, JsonRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::json;

use super::{Sandbox, SandboxError, DEFAULT_CUSTOMER};

const PAGE: &str = include_str!("page.html");
const SCRIPT: &str = include_str!("page.js");

/// Largest text request body.
pub const MAX_TEXT_REQUEST: usize = 4 * 1024;

/// Longest a conversation poll may wait.
const MAX_WAIT: Duration = Duration::from_secs(25);

/// Only this origin's script and media; styles are inline in the page.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; media-src 'self' blob:; img-src 'self' data:";

pub fn routes(sandbox: Sandbox) -> Router {
    let max_audio = sandbox.shared.config.max_audio_bytes;
    Router::new()
        .route("/sandbox", get(page))
        .route("/sandbox/app.js", get(script))
        .route("/sandbox/api/info", get(info))
        .route(
            "/sandbox/api/voice",
            post(voice).layer(DefaultBodyLimit::max(max_audio)),
        )
        .route(
            "/sandbox/api/text",
            post(text).layer(DefaultBodyLimit::max(MAX_TEXT_REQUEST)),
        )
        .route("/sandbox/api/conversation", get(conversation))
        .route("/sandbox/api/media/{id}", get(media))
        .with_state(sandbox)
}

/// An error answer: `{"error": message}`.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({ "error": self.1 }))).into_response()
    }
}

impl From<SandboxError> for ApiError {
    fn from(e: SandboxError) -> Self {
        let status = match &e {
            SandboxError::BadNumber(_) | SandboxError::Empty | SandboxError::TextTooLong { .. } => {
                StatusCode::BAD_REQUEST
            }
            SandboxError::AudioTooLarge { .. } | SandboxError::MediaStoreFull => {
                StatusCode::PAYLOAD_TOO_LARGE
            }
            SandboxError::NoWebhook => StatusCode::SERVICE_UNAVAILABLE,
            SandboxError::Listen(_)
            | SandboxError::Transport(_)
            | SandboxError::Refused { .. }
            | SandboxError::Verify(_) => StatusCode::BAD_GATEWAY,
        };
        Self(status, e.to_string())
    }
}

fn query_error(e: QueryRejection) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, e.body_text())
}

async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        PAGE,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        SCRIPT,
    )
        .into_response()
}

async fn info(State(sandbox): State<Sandbox>) -> Response {
    Json(json!({
        "business_number": sandbox.business_number(),
        "default_customer": DEFAULT_CUSTOMER,
        "console": "/console",
        "max_audio_bytes": sandbox.shared.config.max_audio_bytes,
        "max_text_request_bytes": MAX_TEXT_REQUEST,
    }))
    .into_response()
}

#[derive(Deserialize)]
struct VoiceQuery {
    from: Option<String>,
    /// `false` for an audio file rather than a recorded voice note.
    voice: Option<bool>,
}

async fn voice(
    State(sandbox): State<Sandbox>,
    query: Result<Query<VoiceQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let body = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "a voice note is at most {} MB",
                sandbox.shared.config.max_audio_bytes / (1024 * 1024)
            ),
        ),
        status => ApiError(status, e.body_text()),
    })?;
    let mime = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let from = q.from.as_deref().unwrap_or(DEFAULT_CUSTOMER);
    let id = sandbox
        .send_audio(from, body, mime, q.voice.unwrap_or(true))
        .await?;
    Ok(Json(json!({ "id": id })).into_response())
}

#[derive(Deserialize)]
struct TextRequest {
    from: Option<String>,
    text: String,
}

async fn text(
    State(sandbox): State<Sandbox>,
    body: Result<Json<TextRequest>, JsonRejection>,
) -> Result<Response, ApiError> {
    let Json(request) = body.map_err(|e| match e.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("a text request is at most {MAX_TEXT_REQUEST} bytes"),
        ),
        _ => ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "expected {{\"from\": NUMBER, \"text\": \"…\"}}: {}",
                e.body_text()
            ),
        ),
    })?;
    let from = request.from.as_deref().unwrap_or(DEFAULT_CUSTOMER);
    let id = sandbox.send_text(from, &request.text).await?;
    Ok(Json(json!({ "id": id })).into_response())
}

#[derive(Deserialize)]
struct ConversationQuery {
    from: Option<String>,
    #[serde(default)]
    after: u64,
    #[serde(default)]
    wait_ms: u64,
}

async fn conversation(
    State(sandbox): State<Sandbox>,
    query: Result<Query<ConversationQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(query_error)?;
    let from = super::number(q.from.as_deref().unwrap_or(DEFAULT_CUSTOMER))?;
    let wait = Duration::from_millis(q.wait_ms).min(MAX_WAIT);
    let messages = if wait.is_zero() {
        sandbox.conversation(&from, q.after)
    } else {
        sandbox.wait_conversation(&from, q.after, wait).await
    };
    let last_seq = messages.last().map_or(q.after, |m| m.seq);
    Ok(Json(json!({
        "customer": from,
        "messages": messages,
        "last_seq": last_seq,
    }))
    .into_response())
}

async fn media(
    State(sandbox): State<Sandbox>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let (bytes, mime) = sandbox.media(&id).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("no media {id:?} (the sandbox keeps the most recent files only)"),
        )
    })?;
    Ok((
        [
            (header::CONTENT_TYPE, served_type(&mime)),
            (header::CACHE_CONTROL, "private, max-age=3600"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (
                header::CONTENT_SECURITY_POLICY,
                "sandbox; default-src 'none'",
            ),
        ],
        bytes,
    )
        .into_response())
}

/// The type a stored file is served with: its own when it is an audio type,
/// else `application/octet-stream`, so that a "voice note" uploaded as
/// `text/html` cannot become a page on this origin.
fn served_type(mime: &str) -> &str {
    let safe = mime.starts_with("audio/")
        && mime
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || " /;=-+.".contains(c));
    if safe {
        mime
    } else {
        "application/octet-stream"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_audio_types_are_served_as_such() {
        assert_eq!(served_type("audio/ogg"), "audio/ogg");
        assert_eq!(
            served_type("audio/ogg; codecs=opus"),
            "audio/ogg; codecs=opus"
        );
        assert_eq!(served_type("text/html"), "application/octet-stream");
        assert_eq!(served_type("audio/x<"), "application/octet-stream");
    }
}
