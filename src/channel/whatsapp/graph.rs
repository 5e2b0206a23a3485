//! The Graph API client: media download, media upload, message sends and
//! read receipts, with retries, timeouts and an outbound rate limit.
//!
//! Every call carries `Authorization: Bearer <token>`. Errors are classed
//! from Meta's `{"error":{"code":…}}` body ([`classify`]): 5xx and 130429
//! are retried with jittered exponential backoff, 131056 waits before the
//! next try, 131047 and other 4xx are returned at once.
//!
//! Error 190 (the access token is invalid or expired) pauses the client:
//! every call fails at once with [`ChannelError::TokenRejected`], without
//! touching the network, until [`GraphClient::set_token`] loads a new token
//! (a config reload). The turns that met it wait in the outbox.
//!
//! The token goes only to the Graph API's own URL and to media URLs that
//! are `https` on the Graph API's host or on `[whatsapp] media_hosts`.
//!
//! A media download is not retried here: its bytes are consumed by a decoder
//! as they arrive, so a cut or failed download is restarted by the caller,
//! which opens the media again and so gets a fresh URL (they expire after
//! 5 minutes).

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::config::{Credentials, Secret, WhatsAppConfig};
use crate::channel::{Channel, ChannelError, MediaDownload, RetryPolicy, Sent};

pub struct GraphClient {
    http: reqwest::Client,
    base: String,
    token: RwLock<Secret>,
    /// Why sending is paused: the message of the 190 that paused it.
    paused: Mutex<Option<String>>,
    phone_number_id: String,
    config: WhatsAppConfig,
    retry: RetryPolicy,
    limiter: OutboundLimiter,
}

/// `GET /{media-id}`.
#[derive(Debug, Deserialize)]
struct MediaInfo {
    url: String,
    #[serde(default)]
    mime_type: String,
    #[serde(default)]
    sha256: Option<String>,
    /// Meta sends a number or a numeric string.
    #[serde(default)]
    file_size: Option<serde_json::Value>,
}

#[derive(Debug, Deserialize)]
struct Uploaded {
    id: String,
}

#[derive(Debug, Deserialize)]
struct MessagesResponse {
    #[serde(default)]
    messages: Vec<Uploaded>,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    error: GraphErrorBody,
}

#[derive(Debug, Deserialize)]
struct GraphErrorBody {
    #[serde(default)]
    code: i64,
    #[serde(default)]
    message: String,
}

