//! What voxline keeps: the durable inbox of customers' messages, the state
//! of each message's turn, and the delivery reports of replies.
//!
//! [`Inbox`] is what the webhook writes before it acknowledges; [`Queue`] is
//! what the workers read and advance. [`Store`] is both, plus a health check.
//! The embedded default is a single SQLite file ([`sqlite::SqliteStore`]);
//! a shared store for several machines is a second implementation of the
//! same traits.

pub mod redis;
pub mod sqlite;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use crate::channel::{InboundMessage, StatusUpdate};
use crate::record::TurnTrace;

/// `[store]` in `voxline.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Where the inbox, queue and traces live: `sqlite` (default, one file
    /// on this machine) or `redis` (shared by several processes; see
    /// `[store.redis]`). `VOXLINE_STORE`.
    pub backend: BackendKind,
    /// The Redis server, for `backend = "redis"`.
    pub redis: redis::RedisConfig,
    /// Folder of the store file (`voxline.db`). `VOXLINE_DATA_DIR`. Default
    /// `var` (`data/` holds the operator's intent, template and catalogue
    /// files, which are committed; the store is not).
    pub data_dir: PathBuf,
    /// SQLite's `synchronous` setting: `full` (default) or `normal`. See
    /// [`sqlite`] for the trade-off.
    pub synchronous: Synchronous,
    /// How long turn traces are kept, in hours. Default 168 (a week).
    pub trace_retention_hours: u64,
    /// Days a finished turn's content is kept (the message, its transcript,
    /// the reply); then it is erased and only its id stays. Default 30.
    pub message_retention_days: u64,
    /// Days delivery reports are kept. Default 30.
    pub status_retention_days: u64,
    /// Days a conversation's session (its language, cart, history) is kept
    /// after its last activity. Default 30.
    pub session_retention_days: u64,
    /// Days a message id is kept after its content is erased, so that a
    /// redelivery is still recognised. Default 60; at least
    /// `replay_horizon_days`.
    pub id_retention_days: u64,
    /// A webhook message sent longer ago than this is acknowledged and
    /// dropped (Meta retries for at most a few days). Default 14.
    pub replay_horizon_days: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            backend: BackendKind::Sqlite,
            redis: redis::RedisConfig::default(),
            data_dir: PathBuf::from("var"),
            synchronous: Synchronous::Full,
            trace_retention_hours: 168,
            message_retention_days: 30,
            status_retention_days: 30,
            session_retention_days: 30,
            id_retention_days: 60,
            replay_horizon_days: 14,
        }
    }
}

impl StoreConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.replay_horizon_days == 0 || self.id_retention_days < self.replay_horizon_days {
            return Err(format!(
                "store: id_retention_days ({}) must be at least replay_horizon_days ({}), \
                 or an old redelivery would be taken for a new message",
                self.id_retention_days, self.replay_horizon_days
            ));
        }
        if self.message_retention_days == 0 {
            return Err("store: message_retention_days must be at least 1".into());
        }
        Ok(())
    }

    pub fn replay_horizon(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.replay_horizon_days.saturating_mul(86_400))
    }
}

/// What a retention sweep or an erasure removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Erased {
    /// Messages whose content was erased (their ids stay).
    pub messages: usize,
    /// Message ids deleted, past `id_retention_days`.
    pub ids: usize,
    pub statuses: usize,
    pub traces: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BackendKind {
    Sqlite,
    Redis,
}

impl BackendKind {
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sqlite" => Some(Self::Sqlite),
            "redis" | "valkey" => Some(Self::Redis),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Synchronous {
    Full,
    Normal,
}

/// Where a message's turn stands. A turn moves forward only:
/// received → fetching → transcribed → replied (or silent), or to failed
/// from any state before those. A turn that could not finish for a reason
/// that passes (the Graph API down, a rejected token, a download cut) is
/// *deferred*: it keeps its state (a fetch goes back to `received`), counts
/// the attempt and waits until `retry_at`: the outbox.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnState {
    /// In the inbox; the webhook has been acknowledged.
    Received,
    /// A worker is fetching the voice note.
    Fetching,
    /// Understood and the reply composed (kept, so a restart does not fetch
    /// and transcribe again).
    Transcribed,
    /// The channel accepted the reply. Final.
    Replied,
    /// Finished without sending anything: the reply was silent (the
    /// customer sent STOP, or a person has the conversation). Final.
    Silent,
    /// Given up, with a reason. Final.
    Failed,
}

