//! The shared store: the same inbox, queue and traces as [`super::sqlite`],
//! kept in Redis (or Valkey, same protocol) so that several voxline
//! processes on several machines work from one state.
//!
//! Every key starts with `[store.redis] prefix` (default `{voxline}`), so
//! that deployments can share a server. One server (or a primary with its
//! replicas) is supported, not Redis Cluster: the scripts build their keys
//! from the prefix instead of declaring them.
//!
//! | key | type | holds |
//! |---|---|---|
//! | `P:seq` | string | the last arrival number given out |
//! | `P:msg:WAMID` | hash | one message and its turn (the fields of [`Turn`]) |
//! | `P:unfinished` | sorted set | the wamids of turns not final, scored by arrival |
//! | `P:last_heard` | hash | customer → when their newest message came, Unix ms |
//! | `P:statuses` | stream | delivery reports, capped at `max_statuses` |
//! | `P:webhook_errors` | stream | errors Meta reported, capped alike |
//! | `P:traces` / `P:trace` | sorted set / hash | trace ids by start, and the traces as JSON |
//! | `P:health` | string | the last `/readyz` write |
//! | `P:customer:NUMBER` | sorted set | the customer's unfinished turns, by arrival |
//! | `P:busy` | set | customers with unfinished turns |
//! | `P:history:NUMBER` | set | every message of the customer, for erasure |
//! | `P:lease:NUMBER` | string | the process running the customer's turns, with a TTL |
//! | `P:work` | stream | a customer per new message, to wake the workers (capped) |
//! | `P:finished` / `P:erased` | sorted sets | finished turns, then erased ids, by arrival, for retention |
//!
//! Each write that must be all-or-nothing (a webhook's messages, a turn's
//! step) is one Lua script, which Redis runs without interleaving another
//! client's commands (a script that fails midway keeps what it wrote, so
//! every value a script reads is checked before it is used); a redelivered wamid
//! is recognised inside that script, so two webhook processes receiving the
//! same message at once still record it once. A turn leaves a final state
//! never, as on SQLite: a late worker cannot undo a reply.
//!
//! Durability is the server's: the webhook acknowledges once the script has
//! returned, so with `appendonly yes` and `appendfsync always` an
//! acknowledged message survives a power cut, and with `everysec` up to a
//! second of acknowledged messages can be lost (see the README's "Running on
//! several machines").

use std::collections::HashMap;

use redis::aio::ConnectionManager;
use redis::{AsyncCommands, Script};
use serde::Deserialize;

use super::{Inbox, Progress, Queue, Store, StoreError, Turn, TurnState};
use crate::channel::{InboundMessage, StatusUpdate};
use crate::record::TurnTrace;

/// `[store.redis]` in `voxline.toml`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// `redis://host:port/db` (`rediss://` for TLS). `VOXLINE_REDIS_URL`.
    /// Default `redis://127.0.0.1:6379/0`.
    pub url: String,
    /// What every key starts with, so that several deployments can share
    /// one server. Default `{voxline}`.
    pub prefix: String,
    /// Delivery reports and webhook errors kept, each (older ones are
    /// trimmed). Default 100000.
    pub max_statuses: usize,
    /// Connecting and each command give up after this long, so that a
    /// webhook answers with an error (and Meta retries) rather than hangs.
    /// Default 2000 ms.
    pub timeout_ms: u64,
    /// A process's lease on a customer's turns lasts this long unless
    /// renewed (every third of it): when a process dies, another takes its
    /// customers' turns over within this plus half of it (its claim scan).
    /// Default 5000 ms.
    pub claim_idle_ms: u64,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: "redis://127.0.0.1:6379/0".into(),
            prefix: "{voxline}".into(),
            max_statuses: 100_000,
            timeout_ms: 2_000,
            claim_idle_ms: 5_000,
        }
    }
}

/// A deployment's store on a Redis server; cheap to clone (one multiplexed
/// connection, re-established on failure).
#[derive(Clone)]
pub struct RedisStore {
    conn: ConnectionManager,
    /// For blocking reads of the work stream, which would hold up every
    /// other command on the shared connection.
    waiter: ConnectionManager,
    prefix: String,
    max_statuses: usize,
}

/// The Lua scripts, each hashed once: a call names its script by the
/// SHA-1 (EVALSHA) and sends the source only when the server lacks it.
struct Scripts {
    accept: Script,
    advance: Script,
    sweep: Script,
    defer: Script,
    retry_now: Script,
    erase: Script,
    hold: Script,
    renew: Script,
    release: Script,
    busy: Script,
    next_turn: Script,
}

