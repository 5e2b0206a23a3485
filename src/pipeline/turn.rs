//! One turn: a customer's message in, one reply accepted by the channel out,
//! each step recorded in the store so that a restart resumes where the turn
//! stopped.
//!
//! The stages, in order: understand (for a voice note: [`fetch`](super::fetch)
//! then speech to text on a blocking thread), [`reply`](super::reply), send.
//! Progress is written after each: `fetching` when the download starts,
//! `transcribed` with the transcript and the composed reply (a restart from
//! here sends the stored reply without fetching or transcribing again), and
//! `replied` with the channel's message id. A [silent](Reply::is_silent)
//! reply (STOP, a person has the conversation) is stored as an empty text
//! and ends the turn in `silent` without calling the channel; an empty
//! stored reply found on resume is silent too. The store keeps only the
//! reply's text, not its voice note: a turn resumed from `transcribed`
//! sends that text, even when the reply would have been spoken.
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

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::Semaphore;
use tracing::Instrument;

use super::fetch::fetch_note;
use super::reply::{Reply, Respond, Said};
use super::trace::{Stage, Trace};
use crate::channel::{Channel, ChannelError, Content, Disposition, RetryPolicy, Sent};
use crate::media::{MediaConfig, SpeechOutcome};
use crate::store::{Progress, Queue, StoreError, TurnState};
use crate::stt::{SpeechToText, TranscribeOptions};

/// Everything a turn needs, shared by all turns.
pub struct TurnContext {
    pub channel: Arc<dyn Channel>,
    pub queue: Arc<dyn Queue>,
    /// The one speech-to-text provider all turns share.
    pub stt: Arc<dyn SpeechToText>,
    /// Transcriptions running at once; each already uses all the threads
    /// `[stt] threads` gives it.
    pub stt_permits: Arc<Semaphore>,
    pub respond: Arc<dyn Respond>,
    pub media: MediaConfig,
    /// Retries of a whole download (each send retries inside the channel).
    pub fetch_retry: RetryPolicy,
    pub mark_read: bool,
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
    Failed {
        reason: String,
        dead_letter: bool,
    },
}

/// Runs (or resumes) the turn of message `message_id`.
///
/// A store error stops the turn where it is; its state in the store is
/// unchanged, and the next start resumes it.
pub async fn run_turn(ctx: &TurnContext, message_id: &str) -> Result<TurnOutcome, StoreError> {
    let turn = ctx.queue.turn(message_id).await?;
    let span = tracing::info_span!(
        "turn",
        wamid = %turn.message.id,
        from = %turn.message.from,
        kind = turn.message.content.kind()
    );
    async move {
        if turn.state.is_final() {
            return Ok(TurnOutcome::AlreadyFinished(turn.state));
        }
        let message = &turn.message;
        let mut trace = Trace::start();
        if ctx.mark_read && turn.state == TurnState::Received {
            if let Err(e) = ctx.channel.mark_read(&message.id).await {
                tracing::warn!(error = %e, "could not mark the message read");
            }
        }
        let reply = match (turn.state, &turn.reply_text) {
            (TurnState::Transcribed, Some(text)) => {
                // The voice note was not stored: the text is the reply.
                tracing::info!("resuming: sending the stored reply as text");
                Reply::text(text.clone())
            }
            _ => {
                if matches!(message.content, Content::Audio { .. }) {
                    ctx.queue.advance(&message.id, Progress::Fetching).await?;
                }
                let said = understand(ctx, &message.content, &mut trace).await;
                let started = Instant::now();
                let reply = ctx.respond.respond(message, &said).await;
                trace.record(Stage::Dialog, started, Instant::now());
                ctx.queue
                    .advance(
                        &message.id,
                        Progress::Understood {
                            transcript: said.transcript(),
                            reply: &reply.text,
                        },
                    )
                    .await?;
                reply
            }
        };
        if reply.is_silent() {
            ctx.queue
                .advance(&message.id, Progress::NothingToSend)
                .await?;
            tracing::info!(
                turn_ms = format!("{:.0}", trace.total_ms()),
                "turn finished without a reply"
            );
            return Ok(TurnOutcome::Silent);
        }

        let started = Instant::now();
        let sent = send(ctx.channel.as_ref(), &message.from, &reply).await;
        trace.record(Stage::Send, started, Instant::now());
        let outcome = match sent {
            Ok(sent) => {
                // The duplicate window closes with this write.
                record_accepted(ctx.queue.as_ref(), &message.id, &sent.message_id).await?;
                TurnOutcome::Replied {
                    reply_id: sent.message_id,
                }
            }
            Err(e) => {
                let dead_letter = matches!(
                    e.disposition(ctx.fetch_retry.pair_rate_wait),
                    Disposition::DeadLetter
                );
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
                TurnOutcome::Failed {
                    reason,
                    dead_letter,
                }
            }
        };
        let stages: Vec<String> = trace
            .spans
            .iter()
            .map(|s| format!("{}={:.0}ms", s.stage.name(), s.duration_ms()))
            .collect();
        match &outcome {
            TurnOutcome::Replied { reply_id } => tracing::info!(
                reply_id = %reply_id,
                turn_ms = format!("{:.0}", trace.total_ms()),
                stages = stages.join(" "),
                "turn replied"
            ),
            TurnOutcome::Failed {
                reason,
                dead_letter,
            } => tracing::warn!(
                reason = %reason,
                dead_letter,
                stages = stages.join(" "),
                "turn failed"
            ),
            TurnOutcome::Silent | TurnOutcome::AlreadyFinished(_) => {}
        }
        Ok(outcome)
    }
    .instrument(span)
    .await
}