impl TurnState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Received => "received",
            Self::Fetching => "fetching",
            Self::Transcribed => "transcribed",
            Self::Replied => "replied",
            Self::Silent => "silent",
            Self::Failed => "failed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "received" => Self::Received,
            "fetching" => Self::Fetching,
            "transcribed" => Self::Transcribed,
            "replied" => Self::Replied,
            "silent" => Self::Silent,
            "failed" => Self::Failed,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(self, Self::Replied | Self::Silent | Self::Failed)
    }
}

/// A message and its turn, as stored.
#[derive(Debug, Clone)]
pub struct Turn {
    /// Arrival order across all customers.
    pub seq: i64,
    pub message: InboundMessage,
    pub state: TurnState,
    /// What the customer said, for a voice note.
    pub transcript: Option<String>,
    /// The reply composed for it.
    pub reply_text: Option<String>,
    /// The channel's id of the accepted reply.
    pub reply_id: Option<String>,
    /// Why the turn failed.
    pub failure: Option<String>,
    /// The failure was a request the channel rejected as wrong.
    pub dead_letter: bool,
    /// When the message came in, Unix ms.
    pub received_at_ms: i64,
    /// Attempts deferred so far.
    pub attempts: u32,
    /// When a deferred turn is due again, Unix ms.
    pub retry_at_ms: Option<i64>,
    /// Why a deferred turn waits.
    pub waiting: Option<String>,
    /// The reply's voice note, kept while its delivery waits, so that a
    /// retry sends the same note without speaking it again.
    pub reply_voice: Option<Vec<u8>>,
}

impl Turn {
    /// What the customer said: the transcript of a voice note, or a text
    /// message's body; `None` for anything else, or before transcription.
    pub fn said(&self) -> Option<&str> {
        match (&self.message.content, &self.transcript) {
            (_, Some(transcript)) => Some(transcript),
            (crate::channel::Content::Text { body }, None) => Some(body),
            _ => None,
        }
    }
}

/// A step forward in a turn.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Fetching,
    Understood {
        transcript: Option<&'a str>,
        reply: &'a str,
    },
    /// The channel accepted the reply. Recorded the moment the send returns.
    ReplyAccepted {
        reply_id: &'a str,
    },
    /// The reply was silent: nothing was sent, and nothing will be.
    NothingToSend,
    /// Not finished for a reason that passes: try again at `retry_at_ms`.
    /// A turn not yet transcribed goes back to `received` (its note is
    /// fetched again); a transcribed one keeps its reply, and `voice` when
    /// the reply's voice note was made.
    Deferred {
        reason: &'a str,
        retry_at_ms: i64,
        voice: Option<&'a [u8]>,
    },
    Failed {
        reason: &'a str,
        dead_letter: bool,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open the store at {path}: {reason}")]
    Open { path: PathBuf, reason: String },
    #[error("store: {0}")]
    Database(String),
    #[error("no message {0} in the store")]
    NotFound(String),
    #[error("stored message {id} is unreadable: {reason}")]
    Corrupt { id: String, reason: String },
}

/// Where the webhook puts what it acknowledges.
#[async_trait::async_trait]
pub trait Inbox: Send + Sync {
    /// Durably records one webhook's messages and delivery reports, in one
    /// write. Returns, per message, whether it was new (`false`: a
    /// redelivery of a message already in the inbox, which is dropped).
    async fn accept(
        &self,
        messages: &[InboundMessage],
        statuses: &[StatusUpdate],
        errors: &[(i64, String)],
    ) -> Result<Vec<bool>, StoreError>;
}

