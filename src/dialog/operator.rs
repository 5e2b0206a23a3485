//! The operators' HTTP endpoints for hand-offs, for the service to mount:
//! `GET /operator/handoffs` lists the conversations waiting for a person
//! (history, slots, reason) and `POST /operator/handoffs/{number}/release`
//! gives a number back to the bot. Both need `Authorization: Bearer
//! <operator token>`, compared in constant time; without a configured token
//! the endpoints answer 404, so they are off by default.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use subtle::ConstantTimeEq;

use super::session::SessionStore;

#[derive(Clone)]
struct Operator {
    sessions: SessionStore,
    token: Option<Arc<str>>,
}

impl Operator {
    fn check(&self, headers: &HeaderMap) -> Result<(), StatusCode> {
        let Some(token) = &self.token else {
            return Err(StatusCode::NOT_FOUND);
        };
        let given = headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        if bool::from(given.as_bytes().ct_eq(token.as_bytes())) {
            Ok(())
        } else {
            Err(StatusCode::UNAUTHORIZED)
        }
    }
}

/// The hand-off routes; `token` is the operator token (none: disabled).
pub fn router(sessions: SessionStore, token: Option<String>) -> Router {
    let state = Operator {
        sessions,
        token: token.filter(|t| !t.is_empty()).map(Arc::from),
    };
    Router::new()
        .route("/operator/handoffs", get(list))
        .route("/operator/handoffs/{number}/release", post(release))
        .with_state(state)
}

async fn list(State(op): State<Operator>, headers: HeaderMap) -> Response {
    if let Err(code) = op.check(&headers) {
        return code.into_response();
    }
    match op.sessions.handoffs() {
        Ok(waiting) => Json(waiting).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "hand-off list failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn release(
    State(op): State<Operator>,
    headers: HeaderMap,
    Path(number): Path<String>,
) -> Response {
    if let Err(code) = op.check(&headers) {
        return code.into_response();
    }
    match op.sessions.release(&number) {
        Ok(true) => Json(serde_json::json!({ "released": number })).into_response(),
        Ok(false) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => {
            tracing::error!(error = %e, "hand-off release failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::session::Handoff;

    #[tokio::test]
    async fn lists_and_releases_behind_the_token() {
        let sessions = SessionStore::in_memory().unwrap();
        let mut s = sessions.load("15550001842").unwrap();
        s.handoff = Some(Handoff {
            reason: "asked".into(),
            since: 1,
        });
        sessions.save(&s).unwrap();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(sessions.clone(), Some("op-token".into()));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let client = reqwest::Client::new();
        let r = client
            .get(format!("{base}/operator/handoffs"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = client
            .get(format!("{base}/operator/handoffs"))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let r = client
            .get(format!("{base}/operator/handoffs"))
            .bearer_auth("op-token")
            .send()
            .await
            .unwrap();
        let list: serde_json::Value = r.json().await.unwrap();
        assert_eq!(list[0]["number"], "15550001842");
        assert_eq!(list[0]["handoff"]["reason"], "asked");
        let url = format!("{base}/operator/handoffs/15550001842/release");
        let r = client
            .post(&url)
            .bearer_auth("op-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = client
            .post(&url)
            .bearer_auth("op-token")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        assert!(sessions.handoffs().unwrap().is_empty());
    }

    #[tokio::test]
    async fn without_a_token_the_endpoints_do_not_exist() {
        let op = Operator {
            sessions: SessionStore::in_memory().unwrap(),
            token: None,
        };
        assert_eq!(op.check(&HeaderMap::new()), Err(StatusCode::NOT_FOUND));
    }
}
