//! One turn: a customer's message in, one reply accepted by the channel out,
//! each step recorded in the store so that a restart resumes where the turn
//! stopped, and every stage timed into the turn's trace.
//!
//! The stages, in order: understand (for a voice note: [`fetch`](super::fetch)
//! then speech to text on a blocking thread, while the reply provider loads
//! the customer's session), compose (the [`reply`](super::reply) provider's
//! chunks spoken by the [`voice`](super::voice) stage as they are written),
//! upload, send. Each runs against its [budget](super::budget), a deadline
//! with a declared action when it passes; the `turn` budget sends a holding
//! message meanwhile. Progress is written after each: `fetching` when the
//! download starts, `transcribed` with the transcript and the composed reply
//! (a restart from here sends the stored reply without fetching or
//! transcribing again), and `replied` with the channel's message id. A
//! silent reply (STOP, a person has the conversation) is stored as an empty
//! text and ends the turn in `silent` without calling the channel; an empty
//! stored reply found on resume is silent too. The store keeps only the
//! reply's text, not its voice note: a turn resumed from `transcribed` speaks
//! that text again for a voice note (in the conversation's language), else
//! sends it as text. The finished [`TurnTrace`] goes to the store and the
//! metrics.
//!
//! # The one window for a duplicate reply
//!
//! `replied` is written the moment the channel's send call returns. If the
//! process dies after Meta accepted the send and before that write commits
//! (a few milliseconds: one SQLite commit), the restart finds the turn in
//! `transcribed` and sends the stored reply again, so the customer receives
//! it twice. The same holds when Meta accepted a send but its answer was lost
//! (a timeout or a reset connection after the request went out): the client
//! cannot tell that from a send that never arrived, and tries again. Every
//! other crash point resends nothing: a turn already `replied` is never sent
//! again, and a redelivered webhook is dropped by the inbox. (A store that
//! refuses the `replied` write for longer than its retries here widens the
//! window the same way a crash does.)

use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Semaphore};
use tokio::time::timeout_at;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::budget::{Action, BudgetHandle, BudgetStage, Budgets};
use super::fetch::{fetch_note, FetchError};
use super::outbox::{self, Next, OutboxConfig};
use super::reply::{Notice, Prepared, ReplyMeta, Respond, Said};
use super::trace::{SpanOutcome, Stage, Trace, TurnEnd, TurnTrace};
use super::voice::{self, NoVoice};
use crate::channel::{Channel, ChannelError, Content, Disposition, InboundMessage, RetryPolicy};
use crate::encode::EncodeConfig;
use crate::media::{MediaConfig, SpeechOutcome};
use crate::store::{Progress, Queue, StoreError, Traces, Turn, TurnState};
use crate::stt::heard::{self, HearingConfig};
use crate::stt::{Prior, PriorSource, SpeechToText, SttError, TranscribeOptions};
use crate::tts::{Language, TextToSpeech};

/// Everything a turn needs, shared by all turns.
pub struct TurnContext {
    pub channel: Arc<dyn Channel>,
    pub queue: Arc<dyn Queue>,
    /// Where finished turns' traces go.
    pub traces: Arc<dyn Traces>,
    /// The one speech-to-text provider all turns share.
    pub stt: Arc<dyn SpeechToText>,
    /// The faster model of the `stt` budget's `faster_model` action.
    pub stt_fast: Option<Arc<dyn SpeechToText>>,
    /// Transcriptions running at once; each already uses all the threads
    /// `[stt] threads` gives it.
    pub stt_permits: Arc<Semaphore>,
    pub respond: Arc<dyn Respond>,
    /// Speaks replies to voice notes; `None` answers everything in text.
    pub tts: Option<Arc<dyn TextToSpeech>>,
    pub encode: EncodeConfig,
    pub media: MediaConfig,
    /// Retries of a whole download (each send retries inside the channel).
    pub fetch_retry: RetryPolicy,
    pub mark_read: bool,
    /// The budgets in force; each turn takes a snapshot when it starts.
    pub budgets: BudgetHandle,
    /// The business's languages (`[service] languages`): a number's calling
    /// code is a prior only when it points to exactly one of them.
    pub languages: Vec<String>,
    /// When a transcript is too unsure to act on (`[stt.hearing]`).
    pub hearing: HearingConfig,
    /// How turns that could not finish are tried again (`[outbox]`).
    pub outbox: OutboxConfig,
}

/// When and how fast the webhook that brought a message was acknowledged:
/// the turn's zero. Turns resumed after a restart have none.
#[derive(Debug, Clone, Copy)]
pub struct Arrival {
    pub at: Instant,
    /// From the arrival to the inbox commit.
    pub ack: Duration,
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq)]
pub enum TurnOutcome {
    Replied {
        reply_id: String,
    },
    /// The reply was silent: nothing was sent.
    Silent,
    /// Nothing to do: the turn was already finished.
    AlreadyFinished(TurnState),
    /// Stopped by a failure that passes; due again at `retry_at_ms`.
    Deferred {
        reason: String,
        retry_at_ms: i64,
    },
    Failed {
        reason: String,
        dead_letter: bool,
    },
}

/// The reply as the turn will send it.
struct Composed {
    text: String,
    voice: Option<Vec<u8>>,
    silent: bool,
}

/// What the turn learnt on the way, for its trace.
#[derive(Default)]
struct Notes {
    transcript: Option<String>,
    language: Option<String>,
    intent: Option<String>,
    fast_path: Option<bool>,
    audio_ms: Option<f64>,
    /// The spoken reply's length, when one was spoken.
    reply_audio_ms: Option<u64>,
    routing: Option<String>,
    degraded: Vec<String>,
}

