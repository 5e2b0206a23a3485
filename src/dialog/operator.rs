//! The operators' HTTP endpoints for hand-offs, for the service to mount:
//! `GET /operator/handoffs` lists the conversations waiting for a person
//! (history, slots, reason) and `POST /operator/handoffs/{number}/release`
//! gives a number back to the bot. Both follow the console's
//! [`OperatorAccess`]: `Authorization: Bearer <operator token>` on every
//! address, compared in constant time; without a configured token they
//! answer 403, unless `[service] console_open = true` opens them.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};

use super::session::SessionStore;
use crate::console::access::{self, OperatorAccess};

#[derive(Clone)]
struct Operator {
    sessions: SessionStore,
}

/// The hand-off routes, behind `access`.
pub fn router(sessions: SessionStore, access: OperatorAccess) -> Router {
    Router::new()
        .route("/operator/handoffs", get(list))
        .route("/operator/handoffs/{number}/release", post(release))
        .with_state(Operator { sessions })
        // route_layer: merged into the service, it guards only these routes.
        .route_layer(middleware::from_fn_with_state(
            access,
            access::require_bearer,
        ))
}

async fn list(State(op): State<Operator>) -> Response {
    match op.sessions.handoffs() {
        Ok(waiting) => Json(waiting).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "hand-off list failed");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn release(State(op): State<Operator>, Path(number): Path<String>) -> Response {
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
        let app = router(
            sessions.clone(),
            OperatorAccess::new(Some("op-token"), false),
        );
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

    async fn serve(access: OperatorAccess) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let app = router(SessionStore::in_memory().unwrap(), access);
        tokio::spawn(async move { axum::serve(listener, app).await });
        base
    }

    #[tokio::test]
    async fn without_a_token_the_endpoints_are_closed_on_loopback_too() {
        let base = serve(OperatorAccess::new(None, false)).await;
        let client = reqwest::Client::new();
        for r in [
            client.get(format!("{base}/operator/handoffs")),
            client.post(format!("{base}/operator/handoffs/15550001842/release")),
            client
                .get(format!("{base}/operator/handoffs"))
                .bearer_auth("anything"),
        ] {
            let r = r.send().await.unwrap();
            assert_eq!(r.status(), 403);
            let body = r.text().await.unwrap();
            assert!(
                body.contains("operator_token") && body.contains("console_open = true"),
                "{body}"
            );
        }
    }

    #[tokio::test]
    async fn console_open_opens_them() {
        let base = serve(OperatorAccess::new(None, true)).await;
        let r = reqwest::get(format!("{base}/operator/handoffs"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
}