impl GraphClient {
    pub fn new(config: &WhatsAppConfig, credentials: &Credentials) -> Result<Self, ChannelError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .map_err(|e| ChannelError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base: config.graph_url.trim_end_matches('/').to_string(),
            token: RwLock::new(credentials.access_token.clone()),
            paused: Mutex::new(None),
            phone_number_id: credentials.phone_number_id.clone(),
            config: config.clone(),
            retry: config.retry_policy(),
            limiter: OutboundLimiter::new(config.messages_per_second),
        })
    }

    /// Loads a new access token. A client paused by error 190 resumes when
    /// the token differs from the one that was rejected.
    pub fn set_token(&self, token: Secret) {
        let mut current = self.token.write().unwrap_or_else(|p| p.into_inner());
        if *current == token {
            return;
        }
        *current = token;
        drop(current);
        let was = self.paused.lock().unwrap_or_else(|p| p.into_inner()).take();
        if was.is_some() {
            crate::metrics::global().set_sending_paused(false);
            tracing::warn!("new access token loaded; sending resumes");
        }
    }

    fn bearer(&self) -> String {
        self.token
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .expose()
            .to_string()
    }

    /// Fails at once while paused by a rejected token.
    fn check_paused(&self) -> Result<(), ChannelError> {
        match &*self.paused.lock().unwrap_or_else(|p| p.into_inner()) {
            Some(message) => Err(ChannelError::TokenRejected {
                message: message.clone(),
            }),
            None => Ok(()),
        }
    }

    /// Pauses the client after a 190 answered to `token`, unless a new token
    /// was loaded meanwhile.
    fn pause(&self, rejected: &str, message: &str) {
        if self.bearer() != rejected {
            return;
        }
        let mut paused = self.paused.lock().unwrap_or_else(|p| p.into_inner());
        if paused.is_none() {
            tracing::error!(
                error = message,
                "the access token was rejected (190): sending is paused until a new token is loaded (edit the config file or send SIGHUP)"
            );
            crate::metrics::global().set_sending_paused(true);
        }
        *paused = Some(message.to_string());
    }

    /// Sends the request `build` makes, retrying as the error's
    /// [`RetryPolicy`] says, and decodes the JSON answer.
    async fn call<T: DeserializeOwned>(
        &self,
        what: &'static str,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, ChannelError> {
        self.call_with(what, self.retry, self.config.request_timeout(), build)
            .await
    }

    async fn call_with<T: DeserializeOwned>(
        &self,
        what: &'static str,
        retry: RetryPolicy,
        timeout: Duration,
        build: impl Fn() -> reqwest::RequestBuilder,
    ) -> Result<T, ChannelError> {
        let mut attempt = 1;
        loop {
            self.check_paused()?;
            let token = self.bearer();
            let result = async {
                let response = build()
                    .bearer_auth(&token)
                    .timeout(timeout)
                    .send()
                    .await
                    .map_err(|e| transport(e, timeout))?;
                let status = response.status();
                let body = response.bytes().await.map_err(|e| transport(e, timeout))?;
                if !status.is_success() {
                    return Err(classify(status.as_u16(), &body));
                }
                serde_json::from_slice::<T>(&body)
                    .map_err(|e| ChannelError::Unexpected(format!("{what}: {e}")))
            }
            .await;
            let error = match result {
                Ok(v) => return Ok(v),
                Err(e) => e,
            };
            if let ChannelError::TokenRejected { message } = &error {
                self.pause(&token, message);
            }
            let Some(wait) = retry.next_wait(&error, attempt) else {
                return Err(error);
            };
            tracing::warn!(what, attempt, error = %error, "graph api call failed; retrying in {wait:?}");
            tokio::time::sleep(wait).await;
            attempt += 1;
        }
    }

    fn messages_url(&self) -> String {
        format!("{}/{}/messages", self.base, self.phone_number_id)
    }

    async fn send_message(&self, body: serde_json::Value) -> Result<Sent, ChannelError> {
        self.limiter.acquire(&self.phone_number_id).await;
        let url = self.messages_url();
        let response: MessagesResponse = self
            .call("send message", || self.http.post(&url).json(&body))
            .await?;
        response
            .messages
            .into_iter()
            .next()
            .map(|m| Sent { message_id: m.id })
            .ok_or_else(|| ChannelError::Unexpected("send message: no message id".into()))
    }
}

#[async_trait::async_trait]
impl Channel for GraphClient {
    async fn open_media(&self, media_id: &str) -> Result<MediaDownload, ChannelError> {
        let info_url = format!("{}/{}", self.base, media_id);
        let info: MediaInfo = self
            .call("media metadata", || self.http.get(&info_url))
            .await?;
        let limit = self.config.max_media_bytes;
        let size = info.file_size.as_ref().and_then(|v| match v {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        });
        if size.is_some_and(|s| s > limit) {
            return Err(ChannelError::MediaTooLarge { limit });
        }
        self.check_media_url(&info.url)?;
        let timeout = self.config.media_timeout();
        let deadline = Instant::now() + timeout;
        let response = tokio::time::timeout_at(
            deadline,
            self.http.get(&info.url).bearer_auth(self.bearer()).send(),
        )
        .await
        .map_err(|_| ChannelError::Timeout(timeout))?
        .map_err(|e| transport(e, timeout))?;
        let status = response.status().as_u16();
        if matches!(status, 401 | 403 | 404 | 410) {
            return Err(ChannelError::MediaExpired);
        }
        if !response.status().is_success() {
            let body = response.bytes().await.unwrap_or_default();
            return Err(classify(status, &body));
        }
        let expected = response.content_length().or(size);
        if expected.is_some_and(|s| s > limit) {
            return Err(ChannelError::MediaTooLarge { limit });
        }
        let checked = Checked {
            inner: Box::pin(response.bytes_stream()),
            deadline,
            timeout,
            limit,
            expected,
            got: 0,
            hasher: Sha256::new(),
            sha256: info.sha256.filter(|s| !s.is_empty()),
            done: false,
        };
        Ok(MediaDownload {
            mime_type: info.mime_type,
            size: expected,
            chunks: checked.into_stream().boxed(),
        })
    }

