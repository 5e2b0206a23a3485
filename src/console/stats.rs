//! The console's latency figures over recent turns: p50, p95 and p99 per
//! budgeted stage (with its budget) and per span stage, the overruns by
//! stage and action, and the fast path's share. A pure function of the
//! traces and the budgets, so it is tested without a server.
//!
//! Percentiles are by nearest rank: the value at rank ⌈p/100 · n⌉ of the
//! sorted samples. Every figure is a time a turn really took, never a value
//! between two turns, which is what an operator comparing against a budget
//! wants; with few turns p95 and p99 are simply the slowest one.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::pipeline::budget::{BudgetStage, Budgets};
use crate::record::{SpanOutcome, Stage, TurnTrace};

/// Everything `GET /console/api/stats` answers.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Stats {
    /// How many turns the figures are over.
    pub turns: usize,
    /// How the percentiles are taken.
    pub percentile_method: &'static str,
    /// One row per budgeted stage, in [`BudgetStage::ALL`] order.
    pub budgets: Vec<BudgetRow>,
    /// One row per span stage that ran in any of the turns, in
    /// [`Stage::ALL`] order: the total time a turn spent in it.
    pub spans: Vec<SpanRow>,
    /// Overruns by budget and action, most frequent first.
    pub overruns: Vec<OverrunCount>,
    /// Spans that ended in an error, by stage.
    pub errors: Vec<ErrorCount>,
    /// How the turns ended: voice, text, silent, failed.
    pub ends: BTreeMap<String, usize>,
    pub fast_path: FastPath,
}