static SCRIPTS: std::sync::LazyLock<Scripts> = std::sync::LazyLock::new(|| Scripts {
    accept: Script::new(ACCEPT),
    advance: Script::new(ADVANCE),
    sweep: Script::new(SWEEP),
    defer: Script::new(DEFER),
    retry_now: Script::new(RETRY_NOW),
    erase: Script::new(ERASE),
    hold: Script::new(HOLD),
    renew: Script::new(RENEW),
    release: Script::new(RELEASE),
    busy: Script::new(BUSY),
    next_turn: Script::new(NEXT_TURN),
});

fn db(e: redis::RedisError) -> StoreError {
    StoreError::Database(format!("redis: {e}"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Records a webhook's messages, reports and errors in one step.
/// ARGV: prefix, now, max, n messages, then wamid/customer/json per message,
/// then n reports and their JSON, then n errors and their JSON.
/// Returns 1 per new message, 0 per redelivery.
const ACCEPT: &str = r#"
local p, now, max = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local i = 4
local n = tonumber(ARGV[i]); i = i + 1
local fresh = {}
for _ = 1, n do
  local id, customer, json = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local key = p .. ':msg:' .. id
  if redis.call('EXISTS', key) == 1 then
    fresh[#fresh + 1] = 0
  else
    local seq = redis.call('INCR', p .. ':seq')
    redis.call('HSET', key, 'seq', seq, 'customer', customer, 'message', json,
      'state', 'received', 'received_at', now, 'updated_at', now,
      'attempts', 0, 'dead_letter', 0)
    redis.call('ZADD', p .. ':unfinished', seq, id)
    redis.call('ZADD', p .. ':customer:' .. customer, seq, id)
    redis.call('SADD', p .. ':busy', customer)
    redis.call('SADD', p .. ':history:' .. customer, id)
    redis.call('XADD', p .. ':work', 'MAXLEN', '~', 10000, '*', 'customer', customer)
    local last = tonumber(redis.call('HGET', p .. ':last_heard', customer) or '0')
    if now > last then
      redis.call('HSET', p .. ':last_heard', customer, now)
    end
    fresh[#fresh + 1] = 1
  end
end
for _, stream in ipairs({'statuses', 'webhook_errors'}) do
  local count = tonumber(ARGV[i]); i = i + 1
  for _ = 1, count do
    redis.call('XADD', p .. ':' .. stream, 'MAXLEN', '~', max, '*',
      'json', ARGV[i], 'received_at', now)
    i = i + 1
  end
end
return fresh
"#;

/// A step in a turn. ARGV: prefix, wamid, now, state, transcript,
/// reply_text, reply_id, failure, dead_letter. A field given as `=VALUE`
/// is set to VALUE (which may be empty); `''` leaves it as it is.
/// Returns 1 when applied, 0 when the turn was already final, -1 when there
/// is no such message.
const ADVANCE: &str = r#"
local p, id, now, state = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local key = p .. ':msg:' .. id
local current = redis.call('HGET', key, 'state')
if not current then return -1 end
if current == 'replied' or current == 'silent' or current == 'failed' then return 0 end
redis.call('HSET', key, 'state', state, 'dead_letter', ARGV[9], 'updated_at', now)
local fields = {'transcript', 'reply_text', 'reply_id', 'failure'}
for k, field in ipairs(fields) do
  if ARGV[4 + k] ~= '' then redis.call('HSET', key, field, string.sub(ARGV[4 + k], 2)) end
end
if state == 'replied' or state == 'silent' or state == 'failed' then
  redis.call('HDEL', key, 'waiting', 'retry_at', 'reply_voice')
  redis.call('ZREM', p .. ':unfinished', id)
  redis.call('ZADD', p .. ':finished', redis.call('HGET', key, 'received_at') or now, id)
  local customer = redis.call('HGET', key, 'customer')
  if customer then
    local turns = p .. ':customer:' .. customer
    redis.call('ZREM', turns, id)
    if redis.call('ZCARD', turns) == 0 then redis.call('SREM', p .. ':busy', customer) end
  end
end
return 1
"#;

/// The retention sweep, a batch at a time. ARGV: prefix, content cutoff,
/// id cutoff, batch. Finished turns that came before the content cutoff
/// keep only their id (the message becomes an erased placeholder, so that
/// a redelivery is still dropped); erased ids before the id cutoff go.
/// Returns {messages erased, ids deleted}.
const SWEEP: &str = r#"
local p, content, ids, batch = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local erased = 0
local old = redis.call('ZRANGEBYSCORE', p .. ':finished', '-inf', '(' .. content, 'WITHSCORES', 'LIMIT', 0, batch)
for k = 1, #old, 2 do
  local id, at = old[k], old[k + 1]
  local key = p .. ':msg:' .. id
  local placeholder = cjson.encode({id = id, from = '', to = '', timestamp = 0,
    profile_name = cjson.null, content = {type = 'unsupported', kind = 'erased'}})
  local customer = redis.call('HGET', key, 'customer')
  if customer and customer ~= '' then
    local history = p .. ':history:' .. customer
    redis.call('SREM', history, id)
    if redis.call('SCARD', history) == 0 then
      redis.call('HDEL', p .. ':last_heard', customer)
    end
  end
  redis.call('HDEL', key, 'transcript', 'reply_text', 'reply_voice', 'failure', 'waiting', 'retry_at')
  redis.call('HSET', key, 'message', placeholder, 'customer', '')
  redis.call('ZREM', p .. ':finished', id)
  redis.call('ZADD', p .. ':erased', at, id)
  erased = erased + 1
end
local deleted = 0
local gone = redis.call('ZRANGEBYSCORE', p .. ':erased', '-inf', '(' .. ids, 'LIMIT', 0, batch)
for _, id in ipairs(gone) do
  redis.call('DEL', p .. ':msg:' .. id)
  redis.call('ZREM', p .. ':erased', id)
  deleted = deleted + 1
end
return {erased, deleted}
"#;

/// A deferred turn. ARGV: prefix, wamid, now, reason, retry_at, voice
/// ('' keeps the voice kept before). Same returns as [`ADVANCE`].
const DEFER: &str = r#"
local p, id, now = ARGV[1], ARGV[2], ARGV[3]
local key = p .. ':msg:' .. id
local current = redis.call('HGET', key, 'state')
if not current then return -1 end
if current == 'replied' or current == 'silent' or current == 'failed' then return 0 end
if current ~= 'transcribed' then redis.call('HSET', key, 'state', 'received') end
redis.call('HINCRBY', key, 'attempts', 1)
redis.call('HSET', key, 'waiting', ARGV[4], 'retry_at', ARGV[5], 'updated_at', now)
if ARGV[6] ~= '' then redis.call('HSET', key, 'reply_voice', ARGV[6]) end
return 1
"#;

/// Makes a waiting turn due now. ARGV: prefix, wamid, now. Returns 1 when
/// it waited, else 0.
const RETRY_NOW: &str = r#"
local key = ARGV[1] .. ':msg:' .. ARGV[2]
local state = redis.call('HGET', key, 'state')
if not state or state == 'replied' or state == 'silent' or state == 'failed' then return 0 end
if redis.call('HEXISTS', key, 'waiting') == 0 then return 0 end
redis.call('HSET', key, 'retry_at', ARGV[3], 'updated_at', ARGV[3])
return 1
"#;

/// Erases what is kept about a customer. ARGV: prefix, customer, now.
/// Unfinished turns end failed first; every message keeps only its id; the
/// turns' traces go. Returns {messages, traces}.
const ERASE: &str = r#"
local p, customer, now = ARGV[1], ARGV[2], ARGV[3]
local history = p .. ':history:' .. customer
local ids = redis.call('SMEMBERS', history)
local messages, traces = 0, 0
for _, id in ipairs(ids) do
  local key = p .. ':msg:' .. id
  local state = redis.call('HGET', key, 'state')
  if state then
    local at = redis.call('HGET', key, 'received_at') or now
    if state ~= 'replied' and state ~= 'silent' and state ~= 'failed' then
      redis.call('HSET', key, 'state', 'failed', 'updated_at', now)
      redis.call('ZREM', p .. ':unfinished', id)
    end
    local placeholder = cjson.encode({id = id, from = '', to = '', timestamp = 0,
      profile_name = cjson.null, content = {type = 'unsupported', kind = 'erased'}})
    redis.call('HDEL', key, 'transcript', 'reply_text', 'reply_voice', 'failure', 'waiting', 'retry_at')
    redis.call('HSET', key, 'message', placeholder, 'customer', '')
    redis.call('ZREM', p .. ':finished', id)
    redis.call('ZADD', p .. ':erased', at, id)
    messages = messages + 1
  end
  traces = traces + redis.call('HDEL', p .. ':trace', id)
  redis.call('ZREM', p .. ':traces', id)
end
redis.call('DEL', history, p .. ':customer:' .. customer)
redis.call('SREM', p .. ':busy', customer)
redis.call('HDEL', p .. ':last_heard', customer)
return {messages, traces}
"#;

/// Takes or renews a customer's lease. ARGV: prefix, customer, holder,
/// ttl ms. Returns 1 when `holder` has it now.
const HOLD: &str = r#"
local key = ARGV[1] .. ':lease:' .. ARGV[2]
local current = redis.call('GET', key)
if current and current ~= ARGV[3] then return 0 end
redis.call('SET', key, ARGV[3], 'PX', ARGV[4])
return 1
"#;

/// Extends a lease `holder` still has. ARGV: prefix, customer, holder,
/// ttl ms. Returns 1 when extended, 0 when expired or someone else's.
const RENEW: &str = r#"
local key = ARGV[1] .. ':lease:' .. ARGV[2]
if redis.call('GET', key) ~= ARGV[3] then return 0 end
redis.call('PEXPIRE', key, ARGV[4])
return 1
"#;

/// Gives a lease up if `holder` has it. ARGV: prefix, customer, holder.
const RELEASE: &str = r#"
local key = ARGV[1] .. ':lease:' .. ARGV[2]
if redis.call('GET', key) == ARGV[3] then redis.call('DEL', key) return 1 end
return 0
"#;

/// The customers with unfinished turns, each with its lease's PTTL (-2
/// when nobody holds it). ARGV: prefix.
const BUSY: &str = r#"
local out = {}
for _, customer in ipairs(redis.call('SMEMBERS', ARGV[1] .. ':busy')) do
  out[#out + 1] = {customer, redis.call('PTTL', ARGV[1] .. ':lease:' .. customer)}
end
return out
"#;

/// The customer's earliest unfinished turn whose message is still there.
/// An id whose record vanished (an evicted key) is taken out of the queues
/// so that it does not hold the customer's later messages; a customer left
/// with none is not busy. ARGV: prefix, customer. Returns the id ("" for
/// none) and the ids taken out.
const NEXT_TURN: &str = r#"
local p, customer = ARGV[1], ARGV[2]
local queue = p .. ':customer:' .. customer
local vanished = {}
while true do
  local first = redis.call('ZRANGE', queue, 0, 0)[1]
  if not first then
    redis.call('SREM', p .. ':busy', customer)
    return {'', vanished}
  end
  if redis.call('EXISTS', p .. ':msg:' .. first) == 1 then
    return {first, vanished}
  end
  redis.call('ZREM', queue, first)
  redis.call('ZREM', p .. ':unfinished', first)
  vanished[#vanished + 1] = first
end
"#;

impl RedisStore {
    /// Connects to `config.url`; fails when the server cannot be reached
    /// within `timeout_ms`, naming the URL (without its password).
    pub async fn connect(config: &RedisConfig) -> Result<Self, StoreError> {
        let shown = redacted(&config.url);
        let open = |reason: String| StoreError::Open {
            path: shown.clone().into(),
            reason,
        };
        let client = redis::Client::open(config.url.as_str()).map_err(|e| open(e.to_string()))?;
        let timeout = std::time::Duration::from_millis(config.timeout_ms.max(1));
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(1);
        let conn = tokio::time::timeout(
            timeout,
            ConnectionManager::new_with_config(client.clone(), manager.clone()),
        )
        .await
        .map_err(|_| open(format!("no answer within {} ms", config.timeout_ms)))?
        .map_err(|e| open(e.to_string()))?;
        let waiting = manager.set_response_timeout(Some(timeout + WORK_WAIT));
        let waiter =
            tokio::time::timeout(timeout, ConnectionManager::new_with_config(client, waiting))
                .await
                .map_err(|_| open(format!("no answer within {} ms", config.timeout_ms)))?
                .map_err(|e| open(e.to_string()))?;
        Ok(Self {
            conn,
            waiter,
            prefix: config.prefix.clone(),
            max_statuses: config.max_statuses.max(1),
        })
    }

    fn key(&self, name: &str) -> String {
        format!("{}:{name}", self.prefix)
    }

    fn message_key(&self, wamid: &str) -> String {
        format!("{}:msg:{wamid}", self.prefix)
    }

    async fn read_turn(&self, wamid: &str) -> Result<Option<Turn>, StoreError> {
        let mut conn = self.conn.clone();
        let fields: HashMap<String, Vec<u8>> =
            conn.hgetall(self.message_key(wamid)).await.map_err(db)?;
        if fields.is_empty() {
            return Ok(None);
        }
        turn_from_fields(wamid, fields).map(Some)
    }

    /// Ends an unreadable turn as a dead letter, so that it is not read
    /// again at every restart.
    async fn set_aside(&self, wamid: &str, reason: &str) -> Result<(), StoreError> {
        self.advance(
            wamid,
            Progress::Failed {
                reason,
                dead_letter: true,
            },
        )
        .await
    }
}

#[async_trait::async_trait]
impl super::Backend for RedisStore {
    async fn message_count(&self) -> Result<u64, StoreError> {
        let mut conn = self.conn.clone();
        let counts: (u64, u64, u64) = redis::pipe()
            .zcard(self.key("unfinished"))
            .zcard(self.key("finished"))
            .zcard(self.key("erased"))
            .query_async(&mut conn)
            .await
            .map_err(db)?;
        Ok(counts.0 + counts.1 + counts.2)
    }

    async fn erase_customer(&self, customer: &str) -> Result<super::Erased, StoreError> {
        let mut conn = self.conn.clone();
        let (messages, traces): (usize, usize) = SCRIPTS
            .erase
            .arg(&self.prefix)
            .arg(customer)
            .arg(now())
            .invoke_async(&mut conn)
            .await
            .map_err(db)?;
        // Delivery reports name the customer as recipient: a scan of the
        // capped stream.
        let theirs: Vec<String> = self
            .delivery_reports()
            .await?
            .into_iter()
            .filter(|(_, report)| report["recipient"] == customer)
            .map(|(id, _)| id)
            .collect();
        let statuses = if theirs.is_empty() {
            0
        } else {
            redis::cmd("XDEL")
                .arg(self.key("statuses"))
                .arg(&theirs)
                .query_async(&mut conn)
                .await
                .map_err(db)?
        };
        Ok(super::Erased {
            messages,
            ids: 0,
            statuses,
            traces,
        })
    }

    async fn statuses_of(
        &self,
        message_id: &str,
    ) -> Result<Vec<(String, Option<i64>)>, StoreError> {
        // A scan of the capped stream: for operators and tests, not turns.
        Ok(self
            .delivery_reports()
            .await?
            .into_iter()
            .filter(|(_, report)| report["message_id"] == message_id)
            .map(|(_, report)| {
                let status = report["status"].as_str().unwrap_or_default().to_string();
                (status, report["error"][0].as_i64())
            })
            .collect())
    }

    async fn sweep(
        &self,
        config: &super::StoreConfig,
        now_ms: i64,
    ) -> Result<super::Erased, StoreError> {
        const BATCH: usize = 1_000;
        let day = 86_400_000_i64;
        let before = |days: u64| {
            now_ms.saturating_sub(i64::try_from(days).unwrap_or(i64::MAX).saturating_mul(day))
        };
        let content = before(config.message_retention_days);
        let ids = before(config.id_retention_days);
        let statuses = before(config.status_retention_days);
        let mut conn = self.conn.clone();
        let mut erased = super::Erased::default();
        loop {
            let (messages, deleted): (usize, usize) = SCRIPTS
                .sweep
                .arg(&self.prefix)
                .arg(content)
                .arg(ids)
                .arg(BATCH)
                .invoke_async(&mut conn)
                .await
                .map_err(db)?;
            erased.messages += messages;
            erased.ids += deleted;
            if messages < BATCH && deleted < BATCH {
                break;
            }
        }
        // Stream entry ids begin with their time in ms.
        for stream in ["statuses", "webhook_errors"] {
            let trimmed: usize = redis::cmd("XTRIM")
                .arg(self.key(stream))
                .arg("MINID")
                .arg(statuses.max(0))
                .query_async(&mut conn)
                .await
                .map_err(db)?;
            if stream == "statuses" {
                erased.statuses = trimmed;
            }
        }
        Ok(erased)
    }
}

/// An optional field for [`ADVANCE`]: `=VALUE` sets it, `''` leaves it.
fn set(value: Option<&str>) -> String {
    value.map_or_else(String::new, |v| format!("={v}"))
}

/// `url` with any password replaced, for messages and logs.
fn redacted(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}://***{}", &url[..scheme], &url[at..])
        }
        _ => url.to_string(),
    }
}

fn turn_from_fields(wamid: &str, mut f: HashMap<String, Vec<u8>>) -> Result<Turn, StoreError> {
    let corrupt = |reason: String| StoreError::Corrupt {
        id: wamid.to_string(),
        reason,
    };
    let mut text = |name: &str| -> Result<Option<String>, StoreError> {
        f.remove(name)
            .map(|v| String::from_utf8(v).map_err(|_| corrupt(format!("{name} is not UTF-8"))))
            .transpose()
    };
    let number = |value: Option<String>, name: &str| -> Result<Option<i64>, StoreError> {
        value
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| corrupt(format!("{name} {v:?} is not a number")))
            })
            .transpose()
    };
    let message = text("message")?.ok_or_else(|| corrupt("no message".into()))?;
    let message: InboundMessage =
        serde_json::from_str(&message).map_err(|e| corrupt(e.to_string()))?;
    let state = text("state")?.unwrap_or_default();
    let state = TurnState::parse(&state).ok_or_else(|| corrupt(format!("state {state:?}")))?;
    let seq = number(text("seq")?, "seq")?.ok_or_else(|| corrupt("no seq".into()))?;
    let received_at_ms = number(text("received_at")?, "received_at")?.unwrap_or(0);
    let attempts = number(text("attempts")?, "attempts")?.unwrap_or(0);
    let dead_letter = number(text("dead_letter")?, "dead_letter")?.unwrap_or(0) != 0;
    let retry_at_ms = number(text("retry_at")?, "retry_at")?;
    Ok(Turn {
        seq,
        message,
        state,
        transcript: text("transcript")?,
        reply_text: text("reply_text")?,
        reply_id: text("reply_id")?,
        failure: text("failure")?,
        dead_letter,
        received_at_ms,
        attempts: attempts.clamp(0, i64::from(u32::MAX)) as u32,
        retry_at_ms,
        waiting: text("waiting")?,
        reply_voice: f.remove("reply_voice"),
    })
}

#[async_trait::async_trait]
impl Inbox for RedisStore {
    async fn accept(
        &self,
        messages: &[InboundMessage],
        statuses: &[StatusUpdate],
        errors: &[(i64, String)],
    ) -> Result<Vec<bool>, StoreError> {
        let mut call = SCRIPTS.accept.prepare_invoke();
        call.arg(&self.prefix)
            .arg(now())
            .arg(self.max_statuses)
            .arg(messages.len());
        for m in messages {
            let json = serde_json::to_string(m).map_err(|e| StoreError::Database(e.to_string()))?;
            call.arg(&m.id).arg(&m.from).arg(json);
        }
        call.arg(statuses.len());
        for s in statuses {
            let json = serde_json::json!({
                "message_id": s.message_id,
                "status": s.status,
                "recipient": s.recipient,
                "timestamp": s.timestamp,
                "error": s.error,
            });
            call.arg(json.to_string());
        }
        call.arg(errors.len());
        for (code, title) in errors {
            call.arg(serde_json::json!({ "code": code, "title": title }).to_string());
        }
        let mut conn = self.conn.clone();
        let fresh: Vec<i64> = call.invoke_async(&mut conn).await.map_err(db)?;
        Ok(fresh.into_iter().map(|f| f == 1).collect())
    }
}

#[async_trait::async_trait]
impl Queue for RedisStore {
    async fn unfinished(&self) -> Result<Vec<Turn>, StoreError> {
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrange(self.key("unfinished"), 0, -1)
            .await
            .map_err(db)?;
        let mut turns = Vec::with_capacity(ids.len());
        for id in ids {
            match self.read_turn(&id).await {
                Ok(Some(turn)) => turns.push(turn),
                // Listed but gone: nothing to resume.
                Ok(None) => {
                    let _: Result<i64, _> = conn.zrem(self.key("unfinished"), &id).await;
                }
                // One bad entry must not stop every other customer's turns.
                Err(StoreError::Corrupt { id, reason }) => {
                    tracing::error!(wamid = %id, %reason, "unreadable turn skipped");
                    let reason = format!("unreadable in the store: {reason}");
                    if let Err(e) = self.set_aside(&id, &reason).await {
                        tracing::error!(wamid = %id, error = %e, "could not set the unreadable turn aside");
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Ok(turns)
    }

    async fn turn(&self, message_id: &str) -> Result<Turn, StoreError> {
        self.read_turn(message_id)
            .await?
            .ok_or_else(|| StoreError::NotFound(message_id.to_string()))
    }

    async fn advance(&self, message_id: &str, progress: Progress<'_>) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let applied: i64 = match progress {
            Progress::Deferred {
                reason,
                retry_at_ms,
                voice,
            } => {
                SCRIPTS
                    .defer
                    .arg(&self.prefix)
                    .arg(message_id)
                    .arg(now())
                    .arg(reason)
                    .arg(retry_at_ms)
                    .arg(voice.unwrap_or_default())
                    .invoke_async(&mut conn)
                    .await
            }
            step => {
                let (state, transcript, reply, reply_id, failure, dead_letter) = match step {
                    Progress::Fetching => (TurnState::Fetching, None, None, None, None, false),
                    Progress::Understood { transcript, reply } => (
                        TurnState::Transcribed,
                        transcript,
                        Some(reply),
                        None,
                        None,
                        false,
                    ),
                    Progress::ReplyAccepted { reply_id } => {
                        (TurnState::Replied, None, None, Some(reply_id), None, false)
                    }
                    Progress::NothingToSend => (TurnState::Silent, None, None, None, None, false),
                    Progress::Failed {
                        reason,
                        dead_letter,
                    } => (
                        TurnState::Failed,
                        None,
                        None,
                        None,
                        Some(reason),
                        dead_letter,
                    ),
                    Progress::Deferred { .. } => unreachable!("matched above"),
                };
                SCRIPTS
                    .advance
                    .arg(&self.prefix)
                    .arg(message_id)
                    .arg(now())
                    .arg(state.name())
                    .arg(set(transcript))
                    .arg(set(reply))
                    .arg(set(reply_id))
                    .arg(set(failure))
                    .arg(i64::from(dead_letter))
                    .invoke_async(&mut conn)
                    .await
            }
        }
        .map_err(db)?;
        match applied {
            -1 => Err(StoreError::NotFound(message_id.to_string())),
            _ => Ok(()),
        }
    }

    async fn last_heard(&self, customer: &str) -> Result<Option<i64>, StoreError> {
        let mut conn = self.conn.clone();
        conn.hget(self.key("last_heard"), customer)
            .await
            .map_err(db)
    }

    async fn retry_now(&self, message_id: &str) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let applied: i64 = SCRIPTS
            .retry_now
            .arg(&self.prefix)
            .arg(message_id)
            .arg(now())
            .invoke_async(&mut conn)
            .await
            .map_err(db)?;
        Ok(applied == 1)
    }
}

#[async_trait::async_trait]
impl Store for RedisStore {
    async fn check_writable(&self) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        conn.set(self.key("health"), now()).await.map_err(db)
    }
}

#[async_trait::async_trait]
impl super::Traces for RedisStore {
    async fn save_trace(&self, trace: &TurnTrace) -> Result<(), StoreError> {
        let json = serde_json::to_string(trace)
            .map_err(|e| StoreError::Database(format!("trace not serialisable: {e}")))?;
        let mut conn = self.conn.clone();
        redis::pipe()
            .atomic()
            .zadd(self.key("traces"), &trace.message_id, trace.started_unix_ms)
            .hset(self.key("trace"), &trace.message_id, json)
            .query_async::<()>(&mut conn)
            .await
            .map_err(db)
    }

    async fn recent_traces(&self, limit: usize) -> Result<Vec<TurnTrace>, StoreError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let limit = limit.min(10_000);
        let mut conn = self.conn.clone();
        let ids: Vec<String> = conn
            .zrevrange(self.key("traces"), 0, limit as isize - 1)
            .await
            .map_err(db)?;
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let jsons: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key("trace"))
            .arg(&ids)
            .query_async(&mut conn)
            .await
            .map_err(db)?;
        let mut traces = Vec::with_capacity(ids.len());
        for (id, json) in ids.iter().zip(jsons) {
            let Some(json) = json else { continue };
            match serde_json::from_str(&json) {
                Ok(t) => traces.push(t),
                // One unreadable trace (written by another version) must
                // not hide the others.
                Err(e) => tracing::warn!(message_id = %id, error = %e, "unreadable trace skipped"),
            }
        }
        Ok(traces)
    }

    async fn prune_traces(&self, before_unix_ms: i64) -> Result<usize, StoreError> {
        let mut conn = self.conn.clone();
        let old: Vec<String> = conn
            .zrangebyscore(self.key("traces"), "-inf", format!("({before_unix_ms}"))
            .await
            .map_err(db)?;
        if old.is_empty() {
            return Ok(0);
        }
        redis::pipe()
            .atomic()
            .zrem(self.key("traces"), &old)
            .hdel(self.key("trace"), &old)
            .query_async::<()>(&mut conn)
            .await
            .map_err(db)?;
        Ok(old.len())
    }
}

