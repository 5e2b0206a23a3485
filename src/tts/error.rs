//! Why speech could not be produced.

use std::time::Duration;

use thiserror::Error;

use crate::encode::EncodeError;

#[derive(Debug, Error)]
pub enum TtsError {
    /// The caller cancelled (the turn's budget ran out, or the customer sent
    /// another message).
    #[error("speech cancelled")]
    Cancelled,
    /// The provider cannot run here (library missing, bad settings).
    #[error("{provider} unavailable: {reason}")]
    Unavailable { provider: String, reason: String },
    /// The provider answered with an error.
    #[error("{provider} refused: {status}: {message}")]
    Refused {
        provider: String,
        status: String,
        message: String,
    },
    /// Connection failed, dropped, or the peer broke the protocol.
    #[error("{provider} transport: {reason}")]
    Transport { provider: String, reason: String },
    /// No audio (or no sign of life) in time.
    #[error("{provider}: no {what} within {after:?}")]
    Timeout {
        provider: String,
        what: &'static str,
        after: Duration,
    },
    /// The text was spoken but produced no audio at all.
    #[error("no audio was produced")]
    NoAudio,
    /// Every provider in the chain failed; the reply goes out as text.
    #[error("all speech providers failed: {}", .0.join("; "))]
    AllFailed(Vec<String>),
    /// Audio came out after a provider failed mid-reply; what was spoken is
    /// incomplete, so the reply goes out as text.
    #[error("{provider} failed after audio was sent: {reason}")]
    Interrupted { provider: String, reason: String },
    #[error(transparent)]
    Encode(#[from] EncodeError),
}
