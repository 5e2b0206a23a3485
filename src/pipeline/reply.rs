//! The reply stage: what the customer said in, the reply to send out.
//!
//! [`Respond`] is the stage's interface, with two providers picked by
//! `[service] reply`: the dialog stage ([`super::dialog::DialogRespond`], the
//! default) and [`Echo`], which says back what was understood, so a tester
//! can tell at once whether the note was heard right. A provider streams its
//! reply ([`Respond::stream`]) and says at the end whether it wants it
//! [spoken](ReplyMeta::spoken); the turn's voice stage
//! ([`super::voice`]) speaks the chunks while the rest is still being
//! written.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::channel::InboundMessage;
use crate::stt::Transcript;

/// What the customer said, as the turn understood it.
#[derive(Debug, Clone)]
pub enum Said {
    /// A voice note with speech in it.
    Speech(Transcript),
    /// A voice note without speech (silence, a pocket recording).
    Silence,
    /// A voice note that could not be fetched or decoded; the reason is for
    /// the logs, not the customer.
    Unplayable {
        reason: String,
    },
    Text(String),
    /// A tap on a button or list row.
    Choice {
        id: String,
        title: String,
    },
    /// A message type voxline does not answer, by name.
    Unsupported {
        kind: String,
    },
    /// A voice note that could not be transcribed within its budget.
    TooSlow,
    /// A voice note whose transcript must not be acted on: no speech after
    /// all, words too unsure, a known Whisper hallucination, or a language
    /// the business does not serve. The customer is asked to say it again
    /// or type it.
    NotHeard {
        reason: String,
        /// The note's language, when it is one the business serves.
        language: Option<String>,
    },
}

impl Said {
    /// The transcript, for a voice note with speech.
    pub fn transcript(&self) -> Option<&str> {
        match self {
            Self::Speech(t) => Some(&t.text),
            _ => None,
        }
    }
}

/// What goes back to the customer.
///
/// A reply with no text and no voice note is [silent](Self::is_silent): the
/// turn sends nothing. The store keeps only the text, so an empty stored
/// reply means the same after a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub text: String,
    /// The provider wants the text spoken: the customer sent a voice note
    /// and the dialog chose a voice reply.
    pub spoken: bool,
    /// An Ogg/Opus voice note to send instead of the text, once a
    /// voice-reply stage makes one.
    pub voice: Option<Bytes>,
}

impl Reply {
    pub fn text(text: impl Into<String>) -> Self {
        Self {
            text: text.into(),
            spoken: false,
            voice: None,
        }
    }

    /// A text the voice-reply stage should speak; it goes out as text when
    /// no voice note can be made.
    pub fn spoken(text: impl Into<String>) -> Self {
        Self {
            spoken: true,
            ..Self::text(text)
        }
    }

    /// Nothing is sent: the customer opted out, or a person has the
    /// conversation.
    pub fn silent() -> Self {
        Self::text("")
    }

    pub fn is_silent(&self) -> bool {
        self.voice.is_none() && self.text.trim().is_empty()
    }
}

/// What a provider knows about a customer before their message is
/// understood, loaded while the note is fetched and transcribed.
#[derive(Debug, Clone, Default)]
pub struct Prepared {
    /// The customer opted out or a person has the conversation: nothing may
    /// be sent that the reply itself does not send (no holding message).
    pub quiet: bool,
    /// The customer asked for text replies: don't start speaking.
    pub text_only: bool,
    /// The conversation's language, when the provider knows it.
    pub language: Option<String>,
    /// The provider's own state, handed back to [`Respond::stream`].
    pub state: Option<std::sync::Arc<dyn std::any::Any + Send + Sync>>,
}

/// How a streamed reply should go out, known when it ends.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReplyMeta {
    pub spoken: bool,
    /// Nothing is to be sent.
    pub silent: bool,
    pub intent: Option<String>,
    /// Answered without an LLM.
    pub fast_path: Option<bool>,
}

/// A reply being written: text chunks as they are ready, then how it goes
/// out. Dropping it cancels the rest.
pub struct ReplyStream {
    pub chunks: mpsc::Receiver<String>,
    pub done: oneshot::Receiver<ReplyMeta>,
}

impl ReplyStream {
    /// A reply already written in full.
    pub fn whole(reply: Reply, meta: ReplyMeta) -> Self {
        let (tx, chunks) = mpsc::channel(1);
        if !reply.text.trim().is_empty() {
            // The channel has room for the one chunk.
            let _ = tx.try_send(reply.text);
        }
        let (done_tx, done) = oneshot::channel();
        let _ = done_tx.send(ReplyMeta {
            spoken: reply.spoken,
            ..meta
        });
        Self { chunks, done }
    }
}

/// A reply provider.
#[async_trait::async_trait]
pub trait Respond: Send + Sync {
    /// The whole reply.
    async fn respond(&self, message: &InboundMessage, said: &Said) -> Reply;

