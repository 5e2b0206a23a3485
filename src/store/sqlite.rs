//! The embedded store: one SQLite file, `voxline.db`, in the data folder.
//!
//! The file is in WAL mode, so readers never wait for the writer and a
//! commit is one append to the log. `synchronous = FULL` (the default) makes
//! each commit wait for the log to reach the disk: the webhook answers 200
//! only after its messages are committed, and a power cut must not lose a
//! message Meta was told it delivered (Meta would not send it again). With
//! `NORMAL`, WAL mode still survives a crash of the process, since the log is
//! in the kernel's page cache, but the last commits before a power cut can
//! vanish; choose it only where the disk itself is replicated. FULL costs one
//! `fsync` per webhook, well inside the acknowledgement budget (see the
//! README's load test).
//!
//! Writes go to one writer thread that commits them in groups: every write
//! queued while the previous commit was syncing joins the next transaction,
//! each in its own savepoint so one failure does not undo the others. A
//! burst of webhooks and turn updates thus costs one `fsync` per group, not
//! one per write, and a webhook never waits behind more than one commit.
//! Reads use a second connection on tokio's blocking threads; WAL lets them
//! run beside the writer.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::{Inbox, Progress, Queue, Store, StoreConfig, StoreError, Synchronous, Turn, TurnState};
use crate::channel::{InboundMessage, StatusUpdate};
use crate::record::TurnTrace;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS messages (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,
    wamid       TEXT NOT NULL UNIQUE,
    customer    TEXT NOT NULL,
    message     TEXT NOT NULL,
    state       TEXT NOT NULL,
    transcript  TEXT,
    reply_text  TEXT,
    reply_id    TEXT,
    failure     TEXT,
    dead_letter INTEGER NOT NULL DEFAULT 0,
    received_at INTEGER NOT NULL,
    updated_at  INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS messages_unfinished ON messages (state, seq);
CREATE TABLE IF NOT EXISTS statuses (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    message_id  TEXT NOT NULL,
    status      TEXT NOT NULL,
    recipient   TEXT NOT NULL,
    timestamp   INTEGER NOT NULL,
    error_code  INTEGER,
    error_title TEXT,
    received_at INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS statuses_message ON statuses (message_id);
CREATE TABLE IF NOT EXISTS webhook_errors (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    code        INTEGER NOT NULL,
    title       TEXT NOT NULL,
    received_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS turn_traces (
    message_id  TEXT PRIMARY KEY,
    started_at  INTEGER NOT NULL,
    trace       TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS turn_traces_started ON turn_traces (started_at);
CREATE INDEX IF NOT EXISTS messages_customer ON messages (customer, received_at);
CREATE TABLE IF NOT EXISTS health (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    checked_at INTEGER NOT NULL
);
";

/// Columns added after the first release, with their definitions: added to
/// an older file when it is opened.
const ADDED_COLUMNS: &[(&str, &str)] = &[
    ("attempts", "INTEGER NOT NULL DEFAULT 0"),
    ("retry_at", "INTEGER"),
    ("waiting", "TEXT"),
    ("reply_voice", "BLOB"),
];

/// Brings an older `messages` table up to date.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare("SELECT name FROM pragma_table_info('messages')")?;
    let have: Vec<String> = stmt
        .query_map([], |r| r.get(0))?
        .collect::<Result<_, _>>()?;
    for (name, definition) in ADDED_COLUMNS {
        if !have.iter().any(|h| h == name) {
            conn.execute_batch(&format!(
                "ALTER TABLE messages ADD COLUMN {name} {definition}"
            ))?;
        }
    }
    Ok(())
}

/// The file name inside the data folder.
pub const FILE_NAME: &str = "voxline.db";

/// Writes queued for one group commit at most.
const MAX_GROUP: usize = 512;

#[derive(Clone)]
pub struct SqliteStore {
    /// The read connection.
    conn: Arc<Mutex<Connection>>,
    writer: std::sync::mpsc::Sender<Job>,
    path: PathBuf,
}

/// A write: runs inside a savepoint of the group's transaction, reports
/// whether it succeeded, and returns what to do once the group's commit is
/// known.
type Job = Box<dyn FnOnce(&Connection) -> (bool, Deliver) + Send>;
type Deliver = Box<dyn FnOnce(Option<&str>) + Send>;

/// The writer thread: takes whatever writes are queued, commits them as one
/// transaction, then tells each caller.
fn write_groups(mut conn: Connection, jobs: std::sync::mpsc::Receiver<Job>) {
    while let Ok(first) = jobs.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match jobs.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let mut delivers = Vec::with_capacity(group.len());
        let committed = (|| -> rusqlite::Result<()> {
            let mut tx = conn.transaction()?;
            for job in group {
                let sp = tx.savepoint()?;
                let (ok, deliver) = job(&sp);
                if ok {
                    sp.commit()?;
                } // else: dropping the savepoint rolls it back
                delivers.push(deliver);
            }
            tx.commit()
        })();
        // Writes not run (the transaction could not start) were dropped
        // with their reply channel: their callers see the store fail.
        let failure = committed.err().map(|e| e.to_string());
        for deliver in delivers {
            deliver(failure.as_deref());
        }
    }
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

impl SqliteStore {
    /// Opens (creating when needed) `voxline.db` in `config.data_dir`.
    pub fn open(config: &StoreConfig) -> Result<Self, StoreError> {
        let dir = &config.data_dir;
        let fail = |reason: String| StoreError::Open {
            path: dir.clone(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| fail(e.to_string()))?;
        let path = dir.join(FILE_NAME);
        let conn = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        let synchronous = match config.synchronous {
            Synchronous::Full => "FULL",
            Synchronous::Normal => "NORMAL",
        };
        conn.pragma_update(None, "journal_mode", "WAL")
            .and_then(|()| conn.pragma_update(None, "synchronous", synchronous))
            .and_then(|()| conn.busy_timeout(std::time::Duration::from_secs(5)))
            .and_then(|()| conn.execute_batch(SCHEMA))
            .and_then(|()| migrate(&conn))
            .map_err(|e| fail(e.to_string()))?;
        let reader = Connection::open(&path).map_err(|e| fail(e.to_string()))?;
        reader
            .busy_timeout(std::time::Duration::from_secs(5))
            .map_err(|e| fail(e.to_string()))?;
        let (writer, jobs) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("voxline-store".into())
            .spawn(move || write_groups(conn, jobs))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(reader)),
            writer,
            path,
        })
    }

    /// Runs `f` in the next group commit and returns its result once the
    /// group is durable.
    async fn write<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move |c| {
            let result = f(c);
            let ok = result.is_ok();
            let deliver: Deliver = Box::new(move |failure| {
                let _ = tx.send(match failure {
                    None => result,
                    Some(e) => Err(StoreError::Database(format!("commit failed: {e}"))),
                });
            });
            (ok, deliver)
        });
        self.writer
            .send(job)
            .map_err(|_| StoreError::Database("the store writer has stopped".into()))?;
        rx.await
            .map_err(|_| StoreError::Database("the write was not committed".into()))?
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` on the connection on a blocking thread.
    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut conn = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut conn)
        })
        .await
        .map_err(|e| StoreError::Database(format!("store task failed: {e}")))?
    }

    /// The delivery reports recorded for a message voxline sent, oldest
    /// first, as `(status, error code)`.
    pub async fn statuses_of(
        &self,
        message_id: &str,
    ) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        let id = message_id.to_string();
        self.with(move |c| {
            let mut stmt = c
                .prepare(
                    "SELECT status, error_code FROM statuses WHERE message_id = ?1 ORDER BY id",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([id], |r| Ok((r.get(0)?, r.get(1)?)))
                .map_err(db)?;
            rows.collect::<Result<_, _>>().map_err(db)
        })
        .await
    }

    /// How many messages the inbox holds.
    pub async fn message_count(&self) -> Result<u64, StoreError> {
        self.with(|c| {
            c.query_row("SELECT COUNT(*) FROM messages", [], |r| r.get::<_, i64>(0))
                .map(|n| n as u64)
                .map_err(db)
        })
        .await
    }
}

fn read_turn(row: &rusqlite::Row<'_>) -> rusqlite::Result<(i64, String, String, String, Turn)> {
    // The message is decoded after the query, so that a corrupt row names
    // itself instead of failing the whole scan.
    let placeholder = InboundMessage {
        id: String::new(),
        from: String::new(),
        to: String::new(),
        timestamp: 0,
        profile_name: None,
        content: crate::channel::Content::Unsupported {
            kind: String::new(),
        },
    };
    Ok((
        row.get(0)?,
        row.get(1)?,
        row.get(2)?,
        row.get(3)?,
        Turn {
            seq: row.get(0)?,
            message: placeholder,
            state: TurnState::Received,
            transcript: row.get(4)?,
            reply_text: row.get(5)?,
            reply_id: row.get(6)?,
            failure: row.get(7)?,
            dead_letter: row.get::<_, i64>(8)? != 0,
            received_at_ms: row.get(9)?,
            attempts: row.get::<_, i64>(10)?.clamp(0, i64::from(u32::MAX)) as u32,
            retry_at_ms: row.get(11)?,
            waiting: row.get(12)?,
            reply_voice: row.get(13)?,
        },
    ))
}

const TURN_COLUMNS: &str =
    "seq, wamid, message, state, transcript, reply_text, reply_id, failure, \
     dead_letter, received_at, attempts, retry_at, waiting, reply_voice";

fn finish_turn(
    (_, wamid, message, state, mut turn): (i64, String, String, String, Turn),
) -> Result<Turn, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: wamid.clone(),
        reason,
    };
    turn.message = serde_json::from_str(&message).map_err(|e| corrupt(e.to_string()))?;
    turn.state = TurnState::parse(&state).ok_or_else(|| corrupt(format!("state {state:?}")))?;
    Ok(turn)
}

#[async_trait::async_trait]
impl Inbox for SqliteStore {
    async fn accept(
        &self,
        messages: &[InboundMessage],
        statuses: &[StatusUpdate],
        errors: &[(i64, String)],
    ) -> Result<Vec<bool>, StoreError> {
        let rows: Vec<(InboundMessage, String)> = messages
            .iter()
            .map(|m| {
                serde_json::to_string(m)
                    .map(|json| (m.clone(), json))
                    .map_err(|e| StoreError::Database(e.to_string()))
            })
            .collect::<Result<_, _>>()?;
        let statuses = statuses.to_vec();
        let errors = errors.to_vec();
        self.write(move |tx| {
            let at = now();
            let mut fresh = Vec::with_capacity(rows.len());
            {
                let mut insert = tx
                    .prepare_cached(
                        "INSERT INTO messages (wamid, customer, message, state, received_at, updated_at)
                         VALUES (?1, ?2, ?3, 'received', ?4, ?4) ON CONFLICT (wamid) DO NOTHING",
                    )
                    .map_err(db)?;
                for (m, json) in &rows {
                    let n = insert.execute(params![m.id, m.from, json, at]).map_err(db)?;
                    fresh.push(n == 1);
                }
                let mut status = tx
                    .prepare_cached(
                        "INSERT INTO statuses (message_id, status, recipient, timestamp, error_code, error_title, received_at)
                         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                    )
                    .map_err(db)?;
                for s in &statuses {
                    let (code, title) = match &s.error {
                        Some((code, title)) => (Some(*code), Some(title.as_str())),
                        None => (None, None),
                    };
                    status
                        .execute(params![s.message_id, s.status, s.recipient, s.timestamp as i64, code, title, at])
                        .map_err(db)?;
                }
                let mut error = tx
                    .prepare_cached("INSERT INTO webhook_errors (code, title, received_at) VALUES (?1, ?2, ?3)")
                    .map_err(db)?;
                for (code, title) in &errors {
                    error.execute(params![code, title, at]).map_err(db)?;
                }
            }
            Ok(fresh)
        })
        .await
    }
}

#[async_trait::async_trait]
impl Queue for SqliteStore {
    async fn unfinished(&self) -> Result<Vec<Turn>, StoreError> {
        // A row that cannot be read is reported and set aside as a dead
        // letter: one bad row must not stop every other customer's turns.
        let (turns, unreadable) = self
            .with(|c| {
                let mut stmt = c
                    .prepare(&format!(
                        "SELECT {TURN_COLUMNS} FROM messages WHERE state NOT IN ('replied', 'silent', 'failed') ORDER BY seq"
                    ))
                    .map_err(db)?;
                let mut turns = Vec::new();
                let mut unreadable = Vec::new();
                let mut rows = stmt.query([]).map_err(db)?;
                while let Some(row) = rows.next().map_err(db)? {
                    let wamid: Option<String> = row.get(1).ok();
                    match read_turn(row).map_err(db).and_then(finish_turn) {
                        Ok(turn) => turns.push(turn),
                        Err(e) => unreadable.push((wamid, e.to_string())),
                    }
                }
                Ok((turns, unreadable))
            })
            .await?;
        for (wamid, reason) in unreadable {
            tracing::error!(wamid = wamid.as_deref().unwrap_or("?"), %reason, "unreadable turn skipped");
            if let Some(id) = wamid {
                let reason = format!("unreadable in the store: {reason}");
                if let Err(e) = self.set_aside(&id, &reason).await {
                    tracing::error!(wamid = %id, error = %e, "could not set the unreadable turn aside");
                }
            }
        }
        Ok(turns)
    }

    async fn last_heard(&self, customer: &str) -> Result<Option<i64>, StoreError> {
        let customer = customer.to_string();
        self.with(move |c| {
            c.query_row(
                "SELECT MAX(received_at) FROM messages WHERE customer = ?1",
                [customer],
                |r| r.get(0),
            )
            .map_err(db)
        })
        .await
    }

    async fn retry_now(&self, message_id: &str) -> Result<bool, StoreError> {
        let id = message_id.to_string();
        self.write(move |c| {
            c.execute(
                "UPDATE messages SET retry_at = ?2, updated_at = ?2
                 WHERE wamid = ?1 AND waiting IS NOT NULL
                   AND state NOT IN ('replied', 'silent', 'failed')",
                params![id, now()],
            )
            .map(|n| n == 1)
            .map_err(db)
        })
        .await
    }

    async fn turn(&self, message_id: &str) -> Result<Turn, StoreError> {
        let id = message_id.to_string();
        self.with(move |c| {
            let row = c
                .query_row(
                    &format!("SELECT {TURN_COLUMNS} FROM messages WHERE wamid = ?1"),
                    [&id],
                    read_turn,
                )
                .optional()
                .map_err(db)?;
            row.map(finish_turn)
                .unwrap_or(Err(StoreError::NotFound(id)))
        })
        .await
    }

    async fn advance(&self, message_id: &str, progress: Progress<'_>) -> Result<(), StoreError> {
        let id = message_id.to_string();
        if let Progress::Deferred {
            reason,
            retry_at_ms,
            voice,
        } = progress
        {
            let (reason, voice) = (reason.to_string(), voice.map(<[u8]>::to_vec));
            return self
                .write(move |c| {
                    let n = c
                        .execute(
                            "UPDATE messages SET
                                state = CASE state WHEN 'transcribed' THEN 'transcribed' ELSE 'received' END,
                                attempts = attempts + 1,
                                retry_at = ?2,
                                waiting = ?3,
                                reply_voice = COALESCE(?4, reply_voice),
                                updated_at = ?5
                             WHERE wamid = ?1 AND state NOT IN ('replied', 'silent', 'failed')",
                            params![id, retry_at_ms, reason, voice, now()],
                        )
                        .map_err(db)?;
                    if n == 0 {
                        return found_or_not(c, id);
                    }
                    Ok(())
                })
                .await;
        }
        // Owned copies, for the blocking thread.
        let (state, transcript, reply_text, reply_id, failure, dead_letter) = match progress {
            Progress::Fetching => (TurnState::Fetching, None, None, None, None, false),
            Progress::Understood { transcript, reply } => (
                TurnState::Transcribed,
                transcript.map(str::to_string),
                Some(reply.to_string()),
                None,
                None,
                false,
            ),
            Progress::ReplyAccepted { reply_id } => (
                TurnState::Replied,
                None,
                None,
                Some(reply_id.to_string()),
                None,
                false,
            ),
            Progress::NothingToSend => (TurnState::Silent, None, None, None, None, false),
            Progress::Deferred { .. } => unreachable!("handled above"),
            Progress::Failed {
                reason,
                dead_letter,
            } => (
                TurnState::Failed,
                None,
                None,
                None,
                Some(reason.to_string()),
                dead_letter,
            ),
        };
        self.write(move |c| {
            // A final state is never left: a late worker cannot undo a reply.
            let n = c
                .execute(
                    "UPDATE messages SET state = ?2,
                        transcript = COALESCE(?3, transcript),
                        reply_text = COALESCE(?4, reply_text),
                        reply_id = COALESCE(?5, reply_id),
                        failure = COALESCE(?6, failure),
                        dead_letter = ?7,
                        updated_at = ?8,
                        waiting = CASE WHEN ?2 IN ('replied', 'silent', 'failed') THEN NULL ELSE waiting END,
                        retry_at = CASE WHEN ?2 IN ('replied', 'silent', 'failed') THEN NULL ELSE retry_at END,
                        reply_voice = CASE WHEN ?2 IN ('replied', 'silent', 'failed') THEN NULL ELSE reply_voice END
                     WHERE wamid = ?1 AND state NOT IN ('replied', 'silent', 'failed')",
                    params![
                        id,
                        state.name(),
                        transcript,
                        reply_text,
                        reply_id,
                        failure,
                        dead_letter as i64,
                        now()
                    ],
                )
                .map_err(db)?;
            if n == 0 {
                return found_or_not(c, id);
            }
            Ok(())
        })
        .await
    }
}

/// `Ok` when message `id` exists (an update that changed nothing found it
/// finished), else [`StoreError::NotFound`].
fn found_or_not(c: &Connection, id: String) -> Result<(), StoreError> {
    let exists: Option<i64> = c
        .query_row("SELECT seq FROM messages WHERE wamid = ?1", [&id], |r| {
            r.get(0)
        })
        .optional()
        .map_err(db)?;
    match exists {
        Some(_) => Ok(()),
        None => Err(StoreError::NotFound(id)),
    }
}

/// What an erased message's row keeps: its id (so that a redelivery is
/// still dropped) and nothing that says who sent what.
const ERASE: &str = "message = json_object('id', wamid, 'from', '', 'to', '', 'timestamp', 0,
        'profile_name', NULL, 'content', json_object('type', 'unsupported', 'kind', 'erased')),
    customer = '', transcript = NULL, reply_text = NULL, reply_voice = NULL, failure = NULL,
    waiting = NULL, retry_at = NULL";

impl SqliteStore {
    /// Erases everything kept about `customer` (the right to erasure):
    /// their messages' content, transcripts and replies, their delivery
    /// reports and their turns' traces. Unfinished turns end failed first,
    /// so nothing is sent to them afterwards. Message ids stay, without
    /// content, so that a redelivery is not taken for a new message.
    pub async fn erase_customer(&self, customer: &str) -> Result<super::Erased, StoreError> {
        let customer = customer.to_string();
        self.write(move |c| {
            let at = now();
            c.execute(
                "UPDATE messages SET state = 'failed', updated_at = ?2
                 WHERE customer = ?1 AND state NOT IN ('replied', 'silent', 'failed')",
                params![customer, at],
            )
            .map_err(db)?;
            let traces = c
                .execute(
                    "DELETE FROM turn_traces WHERE message_id IN
                       (SELECT wamid FROM messages WHERE customer = ?1)",
                    [&customer],
                )
                .map_err(db)?;
            let statuses = c
                .execute("DELETE FROM statuses WHERE recipient = ?1", [&customer])
                .map_err(db)?;
            let messages = c
                .execute(
                    &format!("UPDATE messages SET {ERASE}, updated_at = ?2 WHERE customer = ?1"),
                    params![customer, at],
                )
                .map_err(db)?;
            Ok(super::Erased {
                messages,
                ids: 0,
                statuses,
                traces,
            })
        })
        .await
    }

    /// One retention sweep at `now_ms`: finished turns' content past
    /// `message_retention_days` is erased, erased ids past
    /// `id_retention_days` are deleted, delivery reports and webhook errors
    /// past `status_retention_days` are deleted. Unfinished turns are kept
    /// whole: the outbox bounds them by the customer service window.
    pub async fn sweep(
        &self,
        config: &super::StoreConfig,
        now_ms: i64,
    ) -> Result<super::Erased, StoreError> {
        let day = 86_400_000i64;
        let days = |d: u64| now_ms.saturating_sub((d as i64).saturating_mul(day));
        let (content, ids, statuses) = (
            days(config.message_retention_days),
            days(config.id_retention_days),
            days(config.status_retention_days),
        );
        self.write(move |c| {
            let messages = c
                .execute(
                    &format!(
                        "UPDATE messages SET {ERASE}, updated_at = ?2
                         WHERE received_at < ?1 AND customer != ''
                           AND state IN ('replied', 'silent', 'failed')"
                    ),
                    params![content, now_ms],
                )
                .map_err(db)?;
            let ids = c
                .execute(
                    "DELETE FROM messages WHERE received_at < ?1 AND customer = ''",
                    [ids],
                )
                .map_err(db)?;
            let statuses_gone = c
                .execute("DELETE FROM statuses WHERE received_at < ?1", [statuses])
                .map_err(db)?;
            c.execute(
                "DELETE FROM webhook_errors WHERE received_at < ?1",
                [statuses],
            )
            .map_err(db)?;
            Ok(super::Erased {
                messages,
                ids,
                statuses: statuses_gone,
                traces: 0,
            })
        })
        .await
    }

    /// Ends an unreadable turn as a dead letter, whatever its state says.
    async fn set_aside(&self, id: &str, reason: &str) -> Result<(), StoreError> {
        let (id, reason) = (id.to_string(), reason.to_string());
        self.write(move |c| {
            c.execute(
                "UPDATE messages SET state = 'failed', failure = ?2, dead_letter = 1, updated_at = ?3
                 WHERE wamid = ?1",
                params![id, reason, now()],
            )
            .map(drop)
            .map_err(db)
        })
        .await
    }
}

#[async_trait::async_trait]
impl super::Backend for SqliteStore {
    async fn message_count(&self) -> Result<u64, StoreError> {
        SqliteStore::message_count(self).await
    }

    async fn statuses_of(
        &self,
        message_id: &str,
    ) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        SqliteStore::statuses_of(self, message_id).await
    }

    async fn erase_customer(&self, customer: &str) -> Result<super::Erased, StoreError> {
        SqliteStore::erase_customer(self, customer).await
    }

    async fn sweep(
        &self,
        config: &super::StoreConfig,
        now_ms: i64,
    ) -> Result<super::Erased, StoreError> {
        SqliteStore::sweep(self, config, now_ms).await
    }
}

#[async_trait::async_trait]
impl Store for SqliteStore {
    async fn check_writable(&self) -> Result<(), StoreError> {
        self.write(|c| {
            c.execute(
                "INSERT INTO health (id, checked_at) VALUES (1, ?1)
                 ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at",
                [now()],
            )
            .map(drop)
            .map_err(db)
        })
        .await
    }
}

#[async_trait::async_trait]
impl crate::store::Traces for SqliteStore {
    async fn save_trace(&self, trace: &TurnTrace) -> Result<(), StoreError> {
        let json = serde_json::to_string(trace)
            .map_err(|e| StoreError::Database(format!("trace not serialisable: {e}")))?;
        let (id, started) = (trace.message_id.clone(), trace.started_unix_ms);
        self.write(move |c| {
            c.execute(
                "INSERT INTO turn_traces (message_id, started_at, trace) VALUES (?1, ?2, ?3)
                 ON CONFLICT (message_id) DO UPDATE
                 SET started_at = excluded.started_at, trace = excluded.trace",
                rusqlite::params![id, started, json],
            )
            .map(drop)
            .map_err(db)
        })
        .await
    }

    async fn recent_traces(&self, limit: usize) -> Result<Vec<TurnTrace>, StoreError> {
        let limit = limit.min(10_000) as i64;
        self.with(move |c| {
            let mut stmt = c
                .prepare_cached(
                    "SELECT message_id, trace FROM turn_traces
                     ORDER BY started_at DESC, rowid DESC LIMIT ?1",
                )
                .map_err(db)?;
            let rows = stmt
                .query_map([limit], |r| {
                    Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?))
                })
                .map_err(db)?;
            let mut traces = Vec::new();
            for row in rows {
                let (id, json) = row.map_err(db)?;
                match serde_json::from_str(&json) {
                    Ok(t) => traces.push(t),
                    // One unreadable trace (written by another version)
                    // must not hide the others.
                    Err(e) => {
                        tracing::warn!(message_id = %id, error = %e, "unreadable trace skipped")
                    }
                }
            }
            Ok(traces)
        })
        .await
    }

    async fn prune_traces(&self, before_unix_ms: i64) -> Result<usize, StoreError> {
        self.write(move |c| {
            c.execute(
                "DELETE FROM turn_traces WHERE started_at < ?1",
                [before_unix_ms],
            )
            .map_err(db)
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Content;
    use crate::store::Traces;

    fn trace(id: &str, started: i64) -> TurnTrace {
        TurnTrace {
            message_id: id.into(),
            from: "1".into(),
            kind: "audio".into(),
            started_unix_ms: started,
            spans: Vec::new(),
            turn_ms: 420.0,
            sequential_ms: 600.0,
            end: crate::record::TurnEnd::Voice,
            transcript: None,
            language: None,
            intent: None,
            fast_path: None,
            reply_text: None,
            reply_bytes: None,
            audio_ms: None,
            note: None,
            routing: None,
            budgets_ms: Default::default(),
        }
    }

    #[tokio::test]
    async fn traces_are_kept_newest_first_and_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        for (id, at) in [("a", 1_000), ("b", 3_000), ("c", 2_000)] {
            store.save_trace(&trace(id, at)).await.unwrap();
        }
        // A resumed turn's trace replaces its first one.
        let mut again = trace("a", 4_000);
        again.turn_ms = 99.0;
        store.save_trace(&again).await.unwrap();
        let ids: Vec<_> = store
            .recent_traces(10)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.message_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
        assert_eq!(store.recent_traces(1).await.unwrap()[0].turn_ms, 99.0);
        assert_eq!(store.prune_traces(2_500).await.unwrap(), 1);
        assert_eq!(store.recent_traces(10).await.unwrap().len(), 2);
    }

    fn message(id: &str, from: &str) -> InboundMessage {
        InboundMessage {
            id: id.into(),
            from: from.into(),
            to: "1".into(),
            timestamp: 1,
            profile_name: None,
            content: Content::Text { body: "hi".into() },
        }
    }

    fn open(dir: &Path) -> SqliteStore {
        SqliteStore::open(&StoreConfig {
            data_dir: dir.to_path_buf(),
            ..StoreConfig::default()
        })
        .unwrap()
    }

    #[tokio::test]
    async fn duplicates_are_dropped_and_state_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let fresh = store
            .accept(&[message("w1", "a"), message("w2", "b")], &[], &[])
            .await
            .unwrap();
        assert_eq!(fresh, vec![true, true]);
        let fresh = store.accept(&[message("w1", "a")], &[], &[]).await.unwrap();
        assert_eq!(fresh, vec![false]);
        store
            .advance(
                "w1",
                Progress::Understood {
                    transcript: Some("hello"),
                    reply: "I heard: hello",
                },
            )
            .await
            .unwrap();
        store
            .advance(
                "w2",
                Progress::ReplyAccepted {
                    reply_id: "wamid.R",
                },
            )
            .await
            .unwrap();
        // A final state is not left again.
        store.advance("w2", Progress::Fetching).await.unwrap();
        drop(store);

        let store = open(dir.path());
        let left = store.unfinished().await.unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].message.id, "w1");
        assert_eq!(left[0].state, TurnState::Transcribed);
        assert_eq!(left[0].reply_text.as_deref(), Some("I heard: hello"));
        let done = store.turn("w2").await.unwrap();
        assert_eq!(done.state, TurnState::Replied);
        assert_eq!(done.reply_id.as_deref(), Some("wamid.R"));
        assert!(matches!(
            store.advance("nope", Progress::Fetching).await,
            Err(StoreError::NotFound(_))
        ));
        store.check_writable().await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_write_does_not_undo_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let (one, two) = ([message("w1", "a")], [message("w2", "b")]);
        let (a, missing, b) = tokio::join!(
            store.accept(&one, &[], &[]),
            store.advance("missing", Progress::Fetching),
            store.accept(&two, &[], &[]),
        );
        assert_eq!((a.unwrap(), b.unwrap()), (vec![true], vec![true]));
        assert!(matches!(missing, Err(StoreError::NotFound(_))));
        assert_eq!(store.message_count().await.unwrap(), 2);
    }

    #[tokio::test]
    async fn statuses_are_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let failed = StatusUpdate {
            message_id: "wamid.R".into(),
            status: "failed".into(),
            recipient: "a".into(),
            timestamp: 2,
            error: Some((131_047, "Re-engagement message".into())),
        };
        store.accept(&[], &[failed], &[]).await.unwrap();
        assert_eq!(
            store.statuses_of("wamid.R").await.unwrap(),
            vec![("failed".to_string(), Some(131_047))]
        );
    }

    #[tokio::test]
    async fn a_deferred_turn_keeps_its_reply_and_voice_and_waits() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        store
            .accept(&[message("wamid.D", "34600")], &[], &[])
            .await
            .unwrap();
        store.advance("wamid.D", Progress::Fetching).await.unwrap();
        // A fetch that failed goes back to received, nothing stored.
        let fetch = Progress::Deferred {
            reason: "fetch failed: server error 500",
            retry_at_ms: 5,
            voice: None,
        };
        store.advance("wamid.D", fetch).await.unwrap();
        let t = store.turn("wamid.D").await.unwrap();
        assert_eq!(
            (t.state, t.attempts, t.retry_at_ms),
            (TurnState::Received, 1, Some(5))
        );
        assert_eq!(t.reply_text, None);
        let understood = Progress::Understood {
            transcript: Some("hi"),
            reply: "hello",
        };
        store.advance("wamid.D", understood).await.unwrap();
        let send = Progress::Deferred {
            reason: "send failed: server error 500",
            retry_at_ms: 9,
            voice: Some(b"OggS"),
        };
        store.advance("wamid.D", send).await.unwrap();
        let t = store.turn("wamid.D").await.unwrap();
        assert_eq!((t.state, t.attempts), (TurnState::Transcribed, 2));
        assert_eq!(t.reply_text.as_deref(), Some("hello"));
        assert_eq!(t.reply_voice.as_deref(), Some(&b"OggS"[..]));
        assert_eq!(store.waiting().await.unwrap().len(), 1);
        assert!(store.retry_now("wamid.D").await.unwrap());
        let accepted = Progress::ReplyAccepted {
            reply_id: "wamid.OUT",
        };
        store.advance("wamid.D", accepted).await.unwrap();
        let t = store.turn("wamid.D").await.unwrap();
        assert_eq!(t.state, TurnState::Replied);
        assert_eq!((t.waiting, t.reply_voice), (None, None));
        assert!(store.waiting().await.unwrap().is_empty());
        assert!(!store.retry_now("wamid.D").await.unwrap());
    }

    #[tokio::test]
    async fn an_unreadable_row_is_set_aside_and_the_others_resume() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let messages = [message("wamid.BAD", "1"), message("wamid.GOOD", "2")];
        store.accept(&messages, &[], &[]).await.unwrap();
        drop(store);
        let raw = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        raw.execute(
            "UPDATE messages SET message = '{not json' WHERE wamid = 'wamid.BAD'",
            [],
        )
        .unwrap();
        drop(raw);
        let store = open(dir.path());
        let unfinished = store.unfinished().await.unwrap();
        let ids: Vec<_> = unfinished.iter().map(|t| t.message.id.as_str()).collect();
        assert_eq!(ids, ["wamid.GOOD"]);
        let failure: (String, i64) = store
            .with(|c| {
                c.query_row(
                    "SELECT state || ': ' || failure, dead_letter FROM messages WHERE wamid = 'wamid.BAD'",
                    [],
                    |r| Ok((r.get(0)?, r.get(1)?)),
                )
                .map_err(db)
            })
            .await
            .unwrap();
        assert!(failure.0.starts_with("failed: unreadable"), "{failure:?}");
        assert_eq!(failure.1, 1);
    }

    #[tokio::test]
    async fn an_older_file_gains_the_outbox_columns() {
        let dir = tempfile::tempdir().unwrap();
        let raw = Connection::open(dir.path().join(FILE_NAME)).unwrap();
        raw.execute_batch(
            "CREATE TABLE messages (
                seq INTEGER PRIMARY KEY AUTOINCREMENT, wamid TEXT NOT NULL UNIQUE,
                customer TEXT NOT NULL, message TEXT NOT NULL, state TEXT NOT NULL,
                transcript TEXT, reply_text TEXT, reply_id TEXT, failure TEXT,
                dead_letter INTEGER NOT NULL DEFAULT 0, received_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL)",
        )
        .unwrap();
        let json = serde_json::to_string(&message("wamid.OLD", "3")).unwrap();
        raw.execute(
            "INSERT INTO messages (wamid, customer, message, state, received_at, updated_at)
             VALUES ('wamid.OLD', '3', ?1, 'received', 7, 7)",
            [json],
        )
        .unwrap();
        drop(raw);
        let store = open(dir.path());
        let t = store.turn("wamid.OLD").await.unwrap();
        assert_eq!((t.attempts, t.received_at_ms, t.waiting), (0, 7, None));
        assert_eq!(store.last_heard("3").await.unwrap(), Some(7));
    }

    #[tokio::test]
    async fn retention_erases_content_then_ids_and_keeps_unfinished_turns() {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let messages = [
            message("wamid.OLD", "34611"),
            message("wamid.OPEN", "34622"),
        ];
        store.accept(&messages, &[], &[]).await.unwrap();
        let understood = Progress::Understood {
            transcript: Some("where is my order"),
            reply: "on its way",
        };
        store.advance("wamid.OLD", understood).await.unwrap();
        let accepted = Progress::ReplyAccepted {
            reply_id: "wamid.R",
        };
        store.advance("wamid.OLD", accepted).await.unwrap();
        let config = StoreConfig::default();
        let day = 86_400_000;
        let now = super::now();

        // Within the retention: nothing goes.
        let e = store.sweep(&config, now + 29 * day).await.unwrap();
        assert_eq!(e, crate::store::Erased::default());
        // Past it: the finished turn's content goes, its id stays.
        let e = store.sweep(&config, now + 31 * day).await.unwrap();
        assert_eq!(e.messages, 1);
        let old = store.turn("wamid.OLD").await.unwrap();
        assert_eq!(old.message.from, "");
        assert_eq!((old.transcript, old.reply_text), (None, None));
        assert_eq!(
            old.message.content,
            Content::Unsupported {
                kind: "erased".into()
            }
        );
        assert_eq!(old.state, TurnState::Replied);
        // A redelivery is still recognised.
        let again = store.accept(&messages[..1], &[], &[]).await.unwrap();
        assert_eq!(again, [false]);
        // The unfinished turn is whole.
        let open_turn = store.turn("wamid.OPEN").await.unwrap();
        assert_eq!(open_turn.message.from, "34622");
        // Past the id retention, the id goes too.
        let e = store.sweep(&config, now + 61 * day).await.unwrap();
        assert_eq!(e.ids, 1);
        assert!(matches!(
            store.turn("wamid.OLD").await,
            Err(StoreError::NotFound(_))
        ));
        assert!(store.turn("wamid.OPEN").await.is_ok());
    }
}
