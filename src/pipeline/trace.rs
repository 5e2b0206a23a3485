//! The timing trace of one turn: for each stage, when it started, when it
//! produced its first output, when it ended and how (ok, over its budget
//! with the action taken, or an error with its reason), in ms from the
//! turn's zero, so overlapping stages show as overlapping spans.
//!
//! A service turn's zero is the webhook's arrival; an offline turn's is the
//! moment it starts. The finished trace is a [`TurnTrace`], which the store
//! keeps, the metrics count and the console draws.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::budget::{Action, BudgetStage};

/// The stages of a turn, in the order a voice note meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// The webhook: arrival to the 200, the inbox commit included.
    Ack,
    /// Waiting for a worker and for the customer's earlier turns.
    Queue,
    Fetch,
    Decode,
    Resample,
    Stt,
    /// Composing the reply: first output is the first reply text.
    Dialog,
    /// Speech synthesis: first output is the first audio.
    Tts,
    /// Ogg/Opus packing; it overlaps speech, its end is the finished note.
    Encode,
    /// The voice note's upload to the channel.
    Upload,
    /// The holding message of the turn budget's `hold` action.
    Hold,
    /// Handing the reply to the channel until it accepts it.
    Send,
}

impl Stage {
    pub const ALL: [Stage; 12] = [
        Self::Ack,
        Self::Queue,
        Self::Fetch,
        Self::Decode,
        Self::Resample,
        Self::Stt,
        Self::Dialog,
        Self::Tts,
        Self::Encode,
        Self::Upload,
        Self::Hold,
        Self::Send,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Queue => "queue",
            Self::Fetch => "fetch",
            Self::Decode => "decode",
            Self::Resample => "resample",
            Self::Stt => "stt",
            Self::Dialog => "dialog",
            Self::Tts => "tts",
            Self::Encode => "encode",
            Self::Upload => "upload",
            Self::Hold => "hold",
            Self::Send => "send",
        }
    }
}

/// How a stage ended.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SpanOutcome {
    #[default]
    Ok,
    /// The stage ran into `budget` and the turn took `action`.
    Overrun {
        budget: BudgetStage,
        action: Action,
    },
    Error {
        reason: String,
    },
}

impl SpanOutcome {
    pub fn name(&self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Overrun { .. } => "overrun",
            Self::Error { .. } => "error",
        }
    }
}

/// One stage's span, in ms from the turn's zero.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Span {
    pub stage: Stage,
    pub start_ms: f64,
    /// When the stage produced its first output, for stages that stream.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_ms: Option<f64>,
    pub end_ms: f64,
    #[serde(default)]
    pub outcome: SpanOutcome,
}

impl Span {
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }

    /// Time to first output, when the stage streams.
    pub fn first_output_ms(&self) -> Option<f64> {
        self.first_ms.map(|f| f - self.start_ms)
    }
}

/// The spans of a turn in the making.
#[derive(Debug, Clone, Serialize)]
pub struct Trace {
    #[serde(skip)]
    started: Instant,
    pub spans: Vec<Span>,
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

impl Trace {
    pub fn start() -> Self {
        Self::starting_at(Instant::now())
    }

    /// A trace whose zero is `zero` (the webhook's arrival).
    pub fn starting_at(zero: Instant) -> Self {
        Self {
            started: zero,
            spans: Vec::new(),
        }
    }

    pub fn zero(&self) -> Instant {
        self.started
    }

    /// ms from the turn's zero to `at`.
    pub fn at(&self, at: Instant) -> f64 {
        ms(at.saturating_duration_since(self.started))
    }

    /// ms from the turn's zero to now.
    pub fn now_ms(&self) -> f64 {
        self.at(Instant::now())
    }

    /// Records a stage that ran from `start` to `end` and went well.
    pub fn record(&mut self, stage: Stage, start: Instant, end: Instant) {
        self.record_full(stage, start, None, end, SpanOutcome::Ok);
    }

    /// Records a stage with everything known about it.
    pub fn record_full(
        &mut self,
        stage: Stage,
        start: Instant,
        first: Option<Instant>,
        end: Instant,
        outcome: SpanOutcome,
    ) {
        let span = Span {
            stage,
            start_ms: self.at(start),
            first_ms: first.map(|f| self.at(f)),
            end_ms: self.at(end),
            outcome,
        };
        self.spans.push(span);
    }

    /// Records a stage measured elsewhere as a duration, placed right after
    /// the previous span.
    pub fn record_span(&mut self, stage: Stage, duration: Duration) {
        let start_ms = self.spans.last().map_or(0.0, |s| s.end_ms);
        self.spans.push(Span {
            stage,
            start_ms,
            first_ms: None,
            end_ms: start_ms + ms(duration),
            outcome: SpanOutcome::Ok,
        });
    }

    /// Total ms spent in `stage` (0 when it did not run).
    pub fn stage_ms(&self, stage: Stage) -> f64 {
        self.spans
            .iter()
            .filter(|s| s.stage == stage)
            .map(Span::duration_ms)
            .sum()
    }

    /// The last span of `stage`.
    pub fn span(&self, stage: Stage) -> Option<&Span> {
        self.spans.iter().rev().find(|s| s.stage == stage)
    }