/// The understand stages: what the message says, in words.
async fn understand(ctx: &TurnContext, content: &Content, trace: &mut Trace) -> Said {
    match content {
        Content::Audio { media_id, .. } => hear(ctx, media_id, trace).await,
        Content::Text { body } => Said::Text(body.clone()),
        Content::Choice { id, title } => Said::Choice {
            id: id.clone(),
            title: title.clone(),
        },
        Content::Unsupported { kind } => Said::Unsupported { kind: kind.clone() },
    }
}

async fn hear(ctx: &TurnContext, media_id: &str, trace: &mut Trace) -> Said {
    let note = match fetch_note(
        ctx.channel.as_ref(),
        media_id,
        &ctx.media,
        &ctx.fetch_retry,
        trace,
    )
    .await
    {
        Ok(note) => note,
        Err(e) => {
            tracing::warn!(error = %e, "voice note unplayable");
            return Said::Unplayable {
                reason: e.to_string(),
            };
        }
    };
    if note.outcome == SpeechOutcome::NoSpeech {
        return Said::Silence;
    }
    let stt = ctx.stt.clone();
    let Ok(_permit) = ctx.stt_permits.acquire().await else {
        return Said::Unplayable {
            reason: "shutting down".into(),
        };
    };
    let started = Instant::now();
    let samples = note.samples;
    let transcribed = tokio::task::spawn_blocking(move || {
        stt.transcribe(&samples, &TranscribeOptions::default())
    })
    .await;
    trace.record(Stage::Stt, started, Instant::now());
    match transcribed {
        Ok(Ok(t)) if t.text.trim().is_empty() => Said::Silence,
        Ok(Ok(t)) => {
            tracing::info!(
                audio_ms = note.source_ms,
                confidence = t.confidence,
                "transcribed"
            );
            Said::Speech(t)
        }
        Ok(Err(e)) => Said::Unplayable {
            reason: e.to_string(),
        },
        Err(e) => Said::Unplayable {
            reason: format!("transcription thread failed: {e}"),
        },
    }
}

/// The send stage: the voice note when there is one, else the text.
async fn send(channel: &dyn Channel, to: &str, reply: &Reply) -> Result<Sent, ChannelError> {
    match &reply.voice {
        Some(ogg) => channel.send_voice(to, ogg.clone()).await,
        None => channel.send_text(to, &reply.text).await,
    }
}

/// Records that the channel accepted the reply. A failed write is tried
/// again here rather than by re-running the turn, which would send again.
async fn record_accepted(
    queue: &dyn Queue,
    message_id: &str,
    reply_id: &str,
) -> Result<(), StoreError> {
    let mut attempt: u64 = 1;
    loop {
        match queue
            .advance(message_id, Progress::ReplyAccepted { reply_id })
            .await
        {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 5 => {
                tracing::error!(error = %e, attempt, "could not record the accepted reply; retrying");
                tokio::time::sleep(std::time::Duration::from_millis(100 * attempt)).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}