/// Runs (or resumes) the turn of message `message_id`.
///
/// A store error stops the turn where it is; its state in the store is
/// unchanged, and the next start resumes it.
pub async fn run_turn(
    ctx: &TurnContext,
    message_id: &str,
    arrival: Option<Arrival>,
) -> Result<TurnOutcome, StoreError> {
    let turn = ctx.queue.turn(message_id).await?;
    let span = tracing::info_span!(
        "turn",
        wamid = %turn.message.id,
        from = %crate::channel::mask_number(&turn.message.from),
        kind = turn.message.content.kind()
    );
    async move {
        if turn.state.is_final() {
            return Ok(TurnOutcome::AlreadyFinished(turn.state));
        }
        let message = &turn.message;
        let budgets = ctx.budgets.snapshot();
        let now = Instant::now();
        let zero = arrival.map_or(now, |a| a.at);
        let started_unix_ms = unix_ms() - now.saturating_duration_since(zero).as_millis() as i64;
        let mut trace = Trace::starting_at(zero);
        if let Some(a) = arrival {
            trace.record(Stage::Ack, zero, zero + a.ack);
            trace.record(Stage::Queue, zero + a.ack, now);
        }
        let mut notes = Notes::default();
        let typing = (ctx.mark_read && turn.state != TurnState::Transcribed)
            .then(|| Typing::start(ctx.channel.clone(), message.id.clone()));
        // The holding message is for a customer waiting on a fresh turn; a
        // turn resumed after a restart or retried from the outbox has
        // either its answer ready or nothing new to say.
        let hold = if arrival.is_some() && turn.attempts == 0 {
            Hold::arm(ctx, &budgets, zero, &message.from)
        } else {
            Hold::disarmed()
        };
        let composed = match (turn.state, &turn.reply_text) {
            (TurnState::Transcribed, Some(text)) => {
                hold.set_known(text.trim().is_empty(), None);
                match &turn.reply_voice {
                    Some(voice) if !text.trim().is_empty() => Composed {
                        text: text.clone(),
                        voice: Some(voice.clone()),
                        silent: false,
                    },
                    _ => resume(ctx, message, text, &budgets, &mut trace, &mut notes).await,
                }
            }
            _ => {
                if matches!(message.content, Content::Audio { .. }) {
                    ctx.queue.advance(&message.id, Progress::Fetching).await?;
                }
                // The session loads while the note is fetched; its language
                // is what the note is expected to be in.
                let (language_tx, language_rx) = tokio::sync::oneshot::channel();
                let preparing = async {
                    let prepared = ctx.respond.prepare(message).await;
                    hold.set_known(prepared.quiet, prepared.language.clone());
                    let _ = language_tx.send(prepared.language.clone());
                    prepared
                };
                let (said, prepared) = tokio::join!(
                    understand(ctx, message, language_rx, &budgets, &mut trace, &mut notes),
                    preparing
                );
                let said = match said {
                    Ok(said) => said,
                    Err(later) => {
                        drop(typing);
                        // No answer is coming now: a holding message still
                        // on its way (the Graph API is failing too) is
                        // abandoned rather than sent late.
                        hold.abandon();
                        return defer(ctx, &turn, later, None).await;
                    }
                };
                let composed = compose(
                    ctx, message, &said, prepared, &budgets, &mut trace, &mut notes,
                )
                .await;
                ctx.queue
                    .advance(
                        &message.id,
                        Progress::Understood {
                            transcript: said.transcript(),
                            reply: if composed.silent { "" } else { &composed.text },
                        },
                    )
                    .await?;
                composed
            }
        };
        if composed.silent {
            hold.disarm(&mut trace).await;
            ctx.queue
                .advance(&message.id, Progress::NothingToSend)
                .await?;
            finish(
                ctx,
                message,
                &trace,
                started_unix_ms,
                TurnEnd::Silent,
                &composed,
                &budgets,
                notes,
            )
            .await;
            return Ok(TurnOutcome::Silent);
        }

        let mut voice_id = None;
        if let Some(ogg) = &composed.voice {
            voice_id = upload(ctx, ogg, &budgets, &mut trace, &mut notes).await;
        }
        hold.disarm(&mut trace).await;
        // The reply itself dismisses the typing indicator.
        drop(typing);
        let sent = send(
            ctx,
            &message.from,
            &composed.text,
            voice_id.as_deref(),
            &budgets,
            &mut trace,
        )
        .await;
        let outcome = match sent {
            Ok(sent) => {
                // The duplicate window closes with this write.
                record_accepted(ctx.queue.as_ref(), &message.id, &sent.message_id).await?;
                TurnOutcome::Replied {
                    reply_id: sent.message_id,
                }
            }
            Err(e) => {
                let disposition = e.disposition(ctx.fetch_retry.pair_rate_wait);
                if let Some(hold) = passing(disposition, outbox::Hold::Send) {
                    tracing::warn!(error = %e, "reply not delivered; it waits in the outbox");
                    let later = Later {
                        hold,
                        reason: format!("send failed: {e}"),
                    };
                    return defer(ctx, &turn, later, composed.voice.as_deref()).await;
                }
                let dead_letter = matches!(disposition, Disposition::DeadLetter);
                let reason = format!("send failed: {e}");
                ctx.queue
                    .advance(
                        &message.id,
                        Progress::Failed {
                            reason: &reason,
                            dead_letter,
                        },
                    )
                    .await?;
                notes.degraded.push(reason.clone());
                TurnOutcome::Failed {
                    reason,
                    dead_letter,
                }
            }
        };
        let end = match (&outcome, voice_id.is_some()) {
            (TurnOutcome::Failed { .. }, _) => TurnEnd::Failed,
            (_, true) => TurnEnd::Voice,
            (_, false) => TurnEnd::Text,
        };
        finish(
            ctx,
            message,
            &trace,
            started_unix_ms,
            end,
            &composed,
            &budgets,
            notes,
        )
        .await;
        Ok(outcome)
    }
    .instrument(span)
    .await
}

