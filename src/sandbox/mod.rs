//! `voxline serve --sandbox`: WhatsApp on one machine, without Meta.
//!
//! A [`Sandbox`] is two things. A stand-in for the Graph API
//! ([`graph`]), on its own listener on 127.0.0.1, which voxline's
//! production [`GraphClient`](crate::channel::whatsapp::GraphClient) talks
//! to as it would to Meta: bearer token, media metadata then a separate
//! download URL, multipart uploads, sends and read receipts, Meta's error
//! JSON. And simulated customers: [`Sandbox::send_voice`] and
//! [`Sandbox::send_text`] build the webhook notification Meta would send
//! ([`customer`]), sign it with the app secret and POST it to the service's
//! `/webhook`, which verifies it as it verifies Meta's. Nothing in the
//! service knows it is in a sandbox: [`Sandbox::service_config`] points the
//! ordinary configuration at the stand-in and gives it the sandbox's
//! credentials.
//!
//! Every message both ways is kept per customer ([`conversation`]), so a
//! caller can wait for the reply to what it sent ([`Sandbox::wait_reply`]),
//! and the chat page ([`page`], `GET /sandbox`, mounted on the service's own
//! listener) can show the conversation. Memory is bounded by
//! [`SandboxConfig`].

pub mod conversation;
pub mod customer;
pub mod graph;
pub mod media;
pub mod page;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::watch;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::channel::whatsapp::webhook::{sign, SIGNATURE_HEADER};
use crate::channel::whatsapp::{Credentials, Secret};
use crate::config::Config;
use conversation::{ChatMessage, Content, Conversations, Direction};
use customer::{Business, Said};
use media::{MediaStore, StoredMedia};

pub use graph::GraphError;

/// The sandbox's limits. Not part of `voxline.toml`: the defaults suit a
/// person at the page and a benchmark alike.
#[derive(Debug, Clone)]
pub struct SandboxConfig {
    /// The Graph API version in the stand-in's paths. Default `v23.0`, as
    /// [`crate::channel::whatsapp::DEFAULT_GRAPH_URL`].
    pub version: String,
    /// Media files kept (customers' notes and voxline's uploads). Default 512.
    pub max_media: usize,
    /// Bytes of media kept. Default 256 MiB.
    pub max_media_bytes: u64,
    /// Messages kept per conversation (read receipts included). Default 500.
    pub max_messages: usize,
    /// Conversations kept; the one idle the longest goes first. Default 1000.
    pub max_customers: usize,
    /// Largest note a simulated customer may send. Default 16 MiB,
    /// WhatsApp's limit for audio.
    pub max_audio_bytes: usize,
    /// Timeout of one webhook POST. Default 10 s.
    pub webhook_timeout: Duration,
}

impl Default for SandboxConfig {
    fn default() -> Self {
        Self {
            version: "v23.0".into(),
            max_media: 512,
            max_media_bytes: 256 * 1024 * 1024,
            max_messages: 500,
            max_customers: 1000,
            max_audio_bytes: graph::MAX_AUDIO_BYTES,
            webhook_timeout: Duration::from_secs(10),
        }
    }
}

/// The customer the page starts with: in the embedded shop's data
/// (`data/catalogue.toml`) this number owns order 1842.
pub const DEFAULT_CUSTOMER: &str = "15550001842";

/// Where a sandboxed service keeps its inbox and sessions unless configured
/// otherwise, apart from production's `var/`.
pub const DEFAULT_DATA_DIR: &str = "var/sandbox";

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot listen on 127.0.0.1 for the Graph API stand-in: {0}")]
    Listen(std::io::Error),
    #[error("no webhook URL yet: call set_webhook_url once the service listens")]
    NoWebhook,
    #[error("{0:?} is not a WhatsApp number (6 to 15 digits)")]
    BadNumber(String),
    #[error("the message is empty")]
    Empty,
    #[error("a text holds at most {limit} characters, this one {len}")]
    TextTooLong { len: usize, limit: usize },
    #[error("an audio file is at most {limit} bytes, this one is {size}")]
    AudioTooLarge { size: usize, limit: usize },
    #[error("the sandbox's media store is smaller than this file")]
    MediaStoreFull,
    #[error("the webhook could not be reached: {0}")]
    Transport(String),
    #[error("the webhook answered {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("the webhook's subscription check failed: {0}")]
    Verify(String),
}

