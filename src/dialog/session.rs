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
    #[error("session {0} is corrupt: {1}")]
    Corrupt(String, serde_json::Error),
    #[error("cannot create {0}: {1}")]
    Dir(String, std::io::Error),
}

/// Sessions in the dialog database.
#[derive(Clone)]
pub struct SessionStore {
    conn: Arc<Mutex<Connection>>,
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

    fn with_connection(conn: Connection) -> Result<Self, SessionError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The number's session, or a fresh one.
    pub fn load(&self, number: &str) -> Result<Session, SessionError> {
        let data: Option<String> = self
            .lock()
            .query_row(
                "SELECT data FROM dialog_sessions WHERE number = ?1",
                params![number],
                |r| r.get(0),
            )
            .optional()?;
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
        self.lock().execute(
            "INSERT INTO dialog_sessions (number, data, handoff, updated_at) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (number) DO UPDATE SET data = ?2, handoff = ?3, updated_at = ?4",
            params![session.number, data, session.handoff.is_some(), session.last_activity],
        )?;
        Ok(())
    }

    /// Records a STOP, START or text-only choice in the audit table.
    pub fn record_choice(
        &self,
        number: &str,
        kind: &str,
        choice: &Choice,
    ) -> Result<(), SessionError> {
        self.lock().execute(
            "INSERT INTO dialog_choices (number, kind, at, source) VALUES (?1, ?2, ?3, ?4)",
            params![number, kind, choice.at, choice.source],
        )?;
        Ok(())
    }

    /// Every recorded choice of a number: (kind, at, source), oldest first.
    pub fn choices(&self, number: &str) -> Result<Vec<(String, i64, String)>, SessionError> {
        let conn = self.lock();
        let mut stmt = conn
            .prepare("SELECT kind, at, source FROM dialog_choices WHERE number = ?1 ORDER BY id")?;
        let rows = stmt.query_map(params![number], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Sessions waiting for a person, oldest hand-off first.
    pub fn handoffs(&self) -> Result<Vec<Session>, SessionError> {
        let conn = self.lock();
        let mut stmt =
            conn.prepare("SELECT number, data FROM dialog_sessions WHERE handoff = 1")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let mut out = Vec::new();
        for row in rows {
            let (number, data) = row?;
            out.push(
                serde_json::from_str::<Session>(&data)
                    .map_err(|e| SessionError::Corrupt(number, e))?,
            );
        }
        out.sort_by_key(|s| s.handoff.as_ref().map_or(0, |h| h.since));
        Ok(out)
    }

    /// Erases a number's session and its recorded choices (the right to
    /// erasure). Returns the rows deleted.
    pub fn forget(&self, number: &str) -> Result<usize, SessionError> {
        let conn = self.lock();
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

    /// Deletes sessions whose last activity is before `before_unix_s`,
    /// unless a person has the conversation. Returns how many went.
    pub fn prune(&self, before_unix_s: i64) -> Result<usize, SessionError> {
        Ok(self.lock().execute(
            "DELETE FROM dialog_sessions WHERE updated_at < ?1 AND handoff = 0",
            params![before_unix_s],
        )?)
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
