//! Where customers' messages come in and replies go out.
//!
//! A channel turns a messaging platform's payloads into [`InboundMessage`]s
//! and implements [`Channel`], the few calls a turn makes back: open a voice
//! note's media, send a text or a voice reply, mark a message read. The one
//! channel today is the WhatsApp Cloud API ([`whatsapp`]); the pipeline only
//! sees the trait, so a sandbox or another platform is a second
//! implementation.

pub mod calling_code;
pub mod whatsapp;

use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use serde::{Deserialize, Serialize};

/// A phone number as logs and operator listings show it: the first two and
/// the last two digits, the rest starred (`34*******78`), so that a log
/// line does not identify a customer while an operator can still tell two
/// numbers apart.
pub fn mask_number(number: &str) -> String {
    let chars: Vec<char> = number.chars().collect();
    if chars.len() <= 4 {
        return "*".repeat(chars.len());
    }
    chars
        .iter()
        .enumerate()
        .map(|(i, c)| {
            if i < 2 || i + 2 >= chars.len() {
                *c
            } else {
                '*'
            }
        })
        .collect()
}

/// A customer's message as the pipeline sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundMessage {
    /// The platform's message id (WhatsApp's `wamid.…`); unique per message
    /// and the key of the inbox.
    pub id: String,
    /// The customer's number (WhatsApp's `wa_id`), which replies go to.
    pub from: String,
    /// The business number that received it (WhatsApp's phone number id).
    pub to: String,
    /// When the customer sent it, Unix seconds as the platform reported.
    pub timestamp: u64,
    /// The customer's profile name, when the platform gave one.
    pub profile_name: Option<String>,
    pub content: Content,
}

/// What the customer sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Content {
    /// Audio: a recorded voice note (`voice: true`) or a forwarded file.
    Audio {
        media_id: String,
        mime_type: String,
        /// The checksum the platform announced, when it did.
        sha256: Option<String>,
        voice: bool,
    },
    Text {
        body: String,
    },
    /// A tap on a reply button or a list row.
    Choice {
        id: String,
        title: String,
    },
    /// Any other type (sticker, image, location, …), kept by name so the
    /// customer can be told politely what voxline answers.
    Unsupported {
        kind: String,
    },
}

impl Content {
    pub fn kind(&self) -> &str {
        match self {
            Self::Audio { .. } => "audio",
            Self::Text { .. } => "text",
            Self::Choice { .. } => "choice",
            Self::Unsupported { kind } => kind,
        }
    }
}

/// A delivery report for a message voxline sent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusUpdate {
    /// The id of the message it reports on.
    pub message_id: String,
    /// `sent`, `delivered`, `read`, `played` or `failed`.
    pub status: String,
    pub recipient: String,
    pub timestamp: u64,
    /// For `failed`: the platform's error code and title.
    pub error: Option<(i64, String)>,
}

/// A media download in progress: its chunks arrive as the platform sends
/// them. The stream ends with an error if the download is cut, too large or
/// fails its checksum.
pub struct MediaDownload {
    pub mime_type: String,
    /// The size the platform announced, when it did.
    pub size: Option<u64>,
    pub chunks: BoxStream<'static, Result<Bytes, ChannelError>>,
}

/// A message the platform accepted for delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub message_id: String,
}

/// The calls a turn makes to the channel.
#[async_trait::async_trait]
pub trait Channel: Send + Sync {
    /// Starts downloading a message's media.
    async fn open_media(&self, media_id: &str) -> Result<MediaDownload, ChannelError>;
    async fn send_text(&self, to: &str, text: &str) -> Result<Sent, ChannelError>;
    /// Uploads an Ogg/Opus voice note to the platform's media store and
    /// returns its media id.
    async fn upload_voice(&self, ogg_opus: Bytes) -> Result<String, ChannelError>;
    /// Sends an uploaded voice note as a voice message.
    async fn send_voice(&self, to: &str, media_id: &str) -> Result<Sent, ChannelError>;
    /// Marks a message read and shows the customer the typing indicator
    /// (until the reply arrives, or 25 s). One try: a late receipt is
    /// worthless, and the turn never waits for it.
    async fn mark_read(&self, message_id: &str) -> Result<(), ChannelError>;
    /// Why sending is paused, when it is (the access token was rejected
    /// and no new one has been loaded yet).
    fn paused(&self) -> Option<String> {
        None
    }
}

