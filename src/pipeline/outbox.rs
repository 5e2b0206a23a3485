//! The outbox: turns that could not finish for a reason that passes wait in
//! the store and are tried again, across restarts, while the customer
//! service window is open.
//!
//! A turn is *deferred* (never failed) when the Graph API answers 5xx, times
//! out, resets, rate-limits (130429, 131056), rejects the access token (190),
//! or when the voice note's download fails that way. The turn keeps what it
//! has done: a reply already composed is kept with its voice note, so a
//! retry sends the same reply without running the dialog or speaking again;
//! a note not yet heard is fetched again from its media id (Meta keeps media
//! for 30 days). Each deferral waits longer, exponentially from
//! `retry_base_ms` to `retry_max_ms`, with jitter; while the token is
//! rejected the wait stays at `retry_base_ms`, since a try costs nothing
//! then (the client fails at once without the network) and the turn should
//! go out as soon as a new token is loaded.
//!
//! The customer service window runs `window_hours` (24) from the customer's
//! newest message; past it WhatsApp refuses free-form replies (131047), so a
//! turn still waiting then fails with the reason.
//!
//! A customer's later messages wait behind a deferred one: answers go out in
//! the order the questions came.

use std::time::Duration;

use serde::Deserialize;

/// `[outbox]` in `voxline.toml`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OutboxConfig {
    /// First wait after a deferral. Default 2000 ms.
    pub retry_base_ms: u64,
    /// Longest wait between tries. Default 60 000 ms.
    pub retry_max_ms: u64,
    /// How long after the customer's newest message a reply may still go
    /// out. Default 24 (WhatsApp's customer service window).
    pub window_hours: u64,
}

impl Default for OutboxConfig {
    fn default() -> Self {
        Self {
            retry_base_ms: 2_000,
            retry_max_ms: 60_000,
            window_hours: 24,
        }
    }
}

/// What stopped a turn for now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// The reply could not be delivered (upload or send).
    Send,
    /// The voice note could not be fetched.
    Fetch,
    /// The access token was rejected: nothing goes out until a new one.
    Paused,
}

impl Hold {
    pub fn name(self) -> &'static str {
        match self {
            Self::Send => "send",
            Self::Fetch => "fetch",
            Self::Paused => "paused",
        }
    }
}

/// When a deferred turn is tried again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Try again at this Unix ms.
    RetryAt(i64),
    /// The customer service window has closed: give up.
    WindowClosed,
}

impl OutboxConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.retry_base_ms == 0 || self.retry_max_ms < self.retry_base_ms {
            return Err("outbox: retry_base_ms must be at least 1 and at most retry_max_ms".into());
        }
        if self.window_hours == 0 {
            return Err("outbox: window_hours must be at least 1".into());
        }
        Ok(())
    }

    pub fn window(&self) -> Duration {
        Duration::from_secs(self.window_hours.saturating_mul(3600))
    }

    /// The wait before try `attempt + 1` (`attempt` counts deferrals, from
    /// 1): exponential, capped, jittered over its upper half.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let exp = self
            .retry_base_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(30))
            .min(self.retry_max_ms);
        let half = exp / 2;
        Duration::from_millis(half + crate::channel::random_below(exp - half + 1))
    }

    /// When to try a turn again after its `attempt`th deferral for `hold`,
    /// at `now_ms`, the customer having last written at `last_heard_ms`.
    pub fn next(&self, hold: Hold, attempt: u32, now_ms: i64, last_heard_ms: i64) -> Next {
        let closes = last_heard_ms.saturating_add(self.window().as_millis() as i64);
        if now_ms >= closes {
            return Next::WindowClosed;
        }
        let wait = match hold {
            Hold::Paused => Duration::from_millis(self.retry_base_ms),
            Hold::Send | Hold::Fetch => self.backoff(attempt),
        };
        Next::RetryAt(now_ms.saturating_add(wait.as_millis() as i64).min(closes))
    }
}