/// Why a turn stops for now, to be tried again from the outbox.
#[derive(Debug)]
struct Later {
    hold: outbox::Hold,
    reason: String,
}

/// Whether an error of `disposition` passes: the hold it puts the turn on,
/// or `None` when it is final.
fn passing(disposition: Disposition, hold: outbox::Hold) -> Option<outbox::Hold> {
    match disposition {
        Disposition::Retry | Disposition::Wait(_) => Some(hold),
        Disposition::Pause => Some(outbox::Hold::Paused),
        Disposition::GiveUp | Disposition::DeadLetter => None,
    }
}

/// Puts the turn back in the store to be tried again, or fails it when the
/// customer service window has closed. `voice` is the reply's voice note,
/// kept for the retry.
async fn defer(
    ctx: &TurnContext,
    turn: &Turn,
    later: Later,
    voice: Option<&[u8]>,
) -> Result<TurnOutcome, StoreError> {
    let now = unix_ms();
    let heard = ctx
        .queue
        .last_heard(&turn.message.from)
        .await?
        .unwrap_or(turn.received_at_ms)
        .max(turn.received_at_ms);
    crate::metrics::global().deferred(later.hold.name());
    match ctx.outbox.next(later.hold, turn.attempts + 1, now, heard) {
        Next::RetryAt(retry_at_ms) => {
            tracing::info!(
                attempt = turn.attempts + 1,
                in_ms = retry_at_ms - now,
                reason = %later.reason,
                "turn deferred"
            );
            ctx.queue
                .advance(
                    &turn.message.id,
                    Progress::Deferred {
                        reason: &later.reason,
                        retry_at_ms,
                        voice,
                    },
                )
                .await?;
            Ok(TurnOutcome::Deferred {
                reason: later.reason,
                retry_at_ms,
            })
        }
        Next::WindowClosed => {
            let reason = format!(
                "the customer service window closed while the turn waited ({})",
                later.reason
            );
            tracing::warn!(%reason, "turn failed");
            ctx.queue
                .advance(
                    &turn.message.id,
                    Progress::Failed {
                        reason: &reason,
                        dead_letter: false,
                    },
                )
                .await?;
            Ok(TurnOutcome::Failed {
                reason,
                dead_letter: false,
            })
        }
    }
}

/// The read receipt with WhatsApp's typing indicator, beside the turn: sent
/// when the turn starts and again every 20 s (the indicator lasts 25 s)
/// until the reply goes out. Each is one try within
/// `[whatsapp] read_receipt_timeout_ms`; the turn never waits for it. A
/// receipt on its way is finished even when the reply went out first (a
/// quick turn), so that every message is marked read; only the refreshes
/// stop.
struct Typing {
    stop: CancellationToken,
}

impl Typing {
    const REFRESH: Duration = Duration::from_secs(20);

    fn start(channel: Arc<dyn Channel>, message_id: String) -> Self {
        let stop = CancellationToken::new();
        let done = stop.clone();
        tokio::spawn(
            async move {
                loop {
                    if let Err(e) = channel.mark_read(&message_id).await {
                        tracing::debug!(error = %e, "read receipt not sent");
                    }
                    tokio::select! {
                        () = tokio::time::sleep(Self::REFRESH) => {}
                        () = done.cancelled() => return,
                    }
                }
            }
            .in_current_span(),
        );
        Self { stop }
    }
}

