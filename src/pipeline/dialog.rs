//! The dialog stage as a [`Respond`] provider: what the customer said goes
//! in as a [`dialog::Message`], the dialog's whole reply comes out as the
//! turn's [`Reply`].
//!
//! A message that could not be used (silence, an unplayable note, a type
//! voxline does not answer) never reaches the dialog; the customer gets the
//! same notice as from [`super::reply::Echo`], unless they sent STOP or a
//! person has the conversation. A dialog reply with
//! [`Delivery::None`] becomes a [silent](Reply::silent) reply: the turn sends
//! nothing. A reply with [`Delivery::Voice`] is marked
//! [spoken](Reply::spoken); making the voice note is the voice-reply
//! stage's job ([`super::voice::VoiceReply`]), not this module's.

use std::sync::Arc;
use std::time::Duration;

use super::reply::{Notice, Prepared, Reply, ReplyMeta, ReplyStream, Respond, Said};
use crate::channel::InboundMessage;
use crate::dialog::session::Session;
use crate::dialog::{self, Delivery, Dialog, DialogStage};

/// Answers with the dialog stage.
pub struct DialogRespond {
    stage: DialogStage,
}

impl DialogRespond {
    pub fn new(stage: DialogStage) -> Self {
        Self { stage }
    }

    /// A notice about the message itself in the conversation's language
    /// (else `heard`, the note's own, else the calling code's), or nothing
    /// for a customer the bot must not write to.
    fn notice_to(&self, from: &str, notice: Notice, heard: Option<&str>) -> Reply {
        let session = match self.stage.sessions().load(from) {
            Ok(s) if s.opted_out.is_some() || s.handoff.is_some() => return Reply::silent(),
            Ok(s) => Some(s),
            Err(e) => {
                // The dialog itself answers without a session in this case.
                tracing::error!(error = %e, "session unavailable; sending the notice");
                None
            }
        };
        let conversation = session.and_then(|s| s.language);
        let language = crate::channel::calling_code::language_to_write(
            from,
            conversation.as_deref(),
            heard,
            self.stage.languages(),
        );
        Reply::text(Respond::notice(self, notice, language.as_deref()))
    }

    /// What the dialog is asked, or the notice to send instead.
    fn ask(&self, message: &InboundMessage, said: &Said) -> Result<dialog::Message, Reply> {
        let (id, from) = (message.id.as_str(), message.from.as_str());
        Ok(match said {
            Said::Speech(t) => {
                dialog::Message::voice(id, from, t.text.trim(), &t.language, t.confidence)
            }
            Said::Text(body) => dialog::Message::text(id, from, body),
            // The dialog reads words; the title is what the customer tapped.
            Said::Choice { id: choice, title } => {
                let words = if title.trim().is_empty() {
                    choice
                } else {
                    title
                };
                dialog::Message::text(id, from, words)
            }
            Said::Silence => return Err(self.notice_to(from, Notice::Silence, None)),
            Said::Unplayable { .. } => return Err(self.notice_to(from, Notice::Unplayable, None)),
            Said::Unsupported { .. } => {
                return Err(self.notice_to(from, Notice::Unsupported, None))
            }
            Said::TooSlow => return Err(self.notice_to(from, Notice::TypePlease, None)),
            Said::NotHeard { language, .. } => {
                return Err(self.notice_to(from, Notice::NotHeard, language.as_deref()))
            }
        })
    }
}

fn meta(outcome: &dialog::Outcome) -> ReplyMeta {
    ReplyMeta {
        spoken: outcome.delivery == Delivery::Voice,
        silent: outcome.delivery == Delivery::None,
        intent: Some(outcome.intent.clone()),
        // The fast path is the answer without the LLM's time: a turn whose
        // LLM answer the guard replaced, or whose providers all failed,
        // waited for it all the same (an answer from the LLM was asked too).
        fast_path: Some(!outcome.llm_asked),
    }
}

#[async_trait::async_trait]
impl Respond for DialogRespond {
    fn notice(&self, notice: Notice, language: Option<&str>) -> String {
        self.stage
            .templates()
            .render(language.unwrap_or("en"), notice.key(), &[])
    }

    async fn prepare(&self, message: &InboundMessage) -> Prepared {
        match self.stage.sessions().load_async(&message.from).await {
            Ok(session) => Prepared {
                quiet: session.opted_out.is_some() || session.handoff.is_some(),
                text_only: session.text_only.is_some(),
                language: session.language.clone(),
                state: Some(Arc::new(session)),
            },
            Err(e) => {
                tracing::warn!(error = %e, "session not loaded ahead; the dialog loads it");
                Prepared::default()
            }
        }
    }

