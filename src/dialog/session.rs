//! Sessions, one per WhatsApp number, persisted in the dialog database so
//! that they survive restarts: the conversation stage, collected slots and
//! cart, the turn history with a rolling summary, a pending change waiting
//! for its yes, the customer's STOP and text-only choices (with time and
//! source), and a hand-off to a person.
//!
//! Two clocks: the conversation (stage, slots, pending change) lapses after
//! `conversation_timeout_secs` of silence; the task (cart) after
//! `task_ttl_secs`. The 24-hour customer-service window runs from the last
//! inbound message.

use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};
use serde::{Deserialize, Serialize};

use super::commerce::{Change, OrderItem};

/// WhatsApp lets a business reply freely for 24 hours after the customer's
/// last message.
pub const SERVICE_WINDOW_SECS: i64 = 24 * 3600;
/// Turns kept verbatim; older ones go into the summary.
pub const HISTORY_TURNS: usize = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    #[default]
    Greeting,
    Browsing,
    Cart,
    Checkout,
    AwaitingConfirmation,
    Support,
    Handoff,
}

/// A choice the customer made, with when and through which message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Choice {
    pub at: i64,
    /// `voice` or `text`, and the message id.
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pending {
    pub change: Change,
    pub proposed_at: i64,
    /// The message that asked for the change.
    pub asked_in: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Handoff {
    pub reason: String,
    pub since: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Turn {
    pub at: i64,
    /// `customer` or `bot`.
    pub role: String,
    pub text: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<String>,
}

/// What the conversation has collected so far.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Collected {
    pub order: Option<String>,
    pub product: Option<String>,
    /// The intent waiting for a missing slot ("which day?").
    pub awaiting_slot_for: Option<String>,
    /// The careful intent the customer was asked about ("Do you want to
    /// cancel your order?"); a yes next is that intent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clarifying: Option<String>,
    /// The slots of the message asked about ("on Friday"), which a yes
    /// carries on to the intent instead of asking for them again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub clarifying_slots: Option<super::intent::Slots>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Session {
    pub number: String,
    pub stage: Stage,
    pub language: Option<String>,
    pub slots: Collected,
    pub cart: Vec<OrderItem>,
    pub history: Vec<Turn>,
    pub summary: String,
    pub pending: Option<Pending>,
    pub last_inbound: i64,
    pub last_activity: i64,
    pub cart_updated: i64,
    pub unresolved_turns: u32,
    pub low_confidence_turns: u32,
    pub opted_out: Option<Choice>,
    pub text_only: Option<Choice>,
    pub voice_notice_given: bool,
    pub handoff: Option<Handoff>,
}

/// `[dialog.session]`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionConfig {
    /// Silence after which stage, slots and a pending change lapse
    /// (default 30 minutes).
    pub conversation_timeout_secs: i64,
    /// Silence after which the cart is emptied (default 6 hours).
    pub task_ttl_secs: i64,
}

impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            conversation_timeout_secs: 30 * 60,
            task_ttl_secs: 6 * 3600,
        }
    }
}

impl Session {
    pub fn new(number: &str) -> Self {
        Self {
            number: number.to_string(),
            ..Self::default()
        }
    }

    /// Applies the clocks at `now`, before a new message is handled.
    pub fn expire(&mut self, now: i64, config: &SessionConfig) {
        if self.last_activity > 0 && now - self.last_activity > config.conversation_timeout_secs {
            self.slots = Collected::default();
            self.pending = None;
            self.unresolved_turns = 0;
            self.low_confidence_turns = 0;
            if self.stage != Stage::Handoff {
                self.stage = Stage::Greeting;
            }
        }
        if self.cart_updated > 0 && now - self.cart_updated > config.task_ttl_secs {
            self.cart.clear();
        }
    }

    /// Within the 24-hour window in which free-form replies are allowed.
    pub fn in_service_window(&self, now: i64) -> bool {
        self.last_inbound > 0 && now - self.last_inbound < SERVICE_WINDOW_SECS
    }