impl Drop for Typing {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

pub(crate) fn unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Keeps the finished turn's trace, counts it and logs it.
#[allow(clippy::too_many_arguments)]
async fn finish(
    ctx: &TurnContext,
    message: &InboundMessage,
    trace: &Trace,
    started_unix_ms: i64,
    end: TurnEnd,
    composed: &Composed,
    budgets: &Budgets,
    notes: Notes,
) {
    // The turn's time runs to the send call, or to its end when nothing
    // went out.
    let turn_ms = trace
        .spans
        .iter()
        .find(|s| s.stage == Stage::Send)
        .map_or_else(|| trace.total_ms(), |s| s.start_ms);
    let done = TurnTrace {
        message_id: message.id.clone(),
        from: message.from.clone(),
        kind: message.content.kind().to_string(),
        started_unix_ms,
        spans: trace.spans.clone(),
        turn_ms,
        sequential_ms: trace.sequential_ms(),
        end,
        transcript: notes.transcript,
        language: notes.language,
        intent: notes.intent,
        fast_path: notes.fast_path,
        reply_text: (!composed.silent).then(|| composed.text.clone()),
        reply_bytes: composed.voice.as_ref().map(Vec::len),
        audio_ms: notes.audio_ms,
        routing: notes.routing,
        note: (!notes.degraded.is_empty()).then(|| notes.degraded.join("; ")),
        budgets_ms: budgets.resolved_ms(
            notes.audio_ms.unwrap_or(0.0) as u64,
            notes.reply_audio_ms.unwrap_or(0),
        ),
    };
    crate::metrics::global().record_turn(&done);
    let stages: Vec<String> = done
        .spans
        .iter()
        .map(|s| format!("{}={:.0}ms", s.stage.name(), s.duration_ms()))
        .collect();
    tracing::info!(
        end = end.name(),
        turn_ms = format!("{:.0}", done.turn_ms),
        sequential_ms = format!("{:.0}", done.sequential_ms),
        stages = stages.join(" "),
        degraded = done.note.as_deref().unwrap_or(""),
        "turn finished"
    );
    if let Err(e) = ctx.traces.save_trace(&done).await {
        tracing::warn!(error = %e, "turn trace not stored");
    }
}

/// The `turn` budget's holding message: sent once the turn has run for its
/// budget without a reply on its way, unless the customer must not be
/// written to. The reply waits for it, so the two arrive in order.
struct Hold {
    task: Option<tokio::task::JoinHandle<Option<HoldSent>>>,
    stop: CancellationToken,
    /// Whether the customer must not be written to, and the conversation's
    /// language; `None` until the provider has loaded the session, which
    /// the holding message waits for.
    known: tokio::sync::watch::Sender<Option<(bool, Option<String>)>>,
}

/// When the holding message went out, and whether the channel took it.
type HoldSent = (Instant, Instant, Result<(), String>);

impl Hold {
    fn arm(ctx: &TurnContext, budgets: &Budgets, zero: Instant, to: &str) -> Self {
        let stop = CancellationToken::new();
        let (quiet, mut known) = tokio::sync::watch::channel(None::<(bool, Option<String>)>);
        let at = zero + budgets.get(BudgetStage::Turn).duration();
        let (channel, respond, fixed, to) = (
            ctx.channel.clone(),
            ctx.respond.clone(),
            budgets.holding_message.clone(),
            to.to_string(),
        );
        let languages = ctx.languages.clone();
        let task = {
            let stop = stop.clone();
            tokio::spawn(async move {
                tokio::select! {
                    () = tokio::time::sleep_until(at.into()) => {}
                    () = stop.cancelled() => return None,
                }
                let known = tokio::select! {
                    k = known.wait_for(Option::is_some) => k.ok().and_then(|k| k.clone()),
                    () = stop.cancelled() => return None,
                };
                let Some((false, conversation)) = known else {
                    return None;
                };
                let language = crate::channel::calling_code::language_to_write(
                    &to,
                    conversation.as_deref(),
                    None,
                    &languages,
                );
                let text =
                    fixed.unwrap_or_else(|| respond.notice(Notice::Holding, language.as_deref()));
                let started = Instant::now();
                let sent = channel.send_text(&to, &text).await;
                Some((
                    started,
                    Instant::now(),
                    sent.map(drop).map_err(|e| e.to_string()),
                ))
            })
        };
        Self {
            task: Some(task),
            stop,
            known: quiet,
        }
    }

    /// A hold that never sends anything.
    fn disarmed() -> Self {
        Self {
            task: None,
            stop: CancellationToken::new(),
            known: tokio::sync::watch::channel(None).0,
        }
    }

    /// What the holding message waits for: whether the customer may be
    /// written to, and in which language.
    fn set_known(&self, quiet: bool, language: Option<String>) {
        self.known.send_replace(Some((quiet, language)));
    }

