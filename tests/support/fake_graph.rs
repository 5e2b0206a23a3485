//! A stand-in for Meta's Graph API on 127.0.0.1, port 0, that behaves like
//! the real one where voxline depends on it: it checks the bearer token,
//! serves media metadata and then the bytes from a separate URL, accepts
//! multipart uploads only when they are Ogg/Opus, refuses empty texts,
//! records every send, and fails on request.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use futures::StreamExt;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

pub const TOKEN: &str = "EAAG-test-token";
pub const VERSION: &str = "v23.0";

/// A message the fake accepted.
#[derive(Debug, Clone, PartialEq)]
pub struct Sent {
    pub id: String,
    pub to: String,
    /// `text` or `audio`.
    pub kind: String,
    pub text: Option<String>,
    pub voice: bool,
    /// The uploaded file an `audio` message sent.
    pub audio: Option<Bytes>,
}

/// Faults to inject; counters apply to the next N calls of that kind.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Sends answered 500.
    pub send_500: u32,
    /// Sends answered 130429 (throughput limit).
    pub send_rate_limited: u32,
    /// Sends answered 131056 (pair rate limit).
    pub send_pair_limited: u32,
    /// Every send answered 131047 (outside the 24-hour window).
    pub outside_window: bool,
    /// Every send answered 400 with code 100 (bad parameter).
    pub send_invalid: bool,
    /// Media metadata answered 500.
    pub metadata_500: u32,
    /// Media downloads cut after half the bytes.
    pub truncate_media: u32,
    /// Media URLs answered 404 as expired.
    pub expire_urls: u32,
    /// Delay between 4 KB chunks of every media download.
    pub slow_media: Option<Duration>,
    /// Every call (metadata, download, upload, send, read receipt) answered
    /// 500: a Graph API outage.
    pub outage: bool,
    /// Read receipts answered only after this long.
    pub read_delay: Option<Duration>,
    /// Sends answered only after this long (a slow Graph API).
    pub send_delay: Option<Duration>,
}

#[derive(Default)]
struct Inner {
    media: HashMap<String, (Bytes, String)>,
    uploads: HashMap<String, Bytes>,
    sent: Vec<Sent>,
    read: Vec<String>,
    /// Read receipts that asked for the typing indicator.
    typing: Vec<String>,
    faults: Faults,
    /// The access token accepted; any other is answered 190.
    token: String,
}

#[derive(Clone)]
pub struct FakeGraph {
    pub addr: SocketAddr,
    state: Arc<State_>,
}

struct State_ {
    inner: Mutex<Inner>,
    next_id: AtomicU64,
    media_downloads_started: AtomicU64,
    sends: watch::Sender<usize>,
    downloads: watch::Sender<u64>,
}

impl FakeGraph {
    pub async fn start() -> Self {
        let state = Arc::new(State_ {
            inner: Mutex::new(Inner {
                token: TOKEN.to_string(),
                ..Inner::default()
            }),
            next_id: AtomicU64::new(1),
            media_downloads_started: AtomicU64::new(0),
            sends: watch::channel(0).0,
            downloads: watch::channel(0).0,
        });
        let app = Router::new()
            .route(&format!("/{VERSION}/{{id}}"), get(metadata))
            .route(&format!("/{VERSION}/{{number}}/messages"), post(messages))
            .route(&format!("/{VERSION}/{{number}}/media"), post(upload))
            .route("/download/{id}/{nonce}", get(download))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Self { addr, state }
    }

    /// `WHATSAPP_GRAPH_URL` for this fake.
    pub fn url(&self) -> String {
        format!("http://{}/{VERSION}", self.addr)
    }

    /// Makes `bytes` downloadable as media `id`.
    pub fn add_media(&self, id: &str, bytes: Vec<u8>, mime: &str) {
        self.state
            .inner
            .lock()
            .unwrap()
            .media
            .insert(id.into(), (Bytes::from(bytes), mime.into()));
    }

    pub fn set_faults(&self, faults: Faults) {
        self.state.inner.lock().unwrap().faults = faults;
    }

    pub fn sent(&self) -> Vec<Sent> {
        self.state.inner.lock().unwrap().sent.clone()
    }

    pub fn marked_read(&self) -> Vec<String> {
        self.state.inner.lock().unwrap().read.clone()
    }

