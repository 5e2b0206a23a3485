//! A stand-in for an OpenAI-compatible streaming LLM on 127.0.0.1, for the
//! bench and the tests: `POST {base}/v1/chat/completions` answers with
//! server-sent events after a set time to first token, then one token at a
//! time at a set rate, then `[DONE]`, as the real APIs stream.
//!
//! The timing is in the path, so one server plays several providers:
//! `http://127.0.0.1:PORT/{first_token_ms}/{tokens_per_second}/v1`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use futures::StreamExt;

/// Two sentences, as a short spoken answer is.
pub const REPLY: &str = "We are an online shop without a physical store, so every order ships from our warehouse. Is there anything else I can help you with today?";

/// A running fake LLM.
pub struct FakeLlm {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Starts answering every request with `reply`.
    pub async fn start(reply: &str) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/{first_ms}/{rate}/v1/chat/completions", post(complete))
            .with_state(reply.to_string());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, task })
    }

    /// The `base_url` of a provider with this timing.
    pub fn base_url(&self, first_token: Duration, tokens_per_second: u32) -> String {
        format!(
            "http://{}/{}/{}/v1",
            self.addr,
            first_token.as_millis(),
            tokens_per_second.max(1)
        )
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The reply's tokens: words with their following space, about what an
/// LLM's tokenizer streams for plain English.
fn tokens(reply: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    for c in reply.chars() {
        word.push(c);
        if c == ' ' {
            out.push(std::mem::take(&mut word));
        }
    }
    if !word.is_empty() {
        out.push(word);
    }
    out
}

fn event(token: &str) -> Bytes {
    let chunk = serde_json::json!({
        "id": "fake-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": {"content": token}, "finish_reason": null}],
    });
    Bytes::from(format!("data: {chunk}\n\n"))
}

async fn complete(
    State(reply): State<String>,
    Path((first_ms, rate)): Path<(u64, u32)>,
    body: Bytes,
) -> Response {
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return (StatusCode::BAD_REQUEST, "body is not JSON").into_response();
    }
    let first = Duration::from_millis(first_ms);
    let gap = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let events = futures::stream::iter(tokens(&reply).into_iter().enumerate())
        .then(move |(i, token)| async move {
            tokio::time::sleep(if i == 0 { first } else { gap }).await;
            Ok::<_, std::convert::Infallible>(event(&token))
        })
        .chain(futures::stream::once(async {
            Ok(Bytes::from_static(b"data: [DONE]\n\n"))
        }));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(events),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_keep_every_character() {
        let t = tokens(REPLY);
        assert_eq!(t.concat(), REPLY);
        assert!(t.len() > 20);
    }
}