    /// Stops the timer and drops a holding message still on its way.
    fn abandon(mut self) {
        self.stop.cancel();
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Stops the timer; waits for a holding message already on its way.
    async fn disarm(mut self, trace: &mut Trace) {
        self.stop.cancel();
        let Some(task) = self.task.take() else { return };
        if let Ok(Some((start, end, sent))) = task.await {
            let outcome = match sent {
                Ok(()) => SpanOutcome::Overrun {
                    budget: BudgetStage::Turn,
                    action: Action::Hold,
                },
                Err(reason) => SpanOutcome::Error { reason },
            };
            trace.record_full(Stage::Hold, start, None, end, outcome);
        }
    }
}

impl Drop for Hold {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A turn resumed after a restart with its reply already written: the
/// voice note was not stored, so a reply to a voice note is spoken again
/// (in the conversation's language) within the speech budgets; else, or
/// when speech fails, the stored text goes out.
async fn resume(
    ctx: &TurnContext,
    message: &InboundMessage,
    text: &str,
    budgets: &Budgets,
    trace: &mut Trace,
    notes: &mut Notes,
) -> Composed {
    let silent = text.trim().is_empty();
    let mut composed = Composed {
        text: text.to_string(),
        voice: None,
        silent,
    };
    let Some(tts) = ctx.tts.clone() else {
        return composed;
    };
    if silent || !matches!(message.content, Content::Audio { .. }) {
        return composed;
    }
    let prepared = ctx.respond.prepare(message).await;
    let language = prepared.language.as_deref().and_then(Language::from_code);
    let (Some(language), false) = (language, prepared.text_only || prepared.quiet) else {
        tracing::info!("resuming: sending the stored reply as text");
        return composed;
    };
    tracing::info!("resuming: speaking the stored reply again");
    let (tx, rx) = mpsc::channel(1);
    // The channel has room for the one chunk.
    let _ = tx.try_send(text.to_string());
    drop(tx);
    let run = voice::speak(
        tts,
        rx,
        language,
        &ctx.encode,
        budgets,
        CancellationToken::new(),
    )
    .await;
    run.record(trace);
    match run.note {
        Ok(note) => composed.voice = Some(note.bytes),
        Err(NoVoice { reason, .. }) => notes.degraded.push(format!("no voice: {reason}")),
    }
    composed
}

/// The understand stages: what the message says, in words.
async fn understand(
    ctx: &TurnContext,
    message: &InboundMessage,
    conversation: tokio::sync::oneshot::Receiver<Option<String>>,
    budgets: &Budgets,
    trace: &mut Trace,
    notes: &mut Notes,
) -> Result<Said, Later> {
    Ok(match &message.content {
        Content::Audio { media_id, .. } => {
            let heard = Hearing {
                from: &message.from,
                conversation,
            };
            hear(ctx, media_id, heard, budgets, trace, notes).await?
        }
        Content::Text { body } => Said::Text(body.clone()),
        Content::Choice { id, title } => Said::Choice {
            id: id.clone(),
            title: title.clone(),
        },
        Content::Unsupported { kind } => Said::Unsupported { kind: kind.clone() },
    })
}

/// Who sent a note, and the conversation's language once the session has
/// loaded: the note's prior.
struct Hearing<'a> {
    from: &'a str,
    conversation: tokio::sync::oneshot::Receiver<Option<String>>,
}

impl Hearing<'_> {
    /// The conversation's language, else the one the calling code points to.
    async fn prior(self, languages: &[String]) -> Option<Prior> {
        let conversation = self.conversation.await.ok().flatten();
        match conversation.filter(|l| languages.contains(l)) {
            Some(language) => Some(Prior {
                language,
                source: PriorSource::Conversation,
            }),
            None => {
                crate::channel::calling_code::language_of(self.from, languages).map(|language| {
                    Prior {
                        language,
                        source: PriorSource::CallingCode,
                    }
                })
            }
        }
    }
}

async fn hear(
    ctx: &TurnContext,
    media_id: &str,
    hearing: Hearing<'_>,
    budgets: &Budgets,
    trace: &mut Trace,
    notes: &mut Notes,
) -> Result<Said, Later> {
    let fetch = budgets.get(BudgetStage::Fetch);
    let decode = budgets.get(BudgetStage::Decode);
    let attempts = match fetch.action {
        Action::RetryThenApologise | Action::RetryThenOutbox => 2,
        _ => 1,
    };
    let mut note = None;
    for attempt in 1..=attempts {
        let started = Instant::now();
        let downloaded = std::sync::OnceLock::new();
        let limit = started + fetch.duration() + decode.duration();
        let fetched = timeout_at(
            limit.into(),
            fetch_note(
                ctx.channel.as_ref(),
                media_id,
                &ctx.media,
                &ctx.fetch_retry,
                trace,
                &downloaded,
            ),
        )
        .await;
        match fetched {
            Ok(Ok(n)) => {
                note = Some(n);
                break;
            }
            Ok(Err(e)) => {
                let passes = match &e {
                    FetchError::Channel(c) => passing(
                        c.disposition(ctx.fetch_retry.pair_rate_wait),
                        outbox::Hold::Fetch,
                    ),
                    FetchError::Media(_) => None,
                };
                trace.record_full(
                    Stage::Fetch,
                    started,
                    None,
                    Instant::now(),
                    SpanOutcome::Error {
                        reason: e.to_string(),
                    },
                );
                if let Some(hold) = passes {
                    // Not the note's fault: it is fetched again later, from
                    // its media id.
                    tracing::warn!(error = %e, "voice note not fetched; the turn waits in the outbox");
                    return Err(Later {
                        hold,
                        reason: format!("fetch failed: {e}"),
                    });
                }
                tracing::warn!(error = %e, "voice note unplayable");
                return Ok(Said::Unplayable {
                    reason: e.to_string(),
                });
            }
            Err(_) => {
                // Over budget: the download's if it had not finished, else
                // the decoder's.
                let (stage, budget, action) = match downloaded.get() {
                    None => (Stage::Fetch, BudgetStage::Fetch, fetch.action),
                    Some(_) => (Stage::Decode, BudgetStage::Decode, decode.action),
                };
                let last = !(attempt < attempts && budget == BudgetStage::Fetch);
                let action = match (last, budget, action) {
                    (false, _, action) => action,
                    (true, BudgetStage::Fetch, Action::RetryThenOutbox) => Action::RetryThenOutbox,
                    (true, _, _) => Action::Apologise,
                };
                trace.record_full(
                    stage,
                    started,
                    None,
                    Instant::now(),
                    SpanOutcome::Overrun { budget, action },
                );
                tracing::warn!(
                    attempt,
                    budget = budget.name(),
                    action = action.name(),
                    "voice note over budget"
                );
                if last && action == Action::RetryThenOutbox {
                    return Err(Later {
                        hold: outbox::Hold::Fetch,
                        reason: format!("fetch over budget {attempts} times"),
                    });
                }
                if action == Action::Apologise {
                    notes
                        .degraded
                        .push(format!("{} over budget", budget.name()));
                    return Ok(Said::Unplayable {
                        reason: format!("{} over budget", budget.name()),
                    });
                }
            }
        }
    }
    let Some(note) = note else {
        return Ok(Said::Unplayable {
            reason: "no attempt left".into(),
        });
    };
    notes.audio_ms = Some(note.source_ms as f64);
    if note.outcome == SpeechOutcome::NoSpeech {
        return Ok(Said::Silence);
    }
    let stt = budgets.get(BudgetStage::Stt);
    let stt_budget = stt.for_audio(note.source_ms);
    let prior = hearing.prior(&ctx.languages).await;
    let samples = Arc::new(note.samples);
    let mut heard = transcribe(
        ctx,
        ctx.stt.clone(),
        samples.clone(),
        prior.clone(),
        stt_budget,
        trace,
    )
    .await;
    if matches!(heard, Err(SttError::Aborted)) {
        let fast = (stt.action == Action::FasterModel)
            .then(|| ctx.stt_fast.clone())
            .flatten();
        let action = if fast.is_some() {
            Action::FasterModel
        } else {
            Action::AskForText
        };
        mark_last(trace, Stage::Stt, BudgetStage::Stt, action);
        notes
            .degraded
            .push(format!("stt over budget: {}", action.name()));
        heard = match fast {
            Some(fast) => {
                let again = transcribe(ctx, fast, samples, prior, stt_budget, trace).await;
                if matches!(again, Err(SttError::Aborted)) {
                    mark_last(trace, Stage::Stt, BudgetStage::Stt, Action::AskForText);
                }
                again
            }
            None => Err(SttError::Aborted),
        };
    }
    if let Ok(t) = &heard {
        notes.routing = t
            .routing
            .as_ref()
            .map(|r| format!("{} by {}: {}", r.language, r.model, r.reason));
    }
    Ok(match heard {
        Ok(t) => match heard::judge(&t, &ctx.hearing) {
            Err(why) => {
                tracing::info!(
                    audio_ms = note.source_ms,
                    confidence = t.confidence,
                    no_speech = t.no_speech_probability,
                    %why,
                    "not acted on: not heard"
                );
                notes.transcript = Some(t.text.trim().to_string());
                notes.degraded.push(format!("not heard: {why}"));
                // What was not heard says nothing reliable about the
                // customer's language either: the notice goes in the
                // conversation's (or the calling code's).
                Said::NotHeard {
                    reason: why.to_string(),
                    language: None,
                }
            }
            Ok(()) if t.text.trim().is_empty() => Said::Silence,
            Ok(()) => {
                tracing::info!(
                    audio_ms = note.source_ms,
                    confidence = t.confidence,
                    "transcribed"
                );
                notes.transcript = Some(t.text.trim().to_string());
                notes.language = Some(t.language.clone());
                Said::Speech(t)
            }
        },
        Err(SttError::Aborted) => Said::TooSlow,
        Err(e) => Said::Unplayable {
            reason: e.to_string(),
        },
    })
}

/// Marks the last span of `stage` as over `budget` with `action`.
fn mark_last(trace: &mut Trace, stage: Stage, budget: BudgetStage, action: Action) {
    if let Some(span) = trace.spans.iter_mut().rev().find(|s| s.stage == stage) {
        span.outcome = SpanOutcome::Overrun { budget, action };
    }
}

/// One transcription within `budget`; past it, whisper is told to stop and
/// the result is [`SttError::Aborted`].
async fn transcribe(
    ctx: &TurnContext,
    stt: Arc<dyn SpeechToText>,
    samples: Arc<Vec<f32>>,
    prior: Option<Prior>,
    budget: Duration,
    trace: &mut Trace,
) -> Result<crate::stt::Transcript, SttError> {
    let Ok(permit) = ctx.stt_permits.clone().acquire_owned().await else {
        return Err(SttError::Whisper("shutting down".into()));
    };
    let started = Instant::now();
    let abort = Arc::new(AtomicBool::new(false));
    let options = TranscribeOptions {
        abort: Some(abort.clone()),
        prior,
        ..TranscribeOptions::default()
    };
    // The permit goes with the work: an aborted transcription holds it
    // until whisper has actually stopped.
    let job = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        stt.transcribe(&samples, &options)
    });
    let result = match tokio::time::timeout(budget, job).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => Err(SttError::Whisper(format!(
            "transcription thread failed: {e}"
        ))),
        Err(_) => {
            abort.store(true, std::sync::atomic::Ordering::Relaxed);
            Err(SttError::Aborted)
        }
    };
    let outcome = match &result {
        Ok(_) | Err(SttError::Aborted) => SpanOutcome::Ok,
        Err(e) => SpanOutcome::Error {
            reason: e.to_string(),
        },
    };
    trace.record_full(Stage::Stt, started, None, Instant::now(), outcome);
    result
}