    /// Wall time from the turn's zero to the end of the last span.
    pub fn total_ms(&self) -> f64 {
        self.spans.iter().map(|s| s.end_ms).fold(0.0, f64::max)
    }

    /// The sum of the stages' own times: what the turn would take if none
    /// overlapped (the queue wait and the holding message left out).
    pub fn sequential_ms(&self) -> f64 {
        self.spans
            .iter()
            .filter(|s| !matches!(s.stage, Stage::Queue | Stage::Hold))
            .map(Span::duration_ms)
            .sum()
    }

    /// The overruns in this trace, in order.
    pub fn overruns(&self) -> impl Iterator<Item = (BudgetStage, Action)> + '_ {
        self.spans.iter().filter_map(|s| match s.outcome {
            SpanOutcome::Overrun { budget, action } => Some((budget, action)),
            _ => None,
        })
    }
}

/// How a turn ended, as the trace keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TurnEnd {
    /// A voice note went out.
    Voice,
    /// A text went out.
    Text,
    /// Nothing was to be sent (STOP, a person has the conversation).
    Silent,
    Failed,
}

impl TurnEnd {
    pub fn name(self) -> &'static str {
        match self {
            Self::Voice => "voice",
            Self::Text => "text",
            Self::Silent => "silent",
            Self::Failed => "failed",
        }
    }
}

/// A finished turn's trace with what the console and the metrics need.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnTrace {
    pub message_id: String,
    pub from: String,
    /// "audio", "text", ...
    pub kind: String,
    /// Unix time of the turn's zero, in ms.
    pub started_unix_ms: i64,
    pub spans: Vec<Span>,
    /// From the turn's zero to the reply's send call (or the turn's end
    /// when nothing was sent).
    pub turn_ms: f64,
    /// The sum of the stages' own times (see [`Trace::sequential_ms`]).
    pub sequential_ms: f64,
    pub end: TurnEnd,
    #[serde(default)]
    pub transcript: Option<String>,
    #[serde(default)]
    pub language: Option<String>,
    #[serde(default)]
    pub intent: Option<String>,
    /// Answered without the LLM.
    #[serde(default)]
    pub fast_path: Option<bool>,
    #[serde(default)]
    pub reply_text: Option<String>,
    #[serde(default)]
    pub reply_bytes: Option<usize>,
    /// Length of the customer's voice note.
    #[serde(default)]
    pub audio_ms: Option<f64>,
    /// Why the turn failed, or why the reply degraded.
    #[serde(default)]
    pub note: Option<String>,
    /// How the note's language and model were chosen, and why.
    #[serde(default)]
    pub routing: Option<String>,
    /// The budgets the turn ran by, stage name to ms.
    #[serde(default)]
    pub budgets_ms: std::collections::BTreeMap<String, u64>,
}

impl TurnTrace {
    pub fn span(&self, stage: Stage) -> Option<&Span> {
        self.spans.iter().rev().find(|s| s.stage == stage)
    }

    /// STT time over audio time, when the turn transcribed a note.
    pub fn stt_real_time_factor(&self) -> Option<f64> {
        let audio = self.audio_ms.filter(|a| *a > 0.0)?;
        let stt = self.span(Stage::Stt)?;
        Some(stt.duration_ms() / audio)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_accumulate_per_stage() {
        let mut t = Trace::start();
        t.record_span(Stage::Decode, Duration::from_millis(4));
        t.record_span(Stage::Resample, Duration::from_millis(2));
        assert_eq!(t.stage_ms(Stage::Decode), 4.0);
        assert_eq!(t.spans[1].start_ms, 4.0);
        assert_eq!(t.total_ms(), 6.0);
        assert_eq!(t.stage_ms(Stage::Stt), 0.0);
        assert_eq!(t.sequential_ms(), 6.0);
    }

    #[test]
    fn overlapping_spans_take_less_than_their_sum() {
        let zero = Instant::now();
        let mut t = Trace::starting_at(zero);
        let at = |ms| zero + Duration::from_millis(ms);
        t.record_full(
            Stage::Dialog,
            at(0),
            Some(at(100)),
            at(500),
            SpanOutcome::Ok,
        );
        t.record_full(
            Stage::Tts,
            at(100),
            Some(at(150)),
            at(520),
            SpanOutcome::Overrun {
                budget: BudgetStage::TtsTotal,
                action: Action::SendText,
            },
        );
        assert_eq!(t.total_ms(), 520.0);
        assert_eq!(t.sequential_ms(), 920.0);
        assert_eq!(t.spans[1].first_output_ms(), Some(50.0));
        let overruns: Vec<_> = t.overruns().collect();
        assert_eq!(overruns, vec![(BudgetStage::TtsTotal, Action::SendText)]);
        let json = serde_json::to_string(&t.spans[1]).unwrap();
        assert!(
            json.contains(
                r#""outcome":{"kind":"overrun","budget":"tts_total","action":"send_text"}"#
            ),
            "{json}"
        );
        let back: Span = serde_json::from_str(&json).unwrap();
        assert_eq!(back, t.spans[1]);
    }
}
