//! The webhook Meta calls: `GET /webhook` to verify the subscription,
//! `POST /webhook` with notifications.
//!
//! A POST is checked before anything is read from it: the body is capped at
//! [`MAX_BODY_BYTES`] (413 beyond), then `X-Hub-Signature-256` must be the
//! HMAC-SHA256 of the raw body under the app secret, compared in constant
//! time (401 when missing or wrong). Only then is the JSON parsed (400 when
//! broken) and its messages and delivery reports written to the inbox in one
//! durable write. The 200 goes out after that write and nothing else: the
//! turns run later, on the workers. A store failure answers 500, so Meta
//! delivers again.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, Mac};
use serde::Deserialize;
use sha2::Sha256;
use subtle::ConstantTimeEq;

use super::config::Secret;
use super::payload::Notification;
use crate::channel::InboundMessage;
use crate::store::Inbox;

/// Meta's largest notification is far below this; 3 MB leaves room and
/// bounds what one request can make the service hold.
pub const MAX_BODY_BYTES: usize = 3 * 1024 * 1024;

/// The header Meta signs notifications with.
pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";

/// Called with the messages a POST added to the inbox (not the
/// redeliveries), once they are durable, and the instant the POST arrived.
pub type OnAccepted = Arc<dyn Fn(Vec<InboundMessage>, Instant) + Send + Sync>;

/// The `ack` budget in force: how long the inbox commit may take before
/// the webhook answers 503 (Meta delivers it again; the commit goes on, and
/// the redelivery is dropped as a duplicate once it lands).
pub type AckBudget = Arc<dyn Fn() -> Duration + Send + Sync>;

pub struct WebhookState {
    pub app_secret: Secret,
    pub verify_token: Secret,
    pub phone_number_id: String,
    pub inbox: Arc<dyn Inbox>,
    pub on_accepted: OnAccepted,
    pub ack_budget: AckBudget,
    /// Messages sent longer ago than this are acknowledged and dropped:
    /// Meta stops retrying well before, and the inbox forgets ids after
    /// `[store] id_retention_days`, so an older one could only be a replay.
    pub replay_horizon: std::time::Duration,
}

/// `/webhook`, ready to be merged into the service's router.
pub fn routes(state: Arc<WebhookState>) -> Router {
    Router::new()
        .route("/webhook", get(verify).post(notify))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

#[derive(Deserialize)]
struct VerifyQuery {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

async fn verify(State(state): State<Arc<WebhookState>>, Query(q): Query<VerifyQuery>) -> Response {
    let token_ok = q.verify_token.as_deref().is_some_and(|t| {
        t.as_bytes()
            .ct_eq(state.verify_token.expose().as_bytes())
            .into()
    });
    match (q.mode.as_deref(), q.challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => (
            StatusCode::OK,
            [("content-type", "text/plain; charset=utf-8")],
            challenge,
        )
            .into_response(),
        _ => StatusCode::FORBIDDEN.into_response(),
    }
}

async fn notify(
    State(state): State<Arc<WebhookState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    // The body is read by now; its transfer is not the service's time.
    let arrived = Instant::now();
    let signature = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
    if !signature.is_some_and(|s| signature_matches(state.app_secret.expose(), &body, s)) {
        tracing::warn!(
            present = signature.is_some(),
            "webhook rejected: bad signature"
        );
        return StatusCode::UNAUTHORIZED.into_response();
    }
    let notification: Notification = match serde_json::from_slice(&body) {
        Ok(n) => n,
        Err(e) => {
            tracing::warn!(error = %e, "webhook rejected: not a notification");
            return (StatusCode::BAD_REQUEST, "malformed notification").into_response();
        }
    };
    let mut delivery = notification.into_delivery(&state.phone_number_id);
    let oldest = std::time::SystemTime::now()
        .checked_sub(state.replay_horizon)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_secs());
    delivery.messages.retain(|m| {
        let stale = m.timestamp < oldest;
        if stale {
            tracing::warn!(wamid = %m.id, sent = m.timestamp, "message older than the replay horizon: acknowledged and dropped");
        }
        !stale
    });
    if delivery.skipped > 0 {
        tracing::info!(
            skipped = delivery.skipped,
            "webhook entries for another number or without ids ignored"
        );
    }
    for (code, title) in &delivery.errors {
        tracing::warn!(code, title, "Meta reported an error in a webhook");
    }
    if delivery.messages.is_empty() && delivery.statuses.is_empty() && delivery.errors.is_empty() {
        return StatusCode::OK.into_response();
    }
    let deadline = arrived + (state.ack_budget)();
    // The commit and the hand-off to the workers run in their own task, so
    // that a commit that outlives the ack budget still starts its turns.
    let commit = {
        let state = state.clone();
        tokio::spawn(async move {
            let fresh = state
                .inbox
                .accept(&delivery.messages, &delivery.statuses, &delivery.errors)
                .await?;
            let accepted: Vec<InboundMessage> = delivery
                .messages
                .into_iter()
                .zip(fresh)
                .filter_map(|(m, new)| {
                    if !new {
                        tracing::info!(wamid = %m.id, "duplicate delivery dropped");
                    }
                    new.then_some(m)
                })
                .collect();
            for s in &delivery.statuses {
                tracing::debug!(wamid = %s.message_id, status = %s.status, "delivery report");
            }
            if !accepted.is_empty() {
                (state.on_accepted)(accepted, arrived);
            }
            Ok::<(), crate::store::StoreError>(())
        })
    };
    let metrics = crate::metrics::global();
    match tokio::time::timeout_at(deadline.into(), commit).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "webhook not stored; Meta will deliver it again");
            metrics.ack("error");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "webhook commit task failed; Meta will deliver it again");
            metrics.ack("error");
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        Err(_) => {
            tracing::warn!("inbox commit over the ack budget; answering 503");
            metrics.overrun("ack", "reject");
            metrics.ack("rejected");
            return StatusCode::SERVICE_UNAVAILABLE.into_response();
        }
    }
    metrics.ack("ok");
    StatusCode::OK.into_response()
}

/// Checks `sha256=<hex>` against the HMAC-SHA256 of `body` under `secret`.
/// The comparison is constant-time (`Mac::verify_slice`).
pub fn signature_matches(secret: &str, body: &[u8], header: &str) -> bool {
    let Some(hex_mac) = header.trim().strip_prefix("sha256=") else {
        return false;
    };
    let Ok(given) = hex::decode(hex_mac) else {
        return false;
    };
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(secret.as_bytes()) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&given).is_ok()
}

/// The header value Meta would send for `body`; for tests and the sandbox.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        let header = sign("s3cret", b"{}");
        assert!(signature_matches("s3cret", b"{}", &header));
        assert!(!signature_matches("other", b"{}", &header));
        assert!(!signature_matches("s3cret", b"{ }", &header));
        assert!(!signature_matches(
            "s3cret",
            b"{}",
            header.trim_start_matches("sha256=")
        ));
        assert!(!signature_matches("s3cret", b"{}", "sha256=zz"));
        assert!(!signature_matches("s3cret", b"{}", "sha256="));
    }
}