/// The dialog and voice stages, overlapping: the reply's chunks are spoken
/// as they are written.
async fn compose(
    ctx: &TurnContext,
    message: &InboundMessage,
    said: &Said,
    prepared: Prepared,
    budgets: &Budgets,
    trace: &mut Trace,
    notes: &mut Notes,
) -> Composed {
    let language = match (said, &ctx.tts) {
        (Said::Speech(t), Some(_)) if !prepared.text_only => Language::from_code(&t.language),
        _ => None,
    };
    let heard = match said {
        Said::Speech(t) => Some(t.language.as_str()),
        _ => None,
    };
    let written_in = crate::channel::calling_code::language_to_write(
        &message.from,
        prepared.language.as_deref(),
        heard,
        &ctx.languages,
    );
    let first = budgets.get(BudgetStage::DialogFirstToken);
    let total = budgets.get(BudgetStage::DialogTotal);
    let started = Instant::now();
    let total_deadline = started + total.duration();
    // With `next_provider` the LLM chain enforces the first-token budget
    // per provider; the turn only caps the whole. With `template` the turn
    // alone enforces it: were the chain also given it, its own timeout could
    // fire first and answer "didn't get that" instead of the template.
    let (first_deadline, chain_first) = match first.action {
        Action::Template => (Some(started + first.duration()), None),
        _ => (None, Some(first.duration())),
    };
    let mut stream = ctx
        .respond
        .stream(message, said, prepared, chain_first)
        .await;

    let (tokens_tx, tokens_rx) = mpsc::channel::<String>(64);
    let cancel_voice = CancellationToken::new();
    let speaking = async {
        match (language, &ctx.tts) {
            (Some(language), Some(tts)) => Some(
                voice::speak(
                    tts.clone(),
                    tokens_rx,
                    language,
                    &ctx.encode,
                    budgets,
                    cancel_voice.clone(),
                )
                .await,
            ),
            _ => None,
        }
    };
    let writing = async {
        let mut tokens_tx = Some(tokens_tx);
        let mut text = String::new();
        let mut first_at = None;
        let overrun = loop {
            let deadline = match (first_at, first_deadline) {
                (None, Some(f)) => f.min(total_deadline),
                _ => total_deadline,
            };
            match timeout_at(deadline.into(), stream.chunks.recv()).await {
                Ok(Some(chunk)) => {
                    first_at.get_or_insert_with(Instant::now);
                    if !text.is_empty() && !text.ends_with(char::is_whitespace) {
                        text.push(' ');
                    }
                    text.push_str(&chunk);
                    if let Some(tx) = &tokens_tx {
                        if tx.send(sentence_token(chunk)).await.is_err() {
                            tokens_tx = None;
                        }
                    }
                }
                Ok(None) => break None,
                Err(_) if first_at.is_none() && Some(deadline) == first_deadline => {
                    break Some(BudgetStage::DialogFirstToken)
                }
                Err(_) => break Some(BudgetStage::DialogTotal),
            }
        };
        let ended = Instant::now();
        drop(tokens_tx);
        let meta = match overrun {
            // The dialog is cut: what it wrote is not the reply.
            Some(_) => None,
            None => {
                let left = total_deadline.max(Instant::now() + Duration::from_millis(50));
                timeout_at(left.into(), &mut stream.done)
                    .await
                    .ok()
                    .and_then(Result::ok)
            }
        };
        if overrun.is_some() {
            cancel_voice.cancel();
        }
        (text, first_at, ended, overrun, meta)
    };
    let (spoken, (text, first_at, ended, overrun, meta)) = tokio::join!(speaking, writing);
    drop(stream);

    let dialog_outcome = match overrun {
        Some(budget) => SpanOutcome::Overrun {
            budget,
            action: Action::Template,
        },
        None => SpanOutcome::Ok,
    };
    trace.record_full(Stage::Dialog, started, first_at, ended, dialog_outcome);
    if let Some(run) = &spoken {
        run.record(trace);
    }
    let meta: ReplyMeta = meta.unwrap_or_default();
    notes.intent = meta.intent.clone();
    notes.fast_path = meta.fast_path;
    if let Some(budget) = overrun {
        notes
            .degraded
            .push(format!("{} over budget: template", budget.name()));
        return Composed {
            text: ctx
                .respond
                .notice(Notice::LateAnswer, written_in.as_deref()),
            voice: None,
            silent: false,
        };
    }
    if meta.silent {
        return Composed {
            text: String::new(),
            voice: None,
            silent: true,
        };
    }
    if text.trim().is_empty() {
        tracing::warn!(intent = ?meta.intent, "the reply is empty");
        return Composed {
            text: ctx
                .respond
                .notice(Notice::Unanswered, written_in.as_deref()),
            voice: None,
            silent: false,
        };
    }
    let voice = match spoken.map(|r| r.note) {
        Some(Ok(note)) if meta.spoken => {
            tracing::info!(
                provider = %note.provider,
                bytes = note.bytes.len(),
                audio_ms = note.info.duration_ms,
                truncated = note.info.truncated,
                "reply spoken"
            );
            notes.reply_audio_ms = Some(note.info.duration_ms);
            Some(note.bytes)
        }
        Some(Err(NoVoice {
            reason, overrun, ..
        })) if meta.spoken => {
            tracing::warn!(%reason, "could not speak the reply; sending it as text");
            notes.degraded.push(match overrun {
                Some(b) => format!("{} over budget: send_text", b.name()),
                None => format!("no voice: {reason}"),
            });
            None
        }
        _ => None,
    };
    Composed {
        text,
        voice,
        silent: false,
    }
}

