//! The reply stage: what the customer said in, the reply to send out.
//!
//! [`Respond`] is the stage's interface, with two providers picked by
//! `[service] reply`: the dialog stage ([`super::dialog::DialogRespond`], the
//! default) and [`Echo`], which says back what was understood, so a tester
//! can tell at once whether the note was heard right. A provider marks a
//! reply it wants [spoken](Reply::spoken); the voice-reply stage
//! ([`super::voice::VoiceReply`], wrapped around the provider) then fills
//! [`Reply::voice`]. Neither changes the turn.

use bytes::Bytes;

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

/// A reply provider.
#[async_trait::async_trait]
pub trait Respond: Send + Sync {
    async fn respond(&self, message: &InboundMessage, said: &Said) -> Reply;
}

/// What a customer is told when the message itself could not be used,
/// whichever provider answers the rest.
pub mod notices {
    pub const SILENCE: &str = "I couldn't hear anything in your voice note. Could you record it again, a little closer to the phone?";
    pub const UNPLAYABLE: &str =
        "Sorry, I couldn't play your voice note. Could you send it again, or type your message?";
    pub const UNSUPPORTED: &str = "Sorry, I can only answer voice notes and text messages for now. Could you send a voice note or type your message?";
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
        })
    }
}
