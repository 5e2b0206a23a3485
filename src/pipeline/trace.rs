//! The timing trace of one turn: when each stage started and ended, relative
//! to the start of the turn, so overlapping stages show as overlapping spans.

use std::time::{Duration, Instant};

use serde::Serialize;

/// The stages of a turn, in the order a voice note meets them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    Fetch,
    Decode,
    Resample,
    Stt,
    /// Composing the reply text.
    Reply,
    /// Handing the reply to the channel until it accepts it.
    Send,
}

impl Stage {
    pub fn name(self) -> &'static str {
        match self {
            Self::Fetch => "fetch",
            Self::Decode => "decode",
            Self::Resample => "resample",
            Self::Stt => "stt",
            Self::Reply => "reply",
            Self::Send => "send",
        }
    }
}

/// One stage's span, in ms from the start of the turn.
#[derive(Debug, Clone, Serialize)]
pub struct Span {
    pub stage: Stage,
    pub start_ms: f64,
    pub end_ms: f64,
}

impl Span {
    pub fn duration_ms(&self) -> f64 {
        self.end_ms - self.start_ms
    }
}

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
        Self {
            started: Instant::now(),
            spans: Vec::new(),
        }
    }

    /// Records a stage that ran from `start` to `end`.
    pub fn record(&mut self, stage: Stage, start: Instant, end: Instant) {
        self.spans.push(Span {
            stage,
            start_ms: ms(start.saturating_duration_since(self.started)),
            end_ms: ms(end.saturating_duration_since(self.started)),
        });
    }

    /// Records a stage measured elsewhere as a duration, placed right after
    /// the previous span.
    pub fn record_span(&mut self, stage: Stage, duration: Duration) {
        let start_ms = self.spans.last().map_or(0.0, |s| s.end_ms);
        self.spans.push(Span {
            stage,
            start_ms,
            end_ms: start_ms + ms(duration),
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

    /// Wall time from the start of the turn to the end of the last span.
    pub fn total_ms(&self) -> f64 {
        self.spans.iter().map(|s| s.end_ms).fold(0.0, f64::max)
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
    }
}
