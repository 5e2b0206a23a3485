//! What a finished turn leaves behind: its [`TurnTrace`] (the stages'
//! spans, how each ended, how the turn ended) and the names of the budgets
//! and overrun actions a trace refers to. The pipeline writes these records;
//! the store keeps them, the metrics and the console read them and the
//! telemetry exports them, without knowing the pipeline.

use serde::{Deserialize, Serialize};

/// The stages that carry a budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BudgetStage {
    /// From the webhook's arrival to its 200, the inbox commit included.
    Ack,
    /// Downloading the voice note, one attempt.
    Fetch,
    /// Decoding, resampling and preparing what the download brought.
    Decode,
    Stt,
    /// From the dialog's start to its first reply text.
    DialogFirstToken,
    DialogTotal,
    /// From the first text handed to speech to its first audio.
    TtsFirstAudio,
    TtsTotal,
    /// Packing the speech into the Ogg/Opus note, after the last audio.
    Encode,
    /// Uploading the voice note to the channel's media store.
    Upload,
    /// The channel's send call.
    Send,
    /// From the webhook's arrival to the reply's send call.
    Turn,
}

impl BudgetStage {
    pub const ALL: [BudgetStage; 12] = [
        Self::Ack,
        Self::Fetch,
        Self::Decode,
        Self::Stt,
        Self::DialogFirstToken,
        Self::DialogTotal,
        Self::TtsFirstAudio,
        Self::TtsTotal,
        Self::Encode,
        Self::Upload,
        Self::Send,
        Self::Turn,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Self::Ack => "ack",
            Self::Fetch => "fetch",
            Self::Decode => "decode",
            Self::Stt => "stt",
            Self::DialogFirstToken => "dialog_first_token",
            Self::DialogTotal => "dialog_total",
            Self::TtsFirstAudio => "tts_first_audio",
            Self::TtsTotal => "tts_total",
            Self::Encode => "encode",
            Self::Upload => "upload",
            Self::Send => "send",
            Self::Turn => "turn",
        }
    }

    /// The actions this stage can take, the first being its default.
    pub fn allowed(self) -> &'static [Action] {
        use Action::*;
        match self {
            Self::Ack => &[Reject],
            Self::Fetch => &[RetryThenOutbox, RetryThenApologise, Apologise],
            Self::Decode => &[Apologise],
            Self::Stt => &[FasterModel, AskForText],
            Self::DialogFirstToken => &[NextProvider, Template],
            Self::DialogTotal => &[Template],
            Self::TtsFirstAudio | Self::TtsTotal | Self::Encode | Self::Upload => &[SendText],
            Self::Send => &[RetryOnce, Fail],
            Self::Turn => &[Hold],
        }
    }
}

/// What a turn does when a stage runs over its budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Answer the webhook 503 so that WhatsApp delivers it again; the inbox
    /// drops the copy if the first commit landed after all.
    Reject,
    /// Try the download once more with a fresh budget, then put the turn in
    /// the outbox: the note is fetched again later, and the customer gets
    /// no apology for a network that was slow.
    RetryThenOutbox,
    /// Try the download once more with a fresh budget, then apologise.
    RetryThenApologise,
    /// Tell the customer the note could not be played, in text.
    Apologise,
    /// Stop the transcription and redo the note with the faster model
    /// (`[stt] fallback_model`); ask for text when there is none or it
    /// overruns too.
    FasterModel,
    /// Stop the transcription and ask the customer to type.
    AskForText,
    /// Give up on the provider that is late and ask the next one in the
    /// LLM fallback chain; the template reply when the chain is exhausted.
    NextProvider,
    /// Answer with the intent's template (or the generic one).
    Template,
    /// Send the reply as text instead of a voice note.
    SendText,
    /// Try the send once more; a send the channel did accept but whose
    /// answer was late can then reach the customer twice.
    RetryOnce,
    /// Mark the turn failed (dead letter) without another attempt.
    Fail,
    /// Send a short holding message, then the answer when it is ready.
    Hold,
}

impl Action {
    pub fn name(self) -> &'static str {
        match self {
            Self::Reject => "reject",
            Self::RetryThenOutbox => "retry_then_outbox",
            Self::RetryThenApologise => "retry_then_apologise",
            Self::Apologise => "apologise",
            Self::FasterModel => "faster_model",
            Self::AskForText => "ask_for_text",
            Self::NextProvider => "next_provider",
            Self::Template => "template",
            Self::SendText => "send_text",
            Self::RetryOnce => "retry_once",
            Self::Fail => "fail",
            Self::Hold => "hold",
        }
    }
}

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