impl RedisStore {
    /// Every delivery report in the capped stream, with its entry id; a
    /// report that does not parse is skipped.
    async fn delivery_reports(&self) -> Result<Vec<(String, serde_json::Value)>, StoreError> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, HashMap<String, String>)> = redis::cmd("XRANGE")
            .arg(self.key("statuses"))
            .arg("-")
            .arg("+")
            .query_async(&mut conn)
            .await
            .map_err(db)?;
        Ok(entries
            .into_iter()
            .filter_map(|(id, fields)| {
                let report = serde_json::from_str(fields.get("json")?).ok()?;
                Some((id, report))
            })
            .collect())
    }

    /// Runs [`HOLD`] or [`RENEW`]; `true` when `holder` has the lease after.
    async fn lease_step(
        &self,
        script: &Script,
        customer: &str,
        holder: &str,
        ttl_ms: u64,
    ) -> Result<bool, StoreError> {
        let mut conn = self.conn.clone();
        let done: i64 = script
            .arg(&self.prefix)
            .arg(customer)
            .arg(holder)
            .arg(ttl_ms.max(1))
            .invoke_async(&mut conn)
            .await
            .map_err(db)?;
        Ok(done == 1)
    }
}

/// The longest a worker blocks on the work stream before looking again.
const WORK_WAIT: std::time::Duration = std::time::Duration::from_millis(1_000);

