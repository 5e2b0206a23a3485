//! Per-stage latency budgets and what a turn does when a stage overruns.
//!
//! Each budgeted stage has a deadline in milliseconds and one declared
//! [`Action`]. Budgets are deadlines handed to the stage (a tokio timeout
//! around it, with cancellation reaching work on other threads), not checks
//! made afterwards: a stage that overruns is stopped and the turn carries on
//! with the degraded reply its action names.
//!
//! The budgets in force live in a [`BudgetHandle`]. A turn takes a snapshot
//! when it starts and keeps it to the end, so a reload (SIGHUP or a change
//! of the config file, see [`watch`]) never changes the rules of a turn in
//! flight. A reloaded file that does not parse or [validate](Budgets::validate)
//! is rejected with its reason and the budgets in force stay.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

pub use crate::record::{Action, BudgetStage};

/// One stage's budget: `ms`, plus `per_audio_s_ms` for every second of
/// audio, for the stages whose work grows with it: the customer's note for
/// `decode` and `stt`, the reply's speech for `tts_total` and `encode`
/// (which grow as the audio is produced, so a voice keeps its deadline
/// while it speaks at least that fast).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    pub ms: u64,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub per_audio_s_ms: u64,
    pub action: Action,
}

fn is_zero(v: &u64) -> bool {
    *v == 0
}

impl Budget {
    /// A budget that does not grow with the audio.
    pub const fn fixed(ms: u64, action: Action) -> Self {
        Self {
            ms,
            per_audio_s_ms: 0,
            action,
        }
    }

    /// The base part alone (for a stage whose audio length is unknown).
    pub fn duration(&self) -> Duration {
        Duration::from_millis(self.ms)
    }

    /// The budget for `audio_ms` of audio.
    pub fn for_audio(&self, audio_ms: u64) -> Duration {
        let grown = self.per_audio_s_ms.saturating_mul(audio_ms) / 1000;
        Duration::from_millis(self.ms.saturating_add(grown))
    }
}

/// `[budgets]`: one entry per stage, `stage = { ms = …, action = "…" }`.
/// A stage left out keeps its default.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Budgets {
    stages: BTreeMap<BudgetStage, Budget>,
    /// The text sent by the `hold` action, in every language; `None` (the
    /// default) sends the `holding` template in the conversation's language.
    pub holding_message: Option<String>,
}

/// The English holding message (the `holding` template's English text).
pub const HOLDING_MESSAGE: &str = "One moment, I'm looking into it\u{2026}";

impl Default for Budgets {
    /// Chosen from measurements on the fixtures (see the README's
    /// "Latency budgets"): each is a few times the stage's p95 on this
    /// 2-core machine, so that only a stage in trouble trips it.
    fn default() -> Self {
        use Action::*;
        use BudgetStage::*;
        // (stage, ms, ms per second of the customer's note, action). The
        // per-second parts are for the stages whose work grows with the
        // note; see the README's "Latency budgets" for the measurements.
        let defaults = [
            (Ack, 250, 0, Reject),
            (Fetch, 3_000, 0, RetryThenOutbox),
            (Decode, 500, 20, Apologise),
            (Stt, 3_000, 300, FasterModel),
            (DialogFirstToken, 1_500, 0, NextProvider),
            (DialogTotal, 6_000, 0, Template),
            // The natural voices on 2 cores: Kokoro's first sentence p95
            // 3.7 s (README, "Figures"). A whole reply: 8 s, plus 600 ms
            // for every second spoken
            // (twice Kokoro's real-time factor on 2 cores, 0.30): a 10 s
            // reply has 14 s, and a voice slower than 0.6 of real time
            // eats into the 8 s until it is given up.
            (TtsFirstAudio, 5_000, 0, SendText),
            (TtsTotal, 8_000, 600, SendText),
            // Opus encodes about 200 times faster than real time.
            (Encode, 1_000, 20, SendText),
            (Upload, 5_000, 0, SendText),
            (Send, 10_000, 0, RetryOnce),
            // The typing indicator tells the customer at once that an
            // answer is coming; a holding text only after a long wait.
            (Turn, 8_000, 0, Hold),
        ];
        Self {
            stages: defaults
                .into_iter()
                .map(|(s, ms, per_audio_s_ms, action)| {
                    (
                        s,
                        Budget {
                            ms,
                            per_audio_s_ms,
                            action,
                        },
                    )
                })
                .collect(),
            holding_message: None,
        }
    }
}