/// The turns to do and where each stands.
#[async_trait::async_trait]
pub trait Queue: Send + Sync {
    /// Every turn not yet replied or failed, in arrival order: what a
    /// restart resumes.
    async fn unfinished(&self) -> Result<Vec<Turn>, StoreError>;
    async fn turn(&self, message_id: &str) -> Result<Turn, StoreError>;
    async fn advance(&self, message_id: &str, progress: Progress<'_>) -> Result<(), StoreError>;
    /// When the customer's newest message came in, Unix ms: the customer
    /// service window (24 h) runs from it.
    async fn last_heard(&self, customer: &str) -> Result<Option<i64>, StoreError>;
    /// Makes a deferred turn due now (`voxline outbox retry`). `false` when
    /// the turn is finished or does not wait.
    async fn retry_now(&self, message_id: &str) -> Result<bool, StoreError>;
    /// The turns that wait in the outbox, oldest first.
    async fn waiting(&self) -> Result<Vec<Turn>, StoreError> {
        Ok(self
            .unfinished()
            .await?
            .into_iter()
            .filter(|t| t.waiting.is_some())
            .collect())
    }
}

/// The finished turns' traces, kept for `[store] trace_retention_hours`.
#[async_trait::async_trait]
pub trait Traces: Send + Sync {
    /// Keeps a finished turn's trace (a resumed turn's replaces the old).
    async fn save_trace(&self, trace: &TurnTrace) -> Result<(), StoreError>;
    /// The newest traces first, at most `limit`.
    async fn recent_traces(&self, limit: usize) -> Result<Vec<TurnTrace>, StoreError>;
    /// Deletes traces of turns that started before `before_unix_ms`;
    /// returns how many went.
    async fn prune_traces(&self, before_unix_ms: i64) -> Result<usize, StoreError>;
}

/// The inbox and queue of one deployment.
#[async_trait::async_trait]
pub trait Store: Inbox + Queue {
    /// Proves the store can take a write now (for `/readyz`).
    async fn check_writable(&self) -> Result<(), StoreError>;
}

/// A customer with unfinished turns, as [`Leases::busy`] sees them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Busy {
    pub customer: String,
    /// The time left on the customer's lease, in ms; none when nobody
    /// holds it.
    pub held_for_ms: Option<u64>,
}

/// Per-customer leases, for a store that several processes share: one
/// customer's turns run in one process at a time, in arrival order, and a
/// lease not renewed (its process died) expires so that another process
/// takes the customer's turns over.
#[async_trait::async_trait]
pub trait Leases: Send + Sync {
    /// Takes `customer`'s lease for `holder`, or renews it, for `ttl_ms`;
    /// `false` when another holder has it.
    async fn hold(&self, customer: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError>;
    /// Extends `holder`'s lease by `ttl_ms`; `false` when it has expired
    /// or another holder has it (the lease is lost: stop).
    async fn renew(&self, customer: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError>;
    /// Gives the lease up, if `holder` has it.
    async fn release(&self, customer: &str, holder: &str) -> Result<(), StoreError>;
    /// The customer's earliest unfinished turn.
    async fn next_turn(&self, customer: &str) -> Result<Option<String>, StoreError>;
    /// Customers with unfinished turns, with how long their lease still
    /// runs, whoever holds it.
    async fn busy(&self) -> Result<Vec<Busy>, StoreError>;
    /// Waits up to a second for messages stored after position `after`
    /// (`$` for from now on); returns the new position and their customers.
    async fn wait_for_work(&self, after: &str) -> Result<(String, Vec<String>), StoreError>;
}

/// Everything the service keeps, on one backend: what [`open`] returns.
#[async_trait::async_trait]
pub trait Backend: Store + Traces {
    /// Messages held, ids of erased ones included.
    async fn message_count(&self) -> Result<u64, StoreError>;
    /// The delivery reports recorded for a message voxline sent, oldest
    /// first, as `(status, error code)`.
    async fn statuses_of(&self, message_id: &str)
        -> Result<Vec<(String, Option<i64>)>, StoreError>;
    /// The retention sweep at `now_ms`: finished turns' content past
    /// `message_retention_days` (their ids stay), ids past
    /// `id_retention_days`, delivery reports past `status_retention_days`.
    async fn sweep(&self, config: &StoreConfig, now_ms: i64) -> Result<Erased, StoreError>;
    /// Erases everything kept about `customer` (the right to erasure):
    /// their messages' content, transcripts and replies, their delivery
    /// reports and their turns' traces. Unfinished turns end failed first,
    /// so nothing is sent to them afterwards. Message ids stay, without
    /// content, so that a redelivery is not taken for a new message.
    async fn erase_customer(&self, customer: &str) -> Result<Erased, StoreError>;
}

/// An opened store, with its leases when several processes may share it.
#[derive(Clone)]
pub struct Opened {
    pub store: std::sync::Arc<dyn Backend>,
    pub leases: Option<std::sync::Arc<dyn Leases>>,
}

/// Opens the store `config.backend` names.
pub async fn open(config: &StoreConfig) -> Result<Opened, StoreError> {
    Ok(match config.backend {
        BackendKind::Sqlite => Opened {
            store: std::sync::Arc::new(sqlite::SqliteStore::open(config)?),
            leases: None,
        },
        BackendKind::Redis => {
            let store = std::sync::Arc::new(redis::RedisStore::connect(&config.redis).await?);
            Opened {
                store: store.clone(),
                leases: Some(store),
            }
        }
    })
}