    /// Loads what the provider needs about the customer; the turn runs it
    /// while the note is still being fetched and transcribed.
    async fn prepare(&self, _message: &InboundMessage) -> Prepared {
        Prepared::default()
    }

    /// What is said about the message itself rather than in answer to it,
    /// in `language` (ISO 639-1) when the provider speaks it; the default is
    /// English.
    fn notice(&self, notice: Notice, _language: Option<&str>) -> String {
        notice.english().to_string()
    }

    /// The reply in chunks as it is written. `first_output` is the budget
    /// for the first chunk of each provider the reply tries (an LLM chain
    /// moves to its next provider when it passes). The default writes the
    /// whole reply first.
    async fn stream(
        &self,
        message: &InboundMessage,
        said: &Said,
        _prepared: Prepared,
        _first_output: Option<Duration>,
    ) -> ReplyStream {
        let reply = self.respond(message, said).await;
        let meta = ReplyMeta {
            silent: reply.is_silent(),
            ..ReplyMeta::default()
        };
        ReplyStream::whole(reply, meta)
    }
}

/// What voxline says about a message rather than in answer to it. Each has
/// a reply template of its [`key`](Notice::key) in every language; the
/// English text is in [`notices`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Notice {
    Silence,
    Unplayable,
    Unsupported,
    Unanswered,
    TypePlease,
    LateAnswer,
    Holding,
    NotHeard,
}

impl Notice {
    pub const ALL: [Notice; 8] = [
        Self::Silence,
        Self::Unplayable,
        Self::Unsupported,
        Self::Unanswered,
        Self::TypePlease,
        Self::LateAnswer,
        Self::Holding,
        Self::NotHeard,
    ];

    /// The reply template's key.
    pub fn key(self) -> &'static str {
        match self {
            Self::Silence => "silence",
            Self::Unplayable => "unplayable",
            Self::Unsupported => "unsupported",
            Self::Unanswered => "unanswered",
            Self::TypePlease => "type_please",
            Self::LateAnswer => "late_answer",
            Self::Holding => "holding",
            Self::NotHeard => "not_heard",
        }
    }

    pub fn english(self) -> &'static str {
        match self {
            Self::Silence => notices::SILENCE,
            Self::Unplayable => notices::UNPLAYABLE,
            Self::Unsupported => notices::UNSUPPORTED,
            Self::Unanswered => notices::UNANSWERED,
            Self::TypePlease => notices::TYPE_PLEASE,
            Self::LateAnswer => notices::LATE_ANSWER,
            Self::Holding => super::budget::HOLDING_MESSAGE,
            Self::NotHeard => notices::NOT_HEARD,
        }
    }
}

/// What a customer is told when the message itself could not be used,
/// whichever provider answers the rest, in English (the templates of
/// [`Notice`] have every language).
pub mod notices {
    pub const SILENCE: &str = "I couldn't hear anything in your voice note. Could you record it again, a little closer to the phone?";
    pub const UNPLAYABLE: &str =
        "Sorry, I couldn't play your voice note. Could you send it again, or type your message?";
    pub const UNSUPPORTED: &str = "Sorry, I can only answer voice notes and text messages for now. Could you send a voice note or type your message?";
    /// Told when the dialog produced nothing to say although it meant to.
    pub const UNANSWERED: &str =
        "Sorry, I couldn't answer that just now. Could you try again in a moment?";
    /// The `ask_for_text` action of the `stt` budget.
    pub const TYPE_PLEASE: &str =
        "Sorry, I'm slow to understand voice notes right now. Could you type your message instead?";
    /// A voice note that was not heard well enough to act on.
    pub const NOT_HEARD: &str =
        "Sorry, I didn't quite catch that. Could you say it again, or type it?";
    /// The `template` action of the dialog budgets.
    pub const LATE_ANSWER: &str = "Sorry, I couldn't find the answer quickly enough. Could you ask again in a moment? You can also ask for a person.";
}

/// Says back what was understood.
pub struct Echo;

#[async_trait::async_trait]
impl Respond for Echo {
    async fn respond(&self, _message: &InboundMessage, said: &Said) -> Reply {
        Reply::text(match said {
            Said::Speech(t) => format!("I heard: \u{201c}{}\u{201d}", t.text.trim()),
            Said::Silence => notices::SILENCE.into(),
            Said::Unplayable { .. } => notices::UNPLAYABLE.into(),
            Said::Text(body) => format!("You wrote: \u{201c}{}\u{201d}", body.trim()),
            Said::Choice { title, .. } => format!("You chose: {title}"),
            Said::Unsupported { .. } => notices::UNSUPPORTED.into(),
            Said::TooSlow => notices::TYPE_PLEASE.into(),
            Said::NotHeard { .. } => notices::NOT_HEARD.into(),
        })
    }
}