#[async_trait::async_trait]
impl super::Leases for RedisStore {
    async fn hold(&self, customer: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        self.lease_step(&SCRIPTS.hold, customer, holder, ttl_ms)
            .await
    }

    async fn renew(&self, customer: &str, holder: &str, ttl_ms: u64) -> Result<bool, StoreError> {
        self.lease_step(&SCRIPTS.renew, customer, holder, ttl_ms)
            .await
    }

    async fn release(&self, customer: &str, holder: &str) -> Result<(), StoreError> {
        let mut conn = self.conn.clone();
        let _: i64 = SCRIPTS
            .release
            .arg(&self.prefix)
            .arg(customer)
            .arg(holder)
            .invoke_async(&mut conn)
            .await
            .map_err(db)?;
        Ok(())
    }

    async fn next_turn(&self, customer: &str) -> Result<Option<String>, StoreError> {
        let mut conn = self.conn.clone();
        let (first, vanished): (String, Vec<String>) = SCRIPTS
            .next_turn
            .arg(&self.prefix)
            .arg(customer)
            .invoke_async(&mut conn)
            .await
            .map_err(db)?;
        for id in vanished {
            tracing::error!(
                message_id = %id,
                "a queued message's record is gone from Redis (evicted? run with maxmemory-policy noeviction); \
                 it cannot be answered and no longer holds the customer's later messages"
            );
        }
        Ok((!first.is_empty()).then_some(first))
    }

