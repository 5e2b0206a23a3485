//! `[dialog]` in `voxline.toml`: where the operator's data lives, the fast
//! path's thresholds, voice reply length, session clocks, hand-off rules,
//! the commerce backend and the LLM chain. Every key has a default.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::commerce::http::HttpCommerceConfig;
use super::intent::encoder::{EncoderError, SentenceEncoder};
use super::intent::Thresholds;
use super::llm::LlmConfig;
use super::reply::VoiceReplyConfig;
use super::session::SessionConfig;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialogConfig {
    /// Folder with `intents/`, `templates/`, `kb/`, `catalogue.toml` and
    /// `dialog.toml` (default `data`).
    pub data_dir: PathBuf,
    /// The database file for sessions, and for the embedded shop when
    /// `commerce.kind = "embedded"`. Default: the service's store file,
    /// `<store.data_dir>/voxline.db`, so that one file holds the inbox,
    /// the sessions and the demo shop.
    pub database: Option<PathBuf>,
    pub thresholds: Thresholds,
    /// The sentence encoder's folder (`sp.model`, `weights/`), read by the
    /// intent classifier beside its n-grams. Default: `use-m3` in the
    /// models folder (`VOXLINE_MODELS_DIR`, else `models/`) when it is
    /// there; without it the classifier reads n-grams alone and says so in
    /// the log. A folder set here must load; `""` turns the encoder off
    /// (n-grams alone, about 1.5 ms less per message and 90 MB less memory).
    pub sentence_encoder: Option<PathBuf>,
    pub voice: VoiceReplyConfig,
    pub session: SessionConfig,
    pub handoff: HandoffConfig,
    /// A spoken "yes" transcribed with less confidence than this is asked
    /// again instead of committing (default 0.5).
    pub confirm_min_transcript_confidence: f32,
    /// The shop's offset from UTC, for "today" and "Friday" (default 0).
    pub utc_offset_minutes: i32,
    pub commerce: CommerceConfig,
    pub llm: LlmConfig,
    pub kb: KbConfig,
    /// The business's languages (ISO 639-1), filled from `[service]
    /// languages` by [`crate::config::Config::dialog`]: a typed message's
    /// language is detected among them, and each needs its templates.
    #[serde(skip)]
    pub languages: Vec<String>,
    /// Sessions and the customers' choices in Redis rather than the
    /// database file, so that every process sees them: filled from
    /// `[store.redis]` (with the session retention) by
    /// [`crate::config::Config::dialog`] when `[store] backend = "redis"`.
    #[serde(skip)]
    pub shared_sessions: Option<crate::dialog::session::SharedSessions>,
}

impl Default for DialogConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("data"),
            database: None,
            thresholds: Thresholds::default(),
            sentence_encoder: None,
            voice: VoiceReplyConfig::default(),
            session: SessionConfig::default(),
            handoff: HandoffConfig::default(),
            confirm_min_transcript_confidence: 0.5,
            utc_offset_minutes: 0,
            commerce: CommerceConfig::default(),
            llm: LlmConfig::default(),
            kb: KbConfig::default(),
            languages: crate::service::default_languages(),
            shared_sessions: None,
        }
    }
}

impl DialogConfig {
    /// Loads the sentence encoder of [`Self::sentence_encoder`].
    pub fn load_sentence_encoder(
        &self,
    ) -> Result<Option<std::sync::Arc<SentenceEncoder>>, EncoderError> {
        let dir = match &self.sentence_encoder {
            Some(dir) if dir.as_os_str().is_empty() => return Ok(None),
            Some(dir) => dir.clone(),
            None => {
                let dir = crate::models::default_dir().join("use-m3");
                if !dir.join("sp.model").is_file() {
                    tracing::warn!(
                        dir = %dir.display(),
                        "no sentence encoder (./x setup fetches it): intents are classified on n-grams alone"
                    );
                    return Ok(None);
                }
                dir
            }
        };
        SentenceEncoder::load(&dir).map(|e| Some(std::sync::Arc::new(e)))
    }

    /// [`Self::database`], or `var/voxline.db` (the store's file in its
    /// default folder) when nobody set it. The service and the commands fill
    /// it from `[store] data_dir` ([`crate::config::Config::dialog`]); never
    /// `data/`, which holds the operator's committed files.
    pub fn database_path(&self) -> PathBuf {
        self.database.clone().unwrap_or_else(|| {
            crate::store::StoreConfig::default()
                .data_dir
                .join(crate::store::sqlite::FILE_NAME)
        })
    }
}

/// `[dialog.handoff]`: when a person takes over.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HandoffConfig {
    /// Confidence below which a known customer's turn counts as unsure
    /// (default 0.7).
    pub low_confidence_below: f32,
    /// Unsure turns in a row that hand a known customer over (default 2).
    pub low_confidence_turns: u32,
    /// Unanswered turns in a row that hand anyone over (default 3).
    pub unresolved_turns: u32,
}

impl Default for HandoffConfig {
    fn default() -> Self {
        Self {
            low_confidence_below: 0.7,
            low_confidence_turns: 2,
            unresolved_turns: 3,
        }
    }
}

/// `[dialog.commerce]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CommerceConfig {
    /// The demo shop in the dialog database, seeded from
    /// `<data_dir>/catalogue.toml` (the default).
    #[default]
    Embedded,
    /// A business's own backend; see [`super::commerce::http`].
    Http(HttpCommerceConfig),
}

/// `[dialog.kb]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KbConfig {
    /// Passages given to the LLM (default 3).
    pub top_k: usize,
    /// BM25 score a passage needs to be answered directly without an LLM
    /// (default 2.0).
    pub min_score: f32,
}

impl Default for KbConfig {
    fn default() -> Self {
        Self {
            top_k: 3,
            min_score: 2.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_an_http_backend_and_llm_chain() {
        let c: DialogConfig = toml::from_str(
            r#"
            [voice]
            max_sentences = 3
            [commerce]
            kind = "http"
            base_url = "http://127.0.0.1:9000"
            [[llm.providers]]
            name = "local"
            base_url = "http://127.0.0.1:11434/v1"
            model = "qwen2.5:3b"
            "#,
        )
        .unwrap();
        assert_eq!(c.voice.max_sentences, 3);
        assert_eq!(c.voice.max_chars, 280);
        assert!(matches!(c.commerce, CommerceConfig::Http(ref h) if h.timeout_ms == 2000));
        assert_eq!(c.llm.providers[0].first_token_timeout_ms, 1500);
        assert!(toml::from_str::<DialogConfig>("[voice]\nmax_sentence = 1").is_err());
    }
}