    async fn stream(
        &self,
        message: &InboundMessage,
        said: &Said,
        prepared: Prepared,
        first_output: Option<Duration>,
    ) -> ReplyStream {
        let mut asked = match self.ask(message, said) {
            Ok(asked) => asked,
            Err(notice) => {
                let silent = notice.is_silent();
                return ReplyStream::whole(
                    notice,
                    ReplyMeta {
                        silent,
                        ..ReplyMeta::default()
                    },
                );
            }
        };
        asked.session = prepared
            .state
            .and_then(|s| s.downcast_ref::<Session>().cloned());
        asked.first_token_budget = first_output;
        let reply = Dialog::respond(&self.stage, asked);
        let (done_tx, done) = tokio::sync::oneshot::channel();
        let outcome = reply.outcome;
        tokio::spawn(async move {
            let m = match outcome.await {
                Ok(o) => meta(&o),
                Err(_) => {
                    tracing::error!("the dialog stopped without an outcome");
                    ReplyMeta::default()
                }
            };
            let _ = done_tx.send(m);
        });
        ReplyStream {
            chunks: reply.chunks,
            done,
        }
    }

    async fn respond(&self, message: &InboundMessage, said: &Said) -> Reply {
        let asked = match self.ask(message, said) {
            Ok(asked) => asked,
            Err(notice) => return notice,
        };
        let (text, outcome) = Dialog::respond(&self.stage, asked).collect().await;
        let Some(outcome) = outcome else {
            tracing::error!("the dialog stopped without an outcome");
            return Reply::text(Respond::notice(self, Notice::Unanswered, None));
        };
        tracing::info!(
            intent = %outcome.intent,
            confidence = outcome.confidence,
            fast_path = outcome.fast_path,
            delivery = ?outcome.delivery,
            "dialog answered"
        );
        match outcome.delivery {
            Delivery::None => Reply::silent(),
            Delivery::Voice | Delivery::Text if text.trim().is_empty() => {
                tracing::warn!(intent = %outcome.intent, "the dialog's reply is empty");
                Reply::text(Respond::notice(
                    self,
                    Notice::Unanswered,
                    Some(outcome.language.as_str()),
                ))
            }
            Delivery::Voice => Reply::spoken(text),
            Delivery::Text => Reply::text(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::channel::Content;
    use crate::dialog::calendar::Date;
    use crate::dialog::stage::{bundled_data, open_in_memory};
    use crate::dialog::DialogConfig;
    use crate::stt::{Transcript, Window};

    async fn provider() -> DialogRespond {
        let config = DialogConfig {
            data_dir: bundled_data(),
            ..DialogConfig::default()
        };
        DialogRespond::new(open_in_memory(config, Date::today(0)).await.unwrap())
    }

    fn inbound(id: &str, from: &str) -> InboundMessage {
        InboundMessage {
            id: id.into(),
            from: from.into(),
            to: "106540352242922".into(),
            timestamp: 1_744_344_496,
            profile_name: None,
            content: Content::Text {
                body: String::new(),
            },
        }
    }

    fn text(s: &str) -> Said {
        Said::Text(s.into())
    }

    #[tokio::test]
    async fn an_order_question_is_answered_from_the_shop() {
        let p = provider().await;
        let said = Said::Speech(Transcript {
            language: "en".into(),
            text: " Where is my order 1842?".into(),
            segments: Vec::new(),
            confidence: 0.9,
            no_speech_probability: 0.0,
            window: Window::Full,
            routing: None,
        });
        let reply = p.respond(&inbound("w1", "15550001842"), &said).await;
        assert!(reply.text.contains("1842"), "{reply:?}");
        assert!(reply.text.contains("on its way"), "{reply:?}");
        assert!(reply.spoken, "a voice note is answered by voice: {reply:?}");
        assert!(reply.voice.is_none(), "the dialog makes no audio");
        let typed = p
            .respond(
                &inbound("w2", "15550001842"),
                &text("where is my order 1842"),
            )
            .await;
        assert!(!typed.spoken, "{typed:?}");
    }

    #[tokio::test]
    async fn after_stop_nothing_is_sent_not_even_a_notice() {
        let p = provider().await;
        let from = "15550001842";
        let ack = p.respond(&inbound("w1", from), &text("STOP")).await;
        assert!(ack.text.contains("won't get any more messages"), "{ack:?}");
        assert!(!ack.is_silent());
        for said in [text("where is my order 1842"), Said::Silence] {
            let reply = p.respond(&inbound("w2", from), &said).await;
            assert!(reply.is_silent(), "{said:?}: {reply:?}");
        }
        // Someone else still gets the notice.
        let other = p
            .respond(&inbound("w3", "15550000001"), &Said::Silence)
            .await;
        assert_eq!(other, Reply::text(super::super::reply::notices::SILENCE));
    }

    #[tokio::test]
    async fn a_choice_is_read_by_its_title() {
        let p = provider().await;
        let said = Said::Choice {
            id: "x-1".into(),
            title: "Where is my order 1842?".into(),
        };
        let reply = p.respond(&inbound("w1", "15550001842"), &said).await;
        assert!(reply.text.contains("on its way"), "{reply:?}");
    }
}