/// A text or a voice note voxline sent a customer, as the stand-in
/// accepted it.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    /// The wamid the stand-in answered the send with.
    pub id: String,
    pub to: String,
    /// Position in the sandbox's message sequence.
    pub seq: u64,
    /// When the stand-in accepted the send.
    pub accepted_at: Instant,
    pub content: OutboundContent,
}

#[derive(Debug, Clone)]
pub enum OutboundContent {
    Text(String),
    Audio {
        media_id: String,
        mime_type: String,
        voice: bool,
        /// The uploaded file, unless the media store has evicted it since.
        bytes: Option<Bytes>,
    },
}

impl OutboundMessage {
    pub fn text(&self) -> Option<&str> {
        match &self.content {
            OutboundContent::Text(t) => Some(t),
            OutboundContent::Audio { .. } => None,
        }
    }

    /// The voice note's bytes, for an audio message still in the store.
    pub fn audio(&self) -> Option<&Bytes> {
        match &self.content {
            OutboundContent::Audio { bytes, .. } => bytes.as_ref(),
            OutboundContent::Text(_) => None,
        }
    }
}

/// A running sandbox: the Graph API stand-in and the customers' side.
/// Cloning is cheap; the stand-in stops when the last clone is dropped.
#[derive(Clone)]
pub struct Sandbox {
    shared: Arc<Shared>,
    _stop: Arc<DropGuard>,
}

pub(crate) struct State {
    pub media: MediaStore,
    pub chats: Conversations,
}

pub(crate) struct Shared {
    pub config: SandboxConfig,
    pub credentials: Credentials,
    pub business: Business,
    /// `http://127.0.0.1:<port>`, the stand-in's own address.
    pub base_url: String,
    /// Signs the download URLs.
    pub url_key: [u8; 32],
    state: Mutex<State>,
    /// The last sequence number, for waits and the page's long polls.
    changes: watch::Sender<u64>,
    next_id: AtomicU64,
    webhook_url: RwLock<Option<String>>,
    http: reqwest::Client,
    /// Ends the waits at once, so that the page's long polls do not hold
    /// up the service's graceful shutdown.
    closing: CancellationToken,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the waiters after a message was added.
    pub fn changed(&self) {
        let last = self.lock().chats.last_seq();
        self.changes.send_replace(last);
    }

    /// A numeric media id, as Meta's are.
    pub fn media_id(&self) -> String {
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        format!("{}", 1_000_000_000_000_000 + n)
    }

    /// A message id in Meta's `wamid.` + base64 form.
    pub fn wamid(&self) -> String {
        use base64::Engine as _;
        let n = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut raw = Vec::with_capacity(24);
        raw.extend_from_slice(self.credentials.phone_number_id.as_bytes());
        raw.extend_from_slice(&n.to_be_bytes());
        raw.extend_from_slice(&random_bytes::<6>());
        format!(
            "wamid.{}",
            base64::engine::general_purpose::STANDARD.encode(raw)
        )
    }
}