/// The largest per-second part: a minute for every second of audio.
const MAX_PER_AUDIO_S_MS: u64 = 60_000;

/// How budgets are written in the config file.
#[derive(Deserialize)]
struct BudgetsFile {
    #[serde(default)]
    holding_message: Option<String>,
    #[serde(flatten)]
    stages: BTreeMap<String, Budget>,
}

impl<'de> Deserialize<'de> for Budgets {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let file = BudgetsFile::deserialize(d)?;
        Budgets::from_parts(file.stages, file.holding_message).map_err(serde::de::Error::custom)
    }
}

impl Budgets {
    fn from_parts(
        stages: BTreeMap<String, Budget>,
        holding_message: Option<String>,
    ) -> Result<Self, String> {
        let mut budgets = Self::default();
        for (name, budget) in stages {
            let stage = BudgetStage::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .ok_or_else(|| {
                    let names: Vec<_> = BudgetStage::ALL.iter().map(|s| s.name()).collect();
                    format!("unknown stage {name:?} (stages: {})", names.join(", "))
                })?;
            budgets.stages.insert(stage, budget);
        }
        if let Some(m) = holding_message {
            budgets.holding_message = Some(m);
        }
        budgets.validate()?;
        Ok(budgets)
    }

    /// Checks what parsing cannot: every budget above zero and below an
    /// hour, each action one its stage can take, a holding message to send.
    pub fn validate(&self) -> Result<(), String> {
        for (stage, b) in &self.stages {
            if b.ms == 0 || b.ms > 3_600_000 {
                return Err(format!(
                    "budgets.{}: {} ms is out of range (1 to 3600000)",
                    stage.name(),
                    b.ms
                ));
            }
            if b.per_audio_s_ms > MAX_PER_AUDIO_S_MS {
                return Err(format!(
                    "budgets.{}: per_audio_s_ms {} is out of range (0 to {MAX_PER_AUDIO_S_MS})",
                    stage.name(),
                    b.per_audio_s_ms
                ));
            }
            if !stage.allowed().contains(&b.action) {
                let allowed: Vec<_> = stage.allowed().iter().map(|a| a.name()).collect();
                return Err(format!(
                    "budgets.{}: action {:?} is not one this stage can take ({})",
                    stage.name(),
                    b.action.name(),
                    allowed.join(", ")
                ));
            }
        }
        if self
            .holding_message
            .as_deref()
            .is_some_and(|m| m.trim().is_empty())
        {
            return Err("budgets.holding_message is empty".into());
        }
        Ok(())
    }

    pub fn get(&self, stage: BudgetStage) -> Budget {
        self.stages[&stage]
    }

    /// Each stage's budget in ms for a turn whose note lasted `note_ms` and
    /// whose spoken reply `reply_ms`: `tts_total` and `encode` grow with the
    /// reply, the others with the note (see [`Budget`]).
    pub fn resolved_ms(&self, note_ms: u64, reply_ms: u64) -> BTreeMap<String, u64> {
        self.stages
            .iter()
            .map(|(s, b)| {
                let audio_ms = match s {
                    BudgetStage::TtsTotal | BudgetStage::Encode => reply_ms,
                    _ => note_ms,
                };
                (
                    s.name().to_string(),
                    b.for_audio(audio_ms).as_millis() as u64,
                )
            })
            .collect()
    }