    async fn busy(&self) -> Result<Vec<super::Busy>, StoreError> {
        let mut conn = self.conn.clone();
        let pairs: Vec<(String, i64)> = SCRIPTS
            .busy
            .arg(&self.prefix)
            .invoke_async(&mut conn)
            .await
            .map_err(db)?;
        Ok(pairs
            .into_iter()
            .map(|(customer, pttl)| super::Busy {
                customer,
                // -2: no lease; -1 (a lease without expiry) is never set.
                held_for_ms: u64::try_from(pttl).ok(),
            })
            .collect())
    }

    async fn wait_for_work(&self, after: &str) -> Result<(String, Vec<String>), StoreError> {
        type Entries = Vec<(String, Vec<(String, HashMap<String, String>)>)>;
        let mut conn = self.waiter.clone();
        let read: Option<Entries> = redis::cmd("XREAD")
            .arg("COUNT")
            .arg(1000)
            .arg("BLOCK")
            .arg(WORK_WAIT.as_millis() as u64)
            .arg("STREAMS")
            .arg(self.key("work"))
            .arg(after)
            .query_async(&mut conn)
            .await
            .map_err(db)?;
        let mut last = after.to_string();
        let mut customers = Vec::new();
        for (_, entries) in read.unwrap_or_default() {
            for (id, fields) in entries {
                last = id;
                if let Some(customer) = fields.get("customer") {
                    if !customers.contains(customer) {
                        customers.push(customer.clone());
                    }
                }
            }
        }
        Ok((last, customers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_reaches_a_message() {
        assert_eq!(
            redacted("redis://:hunter2@10.0.0.5:6379/1"),
            "redis://***@10.0.0.5:6379/1"
        );
        assert_eq!(redacted("redis://127.0.0.1/0"), "redis://127.0.0.1/0");
    }
}