impl Sandbox {
    /// Starts the Graph API stand-in on 127.0.0.1 (a free port) with fresh
    /// random credentials.
    pub async fn start(config: SandboxConfig) -> Result<Self, SandboxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .map_err(SandboxError::Listen)?;
        let addr: SocketAddr = listener.local_addr().map_err(SandboxError::Listen)?;
        let credentials = Credentials {
            access_token: Secret::new(format!("EAAsandbox{}", random_hex(24))),
            app_secret: Secret::new(random_hex(16)),
            verify_token: Secret::new(random_hex(12)),
            phone_number_id: random_digits(15),
        };
        let business = Business {
            account_id: random_digits(15),
            phone_number_id: credentials.phone_number_id.clone(),
            // 555-01xx numbers are reserved for fiction.
            display_phone_number: "15555550100".into(),
        };
        let http = reqwest::Client::builder()
            .timeout(config.webhook_timeout)
            .build()
            .map_err(|e| SandboxError::Transport(e.to_string()))?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                media: MediaStore::new(config.max_media, config.max_media_bytes),
                chats: Conversations::new(config.max_customers, config.max_messages),
            }),
            config,
            credentials,
            business,
            base_url: format!("http://{addr}"),
            url_key: random_bytes::<32>(),
            changes: watch::channel(0).0,
            next_id: AtomicU64::new(1),
            webhook_url: RwLock::new(None),
            http,
            closing: CancellationToken::new(),
        });
        let stop = CancellationToken::new();
        let app = graph::routes(shared.clone());
        let cancelled = stop.clone().cancelled_owned();
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app)
                .with_graceful_shutdown(cancelled)
                .await
            {
                tracing::error!(error = %e, "sandbox Graph API stand-in failed");
            }
        });
        tracing::info!(%addr, "sandbox Graph API stand-in listening");
        Ok(Self {
            shared,
            _stop: Arc::new(stop.drop_guard()),
        })
    }

    /// The stand-in's Graph API base URL, version included (what
    /// `WHATSAPP_GRAPH_URL` would be).
    pub fn graph_url(&self) -> String {
        format!("{}/{}", self.shared.base_url, self.shared.config.version)
    }

    /// The credentials generated at start: the service must use these.
    pub fn credentials(&self) -> &Credentials {
        &self.shared.credentials
    }

    /// The business number customers write to, as their phones show it.
    pub fn business_number(&self) -> &str {
        &self.shared.business.display_phone_number
    }

    /// `base` changed to run against this sandbox: the WhatsApp credentials
    /// and the Graph API URL are the sandbox's (whatever the file or the
    /// environment said, so sandbox traffic never reaches Meta); the store
    /// moves to [`DEFAULT_DATA_DIR`] when it was left at its default, so
    /// sandbox conversations do not mix with production's. The console is
    /// opened (`[service] console_open`): the chat page reads each turn's
    /// trace from it without a token, and the sandbox's own routes have no
    /// authentication either. Everything else (the listen address,
    /// `mark_read`, the dialog, TTS) stays as configured; the defaults are
    /// the embedded shop and local espeak-ng.
    pub fn service_config(&self, base: Config) -> Config {
        let mut config = base;
        config.service.console_open = true;
        let c = &self.shared.credentials;
        config.whatsapp.access_token = Some(c.access_token.clone());
        config.whatsapp.app_secret = Some(c.app_secret.clone());
        config.whatsapp.verify_token = Some(c.verify_token.clone());
        config.whatsapp.phone_number_id = Some(c.phone_number_id.clone());
        config.whatsapp.graph_url = self.graph_url();
        // The stand-in serves media over plain http on loopback.
        config
            .whatsapp
            .media_hosts
            .push(self.shared.base_url.trim_end_matches('/').to_string());
        if config.store.data_dir == crate::store::StoreConfig::default().data_dir {
            config.store.data_dir = PathBuf::from(DEFAULT_DATA_DIR);
        }
        config
    }

    /// Where customers' webhooks go: the service's `/webhook`, known once
    /// it listens.
    pub fn set_webhook_url(&self, url: impl Into<String>) {
        *self
            .shared
            .webhook_url
            .write()
            .unwrap_or_else(|p| p.into_inner()) = Some(url.into());
    }

    fn webhook_url(&self) -> Result<String, SandboxError> {
        self.shared
            .webhook_url
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or(SandboxError::NoWebhook)
    }

    /// The subscription check Meta makes when a webhook is registered:
    /// `GET /webhook?hub.mode=subscribe&hub.verify_token=…&hub.challenge=…`
    /// must answer the challenge.
    pub async fn verify_webhook(&self) -> Result<(), SandboxError> {
        let url = self.webhook_url()?;
        let challenge = random_digits(10);
        let response = self
            .shared
            .http
            .get(&url)
            .query(&[
                ("hub.mode", "subscribe"),
                (
                    "hub.verify_token",
                    self.shared.credentials.verify_token.expose(),
                ),
                ("hub.challenge", &challenge),
            ])
            .send()
            .await
            .map_err(|e| SandboxError::Transport(e.without_url().to_string()))?;
        let status = response.status().as_u16();
        let body = response.text().await.unwrap_or_default();
        if status == 200 && body == challenge {
            Ok(())
        } else {
            Err(SandboxError::Verify(format!(
                "answered {status} {:?}",
                short(&body)
            )))
        }
    }

    /// A voice note from `from`: the bytes go into the stand-in's media, and
    /// the webhook gets an `audio` message with `voice: true`. Returns the
    /// message's wamid once the service has acknowledged the webhook.
    pub async fn send_voice(
        &self,
        from: &str,
        bytes: Bytes,
        mime: &str,
    ) -> Result<String, SandboxError> {
        self.send_audio(from, bytes, mime, true).await
    }

    /// An audio message: a recorded voice note (`voice`) or a shared audio
    /// file.
    pub async fn send_audio(
        &self,
        from: &str,
        bytes: Bytes,
        mime: &str,
        voice: bool,
    ) -> Result<String, SandboxError> {
        let from = number(from)?;
        let limit = self.shared.config.max_audio_bytes;
        if bytes.is_empty() {
            return Err(SandboxError::Empty);
        }
        if bytes.len() > limit {
            return Err(SandboxError::AudioTooLarge {
                size: bytes.len(),
                limit,
            });
        }
        let mime = if mime.trim().is_empty() {
            "application/octet-stream"
        } else {
            mime.trim()
        };
        let stored = StoredMedia::new(bytes, mime);
        let sha256 = graph::sha256_base64(&stored.sha256);
        let media_id = self.shared.media_id();
        if !self.shared.lock().media.insert(media_id.clone(), stored) {
            return Err(SandboxError::MediaStoreFull);
        }
        let said = Said::Audio {
            media_id: &media_id,
            mime_type: mime,
            sha256: &sha256,
            voice,
        };
        let content = Content::Audio {
            media_id: media_id.clone(),
            mime_type: mime.to_string(),
            voice,
        };
        self.deliver(&from, said, content).await
    }

    /// A typed message from `from`.
    pub async fn send_text(&self, from: &str, text: &str) -> Result<String, SandboxError> {
        let from = number(from)?;
        if text.trim().is_empty() {
            return Err(SandboxError::Empty);
        }
        let len = text.chars().count();
        if len > graph::MAX_TEXT_CHARS {
            return Err(SandboxError::TextTooLong {
                len,
                limit: graph::MAX_TEXT_CHARS,
            });
        }
        let content = Content::Text {
            body: text.to_string(),
        };
        self.deliver(&from, Said::Text(text), content).await
    }

    /// Records the message, then POSTs its signed notification to the
    /// webhook. It is recorded first so that nothing voxline sends about it
    /// (a read receipt, a reply) can precede it in the conversation.
    async fn deliver(
        &self,
        from: &str,
        said: Said<'_>,
        content: Content,
    ) -> Result<String, SandboxError> {
        let url = self.webhook_url()?;
        let wamid = self.shared.wamid();
        let now = conversation::unix_ms();
        let name = format!("Sandbox {}", &from[from.len().saturating_sub(4)..]);
        let body = customer::notification(
            &self.shared.business,
            &wamid,
            from,
            &name,
            now / 1000,
            &said,
        )
        .to_string();
        let signature = sign(self.shared.credentials.app_secret.expose(), body.as_bytes());
        self.shared
            .lock()
            .chats
            .push(from, Direction::Inbound, &wamid, content);
        self.shared.changed();
        let result = self
            .shared
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header(SIGNATURE_HEADER, signature)
            .body(body)
            .send()
            .await;
        let failure = match result {
            Ok(r) if r.status().is_success() => None,
            Ok(r) => {
                let status = r.status().as_u16();
                let body = short(&r.text().await.unwrap_or_default());
                Some(SandboxError::Refused { status, body })
            }
            Err(e) => Some(SandboxError::Transport(e.without_url().to_string())),
        };
        match failure {
            None => Ok(wamid),
            Some(e) => {
                self.shared
                    .lock()
                    .chats
                    .set_error(from, &wamid, e.to_string());
                self.shared.changed();
                Err(e)
            }
        }
    }

    /// The first reply (a text or an audio message, not a read receipt)
    /// voxline sent after an inbound message, waiting up to `timeout`.
    /// `wamid_or_from` is the inbound message's wamid, or a customer's
    /// number for the reply to their latest message.
    pub async fn wait_reply(
        &self,
        wamid_or_from: &str,
        timeout: Duration,
    ) -> Option<OutboundMessage> {
        self.wait_replies(wamid_or_from, 1, timeout)
            .await
            .into_iter()
            .next()
    }

    /// The first `n` replies after an inbound message (a turn may send a
    /// holding message before its answer). Returns early once there are
    /// `n`; on timeout, returns those that arrived, possibly none.
    pub async fn wait_replies(
        &self,
        wamid_or_from: &str,
        n: usize,
        timeout: Duration,
    ) -> Vec<OutboundMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.changes.subscribe();
        loop {
            // Looked up each time: the inbound message may be recorded
            // after the wait began.
            let found = {
                let state = self.shared.lock();
                let after = if wamid_or_from.starts_with("wamid.") {
                    state.chats.inbound(wamid_or_from)
                } else {
                    number(wamid_or_from).ok().and_then(|from| {
                        let seq = state.chats.last_inbound(&from)?.seq;
                        Some((from, seq))
                    })
                };
                after.map(|(customer, seq)| state.chats.replies_after(&customer, seq, n))
            };
            let replies = found.unwrap_or_default();
            let done = replies.len() >= n || !self.wait_change(&mut changes, deadline).await;
            if done {
                return replies
                    .into_iter()
                    .filter_map(|m| self.outbound(m))
                    .collect();
            }
        }
    }

    fn outbound(&self, m: ChatMessage) -> Option<OutboundMessage> {
        let content = match m.content {
            Content::Text { body } => OutboundContent::Text(body),
            Content::Audio {
                media_id,
                mime_type,
                voice,
            } => OutboundContent::Audio {
                bytes: self.media(&media_id).map(|(b, _)| b),
                media_id,
                mime_type,
                voice,
            },
            Content::Read { .. } => return None,
        };
        Some(OutboundMessage {
            id: m.id,
            to: m.customer,
            seq: m.seq,
            accepted_at: m.at,
            content,
        })
    }

    /// `customer`'s messages both ways after sequence number `after`.
    pub fn conversation(&self, customer: &str, after: u64) -> Vec<ChatMessage> {
        self.shared.lock().chats.since(customer, after)
    }

    /// Waits up to `timeout` for `customer` to have messages after `after`.
    pub async fn wait_conversation(
        &self,
        customer: &str,
        after: u64,
        timeout: Duration,
    ) -> Vec<ChatMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut changes = self.shared.changes.subscribe();
        loop {
            let messages = self.conversation(customer, after);
            if !messages.is_empty() || !self.wait_change(&mut changes, deadline).await {
                return messages;
            }
        }
    }

    /// Waits for a new message until `deadline`; false when there was
    /// none, or the sandbox is closing.
    async fn wait_change(
        &self,
        changes: &mut watch::Receiver<u64>,
        deadline: tokio::time::Instant,
    ) -> bool {
        tokio::select! {
            changed = tokio::time::timeout_at(deadline, changes.changed()) => {
                matches!(changed, Ok(Ok(())))
            }
            _ = self.shared.closing.cancelled() => false,
        }
    }

    /// Ends every wait in progress and any later one at once (the page's
    /// long polls among them); call before stopping the service.
    pub fn close(&self) {
        self.shared.closing.cancel();
    }

    /// A stored media file and its MIME type.
    pub fn media(&self, id: &str) -> Option<(Bytes, String)> {
        self.shared
            .lock()
            .media
            .get(id)
            .map(|m| (m.bytes.clone(), m.mime_type.clone()))
    }

    /// The chat page and its API, to mount on the service's listener
    /// ([`crate::service::Service::start_with_routes`]).
    pub fn routes(&self) -> axum::Router {
        page::routes(self.clone())
    }
}