/// Uploads the voice note within the `upload` budget; `None` sends text.
async fn upload(
    ctx: &TurnContext,
    ogg: &[u8],
    budgets: &Budgets,
    trace: &mut Trace,
    notes: &mut Notes,
) -> Option<String> {
    let budget = budgets.get(BudgetStage::Upload);
    let started = Instant::now();
    let bytes = bytes::Bytes::copy_from_slice(ogg);
    let uploaded = tokio::time::timeout(budget.duration(), ctx.channel.upload_voice(bytes)).await;
    let (id, outcome) = match uploaded {
        Ok(Ok(id)) => (Some(id), SpanOutcome::Ok),
        Ok(Err(e)) => (
            None,
            SpanOutcome::Error {
                reason: e.to_string(),
            },
        ),
        Err(_) => (
            None,
            SpanOutcome::Overrun {
                budget: BudgetStage::Upload,
                action: Action::SendText,
            },
        ),
    };
    if id.is_none() {
        tracing::warn!(
            ?outcome,
            "voice note not uploaded; sending the reply as text"
        );
        notes.degraded.push("upload failed: send_text".into());
    }
    trace.record_full(Stage::Upload, started, None, Instant::now(), outcome);
    id
}

/// The send stage within the `send` budget: the voice note when there is
/// one, else the text.
async fn send(
    ctx: &TurnContext,
    to: &str,
    text: &str,
    voice_id: Option<&str>,
    budgets: &Budgets,
    trace: &mut Trace,
) -> Result<crate::channel::Sent, ChannelError> {
    let budget = budgets.get(BudgetStage::Send);
    let attempts = if budget.action == Action::RetryOnce {
        2
    } else {
        1
    };
    let mut last = None;
    for attempt in 1..=attempts {
        let started = Instant::now();
        let call = async {
            match voice_id {
                Some(id) => ctx.channel.send_voice(to, id).await,
                None => ctx.channel.send_text(to, text).await,
            }
        };
        match tokio::time::timeout(budget.duration(), call).await {
            Ok(sent) => {
                let outcome = match &sent {
                    Ok(_) => SpanOutcome::Ok,
                    Err(e) => SpanOutcome::Error {
                        reason: e.to_string(),
                    },
                };
                trace.record_full(Stage::Send, started, None, Instant::now(), outcome);
                return sent;
            }
            Err(_) => {
                let action = if attempt < attempts {
                    Action::RetryOnce
                } else {
                    Action::Fail
                };
                trace.record_full(
                    Stage::Send,
                    started,
                    None,
                    Instant::now(),
                    SpanOutcome::Overrun {
                        budget: BudgetStage::Send,
                        action,
                    },
                );
                last = Some(ChannelError::Timeout(budget.duration()));
            }
        }
    }
    Err(last.unwrap_or(ChannelError::Timeout(budget.duration())))
}