/// `voxline outbox list`: what waits, why, and when it is tried next.
pub async fn list(
    store: &dyn crate::store::Queue,
    json: bool,
    out: &mut impl std::io::Write,
) -> Result<usize, Box<dyn std::error::Error>> {
    let waiting = store.waiting().await?;
    let now = crate::pipeline::turn::unix_ms();
    if json {
        let rows: Vec<_> = waiting
            .iter()
            .map(|t| {
                serde_json::json!({
                    "id": t.message.id,
                    "customer": t.message.from,
                    "state": t.state.name(),
                    "attempts": t.attempts,
                    "age_s": now.saturating_sub(t.received_at_ms) / 1000,
                    "next_try_in_s": t.retry_at_ms.map(|r| (r - now).max(0) / 1000),
                    "reason": t.waiting,
                })
            })
            .collect();
        writeln!(out, "{}", serde_json::Value::Array(rows))?;
        return Ok(waiting.len());
    }
    if waiting.is_empty() {
        writeln!(out, "the outbox is empty")?;
        return Ok(0);
    }
    writeln!(
        out,
        "{:<28} {:<14} {:<11} {:>5} {:>8} {:>9}  reason",
        "id", "customer", "state", "tries", "age", "next try"
    )?;
    for t in &waiting {
        let next = t
            .retry_at_ms
            .map_or("-".to_string(), |r| format!("{}s", (r - now).max(0) / 1000));
        writeln!(
            out,
            "{:<28} {:<14} {:<11} {:>5} {:>7}s {:>9}  {}",
            t.message.id,
            crate::channel::mask_number(&t.message.from),
            t.state.name(),
            t.attempts,
            now.saturating_sub(t.received_at_ms) / 1000,
            next,
            t.waiting.as_deref().unwrap_or("")
        )?;
    }
    Ok(waiting.len())
}

/// `voxline outbox retry ID`: makes a waiting turn due now; the running
/// service picks it up within a second. `false` when it does not wait.
pub async fn retry(
    store: &dyn crate::store::Queue,
    id: &str,
) -> Result<bool, crate::store::StoreError> {
    store.retry_now(id).await
}

/// `voxline outbox drop ID`: gives a waiting turn up; it ends failed with
/// the reason "dropped by an operator". `false` when it does not wait.
pub async fn drop_turn(
    store: &dyn crate::store::Queue,
    id: &str,
) -> Result<bool, crate::store::StoreError> {
    use crate::store::Progress;
    let turn = store.turn(id).await?;
    if turn.state.is_final() || turn.waiting.is_none() {
        return Ok(false);
    }
    store
        .advance(
            id,
            Progress::Failed {
                reason: "dropped from the outbox by an operator",
                dead_letter: false,
            },
        )
        .await?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_grow_to_the_cap_with_jitter() {
        let c = OutboxConfig::default();
        for attempt in 1..12 {
            let d = c.backoff(attempt).as_millis() as u64;
            let exp = (2_000u64 << (attempt - 1)).min(60_000);
            assert!(d >= exp / 2 && d <= exp, "attempt {attempt}: {d}");
        }
    }

    #[test]
    fn the_window_bounds_every_wait() {
        let c = OutboxConfig::default();
        let heard = 1_000_000;
        let day = 24 * 3600 * 1000;
        // Just before the window closes, the retry is due at the latest
        // when it closes.
        match c.next(Hold::Send, 20, heard + day - 10, heard) {
            Next::RetryAt(at) => assert_eq!(at, heard + day),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            c.next(Hold::Send, 1, heard + day, heard),
            Next::WindowClosed
        );
        // While the token is rejected the wait does not grow.
        match c.next(Hold::Paused, 30, heard + 5, heard) {
            Next::RetryAt(at) => assert_eq!(at, heard + 5 + 2_000),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn bad_settings_are_refused() {
        let c = OutboxConfig {
            retry_base_ms: 10,
            retry_max_ms: 5,
            window_hours: 24,
        };
        assert!(c.validate().is_err());
        assert!(OutboxConfig {
            window_hours: 0,
            ..OutboxConfig::default()
        }
        .validate()
        .is_err());
    }
}