    /// Sets one budget (tests, the bench's overrides).
    pub fn set(&mut self, stage: BudgetStage, budget: Budget) -> Result<(), String> {
        let old = self.stages.insert(stage, budget);
        if let Err(e) = self.validate() {
            if let Some(old) = old {
                self.stages.insert(stage, old);
            }
            return Err(e);
        }
        Ok(())
    }

    pub fn iter(&self) -> impl Iterator<Item = (BudgetStage, Budget)> + '_ {
        self.stages.iter().map(|(s, b)| (*s, *b))
    }
}

/// The budgets in force, shared by all turns and swapped whole on reload.
#[derive(Debug, Clone)]
pub struct BudgetHandle {
    current: Arc<RwLock<Arc<Budgets>>>,
    reloads: Arc<RwLock<ReloadStatus>>,
}

/// The outcome of the last reload, for the console and the metrics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ReloadStatus {
    pub applied: u64,
    pub rejected: u64,
    /// Why the last rejected reload was rejected.
    pub last_error: Option<String>,
}

impl BudgetHandle {
    pub fn new(budgets: Budgets) -> Self {
        Self {
            current: Arc::new(RwLock::new(Arc::new(budgets))),
            reloads: Arc::default(),
        }
    }

    /// The budgets a turn starting now runs by.
    pub fn snapshot(&self) -> Arc<Budgets> {
        match self.current.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn status(&self) -> ReloadStatus {
        match self.reloads.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Puts `budgets` in force if they validate; else keeps the old ones
    /// and returns why.
    pub fn replace(&self, budgets: Budgets) -> Result<(), String> {
        let checked = budgets.validate();
        let mut status = self.reloads.write().unwrap_or_else(|p| p.into_inner());
        match checked {
            Ok(()) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(budgets);
                status.applied += 1;
                Ok(())
            }
            Err(e) => {
                status.rejected += 1;
                status.last_error = Some(e.clone());
                Err(e)
            }
        }
    }

    /// Reads the `[budgets]` section of `path` and puts it in force. The
    /// rest of the file is not applied (it needs a restart) but must still
    /// parse, so that a broken file is never half-read.
    pub fn reload_from(&self, path: &Path) -> Result<(), String> {
        let parsed = crate::config::Config::from_file(path).map_err(|e| e.to_string());
        match parsed {
            Ok(config) => self.replace(config.budgets),
            Err(e) => {
                let mut status = self.reloads.write().unwrap_or_else(|p| p.into_inner());
                status.rejected += 1;
                status.last_error = Some(e.clone());
                Err(e)
            }
        }
    }
}

/// Reloads the budgets from `path` on SIGHUP and whenever the file's
/// modification time or size changes (checked every `poll`), until `stop`.
pub async fn watch(
    handle: BudgetHandle,
    path: PathBuf,
    poll: Duration,
    stop: tokio_util::sync::CancellationToken,
) {
    let mut changes = changes(path.clone(), poll);
    loop {
        let why = tokio::select! {
            _ = stop.cancelled() => return,
            why = changes.next() => why,
        };
        let reloaded = handle.reload_from(&path);
        crate::metrics::global().reload(reloaded.is_ok());
        match reloaded {
            Ok(()) => tracing::info!(file = %path.display(), why, "budgets reloaded"),
            Err(e) => tracing::error!(
                file = %path.display(),
                why,
                error = %e,
                "budgets not reloaded; the old ones stay in force"
            ),
        }
    }
}

/// The moments a config file should be read again: SIGHUP, or its
/// modification time or length changed (polled every `poll`).
pub struct Changes {
    path: PathBuf,
    poll: Duration,
    seen: Option<(SystemTime, u64)>,
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
}

pub fn changes(path: PathBuf, poll: Duration) -> Changes {
    Changes {
        seen: stamp(&path),
        path,
        poll,
        #[cfg(unix)]
        hup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
    }
}

fn stamp(p: &Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(p).ok()?;
    Some((m.modified().ok()?, m.len()))
}

impl Changes {
    /// Waits for the next change; says why.
    pub async fn next(&mut self) -> &'static str {
        loop {
            #[cfg(unix)]
            let hangup = async {
                match self.hup.as_mut() {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending().await,
                }
            };
            #[cfg(not(unix))]
            let hangup = std::future::pending::<()>();
            tokio::select! {
                _ = hangup => return "SIGHUP",
                _ = tokio::time::sleep(self.poll) => {
                    let now = stamp(&self.path);
                    if now != self.seen {
                        self.seen = now;
                        return "file changed";
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Budgets, String> {
        #[derive(Deserialize)]
        struct Wrap {
            budgets: Budgets,
        }
        toml::from_str::<Wrap>(text)
            .map(|w| w.budgets)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_cover_every_stage_and_validate() {
        let b = Budgets::default();
        b.validate().unwrap();
        for stage in BudgetStage::ALL {
            assert_eq!(b.get(stage).action, stage.allowed()[0], "{stage:?}");
        }
    }

    #[test]
    fn the_speech_grows_with_the_reply_and_the_rest_with_the_note() {
        let ms = Budgets::default().resolved_ms(10_000, 5_000);
        assert_eq!(ms["stt"], 3_000 + 3_000);
        assert_eq!(ms["decode"], 500 + 200);
        assert_eq!(ms["tts_total"], 8_000 + 3_000);
        assert_eq!(ms["encode"], 1_000 + 100);
        assert_eq!(ms["turn"], 8_000);
    }

    #[test]
    fn a_file_overrides_some_stages() {
        let b = parse(
            "[budgets]\nstt = { ms = 900, action = \"ask_for_text\" }\nholding_message = \"Un momento\"\n",
        )
        .unwrap();
        assert_eq!(
            b.get(BudgetStage::Stt),
            Budget::fixed(900, Action::AskForText)
        );
        assert_eq!(
            b.get(BudgetStage::Fetch),
            Budgets::default().get(BudgetStage::Fetch)
        );
        assert_eq!(b.holding_message.as_deref(), Some("Un momento"));
    }

    #[test]
    fn bad_budgets_are_rejected_with_the_reason() {
        let e = parse("[budgets]\nstt = { ms = 900, action = \"hold\" }\n").unwrap_err();
        assert!(
            e.contains("budgets.stt") && e.contains("faster_model"),
            "{e}"
        );
        let e = parse("[budgets]\nstt = { ms = 0, action = \"ask_for_text\" }\n").unwrap_err();
        assert!(e.contains("out of range"), "{e}");
        let e = parse("[budgets]\nsst = { ms = 10, action = \"ask_for_text\" }\n").unwrap_err();
        assert!(e.contains("unknown stage \"sst\""), "{e}");
        let e =
            parse("[budgets]\nstt = { ms = 10, action = \"ask_for_text\", x = 1 }\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = parse(
            "[budgets]\nstt = { ms = 10, per_audio_s_ms = 100000000, action = \"ask_for_text\" }\n",
        )
        .unwrap_err();
        assert!(
            e.contains("per_audio_s_ms") && e.contains("out of range"),
            "{e}"
        );
    }

    #[test]
    fn a_rejected_replacement_keeps_the_old_budgets() {
        let handle = BudgetHandle::new(Budgets::default());
        let before = handle.snapshot();
        let mut bad = Budgets::default();
        bad.stages
            .insert(BudgetStage::Turn, Budget::fixed(10, Action::SendText));
        assert!(handle.replace(bad).is_err());
        assert_eq!(*handle.snapshot(), *before);
        assert_eq!(handle.status().rejected, 1);
        let mut good = Budgets::default();
        good.set(BudgetStage::Turn, Budget::fixed(10, Action::Hold))
            .unwrap();
        handle.replace(good).unwrap();
        assert_eq!(handle.snapshot().get(BudgetStage::Turn).ms, 10);
        // A turn that took its snapshot earlier keeps its rules.
        assert_eq!(before.get(BudgetStage::Turn).ms, 8_000);
    }
}