fn number(from: &str) -> Result<String, SandboxError> {
    customer::normalise_number(from).ok_or_else(|| SandboxError::BadNumber(short(from)))
}

fn short(s: &str) -> String {
    s.chars().take(200).collect()
}

/// Random bytes from the operating system, for the sandbox's credentials
/// and URL key. Where `/dev/urandom` is missing, the standard library's
/// per-process random hash keys stand in: enough for a local sandbox.
fn random_bytes<const N: usize>() -> [u8; N] {
    use std::io::Read;
    let mut out = [0u8; N];
    let from_os = std::fs::File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut out));
    if from_os.is_err() {
        use std::hash::{BuildHasher, Hasher};
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_usize(i);
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    out
}

fn random_hex(bytes: usize) -> String {
    (0..bytes.div_ceil(16))
        .flat_map(|_| random_bytes::<16>())
        .take(bytes)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `n` random digits, the first not 0.
fn random_digits(n: usize) -> String {
    let raw: Vec<u8> = (0..n.div_ceil(16))
        .flat_map(|_| random_bytes::<16>())
        .collect();
    raw.iter()
        .take(n)
        .enumerate()
        .map(|(i, b)| {
            let d = if i == 0 { 1 + b % 9 } else { b % 10 };
            char::from(b'0' + d)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_values_have_their_shape() {
        let d = random_digits(15);
        assert_eq!(d.len(), 15);
        assert!(d.chars().all(|c| c.is_ascii_digit()) && !d.starts_with('0'));
        assert_eq!(random_hex(16).len(), 32);
        assert_ne!(random_hex(16), random_hex(16));
    }
}