/// Why a channel call failed, classed by what the caller should do.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ChannelError {
    /// No answer: connection refused or reset, DNS, TLS.
    #[error("transport error: {0}")]
    Transport(String),
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// A 5xx from the platform.
    #[error("server error {status}: {message}")]
    Server { status: u16, message: String },
    /// 130429 (throughput) or 80007 (rate limit): try again later.
    #[error("rate limited ({code}): {message}")]
    RateLimited { code: i64, message: String },
    /// 131056: too many messages to this customer in a short time.
    #[error("too many messages to this customer (131056): {message}")]
    PairRateLimited { message: String },
    /// 131047: more than 24 hours since the customer last wrote; only a
    /// template may be sent. Not retried.
    #[error("outside the 24-hour customer service window (131047): {message}")]
    OutsideWindow { message: String },
    /// 190: the access token is invalid or expired. Every call would fail
    /// the same way until a new token is loaded, so sending pauses.
    #[error("access token rejected (190): {message}")]
    TokenRejected { message: String },
    /// A media URL on a host the access token must not be sent to.
    #[error("media URL on {host}, which is not an allowed media host (whatsapp.media_hosts)")]
    MediaHostRefused { host: String },
    /// Any other 4xx: the request itself is wrong; retrying cannot help.
    #[error("rejected {status} (code {code}): {message}")]
    Rejected {
        status: u16,
        code: i64,
        message: String,
    },
    /// The media URL has expired (they last 5 minutes): open it again.
    #[error("the media URL has expired")]
    MediaExpired,
    #[error("media larger than {limit} bytes")]
    MediaTooLarge { limit: u64 },
    #[error("media ended after {got} of {expected} bytes")]
    MediaCut { got: u64, expected: u64 },
    #[error("media checksum mismatch")]
    MediaChecksum,
    /// A 2xx whose body is not what the API documents.
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// How often and how patiently a failed call is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in all, the first included.
    pub attempts: u32,
    pub base: Duration,
    pub max: Duration,
    /// The wait after [`Disposition::Wait`] errors.
    pub pair_rate_wait: Duration,
}

impl RetryPolicy {
    /// The delay before try `attempt + 1`: exponential from the base,
    /// capped, with jitter over its upper half so that many turns retrying
    /// at once spread out.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = (self.base.as_millis() as u64)
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(20))
            .min(self.max.as_millis() as u64);
        let half = exp / 2;
        Duration::from_millis(half + random_below(exp - half + 1))
    }

    /// How long to wait before the next try after `error` on try `attempt`,
    /// or `None` when it must not be tried again.
    pub fn next_wait(&self, error: &ChannelError, attempt: u32) -> Option<Duration> {
        if attempt >= self.attempts {
            return None;
        }
        match error.disposition(self.pair_rate_wait) {
            Disposition::Retry => Some(self.backoff(attempt)),
            Disposition::Wait(d) => Some(d),
            Disposition::Pause | Disposition::GiveUp | Disposition::DeadLetter => None,
        }
    }
}

/// A random number below `n` from the standard library's random hash keys:
/// good enough for jitter, without another dependency.
pub(crate) fn random_below(n: u64) -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish() % n.max(1)
}

/// What to do about a [`ChannelError`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    /// Try again after a jittered backoff.
    Retry,
    /// Try again after this long.
    Wait(Duration),
    /// Do not retry now: nothing will work until the operator acts (a new
    /// access token). The work waits, it is not given up.
    Pause,
    /// Do not retry; record the reason on the turn.
    GiveUp,
    /// Do not retry; the request is wrong: keep it as a dead letter.
    DeadLetter,
}

impl ChannelError {
    pub fn disposition(&self, pair_rate_wait: Duration) -> Disposition {
        match self {
            Self::Transport(_)
            | Self::Timeout(_)
            | Self::Server { .. }
            | Self::RateLimited { .. }
            | Self::MediaExpired
            | Self::MediaCut { .. }
            | Self::MediaChecksum => Disposition::Retry,
            Self::PairRateLimited { .. } => Disposition::Wait(pair_rate_wait),
            Self::TokenRejected { .. } => Disposition::Pause,
            Self::OutsideWindow { .. }
            | Self::MediaTooLarge { .. }
            | Self::MediaHostRefused { .. } => Disposition::GiveUp,
            Self::Rejected { .. } | Self::Unexpected(_) => Disposition::DeadLetter,
        }
    }
}
