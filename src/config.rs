//! The service's configuration: one section per stage, read from
//! `voxline.toml`. Every key has a documented default, so an empty file (or
//! none) is a working configuration for the offline commands; `voxline serve`
//! also needs the WhatsApp credentials, which usually come from the
//! environment. [`Config::apply_env`] is the one place environment variables
//! override the file.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::channel::whatsapp::{Secret, WhatsAppConfig};
use crate::dialog::DialogConfig;
use crate::encode::EncodeConfig;
use crate::media::MediaConfig;
use crate::service::ServiceConfig;
use crate::store::StoreConfig;
use crate::stt::SttConfig;
use crate::tts::TtsConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[media]`: decoding, resampling and note preparation.
    pub media: MediaConfig,
    /// `[stt]`: the speech-to-text model and its decoding.
    pub stt: SttConfig,
    /// `[dialog]`: intents, replies, sessions, the shop backend and the LLM.
    pub dialog: DialogConfig,
    /// `[tts]`: the speech providers for voice replies, in fallback order
    /// (default: espeak-ng in process, no network). How long speech may
    /// take is a budget (`[budgets]`).
    pub tts: TtsConfig,
    /// `[encode]`: how a voice reply is packed into an Ogg/Opus voice note.
    pub encode: EncodeConfig,
    /// `[whatsapp]`: the Cloud API credentials and the Graph API client.
    pub whatsapp: WhatsAppConfig,
    /// `[service]`: the HTTP listener, the worker pool and shutdown.
    pub service: ServiceConfig,
    /// `[store]`: where the durable inbox lives.
    pub store: StoreConfig,
    /// `[budgets]`: each stage's latency budget and its action on overrun;
    /// reloaded on SIGHUP or when the file changes.
    pub budgets: crate::pipeline::budget::Budgets,
    /// `[bench]`: the thresholds `voxline bench` exits non-zero on.
    pub bench: crate::bench::BenchConfig,
    /// `[outbox]`: how turns that could not finish (Graph API down, token
    /// rejected) are tried again.
    pub outbox: crate::pipeline::outbox::OutboxConfig,
    /// `[telemetry]`: the optional export of turns' spans to an
    /// OpenTelemetry collector (OTLP over HTTP).
    pub telemetry: crate::telemetry::TelemetryConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    /// A setting `voxline serve` cannot start without.
    #[error("{name} is not set (set the environment variable, or {key} in the config file)")]
    Missing {
        name: &'static str,
        key: &'static str,
    },
    #[error("{name} is malformed: {reason}")]
    Malformed { name: &'static str, reason: String },
}

/// Environment variables that override the file, and the key each replaces.
pub const ENV_OVERRIDES: [(&str, &str); 11] = [
    ("WHATSAPP_ACCESS_TOKEN", "whatsapp.access_token"),
    ("WHATSAPP_APP_SECRET", "whatsapp.app_secret"),
    ("WHATSAPP_VERIFY_TOKEN", "whatsapp.verify_token"),
    ("WHATSAPP_PHONE_NUMBER_ID", "whatsapp.phone_number_id"),
    ("WHATSAPP_GRAPH_URL", "whatsapp.graph_url"),
    ("WHATSAPP_MEDIA_HOSTS", "whatsapp.media_hosts"),
    ("VOXLINE_ADDR", "service.addr"),
    ("VOXLINE_DATA_DIR", "store.data_dir"),
    ("VOXLINE_STORE", "store.backend"),
    ("VOXLINE_REDIS_URL", "store.redis.url"),
    ("VOXLINE_OPERATOR_TOKEN", "service.operator_token"),
];

impl Config {
    /// Reads a TOML file; a missing key takes its default, an unknown key is
    /// an error naming it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Applies the environment overrides ([`ENV_OVERRIDES`]), reading each
    /// variable through `var` (`std::env::var` in the binary). A variable
    /// that is set but empty counts as unset.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let w = &mut self.whatsapp;
        if let Some(v) = get("WHATSAPP_ACCESS_TOKEN") {
            w.access_token = Some(Secret::new(v));
        }
        if let Some(v) = get("WHATSAPP_APP_SECRET") {
            w.app_secret = Some(Secret::new(v));
        }
        if let Some(v) = get("WHATSAPP_VERIFY_TOKEN") {
            w.verify_token = Some(Secret::new(v));
        }
        if let Some(v) = get("WHATSAPP_PHONE_NUMBER_ID") {
            w.phone_number_id = Some(v);
        }
        if let Some(v) = get("WHATSAPP_GRAPH_URL") {
            w.graph_url = v;
        }
        if let Some(v) = get("WHATSAPP_MEDIA_HOSTS") {
            w.media_hosts = v
                .split(',')
                .map(|h| h.trim().to_string())
                .filter(|h| !h.is_empty())
                .collect();
        }
        if let Some(v) = get("VOXLINE_ADDR") {
            self.service.addr = v.trim().parse().map_err(|e| ConfigError::Malformed {
                name: "VOXLINE_ADDR",
                reason: format!("{v:?} is not a socket address such as 127.0.0.1:8080 ({e})"),
            })?;
        }
        if let Some(v) = get("VOXLINE_DATA_DIR") {
            self.store.data_dir = PathBuf::from(v);
        }
        if let Some(v) = get("VOXLINE_STORE") {
            self.store.backend =
                crate::store::BackendKind::parse(&v).ok_or_else(|| ConfigError::Malformed {
                    name: "VOXLINE_STORE",
                    reason: format!("{v:?} is neither sqlite nor redis"),
                })?;
        }
        if let Some(v) = get("VOXLINE_REDIS_URL") {
            self.store.redis.url = v.trim().to_string();
        }
        // OpenTelemetry's own names: the per-signal endpoint is a full URL,
        // the general one a base that the signal's path is appended to.
        if let Some(v) = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            self.telemetry.otlp_endpoint = Some(v.trim().to_string());
        } else if let Some(v) = get("OTEL_EXPORTER_OTLP_ENDPOINT") {
            let base = v.trim().trim_end_matches('/');
            self.telemetry.otlp_endpoint = Some(format!("{base}/v1/traces"));
        }
        if let Some(v) = get("OTEL_SERVICE_NAME") {
            self.telemetry.service_name = v.trim().to_string();
        }
        if let Some(v) = get("VOXLINE_OPERATOR_TOKEN") {
            self.service.operator_token = Some(Secret::new(v));
        }
        Ok(())
    }

    /// `[dialog]`, with its database defaulting to the store's file
    /// (`<store.data_dir>/voxline.db`), so that one file beside the inbox
    /// holds the sessions and the demo shop, and nothing is written to the
    /// committed `data/` folder.
    pub fn dialog(&self) -> DialogConfig {
        let mut dialog = self.dialog.clone();
        dialog.languages = self.service.languages.clone();
        dialog
            .database
            .get_or_insert_with(|| self.store.data_dir.join(crate::store::sqlite::FILE_NAME));
        if self.store.backend == crate::store::BackendKind::Redis {
            dialog.shared_sessions = Some(crate::dialog::session::SharedSessions {
                url: self.store.redis.url.clone(),
                prefix: self.store.redis.prefix.clone(),
                retention_secs: self.store.session_retention_days.saturating_mul(86_400),
            });
        }
        dialog
    }

    /// Reads the file (when given), applies the environment and checks that
    /// everything `voxline serve` needs is there and well formed.
    pub fn for_serve(file: Option<&Path>) -> Result<Self, ConfigError> {
        let mut config = match file {
            Some(path) => Self::from_file(path)?,
            None => Self::default(),
        };
        config.apply_env(|name| std::env::var(name).ok())?;
        config.whatsapp.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<Config>("[stt]\nmodle = \"base\"\n").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
        let ok: Config = toml::from_str("[stt]\nmodel = \"base\"\n").unwrap();
        assert_eq!(ok.stt.model, "base");
    }

    #[test]
    fn the_voice_chain_moves_on_before_the_first_audio_budget_sends_text() {
        use crate::pipeline::budget::BudgetStage;
        let config = Config::default();
        let budget = config.budgets.get(BudgetStage::TtsFirstAudio).ms;
        let timeout = config.tts.fallback.first_audio_timeout_ms;
        // espeak-ng, the chain's last voice, needs well under a second.
        assert!(
            timeout + 500 <= budget,
            "the chain gives up on a voice after {timeout} ms, the budget sends text after {budget} ms"
        );
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| map.get(name).cloned()
    }

    #[test]
    fn environment_overrides_the_file() {
        let mut config: Config = toml::from_str(
            "[whatsapp]\nphone_number_id = \"111\"\n[service]\naddr = \"127.0.0.1:9000\"\n",
        )
        .unwrap();
        config
            .apply_env(env(&[
                ("WHATSAPP_PHONE_NUMBER_ID", "222"),
                ("WHATSAPP_ACCESS_TOKEN", "tok"),
                ("WHATSAPP_APP_SECRET", "sec"),
                ("WHATSAPP_VERIFY_TOKEN", "ver"),
                ("VOXLINE_ADDR", "127.0.0.1:0"),
                ("VOXLINE_DATA_DIR", "/tmp/vx"),
                ("VOXLINE_STORE", "redis"),
                ("VOXLINE_REDIS_URL", "redis://10.0.0.5:6380/2"),
            ]))
            .unwrap();
        assert_eq!(config.store.backend, crate::store::BackendKind::Redis);
        assert_eq!(config.store.redis.url, "redis://10.0.0.5:6380/2");
        assert!(matches!(
            config.apply_env(env(&[("VOXLINE_STORE", "mongo")])),
            Err(ConfigError::Malformed {
                name: "VOXLINE_STORE",
                ..
            })
        ));
        assert_eq!(config.whatsapp.phone_number_id.as_deref(), Some("222"));
        assert_eq!(config.service.addr.port(), 0);
        assert_eq!(config.store.data_dir, PathBuf::from("/tmp/vx"));
        assert_eq!(
            config.whatsapp.graph_url,
            "https://graph.facebook.com/v23.0"
        );
        config.whatsapp.validate().unwrap();
    }

    #[test]
    fn opentelemetry_variables_set_the_collector() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        let mut config = Config::default();
        assert_eq!(config.telemetry.endpoint(), None, "off by default");
        config
            .apply_env(env(&[(
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://collector:4318/",
            )]))
            .unwrap();
        assert_eq!(
            config.telemetry.endpoint(),
            Some("http://collector:4318/v1/traces"),
            "the general endpoint is a base"
        );
        let mut config = Config::default();
        config
            .apply_env(env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://base:4318"),
                (
                    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                    "http://traces:4318/custom",
                ),
                ("OTEL_SERVICE_NAME", "voxline-eu"),
            ]))
            .unwrap();
        assert_eq!(
            config.telemetry.endpoint(),
            Some("http://traces:4318/custom"),
            "the traces endpoint is used as given and wins"
        );
        assert_eq!(config.telemetry.service_name, "voxline-eu");
    }

    #[test]
    fn missing_and_malformed_settings_are_named() {
        let mut config = Config::default();
        let err = config
            .apply_env(env(&[("VOXLINE_ADDR", "localhost")]))
            .unwrap_err();
        assert!(err.to_string().contains("VOXLINE_ADDR"), "{err}");
        let err = config.whatsapp.validate().unwrap_err();
        assert!(err.to_string().contains("WHATSAPP_ACCESS_TOKEN"), "{err}");
        config
            .apply_env(env(&[
                ("WHATSAPP_ACCESS_TOKEN", "tok"),
                ("WHATSAPP_APP_SECRET", "sec"),
                ("WHATSAPP_VERIFY_TOKEN", "ver"),
                ("WHATSAPP_PHONE_NUMBER_ID", "1"),
                ("WHATSAPP_GRAPH_URL", "ftp://x"),
            ]))
            .unwrap();
        let err = config.whatsapp.validate().unwrap_err();
        assert!(err.to_string().contains("WHATSAPP_GRAPH_URL"), "{err}");
    }

    #[test]
    fn the_dialog_database_lives_with_the_store() {
        let mut config: Config = toml::from_str("[store]\ndata_dir = \"/srv/vx\"\n").unwrap();
        assert_eq!(
            config.dialog().database_path(),
            PathBuf::from("/srv/vx/voxline.db")
        );
        assert_eq!(config.service.reply, crate::service::ReplyProvider::Dialog);
        config.dialog.database = Some(PathBuf::from("/elsewhere/dialog.db"));
        assert_eq!(
            config.dialog().database_path(),
            PathBuf::from("/elsewhere/dialog.db")
        );
        let echo: Config = toml::from_str("[service]\nreply = \"echo\"\n").unwrap();
        assert_eq!(echo.service.reply, crate::service::ReplyProvider::Echo);
        assert!(toml::from_str::<Config>("[service]\nreply = \"parrot\"\n").is_err());
    }

    #[test]
    fn voice_replies_default_to_the_local_voices() {
        let config = Config::default();
        use crate::tts::ProviderKind::{Espeak, Kokoro, Piper};
        assert_eq!(config.tts.providers, [Piper, Kokoro, Espeak]);
        assert_eq!(config.encode, EncodeConfig::default());
        let config: Config = toml::from_str(
            "[tts]\nproviders = [\"openai\", \"espeak\"]\n[tts.openai]\nbase_url = \"http://127.0.0.1:8000\"\n[encode]\nbitrate_bps = 16000\n",
        )
        .unwrap();
        assert_eq!(config.tts.openai.base_url, "http://127.0.0.1:8000");
        assert_eq!(config.encode.bitrate_bps, 16_000);
        assert_eq!(config.encode.page_ms, 1000);
        assert!(toml::from_str::<Config>("[tts]\nbudget = 1\n").is_err());
    }

    #[test]
    fn secrets_never_print() {
        let mut config = Config::default();
        config
            .apply_env(env(&[("WHATSAPP_ACCESS_TOKEN", "EAAG-very-secret")]))
            .unwrap();
        assert!(!format!("{config:?}").contains("very-secret"));
    }
}
