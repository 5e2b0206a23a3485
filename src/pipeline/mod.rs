//! Runs the stages of a turn in order and owns what crosses stages: the
//! turn's timing [`trace::Trace`] and its recorded progress.
//!
//! A service turn ([`turn::run_turn`]) is: [`fetch`] (download and decode
//! overlapped) → speech to text → [`reply`] → send. The dialog stage plugs
//! in as a [`reply::Respond`] provider ([`dialog::DialogRespond`]); the
//! voice-reply stage ([`voice::VoiceReply`]) wraps it, speaking the replies
//! meant to be spoken into [`reply::Reply::voice`] within a budget.
//! [`transcribe_note`] is the offline path for a note already in memory,
//! used by the command line.

pub mod budget;
pub mod dialog;
pub mod fetch;
pub mod outbox;
pub mod reply;
pub mod trace;
pub mod turn;
pub mod voice;

use std::time::Instant;

use serde::Serialize;

use crate::media::{self, MediaConfig, MediaError, SpeechOutcome};
use crate::stt::{SpeechToText, SttError, TranscribeOptions, Transcript};
use trace::{Stage, Trace};

/// What the audio path made of one voice note.
#[derive(Debug, Clone, Serialize)]
pub struct NoteResult {
    pub format: &'static str,
    /// Duration of the decoded note before trimming, in ms.
    pub audio_ms: u64,
    /// Duration of the speech passed to STT, in ms.
    pub speech_ms: u64,
    /// `None` when the note holds no speech.
    pub transcript: Option<Transcript>,
    pub truncated: bool,
    pub trace: Trace,
}

#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error(transparent)]
    Media(#[from] MediaError),
    #[error(transparent)]
    Stt(#[from] SttError),
}

/// Decodes, prepares and transcribes one note held in memory. Blocking.
pub fn transcribe_note(
    bytes: &[u8],
    media_config: &MediaConfig,
    stt: &dyn SpeechToText,
    options: &TranscribeOptions,
) -> Result<NoteResult, NoteError> {
    let mut trace = Trace::start();
    let note = media::load(bytes, media_config)?;
    trace.record_span(Stage::Decode, note.timings.decode);
    trace.record_span(
        Stage::Resample,
        note.timings.resample + note.timings.prepare,
    );

    let transcript = match note.outcome {
        SpeechOutcome::NoSpeech => None,
        SpeechOutcome::Speech | SpeechOutcome::Truncated { .. } => {
            let started = Instant::now();
            let t = stt.transcribe(&note.samples, options)?;
            trace.record(Stage::Stt, started, Instant::now());
            Some(t)
        }
    };
    Ok(NoteResult {
        format: note.format.name(),
        audio_ms: note.source_ms,
        speech_ms: note.speech_ms,
        transcript,
        truncated: matches!(note.outcome, SpeechOutcome::Truncated { .. }),
        trace,
    })
}