    async fn send_text(&self, to: &str, text: &str) -> Result<Sent, ChannelError> {
        self.send_message(json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "text",
            "text": {"preview_url": false, "body": text},
        }))
        .await
    }

    async fn upload_voice(&self, ogg_opus: Bytes) -> Result<String, ChannelError> {
        let url = format!("{}/{}/media", self.base, self.phone_number_id);
        let uploaded: Uploaded = self
            .call("upload media", || {
                let file = reqwest::multipart::Part::stream(ogg_opus.clone())
                    .file_name("reply.ogg")
                    .mime_str("audio/ogg")
                    .expect("audio/ogg is a valid MIME type");
                let form = reqwest::multipart::Form::new()
                    .text("messaging_product", "whatsapp")
                    .text("type", "audio/ogg")
                    .part("file", file);
                self.http.post(&url).multipart(form)
            })
            .await?;
        Ok(uploaded.id)
    }

    async fn send_voice(&self, to: &str, media_id: &str) -> Result<Sent, ChannelError> {
        self.send_message(json!({
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            "to": to,
            "type": "audio",
            "audio": {"id": media_id, "voice": true},
        }))
        .await
    }

    async fn mark_read(&self, message_id: &str) -> Result<(), ChannelError> {
        let url = self.messages_url();
        let body = json!({
            "messaging_product": "whatsapp",
            "status": "read",
            "message_id": message_id,
            "typing_indicator": {"type": "text"},
        });
        let once = RetryPolicy {
            attempts: 1,
            ..self.retry
        };
        let timeout = Duration::from_millis(self.config.read_receipt_timeout_ms.max(1));
        let _: serde_json::Value = self
            .call_with("mark read", once, timeout, || {
                self.http.post(&url).json(&body)
            })
            .await?;
        Ok(())
    }

    fn paused(&self) -> Option<String> {
        self.paused
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl GraphClient {
    /// Refuses a media URL the token must not go to: only `https` on the
    /// Graph API's host or on `[whatsapp] media_hosts`, or an allowed entry
    /// that names its scheme and port exactly.
    fn check_media_url(&self, url: &str) -> Result<(), ChannelError> {
        let refused = |host: &str| ChannelError::MediaHostRefused {
            host: host.to_string(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|_| refused("an unparsable URL"))?;
        let host = parsed.host_str().unwrap_or_default().to_ascii_lowercase();
        let origin = parsed.origin().ascii_serialization();
        let graph_host = reqwest::Url::parse(&self.base)
            .ok()
            .and_then(|u| u.host_str().map(str::to_ascii_lowercase));
        let allowed = self.config.media_hosts.iter().any(|entry| {
            let entry = entry.trim().trim_end_matches('/').to_ascii_lowercase();
            if entry.contains("://") {
                entry == origin
            } else {
                parsed.scheme() == "https" && entry == host
            }
        }) || (parsed.scheme() == "https"
            && graph_host.as_deref() == Some(host.as_str()));
        if allowed {
            Ok(())
        } else {
            tracing::warn!(%host, "media URL refused: the access token is not sent there");
            Err(refused(&host))
        }
    }
}

fn transport(e: reqwest::Error, timeout: Duration) -> ChannelError {
    if e.is_timeout() {
        ChannelError::Timeout(timeout)
    } else {
        // The URL is left out: a media URL carries a signed query.
        ChannelError::Transport(e.without_url().to_string())
    }
}

/// Classes a non-2xx answer by Meta's error code.
pub fn classify(status: u16, body: &[u8]) -> ChannelError {
    let (code, message) = match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => (b.error.code, b.error.message),
        Err(_) => (
            0,
            String::from_utf8_lossy(&body[..body.len().min(200)]).into_owned(),
        ),
    };
    match code {
        190 => ChannelError::TokenRejected { message },
        130_429 | 80_007 | 4 => ChannelError::RateLimited { code, message },
        131_056 => ChannelError::PairRateLimited { message },
        131_047 => ChannelError::OutsideWindow { message },
        _ if status >= 500 => ChannelError::Server { status, message },
        // 429 without a known code is still a rate limit.
        _ if status == 429 => ChannelError::RateLimited { code, message },
        _ => ChannelError::Rejected {
            status,
            code,
            message,
        },
    }
}

/// A download's byte stream with its limits applied: the size cap, the
/// whole-download deadline, the announced length and the checksum, checked
/// when the stream ends.
struct Checked {
    inner: Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>,
    deadline: Instant,
    timeout: Duration,
    limit: u64,
    expected: Option<u64>,
    got: u64,
    hasher: Sha256,
    sha256: Option<String>,
    done: bool,
}

impl Checked {
    fn into_stream(self) -> impl Stream<Item = Result<Bytes, ChannelError>> + Send {
        futures::stream::unfold(self, |mut s| async move {
            if s.done {
                return None;
            }
            let item = s.next_item().await;
            if !matches!(item, Some(Ok(_))) {
                s.done = true;
            }
            item.map(|item| (item, s))
        })
    }

    async fn next_item(&mut self) -> Option<Result<Bytes, ChannelError>> {
        let next = match tokio::time::timeout_at(self.deadline, self.inner.next()).await {
            Err(_) => return Some(Err(ChannelError::Timeout(self.timeout))),
            Ok(next) => next,
        };
        match next {
            Some(Ok(chunk)) => {
                self.got += chunk.len() as u64;
                if self.got > self.limit {
                    return Some(Err(ChannelError::MediaTooLarge { limit: self.limit }));
                }
                self.hasher.update(&chunk);
                Some(Ok(chunk))
            }
            Some(Err(e)) => Some(Err(match self.expected {
                // A body that stops early is a cut download, whatever the
                // connection said about it.
                Some(expected) if !e.is_timeout() => ChannelError::MediaCut {
                    got: self.got,
                    expected,
                },
                _ => transport(e, self.timeout),
            })),
            None => {
                if let Some(expected) = self.expected.filter(|&e| e != self.got) {
                    return Some(Err(ChannelError::MediaCut {
                        got: self.got,
                        expected,
                    }));
                }
                let digest = std::mem::take(&mut self.hasher).finalize();
                match &self.sha256 {
                    Some(want) if !checksum_matches(want, &digest) => {
                        Some(Err(ChannelError::MediaChecksum))
                    }
                    _ => None,
                }
            }
        }
    }
}

/// Meta documents `sha256` without saying its encoding; hex and base64 are
/// both seen, so both are accepted.
fn checksum_matches(announced: &str, digest: &[u8]) -> bool {
    let announced = announced.trim();
    announced.eq_ignore_ascii_case(&hex::encode(digest))
        || announced.trim_end_matches('=')
            == base64::engine::general_purpose::STANDARD_NO_PAD.encode(digest)
}

/// Spaces outbound messages per business number at most `rate` a second.
///
/// Each send takes the next free slot; slots are `1/rate` apart, so a burst
/// of replies leaves at the configured rate instead of being refused by Meta
/// with 130429.
pub struct OutboundLimiter {
    interval: Duration,
    next: Mutex<HashMap<String, Instant>>,
}

impl OutboundLimiter {
    pub fn new(per_second: u32) -> Self {
        Self {
            interval: Duration::from_secs(1) / per_second.max(1),
            next: Mutex::new(HashMap::new()),
        }
    }

    pub async fn acquire(&self, number: &str) {
        let slot = {
            let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let slot = next.get(number).copied().unwrap_or(now).max(now);
            next.insert(number.to_string(), slot + self.interval);
            slot
        };
        tokio::time::sleep_until(slot).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Disposition;

    #[test]
    fn errors_are_classed_by_meta_code() {
        let body = |code: i64| {
            format!(
                r#"{{"error":{{"message":"m","type":"OAuthException","code":{code},"fbtrace_id":"x"}}}}"#
            )
        };
        let wait = Duration::from_secs(6);
        let d = |status, code| classify(status, body(code).as_bytes()).disposition(wait);
        assert_eq!(d(400, 130_429), Disposition::Retry);
        assert_eq!(d(400, 131_056), Disposition::Wait(wait));
        assert_eq!(d(400, 131_047), Disposition::GiveUp);
        assert_eq!(d(400, 100), Disposition::DeadLetter);
        assert_eq!(d(401, 190), Disposition::Pause);
        assert_eq!(d(500, 1), Disposition::Retry);
        assert_eq!(
            classify(503, b"<html>").disposition(wait),
            Disposition::Retry
        );
    }

    #[test]
    fn the_token_goes_only_to_allowed_media_hosts() {
        let config = WhatsAppConfig {
            media_hosts: vec!["lookaside.fbsbx.com".into(), "http://127.0.0.1:9".into()],
            ..WhatsAppConfig::default()
        };
        let credentials = Credentials {
            access_token: Secret::new("t"),
            app_secret: Secret::new("s"),
            verify_token: Secret::new("v"),
            phone_number_id: "1".into(),
        };
        let client = GraphClient::new(&config, &credentials).unwrap();
        let ok = |url: &str| client.check_media_url(url).is_ok();
        assert!(ok(
            "https://lookaside.fbsbx.com/whatsapp_business/attachments/?mid=1"
        ));
        assert!(ok("https://graph.facebook.com/v23.0/media/1"));
        assert!(ok("http://127.0.0.1:9/download/1"));
        // Plain http to an allowed host, another host, another port.
        assert!(!ok("http://lookaside.fbsbx.com/x"));
        assert!(!ok("https://evil.example/x"));
        assert!(!ok("https://lookaside.fbsbx.com.evil.example/x"));
        assert!(!ok("http://127.0.0.1:10/download/1"));
        assert!(!ok("not a url"));
    }

    #[test]
    fn backoff_grows_with_jitter_and_a_cap() {
        let retry = WhatsAppConfig::default().retry_policy();
        for attempt in 1..10 {
            let d = retry.backoff(attempt).as_millis() as u64;
            let exp = (250u64 << (attempt - 1)).min(8_000);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn checksums_in_hex_or_base64() {
        let digest = Sha256::digest(b"abc");
        assert!(checksum_matches(
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            &digest
        ));
        assert!(checksum_matches(
            "ungWv48Bz+pBQUDeXa4iI7ADYaOWF3qctBD/YfIAFa0=",
            &digest
        ));
        assert!(!checksum_matches("abc", &digest));
    }

    #[tokio::test(start_paused = true)]
    async fn limiter_spaces_sends() {
        let limiter = OutboundLimiter::new(80);
        let start = Instant::now();
        for _ in 0..81 {
            limiter.acquire("1").await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(990), "{elapsed:?}");
        // Another number has its own budget.
        let before = Instant::now();
        limiter.acquire("2").await;
        assert_eq!(before.elapsed(), Duration::ZERO);
    }
}