/// Percentiles of a set of samples, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Percentiles {
    pub count: usize,
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BudgetRow {
    pub stage: &'static str,
    #[serde(flatten)]
    pub figures: Percentiles,
    /// The budget in force.
    pub budget_ms: u64,
    pub action: &'static str,
    /// Samples above the budget.
    pub over_budget: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SpanRow {
    pub stage: &'static str,
    #[serde(flatten)]
    pub figures: Percentiles,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OverrunCount {
    pub stage: &'static str,
    pub action: &'static str,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorCount {
    pub stage: &'static str,
    pub count: usize,
}

/// Turns answered without the LLM against those that used it; turns that
/// did not say (a failed fetch, a silent turn) are left out of the share.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct FastPath {
    pub fast: usize,
    pub llm: usize,
    /// `fast / (fast + llm)`, none when no turn said.
    pub share: Option<f64>,
}

/// The value at nearest rank ⌈p/100 · n⌉ of `sorted` (ascending).
pub fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

/// Percentiles of `samples`; non-finite samples are dropped.
pub fn percentiles(samples: &[f64]) -> Percentiles {
    let mut sorted: Vec<f64> = samples.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    Percentiles {
        count: sorted.len(),
        p50: nearest_rank(&sorted, 50.0),
        p95: nearest_rank(&sorted, 95.0),
        p99: nearest_rank(&sorted, 99.0),
        max: sorted.last().copied(),
    }
}

/// Total ms the turn spent in `stage`, none when the stage did not run.
fn stage_total(turn: &TurnTrace, stage: Stage) -> Option<f64> {
    let mut spans = turn.spans.iter().filter(|s| s.stage == stage).peekable();
    spans.peek()?;
    Some(spans.map(|s| s.duration_ms()).sum())
}

/// Time to the first output of the turn's last `stage` span.
fn first_output(turn: &TurnTrace, stage: Stage) -> Option<f64> {
    turn.span(stage)?.first_output_ms()
}

/// The value a turn gives a budgeted stage, from its spans. A stage that
/// ran more than once (a retried fetch or send) counts its total time.
pub fn budget_sample(turn: &TurnTrace, stage: BudgetStage) -> Option<f64> {
    match stage {
        BudgetStage::Ack => stage_total(turn, Stage::Ack),
        BudgetStage::Fetch => stage_total(turn, Stage::Fetch),
        BudgetStage::Decode => {
            match (
                stage_total(turn, Stage::Decode),
                stage_total(turn, Stage::Resample),
            ) {
                (None, None) => None,
                (d, r) => Some(d.unwrap_or(0.0) + r.unwrap_or(0.0)),
            }
        }
        BudgetStage::Stt => stage_total(turn, Stage::Stt),
        BudgetStage::DialogFirstToken => first_output(turn, Stage::Dialog),
        BudgetStage::DialogTotal => stage_total(turn, Stage::Dialog),
        BudgetStage::TtsFirstAudio => first_output(turn, Stage::Tts),
        BudgetStage::TtsTotal => stage_total(turn, Stage::Tts),
        BudgetStage::Encode => stage_total(turn, Stage::Encode),
        BudgetStage::Upload => stage_total(turn, Stage::Upload),
        BudgetStage::Send => stage_total(turn, Stage::Send),
        BudgetStage::Turn => Some(turn.turn_ms),
    }
}

/// The figures over `turns` (any order) against the budgets in force.
pub fn compute(turns: &[TurnTrace], budgets: &Budgets) -> Stats {
    let budget_rows = BudgetStage::ALL
        .into_iter()
        .map(|stage| {
            let samples: Vec<f64> = turns
                .iter()
                .filter_map(|t| budget_sample(t, stage))
                .collect();
            let budget = budgets.get(stage);
            BudgetRow {
                stage: stage.name(),
                figures: percentiles(&samples),
                budget_ms: budget.ms,
                action: budget.action.name(),
                over_budget: samples.iter().filter(|v| **v > budget.ms as f64).count(),
            }
        })
        .collect();

    let spans = Stage::ALL
        .into_iter()
        .filter_map(|stage| {
            let samples: Vec<f64> = turns.iter().filter_map(|t| stage_total(t, stage)).collect();
            (!samples.is_empty()).then(|| SpanRow {
                stage: stage.name(),
                figures: percentiles(&samples),
            })
        })
        .collect();

    let mut overruns: BTreeMap<(&'static str, &'static str), usize> = BTreeMap::new();
    let mut errors: std::collections::HashMap<Stage, usize> = Default::default();
    for span in turns.iter().flat_map(|t| &t.spans) {
        match &span.outcome {
            SpanOutcome::Overrun { budget, action } => {
                *overruns.entry((budget.name(), action.name())).or_default() += 1;
            }
            SpanOutcome::Error { .. } => *errors.entry(span.stage).or_default() += 1,
            SpanOutcome::Ok => {}
        }
    }
    let mut overruns: Vec<OverrunCount> = overruns
        .into_iter()
        .map(|((stage, action), count)| OverrunCount {
            stage,
            action,
            count,
        })
        .collect();
    // Stable: ties stay in stage-name order.
    overruns.sort_by_key(|o| std::cmp::Reverse(o.count));
    let errors = Stage::ALL
        .into_iter()
        .filter_map(|stage| {
            errors.get(&stage).map(|&count| ErrorCount {
                stage: stage.name(),
                count,
            })
        })
        .collect();

    let mut ends = BTreeMap::new();
    for t in turns {
        *ends.entry(t.end.name().to_string()).or_default() += 1;
    }
    let fast = turns.iter().filter(|t| t.fast_path == Some(true)).count();
    let llm = turns.iter().filter(|t| t.fast_path == Some(false)).count();
    Stats {
        turns: turns.len(),
        percentile_method: "nearest-rank",
        budgets: budget_rows,
        spans,
        overruns,
        errors,
        ends,
        fast_path: FastPath {
            fast,
            llm,
            share: (fast + llm > 0).then(|| fast as f64 / (fast + llm) as f64),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pipeline::budget::{Action, Budget};
    use crate::pipeline::trace::{Span, TurnEnd};

    fn span(stage: Stage, start_ms: f64, first_ms: Option<f64>, end_ms: f64) -> Span {
        Span {
            stage,
            start_ms,
            first_ms,
            end_ms,
            outcome: SpanOutcome::Ok,
        }
    }

    fn turn(id: &str, spans: Vec<Span>, turn_ms: f64, fast_path: Option<bool>) -> TurnTrace {
        TurnTrace {
            message_id: id.into(),
            from: "15550001842".into(),
            kind: "audio".into(),
            started_unix_ms: 0,
            sequential_ms: spans.iter().map(Span::duration_ms).sum(),
            spans,
            turn_ms,
            end: TurnEnd::Voice,
            transcript: None,
            language: None,
            intent: None,
            fast_path,
            reply_text: None,
            reply_bytes: None,
            audio_ms: None,
            note: None,
            routing: None,
            budgets_ms: BTreeMap::new(),
        }
    }

    #[test]
    fn nearest_rank_picks_observed_values() {
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(&hundred, 50.0), Some(50.0));
        assert_eq!(nearest_rank(&hundred, 95.0), Some(95.0));
        assert_eq!(nearest_rank(&hundred, 99.0), Some(99.0));
        assert_eq!(nearest_rank(&hundred, 100.0), Some(100.0));
        assert_eq!(nearest_rank(&hundred, 0.0), Some(1.0));
        // Five samples: p50 is the 3rd, p95 and p99 the slowest.
        let five = [10.0, 20.0, 30.0, 40.0, 500.0];
        assert_eq!(nearest_rank(&five, 50.0), Some(30.0));
        assert_eq!(nearest_rank(&five, 95.0), Some(500.0));
        assert_eq!(nearest_rank(&[], 50.0), None);
        // Unsorted input with a NaN: sorted, NaN dropped.
        let p = percentiles(&[30.0, f64::NAN, 10.0, 20.0]);
        assert_eq!(p.count, 3);
        assert_eq!((p.p50, p.p99, p.max), (Some(20.0), Some(30.0), Some(30.0)));
    }

    #[test]
    fn stage_values_come_from_the_spans() {
        let t = turn(
            "a",
            vec![
                span(Stage::Ack, 0.0, None, 2.0),
                span(Stage::Fetch, 5.0, None, 105.0),
                span(Stage::Decode, 105.0, None, 115.0),
                span(Stage::Resample, 115.0, None, 118.0),
                span(Stage::Stt, 118.0, None, 618.0),
                span(Stage::Dialog, 620.0, Some(720.0), 900.0),
                span(Stage::Tts, 730.0, Some(780.0), 1100.0),
                span(Stage::Encode, 780.0, None, 1120.0),
                span(Stage::Upload, 1120.0, None, 1200.0),
                span(Stage::Send, 1200.0, None, 1250.0),
            ],
            1250.0,
            Some(false),
        );
        let v = |s| budget_sample(&t, s);
        assert_eq!(v(BudgetStage::Ack), Some(2.0));
        assert_eq!(v(BudgetStage::Fetch), Some(100.0));
        assert_eq!(v(BudgetStage::Decode), Some(13.0));
        assert_eq!(v(BudgetStage::Stt), Some(500.0));
        assert_eq!(v(BudgetStage::DialogFirstToken), Some(100.0));
        assert_eq!(v(BudgetStage::DialogTotal), Some(280.0));
        assert_eq!(v(BudgetStage::TtsFirstAudio), Some(50.0));
        assert_eq!(v(BudgetStage::TtsTotal), Some(370.0));
        assert_eq!(v(BudgetStage::Encode), Some(340.0));
        assert_eq!(v(BudgetStage::Upload), Some(80.0));
        assert_eq!(v(BudgetStage::Send), Some(50.0));
        assert_eq!(v(BudgetStage::Turn), Some(1250.0));

        // A text turn: no fetch, no speech; the dialog did not stream.
        let text = turn(
            "b",
            vec![
                span(Stage::Dialog, 1.0, None, 40.0),
                span(Stage::Send, 40.0, None, 60.0),
                span(Stage::Send, 3000.0, None, 3020.0),
            ],
            3020.0,
            Some(true),
        );
        assert_eq!(budget_sample(&text, BudgetStage::Fetch), None);
        assert_eq!(budget_sample(&text, BudgetStage::Decode), None);
        assert_eq!(budget_sample(&text, BudgetStage::DialogFirstToken), None);
        // A retried send counts both attempts.
        assert_eq!(budget_sample(&text, BudgetStage::Send), Some(40.0));
    }

    #[test]
    fn compute_counts_overruns_errors_and_the_fast_path() {
        let mut budgets = Budgets::default();
        budgets
            .set(BudgetStage::Stt, Budget::fixed(400, Action::AskForText))
            .unwrap();
        let mut turns: Vec<TurnTrace> = (1..=20)
            .map(|i| {
                let stt = f64::from(i) * 25.0; // 25 … 500 ms
                turn(
                    &format!("m{i}"),
                    vec![
                        span(Stage::Stt, 0.0, None, stt),
                        span(Stage::Send, stt, None, stt + 10.0),
                    ],
                    stt + 10.0,
                    Some(i % 4 == 0),
                )
            })
            .collect();
        turns[0].spans[0].outcome = SpanOutcome::Overrun {
            budget: BudgetStage::Stt,
            action: Action::AskForText,
        };
        turns[1].spans[0].outcome = SpanOutcome::Overrun {
            budget: BudgetStage::Stt,
            action: Action::AskForText,
        };
        turns[2].spans[1].outcome = SpanOutcome::Overrun {
            budget: BudgetStage::Send,
            action: Action::RetryOnce,
        };
        turns[3].spans[1].outcome = SpanOutcome::Error {
            reason: "graph 500".into(),
        };
        turns[4].end = TurnEnd::Failed;
        turns[5].fast_path = None;

        let s = compute(&turns, &budgets);
        assert_eq!(s.turns, 20);
        assert_eq!(s.percentile_method, "nearest-rank");
        let stt = s.budgets.iter().find(|r| r.stage == "stt").unwrap();
        assert_eq!(stt.figures.count, 20);
        assert_eq!(stt.figures.p50, Some(250.0)); // rank 10
        assert_eq!(stt.figures.p95, Some(475.0)); // rank 19
        assert_eq!(stt.figures.p99, Some(500.0)); // rank 20
        assert_eq!((stt.budget_ms, stt.action), (400, "ask_for_text"));
        assert_eq!(stt.over_budget, 4); // 425, 450, 475, 500
        let fetch = s.budgets.iter().find(|r| r.stage == "fetch").unwrap();
        assert_eq!((fetch.figures.count, fetch.figures.p50), (0, None));
        assert_eq!(s.budgets.len(), BudgetStage::ALL.len());
        let names: Vec<_> = s.spans.iter().map(|r| r.stage).collect();
        assert_eq!(names, ["stt", "send"]);
        assert_eq!(
            s.overruns,
            vec![
                OverrunCount {
                    stage: "stt",
                    action: "ask_for_text",
                    count: 2
                },
                OverrunCount {
                    stage: "send",
                    action: "retry_once",
                    count: 1
                },
            ]
        );
        assert_eq!(
            s.errors,
            vec![ErrorCount {
                stage: "send",
                count: 1
            }]
        );
        assert_eq!(s.ends.get("voice"), Some(&19));
        assert_eq!(s.ends.get("failed"), Some(&1));
        // i % 4 == 0 for 4, 8, 12, 16, 20: five fast; turn 6 (index 5) said nothing.
        assert_eq!((s.fast_path.fast, s.fast_path.llm), (5, 14));
        assert_eq!(s.fast_path.share, Some(5.0 / 19.0));

        let json = serde_json::to_value(&s).unwrap();
        assert_eq!(json["budgets"][3]["stage"], "stt");
        assert_eq!(json["budgets"][3]["p95"], 475.0);
        assert_eq!(json["budgets"][3]["budget_ms"], 400);
    }

    #[test]
    fn no_turns_no_figures() {
        let s = compute(&[], &Budgets::default());
        assert_eq!(s.turns, 0);
        assert!(s.budgets.iter().all(|r| r.figures.count == 0));
        assert!(s.spans.is_empty() && s.overruns.is_empty());
        assert_eq!(s.fast_path.share, None);
    }
}