    /// Appends a turn, folding the oldest beyond [`HISTORY_TURNS`] into the
    /// rolling summary.
    pub fn record(&mut self, turn: Turn) {
        self.history.push(turn);
        while self.history.len() > HISTORY_TURNS {
            let old = self.history.remove(0);
            if old.role == "customer" {
                let topic = old.intent.as_deref().unwrap_or("something else");
                if !self.summary.is_empty() {
                    self.summary.push_str("; ");
                }
                self.summary.push_str(&format!("asked about {topic}"));
                // Keep the summary bounded: the newest topics matter most.
                if self.summary.len() > 600 {
                    let cut = self.summary.len() - 600;
                    let cut = self.summary[cut..].find("; ").map_or(cut, |i| cut + i + 2);
                    self.summary.drain(..cut);
                }
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("session database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("sessions in redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("session {0} is corrupt: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("cannot create {0}: {1}")]
    Dir(String, std::io::Error),
    #[error("session call stopped: {0}")]
    Stopped(String),
}

/// Sessions in the dialog database, or in Redis when processes share
/// them.
#[derive(Clone)]
pub struct SessionStore {
    backend: SessionBackend,
}

#[derive(Clone)]
enum SessionBackend {
    Sqlite(Arc<Mutex<Connection>>),
    Redis(Arc<RedisSessions>),
}

/// Where shared sessions live: `[store.redis]`'s server and key prefix.
#[derive(Debug, Clone, PartialEq)]
pub struct SharedSessions {
    pub url: String,
    pub prefix: String,
    /// A session not touched for this long expires
    /// (`[store] session_retention_days`), unless a person has it.
    pub retention_secs: u64,
}

/// Sessions in Redis: `P:session:NUMBER` (JSON, expiring after the
/// retention unless handed off), `P:handoffs` (numbers with a person),
/// `P:choices:NUMBER` (the STOP/START/text-only audit, kept until erased).
/// The calls are blocking, like SQLite's, on one connection re-opened
/// after an error.
struct RedisSessions {
    client: redis::Client,
    conn: Mutex<Option<redis::Connection>>,
    prefix: String,
    retention_secs: u64,
}

impl RedisSessions {
    fn run<T>(
        &self,
        f: impl FnOnce(&mut redis::Connection) -> redis::RedisResult<T>,
    ) -> Result<T, SessionError> {
        let mut slot = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        if slot.is_none() {
            let timeout = std::time::Duration::from_secs(2);
            let conn = self.client.get_connection_with_timeout(timeout)?;
            conn.set_read_timeout(Some(timeout))?;
            conn.set_write_timeout(Some(timeout))?;
            *slot = Some(conn);
        }
        let result = f(slot.as_mut().expect("connected above"));
        if result.is_err() {
            // The next call connects again.
            *slot = None;
        }
        Ok(result?)
    }

    fn key(&self, kind: &str, number: &str) -> String {
        format!("{}:{kind}:{number}", self.prefix)
    }
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS dialog_sessions (
  number TEXT PRIMARY KEY, data TEXT NOT NULL, handoff INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS dialog_choices (
  id INTEGER PRIMARY KEY AUTOINCREMENT, number TEXT NOT NULL, kind TEXT NOT NULL,
  at INTEGER NOT NULL, source TEXT NOT NULL);
";

impl SessionStore {
    pub fn open(path: &Path) -> Result<Self, SessionError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .map_err(|e| SessionError::Dir(dir.display().to_string(), e))?;
        }
        Self::with_connection(Connection::open(path)?)
    }

    pub fn in_memory() -> Result<Self, SessionError> {
        Self::with_connection(Connection::open_in_memory()?)
    }

    /// The sessions `config` names: shared in Redis, or in its database
    /// file.
    pub fn for_config(config: &super::config::DialogConfig) -> Result<Self, SessionError> {
        match &config.shared_sessions {
            Some(shared) => Self::shared(shared),
            None => Self::open(&config.database_path()),
        }
    }

    /// Sessions in Redis, shared by every process; checks the server
    /// answers.
    pub fn shared(config: &SharedSessions) -> Result<Self, SessionError> {
        let sessions = RedisSessions {
            client: redis::Client::open(config.url.as_str())?,
            conn: Mutex::new(None),
            prefix: config.prefix.clone(),
            retention_secs: config.retention_secs.max(1),
        };
        sessions.run(|c| redis::cmd("PING").query::<String>(c))?;
        Ok(Self {
            backend: SessionBackend::Redis(Arc::new(sessions)),
        })
    }

    fn with_connection(conn: Connection) -> Result<Self, SessionError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            backend: SessionBackend::Sqlite(Arc::new(Mutex::new(conn))),
        })
    }

    fn lock(conn: &Mutex<Connection>) -> std::sync::MutexGuard<'_, Connection> {
        conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// [`load`](Self::load) for async callers: both backends block (a
    /// SQLite read, a Redis round trip), so the call runs off the
    /// runtime's threads.
    pub async fn load_async(&self, number: &str) -> Result<Session, SessionError> {
        let (store, number) = (self.clone(), number.to_string());
        tokio::task::spawn_blocking(move || store.load(&number))
            .await
            .map_err(|e| SessionError::Stopped(e.to_string()))?
    }

    /// [`save`](Self::save) for async callers, off the runtime's threads.
    pub async fn save_async(&self, session: &Session) -> Result<(), SessionError> {
        let (store, session) = (self.clone(), session.clone());
        tokio::task::spawn_blocking(move || store.save(&session))
            .await
            .map_err(|e| SessionError::Stopped(e.to_string()))?
    }

    /// The number's session, or a fresh one.
    pub fn load(&self, number: &str) -> Result<Session, SessionError> {
        let data: Option<String> = match &self.backend {
            SessionBackend::Sqlite(conn) => Self::lock(conn)
                .query_row(
                    "SELECT data FROM dialog_sessions WHERE number = ?1",
                    params![number],
                    |r| r.get(0),
                )
                .optional()?,
            SessionBackend::Redis(r) => {
                let key = r.key("session", number);
                r.run(|c| redis::cmd("GET").arg(&key).query(c))?
            }
        };
        match data {
            Some(d) => {
                serde_json::from_str(&d).map_err(|e| SessionError::Corrupt(number.into(), e))
            }
            None => Ok(Session::new(number)),
        }
    }

    pub fn save(&self, session: &Session) -> Result<(), SessionError> {
        let data = serde_json::to_string(session)
            .map_err(|e| SessionError::Corrupt(session.number.clone(), e))?;
        match &self.backend {
            SessionBackend::Sqlite(conn) => {
                Self::lock(conn).execute(
                    "INSERT INTO dialog_sessions (number, data, handoff, updated_at) VALUES (?1, ?2, ?3, ?4)
                     ON CONFLICT (number) DO UPDATE SET data = ?2, handoff = ?3, updated_at = ?4",
                    params![session.number, data, session.handoff.is_some(), session.last_activity],
                )?;
            }
            SessionBackend::Redis(r) => {
                let key = r.key("session", &session.number);
                let handoffs = format!("{}:handoffs", r.prefix);
                let mut pipe = redis::pipe();
                pipe.atomic();
                // A conversation with a person waits for them, however long.
                if session.handoff.is_some() {
                    pipe.cmd("SET").arg(&key).arg(&data).ignore();
                    pipe.cmd("SADD")
                        .arg(&handoffs)
                        .arg(&session.number)
                        .ignore();
                } else {
                    pipe.cmd("SET")
                        .arg(&key)
                        .arg(&data)
                        .arg("EX")
                        .arg(r.retention_secs)
                        .ignore();
                    pipe.cmd("SREM")
                        .arg(&handoffs)
                        .arg(&session.number)
                        .ignore();
                }
                r.run(|c| pipe.query::<()>(c))?;
            }
        }
        Ok(())
    }

    /// Records a STOP, START or text-only choice in the audit table.
    pub fn record_choice(
        &self,
        number: &str,
        kind: &str,
        choice: &Choice,
    ) -> Result<(), SessionError> {
        match &self.backend {
            SessionBackend::Sqlite(conn) => {
                Self::lock(conn).execute(
                    "INSERT INTO dialog_choices (number, kind, at, source) VALUES (?1, ?2, ?3, ?4)",
                    params![number, kind, choice.at, choice.source],
                )?;
            }
            SessionBackend::Redis(r) => {
                let entry =
                    serde_json::json!({"kind": kind, "at": choice.at, "source": choice.source});
                let key = r.key("choices", number);
                r.run(|c| {
                    redis::cmd("RPUSH")
                        .arg(&key)
                        .arg(entry.to_string())
                        .query::<()>(c)
                })?;
            }
        }
        Ok(())
    }

    /// Every recorded choice of a number: (kind, at, source), oldest first.
    pub fn choices(&self, number: &str) -> Result<Vec<(String, i64, String)>, SessionError> {
        let conn = match &self.backend {
            SessionBackend::Sqlite(conn) => conn,
            SessionBackend::Redis(r) => {
                let key = r.key("choices", number);
                let entries: Vec<String> =
                    r.run(|c| redis::cmd("LRANGE").arg(&key).arg(0).arg(-1).query(c))?;
                let mut out = Vec::with_capacity(entries.len());
                for entry in entries {
                    let v: serde_json::Value = serde_json::from_str(&entry)
                        .map_err(|e| SessionError::Corrupt(number.into(), e))?;
                    out.push((
                        v["kind"].as_str().unwrap_or_default().to_string(),
                        v["at"].as_i64().unwrap_or_default(),
                        v["source"].as_str().unwrap_or_default().to_string(),
                    ));
                }
                return Ok(out);
            }
        };
        let conn = Self::lock(conn);
        let mut stmt = conn
            .prepare("SELECT kind, at, source FROM dialog_choices WHERE number = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![number], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sessions waiting for a person, oldest hand-off first.
    pub fn handoffs(&self) -> Result<Vec<Session>, SessionError> {
        let rows: Vec<(String, String)> = match &self.backend {
            SessionBackend::Sqlite(conn) => {
                let conn = Self::lock(conn);
                let mut stmt =
                    conn.prepare("SELECT number, data FROM dialog_sessions WHERE handoff = 1")?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                rows.collect::<Result<_, _>>()?
            }
            SessionBackend::Redis(r) => {
                let handoffs = format!("{}:handoffs", r.prefix);
                let numbers: Vec<String> =
                    r.run(|c| redis::cmd("SMEMBERS").arg(&handoffs).query(c))?;
                let mut rows = Vec::with_capacity(numbers.len());
                for number in numbers {
                    let key = r.key("session", &number);
                    let data: Option<String> = r.run(|c| redis::cmd("GET").arg(&key).query(c))?;
                    if let Some(data) = data {
                        rows.push((number, data));
                    }
                }
                rows
            }
        };
        let mut out = Vec::new();
        for (number, data) in rows {
            let session = serde_json::from_str::<Session>(&data)
                .map_err(|e| SessionError::Corrupt(number, e))?;
            if session.handoff.is_some() {
                out.push(session);
            }
        }
        out.sort_by_key(|s| s.handoff.as_ref().map_or(0, |h| h.since));
        Ok(out)
    }

    /// Erases a number's session and its recorded choices (the right to
    /// erasure). Returns the rows (keys, on Redis) deleted.
    pub fn forget(&self, number: &str) -> Result<usize, SessionError> {
        match &self.backend {
            SessionBackend::Sqlite(conn) => {
                let conn = Self::lock(conn);
                let sessions = conn.execute(
                    "DELETE FROM dialog_sessions WHERE number = ?1",
                    params![number],
                )?;
                let choices = conn.execute(
                    "DELETE FROM dialog_choices WHERE number = ?1",
                    params![number],
                )?;
                Ok(sessions + choices)
            }
            SessionBackend::Redis(r) => {
                let keys = [r.key("session", number), r.key("choices", number)];
                let handoffs = format!("{}:handoffs", r.prefix);
                let (deleted,): (usize,) = r.run(|c| {
                    redis::pipe()
                        .atomic()
                        .cmd("DEL")
                        .arg(&keys)
                        .cmd("SREM")
                        .arg(&handoffs)
                        .arg(number)
                        .ignore()
                        .query(c)
                })?;
                Ok(deleted)
            }
        }
    }

    /// Deletes sessions whose last activity is before `before_unix_s`,
    /// unless a person has the conversation. Returns how many went. On
    /// Redis the sessions expire by themselves, so nothing is left to do.
    pub fn prune(&self, before_unix_s: i64) -> Result<usize, SessionError> {
        match &self.backend {
            SessionBackend::Sqlite(conn) => Ok(Self::lock(conn).execute(
                "DELETE FROM dialog_sessions WHERE updated_at < ?1 AND handoff = 0",
                params![before_unix_s],
            )?),
            SessionBackend::Redis(_) => Ok(0),
        }
    }

    /// Gives the number back to the bot. Returns whether it was handed off.
    pub fn release(&self, number: &str) -> Result<bool, SessionError> {
        let mut s = self.load(number)?;
        if s.handoff.is_none() {
            return Ok(false);
        }
        s.handoff = None;
        s.stage = Stage::Greeting;
        s.unresolved_turns = 0;
        s.low_confidence_turns = 0;
        self.save(&s)?;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_survive_reopening_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dialog.sqlite");
        {
            let store = SessionStore::open(&path).unwrap();
            let mut s = store.load("15550001842").unwrap();
            s.stage = Stage::Cart;
            s.cart.push(OrderItem {
                product: "bottle-steel".into(),
                quantity: 2,
            });
            s.handoff = Some(Handoff {
                reason: "asked".into(),
                since: 5,
            });
            store.save(&s).unwrap();
        }
        let store = SessionStore::open(&path).unwrap();
        let s = store.load("15550001842").unwrap();
        assert_eq!(s.stage, Stage::Cart);
        assert_eq!(s.cart.len(), 1);
        assert_eq!(store.handoffs().unwrap().len(), 1);
        assert!(store.release("15550001842").unwrap());
        assert!(store.handoffs().unwrap().is_empty());
        assert!(!store.release("15550001842").unwrap());
    }

    #[test]
    fn clocks_expire_the_conversation_then_the_cart() {
        let config = SessionConfig::default();
        let mut s = Session::new("1");
        s.last_activity = 1000;
        s.cart_updated = 1000;
        s.stage = Stage::AwaitingConfirmation;
        s.pending = Some(Pending {
            change: Change::Cancel {
                order: "1842".into(),
            },
            proposed_at: 1000,
            asked_in: "m1".into(),
        });
        s.cart.push(OrderItem {
            product: "x".into(),
            quantity: 1,
        });
        s.expire(1000 + 60, &config);
        assert!(s.pending.is_some());
        s.expire(1000 + 31 * 60, &config);
        assert!(s.pending.is_none());
        assert_eq!(s.stage, Stage::Greeting);
        assert_eq!(s.cart.len(), 1);
        s.expire(1000 + 7 * 3600, &config);
        assert!(s.cart.is_empty());
    }

    #[test]
    fn history_keeps_ten_turns_and_summarises_the_rest() {
        let mut s = Session::new("1");
        for i in 0..14 {
            s.record(Turn {
                at: i,
                role: if i % 2 == 0 { "customer" } else { "bot" }.into(),
                text: format!("t{i}"),
                intent: Some("order_status".into()),
            });
        }
        assert_eq!(s.history.len(), HISTORY_TURNS);
        assert_eq!(s.history[0].text, "t4");
        assert_eq!(
            s.summary,
            "asked about order_status; asked about order_status"
        );
    }
}
