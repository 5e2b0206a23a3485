//! The timing trace of one turn: for each stage, when it started, when it
//! produced its first output, when it ended and how (ok, over its budget
//! with the action taken, or an error with its reason), in ms from the
//! turn's zero, so overlapping stages show as overlapping spans.
//!
//! A service turn's zero is the webhook's arrival; an offline turn's is the
//! moment it starts. The finished trace is a [`TurnTrace`], which the store
//! keeps, the metrics count and the console draws.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::record::{Action, BudgetStage};

pub use crate::record::{Span, SpanOutcome, Stage, TurnEnd, TurnTrace};

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
