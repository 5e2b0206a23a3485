//! The service's Prometheus metrics, served at `GET /metrics` in the text
//! exposition format (OpenMetrics, which Prometheus reads).
//!
//! One process-wide set: turns record into it when they finish, providers
//! when they fail or fall back, the webhook when it acknowledges, and the
//! workers keep the gauges. Names follow Prometheus' conventions: base units
//! (seconds), `_total` for counters, labels for what varies.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::record::{Span, TurnTrace};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StageLabels {
    stage: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverrunLabels {
    stage: String,
    action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndLabels {
    end: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderLabels {
    /// "llm" or "tts".
    kind: String,
    provider: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PathLabels {
    /// "fast" (intent classifier and templates) or "llm".
    path: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

fn seconds_buckets() -> Histogram {
    // 1 ms to about 33 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

/// Every metric the service exports.
pub struct Metrics {
    registry: Registry,
    stage_duration: Family<StageLabels, Histogram>,
    overruns: Family<OverrunLabels, Counter>,
    turn_duration: Family<EndLabels, Histogram>,
    queue_depth: Gauge,
    in_flight: Gauge,
    stt_rtf: Histogram,
    provider_errors: Family<ProviderLabels, Counter>,
    provider_fallbacks: Family<ProviderLabels, Counter>,
    replies: Family<PathLabels, Counter>,
    reloads: Family<ResultLabels, Counter>,
    acks: Family<ResultLabels, Counter>,
    sending_paused: Gauge,
    outbox_pending: Gauge,
    outbox_oldest: Gauge,
    outbox_retries: Family<ReasonLabels, Counter>,
    turn_panics: Counter,
    cancelled_inferences: Family<EndedLabels, Counter>,
    speech_cache_lookups: Family<ResultLabels, Counter>,
    speech_cache_bytes: Gauge,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct EndedLabels {
    /// `terminated` or `finished`.
    ended: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    /// `send`, `fetch` or `paused`.
    reason: String,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process' metrics.
pub fn global() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Self {
        let mut registry = Registry::with_prefix("voxline");
        let stage_duration =
            Family::<StageLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        registry.register_with_unit(
            "stage_duration",
            "Time spent in each stage of a turn, by stage and outcome",
            prometheus_client::registry::Unit::Seconds,
            stage_duration.clone(),
        );
        let overruns = Family::<OverrunLabels, Counter>::default();
        registry.register(
            "budget_overruns",
            "Stages that ran over their budget, by budget stage and the action taken",
            overruns.clone(),
        );
        let turn_duration =
            Family::<EndLabels, Histogram>::new_with_constructor(seconds_buckets as fn() -> _);
        registry.register_with_unit(
            "turn_duration",
            "From the webhook's arrival to the reply's send call, by how the turn ended",
            prometheus_client::registry::Unit::Seconds,
            turn_duration.clone(),
        );
        let queue_depth = Gauge::default();
        registry.register(
            "queue_depth",
            "Messages accepted and waiting for a worker",
            queue_depth.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "turns_in_flight",
            "Turns being worked on",
            in_flight.clone(),
        );
        let stt_rtf = Histogram::new([0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 4.0]);
        registry.register(
            "stt_real_time_factor",
            "Transcription time over the voice note's duration",
            stt_rtf.clone(),
        );
        let provider_errors = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_errors",
            "Failed calls to an LLM or TTS provider",
            provider_errors.clone(),
        );
        let provider_fallbacks = Family::<ProviderLabels, Counter>::default();
        registry.register(
            "provider_fallbacks",
            "Times a provider's failure passed the request to the next in its chain",
            provider_fallbacks.clone(),
        );
        let replies = Family::<PathLabels, Counter>::default();
        registry.register(
            "dialog_replies",
            "Dialog replies by path: the fast path (no LLM) or the LLM",
            replies.clone(),
        );
        let reloads = Family::<ResultLabels, Counter>::default();
        registry.register(
            "budget_reloads",
            "Budget reloads, applied or rejected",
            reloads.clone(),
        );
        let acks = Family::<ResultLabels, Counter>::default();
        registry.register(
            "webhook_acks",
            "Webhook deliveries by answer: ok, rejected (over the ack budget), invalid",
            acks.clone(),
        );
        let sending_paused = Gauge::default();
        registry.register(
            "sending_paused",
            "1 while the access token is rejected (190) and sending waits for a new one",
            sending_paused.clone(),
        );
        let outbox_pending = Gauge::default();
        registry.register(
            "outbox_pending",
            "Turns waiting to be tried again (a reply not delivered, a note not fetched)",
            outbox_pending.clone(),
        );
        let outbox_oldest = Gauge::default();
        registry.register_with_unit(
            "outbox_oldest_age",
            "Age of the oldest waiting turn's message",
            prometheus_client::registry::Unit::Seconds,
            outbox_oldest.clone(),
        );
        let outbox_retries = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "outbox_deferrals",
            "Turns put back to wait and be tried again, by what failed",
            outbox_retries.clone(),
        );
        let turn_panics = Counter::default();
        registry.register(
            "turn_panics",
            "Turns that panicked (each ends failed; its customer's lane goes on)",
            turn_panics.clone(),
        );
        let cancelled_inferences = Family::<EndedLabels, Counter>::default();
        registry.register(
            "tts_cancelled_inferences",
            "Voice inferences cancelled mid-run, by how they ended: terminated, or finished anyway",
            cancelled_inferences.clone(),
        );
        let speech_cache_lookups = Family::<ResultLabels, Counter>::default();
        registry.register(
            "speech_cache_lookups",
            "Reply sentences looked up in the rendered-speech cache, by result: hit or miss",
            speech_cache_lookups.clone(),
        );
        let speech_cache_bytes = Gauge::default();
        registry.register_with_unit(
            "speech_cache",
            "Rendered speech held in memory",
            prometheus_client::registry::Unit::Bytes,
            speech_cache_bytes.clone(),
        );
        Self {
            registry,
            cancelled_inferences,
            speech_cache_lookups,
            speech_cache_bytes,
            sending_paused,
            outbox_pending,
            outbox_oldest,
            outbox_retries,
            turn_panics,
            stage_duration,
            overruns,
            turn_duration,
            queue_depth,
            in_flight,
            stt_rtf,
            provider_errors,
            provider_fallbacks,
            replies,
            reloads,
            acks,
        }
    }

    /// Counts a finished turn: its spans, overruns, duration and path.
    pub fn record_turn(&self, trace: &TurnTrace) {
        for span in &trace.spans {
            self.record_span(span);
        }
        self.turn_duration
            .get_or_create(&EndLabels {
                end: trace.end.name().into(),
            })
            .observe(trace.turn_ms / 1000.0);
        if let Some(rtf) = trace.stt_real_time_factor() {
            self.stt_rtf.observe(rtf);
        }
        if let Some(fast) = trace.fast_path {
            let path = if fast { "fast" } else { "llm" };
            self.replies
                .get_or_create(&PathLabels { path: path.into() })
                .inc();
        }
    }

    fn record_span(&self, span: &Span) {
        self.stage_duration
            .get_or_create(&StageLabels {
                stage: span.stage.name().into(),
                outcome: span.outcome.name().into(),
            })
            .observe(span.duration_ms() / 1000.0);
        if let crate::record::SpanOutcome::Overrun { budget, action } = span.outcome {
            self.overrun(budget.name(), action.name());
        }
    }

    /// Counts one overrun (also for stages outside a turn's trace, `ack`).
    pub fn overrun(&self, stage: &str, action: &str) {
        self.overruns
            .get_or_create(&OverrunLabels {
                stage: stage.into(),
                action: action.into(),
            })
            .inc();
    }

    pub fn provider_error(&self, kind: &str, provider: &str) {
        self.provider_errors
            .get_or_create(&ProviderLabels {
                kind: kind.into(),
                provider: provider.into(),
            })
            .inc();
    }

    pub fn provider_fallback(&self, kind: &str, provider: &str) {
        self.provider_fallbacks
            .get_or_create(&ProviderLabels {
                kind: kind.into(),
                provider: provider.into(),
            })
            .inc();
    }

    pub fn reload(&self, applied: bool) {
        let result = if applied { "applied" } else { "rejected" };
        self.reloads
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn ack(&self, result: &str) {
        self.acks
            .get_or_create(&ResultLabels {
                result: result.into(),
            })
            .inc();
    }

    pub fn set_sending_paused(&self, paused: bool) {
        self.sending_paused.set(i64::from(paused));
    }

    /// The outbox as last counted: waiting turns and the oldest one's age.
    pub fn set_outbox(&self, pending: usize, oldest_age_s: u64) {
        self.outbox_pending.set(pending as i64);
        self.outbox_oldest.set(oldest_age_s as i64);
    }

    /// A turn put back to wait; `reason` is `send`, `fetch` or `paused`.
    pub fn deferred(&self, reason: &str) {
        self.outbox_retries
            .get_or_create(&ReasonLabels {
                reason: reason.into(),
            })
            .inc();
    }

    pub fn turn_panicked(&self) {
        self.turn_panics.inc();
    }

    /// A cancelled voice inference ended: `terminated` by the cancel, or
    /// it finished anyway.
    pub fn cancelled_inference(&self, terminated: bool) {
        self.cancelled_inferences
            .get_or_create(&EndedLabels {
                ended: Self::ended(terminated).into(),
            })
            .inc();
    }

    /// Cancelled inferences counted so far that were (or were not) terminated.
    pub fn cancelled_inferences(&self, terminated: bool) -> u64 {
        self.cancelled_inferences
            .get(&EndedLabels {
                ended: Self::ended(terminated).into(),
            })
            .map_or(0, |c| c.get())
    }

    /// A sentence looked up in the speech cache.
    pub fn speech_cache_lookup(&self, hit: bool) {
        self.speech_cache_lookups
            .get_or_create(&ResultLabels {
                result: Self::hit(hit).into(),
            })
            .inc();
    }

    /// Speech cache lookups so far that hit (or missed).
    pub fn speech_cache_lookups(&self, hit: bool) -> u64 {
        self.speech_cache_lookups
            .get(&ResultLabels {
                result: Self::hit(hit).into(),
            })
            .map_or(0, |c| c.get())
    }

    pub fn set_speech_cache_bytes(&self, bytes: usize) {
        self.speech_cache_bytes.set(bytes as i64);
    }

    fn hit(hit: bool) -> &'static str {
        if hit {
            "hit"
        } else {
            "miss"
        }
    }

    fn ended(terminated: bool) -> &'static str {
        if terminated {
            "terminated"
        } else {
            "finished"
        }
    }

    pub fn queue_depth(&self) -> &Gauge<i64, std::sync::atomic::AtomicI64> {
        &self.queue_depth
    }

    pub fn in_flight(&self) -> &Gauge<i64, std::sync::atomic::AtomicI64> {
        &self.in_flight
    }

    /// Overruns counted so far for `stage` and `action` (tests, the bench).
    pub fn overruns(&self, stage: &str, action: &str) -> u64 {
        self.overruns
            .get(&OverrunLabels {
                stage: stage.into(),
                action: action.into(),
            })
            .map_or(0, |c| c.get())
    }

    /// The exposition text.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Action, BudgetStage, SpanOutcome, Stage, TurnEnd};

    #[test]
    fn a_turn_shows_up_in_the_exposition() {
        let m = Metrics::new();
        let trace = TurnTrace {
            message_id: "w".into(),
            from: "1".into(),
            kind: "audio".into(),
            started_unix_ms: 0,
            spans: vec![Span {
                stage: Stage::Tts,
                start_ms: 10.0,
                first_ms: Some(40.0),
                end_ms: 1510.0,
                outcome: SpanOutcome::Overrun {
                    budget: BudgetStage::TtsTotal,
                    action: Action::SendText,
                },
            }],
            turn_ms: 1600.0,
            sequential_ms: 1500.0,
            end: TurnEnd::Text,
            transcript: None,
            language: None,
            intent: None,
            fast_path: Some(true),
            reply_text: None,
            reply_bytes: None,
            audio_ms: None,
            note: None,
            routing: None,
            budgets_ms: Default::default(),
        };
        m.record_turn(&trace);
        assert_eq!(m.overruns("tts_total", "send_text"), 1);
        let text = m.encode();
        for needle in [
            "voxline_stage_duration_seconds_count{stage=\"tts\",outcome=\"overrun\"} 1",
            "voxline_budget_overruns_total{stage=\"tts_total\",action=\"send_text\"} 1",
            "voxline_turn_duration_seconds_count{end=\"text\"} 1",
            "voxline_dialog_replies_total{path=\"fast\"} 1",
            "# TYPE voxline_queue_depth gauge",
        ] {
            assert!(text.contains(needle), "{needle} missing in:\n{text}");
        }
    }
}
