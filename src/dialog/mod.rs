//! The dialog stage: what to answer to a customer's message, typed or
//! transcribed, and what to do about it.
//!
//! A message goes through [`stage::DialogStage`]: the customer's session is
//! loaded ([`session`]), the fast path classifies it ([`intent`]), and a
//! template ([`templates`]) is filled from the shop's backend
//! ([`commerce`]). Writes are proposed first and committed only on an
//! explicit yes in the next turn. What the fast path cannot answer goes to
//! the knowledge base ([`kb`]) and the LLM chain ([`llm`]), whose sentences
//! pass the fact guard ([`guard`]) before they are passed on.
//!
//! Conversations handed to a person are listed and released with
//! `voxline handoff` ([`cli`]) or over HTTP ([`operator`]).
//!
//! The reply is a stream of text chunks, one sentence at a time, so that
//! speech synthesis can start on the first sentence while the rest is being
//! written; the turn's [`Outcome`] (intent, actions, delivery) follows when
//! the reply is complete.

pub mod calendar;
pub mod cli;
pub mod commerce;
pub mod config;
pub mod guard;
pub mod intent;
pub mod kb;
pub mod llm;
pub mod operator;
pub mod reply;
pub mod session;
pub mod stage;
pub mod templates;

use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

pub use commerce::{Change, Commerce};
pub use config::DialogConfig;
pub use stage::DialogStage;

/// How the message reached us.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Voice,
    Text,
}

/// One customer message, as the dialog stage sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The message id (WhatsApp's `wamid`); committed changes name it.
    pub id: String,
    /// The customer's WhatsApp number.
    pub from: String,
    pub text: String,
    /// The transcript's language, when the message was a voice note.
    pub language: Option<String>,
    /// The transcript's confidence, when the message was a voice note.
    pub transcript_confidence: Option<f32>,
    pub channel: Channel,
    /// The customer's session, when the turn loaded it ahead (while the
    /// note was being transcribed); else the dialog loads it.
    pub session: Option<session::Session>,
    /// The turn's `dialog_first_token` budget, which shortens each LLM
    /// provider's first-token timeout.
    pub first_token_budget: Option<std::time::Duration>,
}

impl Message {
    pub fn text(id: &str, from: &str, text: &str) -> Self {
        Self {
            id: id.into(),
            from: from.into(),
            text: text.into(),
            language: None,
            transcript_confidence: None,
            channel: Channel::Text,
            session: None,
            first_token_budget: None,
        }
    }

    pub fn voice(id: &str, from: &str, text: &str, language: &str, confidence: f32) -> Self {
        Self {
            id: id.into(),
            from: from.into(),
            text: text.into(),
            language: Some(language.into()),
            transcript_confidence: Some(confidence),
            channel: Channel::Voice,
            session: None,
            first_token_budget: None,
        }
    }
}

/// How the reply should go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Delivery {
    Voice,
    Text,
    /// Nothing is sent: the customer sent STOP, or a person has the
    /// conversation.
    None,
}

/// Where the reply came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "provider")]
pub enum Source {
    FastPath,
    KnowledgeBase,
    Llm(String),
    /// A template because nothing better answered (or the guard caught the
    /// LLM); flagged for review.
    Template,
    Silent,
}

/// What the turn did besides talking.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum Action {
    Proposed {
        change: Change,
    },
    Committed {
        change: Change,
        order: String,
        confirmed_turn: String,
    },
    Declined {
        change: Change,
    },
    Refused {
        change: Change,
        reason: String,
    },
    CartAdded {
        product: String,
        quantity: u32,
    },
    OptedOut,
    OptedIn,
    TextOnly,
    HandedOff {
        reason: String,
    },
    GuardReplaced {
        claim: String,
    },
}

/// The turn's result, sent when the last chunk has been.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub intent: String,
    pub confidence: f32,
    pub language: String,
    pub fast_path: bool,
    pub source: Source,
    pub delivery: Delivery,
    pub actions: Vec<Action>,
    /// A person should look at this turn's reply.
    pub needs_review: bool,
    /// The LLM was asked, whether or not its answer was the one sent (the
    /// guard may have replaced it, or every provider failed).
    pub llm_asked: bool,
    /// The whole reply as sent in chunks.
    pub reply: String,
}

/// A reply in the making: text chunks (whole sentences) as they are ready,
/// then the outcome. Dropping `chunks` cancels the rest of the reply.
pub struct Reply {
    pub chunks: mpsc::Receiver<String>,
    pub outcome: oneshot::Receiver<Outcome>,
}

impl Reply {
    /// Waits for the whole reply: (text, outcome).
    pub async fn collect(mut self) -> (String, Option<Outcome>) {
        let mut parts = Vec::new();
        while let Some(c) = self.chunks.recv().await {
            parts.push(c);
        }
        (parts.join(" "), self.outcome.await.ok())
    }
}

/// The dialog stage, as the pipeline sees it.
pub trait Dialog: Send + Sync {
    /// Starts answering `message`; needs a tokio runtime.
    fn respond(&self, message: Message) -> Reply;
}
