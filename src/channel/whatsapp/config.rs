//! `[whatsapp]` in `voxline.toml`: the Cloud API credentials and how the
//! Graph API client behaves. The four credentials usually come from the
//! environment ([`crate::config::Config::apply_env`]).

use std::time::Duration;

use serde::Deserialize;

use crate::channel::RetryPolicy;
use crate::config::ConfigError;

/// A credential. Its `Debug` and `Display` print `***`, so a config or a
/// request logged by mistake does not leak it.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The value itself, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// Meta's Graph API at the version voxline is written against.
pub const DEFAULT_GRAPH_URL: &str = "https://graph.facebook.com/v23.0";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhatsAppConfig {
    /// System-user access token sent as `Authorization: Bearer`.
    /// `WHATSAPP_ACCESS_TOKEN`. Required by `serve`.
    pub access_token: Option<Secret>,
    /// The Meta app's secret, the key of the webhook's
    /// `X-Hub-Signature-256`. `WHATSAPP_APP_SECRET`. Required by `serve`.
    pub app_secret: Option<Secret>,
    /// The token Meta echoes when the webhook is registered.
    /// `WHATSAPP_VERIFY_TOKEN`. Required by `serve`.
    pub verify_token: Option<Secret>,
    /// The business phone number's id that replies are sent from; webhooks
    /// for other numbers are acknowledged and ignored.
    /// `WHATSAPP_PHONE_NUMBER_ID`. Required by `serve`.
    pub phone_number_id: Option<String>,
    /// Graph API base URL including the version. `WHATSAPP_GRAPH_URL`.
    /// Default `https://graph.facebook.com/v23.0`.
    pub graph_url: String,
    /// Timeout of one Graph API call (metadata, upload, send). Default 10 000 ms.
    pub request_timeout_ms: u64,
    /// Timeout of one whole media download. Default 30 000 ms.
    pub media_timeout_ms: u64,
    /// Largest media download accepted. Default 16 MiB, WhatsApp's limit
    /// for audio.
    pub max_media_bytes: u64,
    /// Tries per Graph API call or download, the first included. Default 5.
    pub attempts: u32,
    /// First retry delay; it doubles per try, with full jitter. Default 250 ms.
    pub backoff_base_ms: u64,
    /// Longest retry delay. Default 8 000 ms.
    pub backoff_max_ms: u64,
    /// How long to wait after error 131056 (too many messages to one
    /// customer) before trying again. Default 6 000 ms: Meta allows about one
    /// message every 6 s to the same customer.
    pub pair_rate_wait_ms: u64,
    /// Outbound messages per second per business number. Default 80, the
    /// Cloud API's default throughput.
    pub messages_per_second: u32,
    /// Mark each inbound message read (blue ticks) when its turn starts.
    /// Default true.
    pub mark_read: bool,
    /// How long the read receipt with its typing indicator may take. It is
    /// sent beside the turn, once (no retries: a late "typing…" is
    /// useless), so a slow Graph API never holds the turn. Default 3000.
    pub read_receipt_timeout_ms: u64,
    /// Hosts the access token may be sent to when a media URL points there,
    /// besides the Graph API's own host. Only `https` URLs qualify, unless
    /// an entry names its scheme (`http://127.0.0.1:8080`, for a local fake
    /// Graph API). Default: Meta's media CDN, `lookaside.fbsbx.com`.
    pub media_hosts: Vec<String>,
}

impl Default for WhatsAppConfig {
    fn default() -> Self {
        Self {
            access_token: None,
            app_secret: None,
            verify_token: None,
            phone_number_id: None,
            graph_url: DEFAULT_GRAPH_URL.into(),
            request_timeout_ms: 10_000,
            media_timeout_ms: 30_000,
            max_media_bytes: 16 * 1024 * 1024,
            attempts: 5,
            backoff_base_ms: 250,
            backoff_max_ms: 8_000,
            pair_rate_wait_ms: 6_000,
            messages_per_second: 80,
            mark_read: true,
            read_receipt_timeout_ms: 3_000,
            media_hosts: vec!["lookaside.fbsbx.com".into()],
        }
    }
}

/// The settings `serve` needs, checked and unwrapped.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub access_token: Secret,
    pub app_secret: Secret,
    pub verify_token: Secret,
    pub phone_number_id: String,
}

impl WhatsAppConfig {
    /// Checks that every setting `serve` needs is present and well formed,
    /// naming the first that is not.
    pub fn validate(&self) -> Result<Credentials, ConfigError> {
        fn need<T: Clone>(
            v: &Option<T>,
            name: &'static str,
            key: &'static str,
        ) -> Result<T, ConfigError> {
            v.clone().ok_or(ConfigError::Missing { name, key })
        }
        let credentials = Credentials {
            access_token: need(
                &self.access_token,
                "WHATSAPP_ACCESS_TOKEN",
                "whatsapp.access_token",
            )?,
            app_secret: need(
                &self.app_secret,
                "WHATSAPP_APP_SECRET",
                "whatsapp.app_secret",
            )?,
            verify_token: need(
                &self.verify_token,
                "WHATSAPP_VERIFY_TOKEN",
                "whatsapp.verify_token",
            )?,
            phone_number_id: need(
                &self.phone_number_id,
                "WHATSAPP_PHONE_NUMBER_ID",
                "whatsapp.phone_number_id",
            )?,
        };
        if !credentials
            .phone_number_id
            .chars()
            .all(|c| c.is_ascii_digit())
        {
            return Err(ConfigError::Malformed {
                name: "WHATSAPP_PHONE_NUMBER_ID",
                reason: "a phone number id is all digits".into(),
            });
        }
        let url = self.graph_url.trim_end_matches('/');
        if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() < 10 {
            return Err(ConfigError::Malformed {
                name: "WHATSAPP_GRAPH_URL",
                reason: format!("{url:?} is not an http(s) URL"),
            });
        }
        if self.messages_per_second == 0 || self.attempts == 0 {
            return Err(ConfigError::Malformed {
                name: "whatsapp.messages_per_second / whatsapp.attempts",
                reason: "must be at least 1".into(),
            });
        }
        Ok(credentials)
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn media_timeout(&self) -> Duration {
        Duration::from_millis(self.media_timeout_ms)
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            attempts: self.attempts.max(1),
            base: Duration::from_millis(self.backoff_base_ms),
            max: Duration::from_millis(self.backoff_max_ms),
            pair_rate_wait: Duration::from_millis(self.pair_rate_wait_ms),
        }
    }
}
