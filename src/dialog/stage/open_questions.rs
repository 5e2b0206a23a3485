//! What the fast path cannot answer: the knowledge base, and the LLM
//! streamed sentence by sentence through the fact guard.

use super::*;
use crate::dialog::guard::in_language;

impl Exchange<'_> {
    /// The best knowledge-base passage, as a short answer.
    pub(super) fn kb_answer(&mut self) -> Option<Answer> {
        let hits = self.inner.kb.search(&self.msg.text, &self.lang, 1);
        let (passage, score) = hits.first()?;
        if *score < self.inner.config.kb.min_score {
            return None;
        }
        self.source = Source::KnowledgeBase;
        Some(Answer::done(passage.short_answer()))
    }

    /// What the fast path could not answer: the LLM with the knowledge base
    /// and the customer's orders, else the knowledge base alone, else a
    /// polite "didn't get that" that counts towards a hand-off. `None` when
    /// the LLM already streamed the reply.
    pub(super) async fn open_question(&mut self) -> Option<Answer> {
        if self.inner.llm.is_some() {
            if self.llm_reply().await {
                return None;
            }
            self.needs_review = true;
            self.source = Source::Template;
        }
        if let Some(a) = self.kb_answer() {
            return Some(a);
        }
        Some(Answer {
            text: self.render("not_understood", &[]),
            resolved: false,
        })
    }

    pub(super) fn prompt(&mut self, orders: &[Order]) -> Vec<ChatMessage> {
        let lang_name = match self.lang.as_str() {
            "es" => "Spanish",
            "it" => "Italian",
            "pt" => "Portuguese",
            "fr" => "French",
            _ => "English",
        };
        let voice = self.msg.channel == Channel::Voice && self.delivery == Delivery::Voice;
        let mut system = format!(
            "You are the WhatsApp assistant of an online shop. Answer in {lang_name} only, {}. \
             State prices, stock, delivery dates and order statuses only as given below; \
             if the answer is not below, say that a colleague will check. Never promise refunds or changes.",
            if voice {
                "in at most two short sentences that read well aloud"
            } else {
                "briefly, in at most three short sentences"
            }
        );
        let passages: Vec<String> = self
            .inner
            .kb
            .search(&self.msg.text, &self.lang, self.inner.config.kb.top_k)
            .into_iter()
            .map(|(p, _)| format!("{}: {}", p.title, p.text.replace('\n', " ")))
            .collect();
        if !passages.is_empty() {
            system.push_str("\n\nShop information:\n");
            for p in &passages {
                system.push_str(&format!("- {p}\n"));
                self.facts.passages.push(fold(p));
            }
        }
        let open: Vec<&Order> = orders
            .iter()
            .filter(|o| o.status.is_open())
            .take(3)
            .collect();
        if !open.is_empty() {
            system.push_str("\nThe customer's open orders:\n");
            for o in open {
                let total = self.money(o.total_cents);
                let date = o.delivery_date.map(|d| self.date(d)).unwrap_or_default();
                let status = self.inner.templates.status(&self.lang, o.status);
                self.facts.statuses.insert(o.status.as_str().into());
                self.facts.statuses.insert(o.payment.as_str().into());
                system.push_str(&format!(
                    "- order {}: {status}, total {total}, delivery {date}\n",
                    o.id
                ));
            }
        }
        if !self.session.summary.is_empty() {
            system.push_str(&format!(
                "\nEarlier in this conversation the customer {}.\n",
                self.session.summary
            ));
        }
        let mut messages = vec![ChatMessage::new("system", system)];
        // The history ends with this turn's message.
        for t in &self.session.history {
            let role = if t.role == "customer" {
                "user"
            } else {
                "assistant"
            };
            messages.push(ChatMessage::new(role, t.text.clone()));
        }
        messages
    }

    /// Streams the LLM's answer sentence by sentence through the guard.
    /// Returns whether a reply was passed on.
    pub(super) async fn llm_reply(&mut self) -> bool {
        let Some(llm) = self.inner.llm.as_ref() else {
            return false;
        };
        self.llm_asked = true;
        let orders = self
            .inner
            .commerce
            .orders(&self.msg.from)
            .await
            .unwrap_or_default();
        let messages = self.prompt(&orders);
        let (raw_tx, mut raw_rx) = mpsc::channel::<String>(64);
        let first_token = self.msg.first_token_budget;
        let call = async move {
            let outcome = llm.stream(&messages, &raw_tx, first_token).await;
            drop(raw_tx);
            outcome
        };
        let voice = self.delivery == Delivery::Voice;
        let cap = self.inner.config.voice;
        let consume = async {
            let mut buffer = String::new();
            let mut passed = 0usize;
            let mut chars = 0usize;
            let mut caught: Option<String> = None;
            let mut prefix = self.prefix.take();
            loop {
                let piece = raw_rx.recv().await;
                let done = piece.is_none();
                if let Some(p) = piece {
                    buffer.push_str(&p);
                }
                while let Some(end) =
                    sentence_end(&buffer).or(if done && !buffer.trim().is_empty() {
                        Some(buffer.len())
                    } else {
                        None
                    })
                {
                    let sentence: String =
                        buffer.drain(..end).collect::<String>().trim().to_string();
                    if sentence.is_empty() {
                        continue;
                    }
                    let sentence = match in_language(&sentence, &self.lang, &self.inner.intents()) {
                        Ok(s) if s.trim().is_empty() => continue,
                        Ok(s) => s,
                        Err(v) => {
                            caught = Some(format!("{v:?}"));
                            break;
                        }
                    };
                    if let Some(v) = self.inner.guard.check(&sentence, &self.facts, self.today) {
                        caught = Some(format!("{v:?}"));
                        break;
                    }
                    // Text answers are capped like voice ones: a WhatsApp
                    // reply is a few sentences, not an essay.
                    if passed >= cap.max_sentences
                        || chars + sentence.len() > cap.max_chars && passed > 0
                    {
                        passed = usize::MAX;
                        break;
                    }
                    let sentence = if voice {
                        cap_voice(&sentence, &cap)
                    } else {
                        sentence
                    };
                    chars += sentence.len();
                    passed += 1;
                    if let Some(p) = prefix.take() {
                        self.send(p).await;
                    }
                    self.send(sentence).await;
                }
                if caught.is_some() || passed == usize::MAX || done {
                    break;
                }
            }
            // Dropping the receiver stops the provider's stream.
            drop(raw_rx);
            self.prefix = prefix;
            (passed, caught)
        };
        let (outcome, (passed, caught)) = tokio::join!(call, consume);
        if let Some(claim) = caught {
            tracing::warn!(claim = %claim, "LLM stated a fact the backend did not give; template used");
            self.actions.push(Action::GuardReplaced { claim });
            self.needs_review = true;
            self.source = Source::Template;
            let fallback = self.guard_fallback().await;
            self.say(&fallback).await;
            return true;
        }
        if passed == 0 {
            return false;
        }
        self.source = Source::Llm(outcome.provider.clone().unwrap_or_default());
        if !outcome.complete && passed != usize::MAX {
            self.needs_review = true;
        }
        self.session.unresolved_turns = 0;
        self.voice_notice().await;
        self.record_reply();
        true
    }

    /// The template answer for this message after the guard caught the LLM.
    pub(super) async fn guard_fallback(&mut self) -> String {
        let mut c = self.c.clone();
        c.fast_path = true;
        // The fallback only informs: an unsure guess at an intent that
        // changes something (a cart, an order, a subscription) must not be
        // carried out because the LLM's answer was refused.
        const INFORMATIONAL: &[&str] = &[
            "product_search",
            "price_inquiry",
            "availability_shipping",
            "order_status",
            "payment_status",
            "cart_view",
            "faq",
            "greeting",
            "thanks_bye",
        ];
        if !INFORMATIONAL.contains(&c.intent.as_str()) {
            c.intent = UNKNOWN.into();
        }
        if c.intent == UNKNOWN && c.slots.product.is_some() {
            c.intent = "product_search".into();
        }
        let saved = std::mem::replace(&mut self.c, c);
        let sent = std::mem::take(&mut self.sent);
        let answer = if self.c.intent != UNKNOWN {
            self.fast_path().await
        } else {
            None
        };
        let extra = std::mem::replace(&mut self.sent, sent);
        self.c = saved;
        match answer {
            Some(a) if !a.text.is_empty() => a.text,
            _ if !extra.is_empty() => extra.join(" "),
            _ => self.render("not_understood", &[]),
        }
    }
}