/// Records that the channel accepted the reply. The reply went out: a
/// failed write is tried again here, as a write, until the store takes it;
/// re-running the turn would send again. Only the end of the process (the
/// documented crash window) stops it.
async fn record_accepted(
    queue: &dyn Queue,
    message_id: &str,
    reply_id: &str,
) -> Result<(), StoreError> {
    let mut attempt: u32 = 1;
    loop {
        match queue
            .advance(message_id, Progress::ReplyAccepted { reply_id })
            .await
        {
            Ok(()) => return Ok(()),
            // Gone from the store (erased meanwhile): nothing to record.
            Err(StoreError::NotFound(_)) => return Ok(()),
            Err(e) => {
                tracing::error!(error = %e, attempt, "could not record the accepted reply; retrying the write");
                let wait =
                    Duration::from_millis(50u64 << attempt.min(7)).min(Duration::from_secs(5));
                tokio::time::sleep(wait).await;
                attempt = attempt.saturating_add(1);
            }
        }
    }
}

/// A dialog chunk (a whole sentence, with no space after it) as a token
/// for the voice's aggregator, which cuts at a sentence end followed by
/// white space: without the space a reply's sentences ran together into
/// one chunk ("molto.Un collega"), spoken as one and never found in the
/// speech cache.
fn sentence_token(chunk: String) -> String {
    if chunk.ends_with(char::is_whitespace) {
        chunk
    } else {
        chunk + " "
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::{ChannelError, MediaDownload, Sent};
    use std::sync::Mutex;

    #[test]
    fn a_replys_sentences_reach_the_voice_as_separate_chunks() {
        use crate::tts::{AggregatorConfig, Language, SentenceAggregator};
        let sentences = [
            "Mi dispiace molto.",
            "Un collega se ne occuperà e continuerà qui.",
            "I messaggi vocali vengono trascritti automaticamente.",
        ];
        let mut aggregator = SentenceAggregator::new(Language::It, AggregatorConfig::default());
        let mut chunks = Vec::new();
        for s in sentences {
            chunks.extend(aggregator.push(&sentence_token(s.to_string())));
        }
        chunks.extend(aggregator.finish());
        assert_eq!(chunks, sentences);
    }

    /// A channel whose read receipts take 50 ms to be accepted.
    #[derive(Default)]
    struct SlowReceipts {
        read: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Channel for SlowReceipts {
        async fn open_media(&self, _: &str) -> Result<MediaDownload, ChannelError> {
            Err(ChannelError::Transport("no media here".into()))
        }
        async fn send_text(&self, _: &str, _: &str) -> Result<Sent, ChannelError> {
            Err(ChannelError::Transport("no texts here".into()))
        }
        async fn upload_voice(&self, _: bytes::Bytes) -> Result<String, ChannelError> {
            Err(ChannelError::Transport("no uploads here".into()))
        }
        async fn send_voice(&self, _: &str, _: &str) -> Result<Sent, ChannelError> {
            Err(ChannelError::Transport("no voice here".into()))
        }
        async fn mark_read(&self, message_id: &str) -> Result<(), ChannelError> {
            tokio::time::sleep(Duration::from_millis(50)).await;
            self.read.lock().unwrap().push(message_id.to_string());
            Ok(())
        }
    }

    #[tokio::test]
    async fn a_quick_turn_still_marks_its_message_read() {
        let channel = Arc::new(SlowReceipts::default());
        // The reply went out before the receipt was accepted.
        drop(Typing::start(channel.clone(), "wamid.Q1".into()));
        let until = tokio::time::Instant::now() + Duration::from_secs(5);
        while channel.read.lock().unwrap().is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(*channel.read.lock().unwrap(), ["wamid.Q1"]);
        // and no refresh follows
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(channel.read.lock().unwrap().len(), 1);
    }
}