    /// Waits until at least `n` read receipts arrived, or panics after
    /// `timeout`. A receipt runs beside its turn, so it may land after the
    /// reply.
    pub async fn wait_for_reads(&self, n: usize, timeout: Duration) -> Vec<String> {
        let until = tokio::time::Instant::now() + timeout;
        loop {
            let read = self.marked_read();
            if read.len() >= n {
                return read;
            }
            assert!(
                tokio::time::Instant::now() < until,
                "waited {timeout:?} for {n} read receipts, got {read:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Read receipts that showed the typing indicator.
    pub fn typing_shown(&self) -> Vec<String> {
        self.state.inner.lock().unwrap().typing.clone()
    }

    /// Accepts only `token` from now on (the old one gets 190), as when an
    /// access token expires or is revoked.
    pub fn set_token(&self, token: &str) {
        self.state.inner.lock().unwrap().token = token.to_string();
    }

    pub fn downloads_started(&self) -> u64 {
        self.state.media_downloads_started.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` messages were accepted, or panics after `timeout`.
    pub async fn wait_for_sends(&self, n: usize, timeout: Duration) -> Vec<Sent> {
        let mut rx = self.state.sends.subscribe();
        let waited = tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n)).await;
        let sent = self.sent();
        assert!(
            waited.is_ok(),
            "waited {timeout:?} for {n} sends, got {}: {sent:?}",
            sent.len()
        );
        sent
    }

    /// Waits until at least `n` media downloads have started.
    pub async fn wait_for_downloads(&self, n: u64, timeout: Duration) {
        let mut rx = self.state.downloads.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&c| c >= n))
            .await
            .expect("media download did not start in time")
            .unwrap();
    }
}

fn graph_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "AbCdEf"}})),
    )
        .into_response()
}

/// `None` when the call may go on, else the answer: 190 for a wrong token,
/// 500 during an outage.
fn refuse(state: &State_, headers: &HeaderMap) -> Option<Response> {
    let inner = state.inner.lock().unwrap();
    if inner.faults.outage {
        return Some(graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            2,
            "Service temporarily unavailable",
        ));
    }
    let token_ok = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == format!("Bearer {}", inner.token));
    (!token_ok).then(unauthorised)
}

fn unauthorised() -> Response {
    graph_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token")
}

async fn metadata(
    State(state): State<Arc<State_>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse(&state, &headers) {
        return refused;
    }
    let mut inner = state.inner.lock().unwrap();
    if inner.faults.metadata_500 > 0 {
        inner.faults.metadata_500 -= 1;
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            1,
            "An unknown error occurred",
        );
    }
    let Some((bytes, mime)) = inner.media.get(&id) else {
        return graph_error(StatusCode::BAD_REQUEST, 100, "Unsupported get request");
    };
    let nonce = state.next_id.fetch_add(1, Ordering::SeqCst);
    let host = headers
        .get("host")
        .and_then(|h| h.to_str().ok())
        .unwrap_or("127.0.0.1")
        .to_string();
    Json(json!({
        "messaging_product": "whatsapp",
        "url": format!("http://{host}/download/{id}/{nonce}"),
        "mime_type": mime,
        "sha256": hex::encode(Sha256::digest(bytes)),
        "file_size": bytes.len().to_string(),
        "id": id,
    }))
    .into_response()
}

async fn download(
    State(state): State<Arc<State_>>,
    Path((id, _nonce)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(refused) = refuse(&state, &headers) {
        return refused;
    }
    let (bytes, mime, truncate, slow) = {
        let mut inner = state.inner.lock().unwrap();
        if inner.faults.expire_urls > 0 {
            inner.faults.expire_urls -= 1;
            return graph_error(StatusCode::NOT_FOUND, 100, "URL signature expired");
        }
        let Some((bytes, mime)) = inner.media.get(&id).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let truncate = inner.faults.truncate_media > 0;
        if truncate {
            inner.faults.truncate_media -= 1;
        }
        (bytes, mime, truncate, inner.faults.slow_media)
    };
    let n = state.media_downloads_started.fetch_add(1, Ordering::SeqCst) + 1;
    state.downloads.send_replace(n);
    let total = bytes.len();
    let upto = if truncate { total / 2 } else { total };
    let chunks: Vec<Bytes> = (0..upto)
        .step_by(4096)
        .map(|i| bytes.slice(i..(i + 4096).min(upto)))
        .collect();
    let stream = futures::stream::iter(chunks.into_iter().map(Some))
        .chain(futures::stream::iter(truncate.then_some(None)))
        .then(move |chunk| async move {
            if let Some(d) = slow {
                tokio::time::sleep(d).await;
            }
            if chunk.is_none() {
                // Let the headers and the first half reach the client first,
                // as on a real connection that drops mid-body.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // `None` ends the body early: hyper then closes the connection
            // short of Content-Length, as a cut download does.
            chunk.ok_or_else(|| std::io::Error::other("connection cut"))
        });
    Response::builder()
        .header("content-type", mime)
        .header("content-length", total.to_string())
        .body(Body::from_stream(stream))
        .unwrap()
}

async fn messages(
    State(state): State<Arc<State_>>,
    Path(number): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    if let Some(refused) = refuse(&state, &headers) {
        return refused;
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return graph_error(StatusCode::BAD_REQUEST, 100, "Invalid JSON");
    };
    if v["messaging_product"] != "whatsapp" || number.is_empty() {
        return graph_error(StatusCode::BAD_REQUEST, 100, "Invalid parameter");
    }
    if v["status"] == "read" {
        let Some(id) = v["message_id"].as_str() else {
            return graph_error(StatusCode::BAD_REQUEST, 100, "message_id is required");
        };
        let delay = state.inner.lock().unwrap().faults.read_delay;
        if let Some(d) = delay {
            tokio::time::sleep(d).await;
        }
        let mut inner = state.inner.lock().unwrap();
        inner.read.push(id.to_string());
        if v["typing_indicator"]["type"] == "text" {
            inner.typing.push(id.to_string());
        }
        return Json(json!({"success": true})).into_response();
    }
    let delay = state.inner.lock().unwrap().faults.send_delay;
    if let Some(d) = delay {
        tokio::time::sleep(d).await;
    }
    let mut inner = state.inner.lock().unwrap();
    let faults = &mut inner.faults;
    if faults.outside_window {
        return graph_error(
            StatusCode::BAD_REQUEST,
            131_047,
            "Re-engagement message: more than 24 hours have passed",
        );
    }
    if faults.send_invalid {
        return graph_error(StatusCode::BAD_REQUEST, 100, "Invalid parameter");
    }
    if faults.send_500 > 0 {
        faults.send_500 -= 1;
        return graph_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            1,
            "An unknown error occurred",
        );
    }
    if faults.send_rate_limited > 0 {
        faults.send_rate_limited -= 1;
        return graph_error(StatusCode::BAD_REQUEST, 130_429, "Rate limit hit");
    }
    if faults.send_pair_limited > 0 {
        faults.send_pair_limited -= 1;
        return graph_error(StatusCode::BAD_REQUEST, 131_056, "Pair rate limit hit");
    }
    let to = v["to"].as_str().unwrap_or_default().to_string();
    if to.is_empty() || v["recipient_type"] != "individual" {
        return graph_error(StatusCode::BAD_REQUEST, 100, "to is required");
    }
    let kind = v["type"].as_str().unwrap_or_default().to_string();
    let (text, voice, audio) = match kind.as_str() {
        "text" => match v["text"]["body"].as_str() {
            Some(b) if !b.trim().is_empty() => (Some(b.to_string()), false, None),
            _ => return graph_error(StatusCode::BAD_REQUEST, 100, "text.body is required"),
        },
        "audio" => {
            let known = v["audio"]["id"]
                .as_str()
                .is_some_and(|id| inner.uploads.contains_key(id));
            if !known {
                return graph_error(StatusCode::BAD_REQUEST, 131_053, "Media upload error");
            }
            let file = inner
                .uploads
                .get(v["audio"]["id"].as_str().unwrap_or_default());
            (None, v["audio"]["voice"] == true, file.cloned())
        }
        _ => return graph_error(StatusCode::BAD_REQUEST, 100, "Unsupported message type"),
    };
    let id = format!("wamid.OUT{}", state.next_id.fetch_add(1, Ordering::SeqCst));
    inner.sent.push(Sent {
        id: id.clone(),
        to: to.clone(),
        kind,
        text,
        voice,
        audio,
    });
    let n = inner.sent.len();
    drop(inner);
    state.sends.send_replace(n);
    Json(json!({
        "messaging_product": "whatsapp",
        "contacts": [{"input": to, "wa_id": to}],
        "messages": [{"id": id}],
    }))
    .into_response()
}

async fn upload(
    State(state): State<Arc<State_>>,
    headers: HeaderMap,
    mut form: Multipart,
) -> Response {
    if let Some(refused) = refuse(&state, &headers) {
        return refused;
    }
    let mut fields: HashMap<String, (Option<String>, Bytes)> = HashMap::new();
    while let Ok(Some(field)) = form.next_field().await {
        let name = field.name().unwrap_or_default().to_string();
        let content_type = field.content_type().map(str::to_string);
        let Ok(data) = field.bytes().await else {
            return graph_error(StatusCode::BAD_REQUEST, 100, "Bad multipart body");
        };
        fields.insert(name, (content_type, data));
    }
    let product_ok = fields
        .get("messaging_product")
        .is_some_and(|(_, v)| v.as_ref() == b"whatsapp");
    let Some((file_type, file)) = fields.get("file") else {
        return graph_error(StatusCode::BAD_REQUEST, 100, "file is required");
    };
    // An Ogg/Opus file starts with an Ogg page whose first packet is OpusHead.
    let is_ogg_opus = file.starts_with(b"OggS") && file.len() > 36 && &file[28..36] == b"OpusHead";
    if !product_ok || file_type.as_deref() != Some("audio/ogg") || !is_ogg_opus {
        return graph_error(
            StatusCode::BAD_REQUEST,
            131_053,
            "Media upload error: not Ogg/Opus",
        );
    }
    let id = format!(
        "{}",
        9_000_000 + state.next_id.fetch_add(1, Ordering::SeqCst)
    );
    state
        .inner
        .lock()
        .unwrap()
        .uploads
        .insert(id.clone(), file.clone());
    Json(json!({"id": id})).into_response()
}

impl FakeGraph {
    /// Waits until more than `n` messages were accepted; `false` when
    /// `timeout` passed first. Returns as the send is recorded, before its
    /// answer reaches the sender.
    pub async fn sends_beyond(&self, n: usize, timeout: Duration) -> bool {
        let mut rx = self.state.sends.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|&c| c > n))
            .await
            .is_ok_and(|r| r.is_ok())
    }
}
