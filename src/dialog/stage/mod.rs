//! [`DialogStage`]: the dialog stage's implementation of [`Dialog`].
//!
//! One message is one [`Exchange`]: the session is loaded, STOP, hand-off
//! and a pending confirmation are dealt with first, then the classified
//! intent is answered by a handler ([`shop`] for products and the cart,
//! [`orders`] for orders and confirmed changes, [`open_questions`] for the
//! knowledge base and the LLM), and the session is saved.

mod open_questions;
mod orders;
mod shop;

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot};

use super::calendar::Date;
use super::commerce::embedded::EmbeddedStore;
use super::commerce::http::HttpCommerce;
use super::commerce::seed::Seed;
use super::commerce::{
    Change, Commerce, CommerceError, Order, OrderItem, OrderStatus, PaymentStatus, Product,
};
use super::config::{CommerceConfig, DialogConfig};
use super::guard::{Facts, Guard};
use super::intent::text::fold;
use super::intent::{Classification, IntentError, IntentModel, Lexicon, UNKNOWN};
use super::kb::KnowledgeBase;
use super::llm::{ChatMessage, LlmChain};
use super::reply::{cap_voice, sentence_end, sentences};
use super::session::{Choice, Handoff, Pending, Session, SessionError, SessionStore, Stage, Turn};
use super::templates::{TemplateError, Templates};
use super::{Action, Channel, Delivery, Dialog, Message, Outcome, Reply, Source};

#[derive(Debug, thiserror::Error)]
pub enum DialogError {
    #[error(transparent)]
    Intents(#[from] IntentError),
    #[error(transparent)]
    Templates(#[from] TemplateError),
    #[error(transparent)]
    Commerce(#[from] CommerceError),
    #[error(transparent)]
    Sessions(#[from] SessionError),
    #[error("cannot read {path}: {message}")]
    Data { path: String, message: String },
    #[error("LLM client: {0}")]
    Llm(String),
    #[error(transparent)]
    Encoder(#[from] crate::dialog::intent::encoder::EncoderError),
}

/// `data/dialog.toml`.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Words {
    yes: Vec<String>,
    start: Vec<String>,
}

/// Seconds since the epoch; replaceable in tests.
pub type Clock = Arc<dyn Fn() -> i64 + Send + Sync>;

struct Inner {
    config: DialogConfig,
    /// Swapped whole when operators' labels change (see
    /// [`DialogStage::reload_intents`]).
    intents: std::sync::RwLock<Arc<IntentModel>>,
    lexicon: Lexicon,
    templates: Templates,
    commerce: Arc<dyn Commerce>,
    sessions: SessionStore,
    kb: KnowledgeBase,
    llm: Option<LlmChain>,
    guard: Guard,
    words: Words,
    clock: Clock,
    /// One turn at a time per number.
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// As many classifications at once as the machine has cores.
    classifying: tokio::sync::Semaphore,
}

/// The dialog stage: fast path, commerce, confirmations, sessions, LLM.
#[derive(Clone)]
pub struct DialogStage {
    inner: Arc<Inner>,
}

impl Inner {
    fn intents(&self) -> Arc<IntentModel> {
        self.intents
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// `model.classify(text, language)` on tokio's blocking pool, at most as
/// many at once as `slots` has permits (one per core). With the sentence
/// encoder a message takes 0.2 to 1.2 ms of arithmetic, and one of 4,096
/// characters (as much as the encoder reads) about 8 ms; on the runtime's
/// own threads, that long stalls every task waiting on them (the other
/// turns' webhooks, media downloads, TTS streams). A long message may also
/// use the encoder's second thread, which takes its branch back when late.
async fn classify_off_the_runtime(
    slots: &tokio::sync::Semaphore,
    model: Arc<IntentModel>,
    text: &str,
    language: Option<&str>,
) -> Classification {
    // The semaphore is never closed; without a permit, classify anyway.
    let _permit = slots.acquire().await.ok();
    let (owned, lang) = (text.to_owned(), language.map(str::to_owned));
    let pooled = Arc::clone(&model);
    match tokio::task::spawn_blocking(move || pooled.classify(&owned, lang.as_deref())).await {
        Ok(c) => c,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Cancelled, which only a runtime shutting down does: on this
        // thread then, which no longer serves other tasks.
        Err(_) => model.classify(text, language),
    }
}

fn system_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl DialogStage {
    /// Opens the configured backend and the session store, reads the data
    /// folder and trains the intent classifier.
    pub async fn open(config: DialogConfig) -> Result<Self, DialogError> {
        let sessions = SessionStore::for_config(&config)?;
        let commerce: Arc<dyn Commerce> = match &config.commerce {
            CommerceConfig::Embedded => {
                let seed = Seed::load(&config.data_dir.join("catalogue.toml"))?;
                let today = Date::today(config.utc_offset_minutes);
                Arc::new(EmbeddedStore::open(&config.database_path(), &seed, today)?)
            }
            CommerceConfig::Http(h) => Arc::new(HttpCommerce::new(h)?),
        };
        Self::with_parts(config, commerce, sessions, Arc::new(system_now)).await
    }

    /// Builds the stage around a given backend, session store and clock.
    pub async fn with_parts(
        config: DialogConfig,
        commerce: Arc<dyn Commerce>,
        sessions: SessionStore,
        clock: Clock,
    ) -> Result<Self, DialogError> {
        let data = config.data_dir.clone();
        // A backend that is down at start-up only costs the product slot.
        let lexicon = match commerce.lexicon().await {
            Ok(l) => Lexicon::new(l),
            Err(e) => {
                tracing::warn!(error = %e, "no product names from the commerce backend");
                Lexicon::default()
            }
        };
        let encoder = config.load_sentence_encoder()?;
        let mut intents = IntentModel::load(
            &data.join("intents"),
            lexicon.clone(),
            config.thresholds,
            encoder,
        )?;
        intents.detect_among(&config.languages);
        let templates = Templates::load(&data.join("templates"))?;
        // Everything voxline says must exist in every language it serves.
        if let Some(missing) = config.languages.iter().find(|l| !templates.has_language(l)) {
            return Err(DialogError::Data {
                path: data
                    .join("templates")
                    .join(format!("{missing}.toml"))
                    .display()
                    .to_string(),
                message: format!(
                    "no templates for {missing}, a configured language ([service] languages)"
                ),
            });
        }
        let kb = KnowledgeBase::load(&data.join("kb")).map_err(|e| DialogError::Data {
            path: data.join("kb").display().to_string(),
            message: e.to_string(),
        })?;
        let words_path = data.join("dialog.toml");
        let words: Words = std::fs::read_to_string(&words_path)
            .map_err(|e| e.to_string())
            .and_then(|t| toml::from_str(&t).map_err(|e| e.to_string()))
            .map_err(|message| DialogError::Data {
                path: words_path.display().to_string(),
                message,
            })?;
        let llm = if config.llm.providers.is_empty() {
            None
        } else {
            Some(LlmChain::new(config.llm.clone()).map_err(|e| DialogError::Llm(e.to_string()))?)
        };
        let guard = Guard::new(&templates);
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                intents: std::sync::RwLock::new(Arc::new(intents)),
                lexicon,
                templates,
                commerce,
                sessions,
                kb,
                llm,
                guard,
                words,
                clock,
                locks: Mutex::new(HashMap::new()),
                classifying: tokio::sync::Semaphore::new(
                    std::thread::available_parallelism().map_or(1, |n| n.get()),
                ),
            }),
        })
    }

    /// The intent model in force.
    pub fn intents(&self) -> Arc<IntentModel> {
        self.inner.intents()
    }

    /// Retrains the intent model from the data folder, the operators'
    /// labels included, and puts it in force for the turns that start
    /// after; returns how many wordings operators have labelled. A model
    /// that fails to load leaves the old one in force.
    pub fn reload_intents(&self) -> Result<usize, DialogError> {
        let inner = &self.inner;
        let dir = inner.config.data_dir.join("intents");
        let mut model = IntentModel::load(
            &dir,
            inner.lexicon.clone(),
            inner.config.thresholds,
            inner.intents().encoder(),
        )?;
        model.detect_among(&inner.config.languages);
        let learned = model.learned();
        *inner.intents.write().unwrap_or_else(|p| p.into_inner()) = Arc::new(model);
        Ok(learned)
    }

    /// Records an operator's label: message `message_id`, whose text (or
    /// transcript) is `text`, meant `intent`. The watcher
    /// ([`Self::watch_labels`]) retrains on it.
    pub fn label(
        &self,
        message_id: &str,
        text: &str,
        intent: &str,
    ) -> Result<super::intent::Label, DialogError> {
        let dir = self.inner.config.data_dir.join("intents");
        Ok(super::intent::record_label(
            &self.intents(),
            &dir,
            message_id,
            text,
            intent,
        )?)
    }

    /// Retrains whenever the operators' labels file changes (or on SIGHUP),
    /// until `stop`.
    pub fn watch_labels(&self, stop: tokio_util::sync::CancellationToken) {
        let stage = self.clone();
        let path = self
            .inner
            .config
            .data_dir
            .join("intents")
            .join(super::intent::LABELS_FILE);
        // Stamped now, so a label written right after this call is a change.
        let mut changes = crate::pipeline::budget::changes(path, std::time::Duration::from_secs(1));
        tokio::spawn(async move {
            loop {
                let why = tokio::select! {
                    () = stop.cancelled() => return,
                    why = changes.next() => why,
                };
                // Training takes a fraction of a second of CPU.
                let reloaded = {
                    let stage = stage.clone();
                    tokio::task::spawn_blocking(move || stage.reload_intents()).await
                };
                match reloaded {
                    Ok(Ok(learned)) => {
                        tracing::info!(why, learned, "intent model retrained")
                    }
                    Ok(Err(e)) => {
                        tracing::error!(why, error = %e, "intent model not retrained; the old one stays")
                    }
                    Err(e) => tracing::error!(why, error = %e, "intent retraining failed"),
                }
            }
        });
    }

    pub fn sessions(&self) -> &SessionStore {
        &self.inner.sessions
    }

    pub fn templates(&self) -> &Templates {
        &self.inner.templates
    }

    /// What the dialog says in `lang` whatever the message: the reply
    /// templates (a `{name}` left out) and the knowledge base's answers.
    /// Sentences with other slots are still in them; the speech cache's
    /// warm-up skips those.
    pub fn fixed_texts(&self, lang: &str) -> Vec<String> {
        let mut texts = self.inner.templates.fixed_texts(lang);
        texts.extend(self.inner.kb.answers(lang));
        texts
    }

    /// The catalogue's price and product-list replies in each of the
    /// business's languages, as (language, text), worded as the fast path
    /// words them, for the speech cache to render ahead: price questions are
    /// among the most frequent, and their sentences carry names and prices
    /// no fixed template has. The products are read once, for the keys the
    /// start-up's lexicon holds. Best effort: a backend that fails here
    /// leaves these to be rendered when asked.
    pub async fn catalogue_texts(&self) -> Vec<(String, String)> {
        let templates = &self.inner.templates;
        let mut texts = Vec::new();
        for key in self.inner.lexicon.keys() {
            let products = match self.inner.commerce.products(&key).await {
                Ok(products) => products,
                Err(e) => {
                    tracing::warn!(error = %e, %key, "products not read for the speech cache");
                    continue;
                }
            };
            for lang in &self.inner.config.languages {
                if let [one] = products.as_slice() {
                    texts.push((lang.clone(), shop::price_line(templates, lang, one)));
                }
                if !products.is_empty() {
                    texts.push((lang.clone(), shop::list_line(templates, lang, &products)));
                }
            }
        }
        texts.sort();
        texts.dedup();
        texts
    }

    /// The business's languages.
    pub fn languages(&self) -> &[String] {
        &self.inner.config.languages
    }

    /// Answers one message and waits for the whole reply.
    pub async fn answer(&self, message: Message) -> (String, Outcome) {
        let (text, outcome) = self.respond(message).collect().await;
        (text, outcome.expect("the turn task sends its outcome"))
    }
}

impl Dialog for DialogStage {
    fn respond(&self, message: Message) -> Reply {
        let (tx, chunks) = mpsc::channel(16);
        let (done, outcome) = oneshot::channel();
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let lock = {
                let mut locks = inner.locks.lock().unwrap_or_else(|e| e.into_inner());
                locks.entry(message.from.clone()).or_default().clone()
            };
            let _turn = lock.lock().await;
            let o = Exchange::run(&inner, &message, tx).await;
            let _ = done.send(o);
        });
        Reply { chunks, outcome }
    }
}

/// One message being answered, and everything the turn accumulates.
struct Exchange<'a> {
    inner: &'a Inner,
    msg: &'a Message,
    tx: mpsc::Sender<String>,
    session: Session,
    c: Classification,
    lang: String,
    now: i64,
    today: Date,
    actions: Vec<Action>,
    facts: Facts,
    source: Source,
    delivery: Delivery,
    needs_review: bool,
    llm_asked: bool,
    /// Said before the answer ("Okay, I won't change anything.").
    prefix: Option<String>,
    sent: Vec<String>,
}

/// What a handler decided to say.
struct Answer {
    text: String,
    /// The customer got what they asked for (or a question that moves the
    /// task on); unresolved answers count towards a hand-off.
    resolved: bool,
}

impl Answer {
    fn done(text: String) -> Self {
        Self {
            text,
            resolved: true,
        }
    }
}

enum OrderLookup {
    Found(Order),
    NotFound(String),
    NoneKnown,
}

impl<'a> Exchange<'a> {
    async fn run(inner: &'a Inner, msg: &'a Message, tx: mpsc::Sender<String>) -> Outcome {
        let now = (inner.clock)();
        let today = Date::from_days(
            (now + i64::from(inner.config.utc_offset_minutes) * 60).div_euclid(86_400),
        );
        // Read again under the customer's lock: the snapshot loaded while
        // the note was transcribed can predate what an earlier turn of the
        // same customer saved since, and saving it would undo that.
        let loaded = match (
            inner.sessions.load_async(&msg.from).await,
            msg.session.clone(),
        ) {
            (Ok(s), _) => Ok(s),
            (Err(e), Some(s)) if s.number == msg.from => {
                tracing::warn!(error = %e, "session not read again; using the snapshot");
                Ok(s)
            }
            (Err(e), _) => Err(e),
        };
        let session = match loaded {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "session unavailable; answering without it");
                Session::new(&msg.from)
            }
        };
        // "sí", "ok", "1842": too short to tell the language; keep the
        // conversation's.
        let short = msg.text.split_whitespace().count() <= 2;
        let language = msg.language.as_deref().or(if short {
            session.language.as_deref()
        } else {
            None
        });
        let c = classify_off_the_runtime(&inner.classifying, inner.intents(), &msg.text, language)
            .await;
        let lang = c.language.clone();
        let mut t = Exchange {
            inner,
            msg,
            tx,
            session,
            lang,
            c,
            now,
            today,
            actions: Vec::new(),
            facts: Facts::default(),
            source: Source::FastPath,
            delivery: match msg.channel {
                Channel::Voice => Delivery::Voice,
                Channel::Text => Delivery::Text,
            },
            needs_review: false,
            llm_asked: false,
            prefix: None,
            sent: Vec::new(),
        };
        t.turn().await;
        if let Err(e) = inner.sessions.save_async(&t.session).await {
            tracing::error!(error = %e, "session not saved");
        }
        Outcome {
            intent: t.c.intent.clone(),
            confidence: t.c.confidence,
            language: t.lang.clone(),
            fast_path: t.c.fast_path,
            source: t.source.clone(),
            delivery: t.delivery,
            actions: t.actions,
            needs_review: t.needs_review,
            llm_asked: t.llm_asked,
            reply: t.sent.join(" "),
        }
    }

    fn render(&self, key: &str, vars: &[(&str, &str)]) -> String {
        self.inner.templates.render(&self.lang, key, vars)
    }

    fn money(&mut self, cents: i64) -> String {
        self.facts.cents.insert(cents);
        self.inner.templates.money(&self.lang, cents)
    }

    fn date(&mut self, d: Date) -> String {
        self.facts.dates.push(d);
        self.inner.templates.date(&self.lang, d)
    }

    fn choice(&self) -> Choice {
        let via = match self.msg.channel {
            Channel::Voice => "voice",
            Channel::Text => "text",
        };
        Choice {
            at: self.now,
            source: format!("{via}:{}", self.msg.id),
        }
    }

    async fn turn(&mut self) {
        self.session.expire(self.now, &self.inner.config.session);
        self.session.last_inbound = self.now;
        self.session.last_activity = self.now;
        self.session.language = Some(self.lang.clone());
        self.session.record(Turn {
            at: self.now,
            role: "customer".into(),
            text: self.msg.text.clone(),
            intent: Some(self.c.intent.clone()),
        });
        let folded = fold(&self.msg.text);

        // STOP holds until the customer sends START.
        if self.session.opted_out.is_some() {
            if self.inner.words.start.contains(&folded) {
                self.session.opted_out = None;
                let choice = self.choice();
                self.record_choice("start", &choice);
                self.actions.push(Action::OptedIn);
                self.delivery = Delivery::Text;
                let text = self.render("opt_in", &[]);
                self.say(&text).await;
            } else {
                self.silent();
            }
            return;
        }
        // A person has the conversation: the bot stays quiet.
        if self.session.handoff.is_some() {
            self.silent();
            return;
        }
        if self.session.text_only.is_some() {
            self.delivery = Delivery::Text;
        }

        if let Some(pending) = self.session.pending.take() {
            if self.inner.words.yes.contains(&folded) {
                let unsure = self.msg.channel == Channel::Voice
                    && self
                        .msg
                        .transcript_confidence
                        .is_some_and(|c| c < self.inner.config.confirm_min_transcript_confidence);
                if unsure {
                    self.session.pending = Some(pending);
                    let text = self.render("confirm_again", &[]);
                    self.say(&text).await;
                } else if self.tx.is_closed() {
                    // The turn stopped listening (its dialog budget ran out
                    // and the customer was told to ask again): no write may
                    // land after that. The confirmation stays pending; the
                    // next "yes" commits it.
                    tracing::warn!(turn = %self.msg.id, "the turn gave up before the commit: nothing applied");
                    self.session.pending = Some(pending);
                } else {
                    self.commit(pending.change).await;
                }
                return;
            }
            self.session.stage = Stage::Support;
            self.actions.push(Action::Declined {
                change: pending.change,
            });
            let cancelled = self.render("change_cancelled", &[]);
            if self.c.intent == UNKNOWN || !self.c.fast_path || is_no(&folded) {
                self.say(&cancelled).await;
                return;
            }
            self.prefix = Some(cancelled);
        }

        self.take_clarified(&folded);
        self.fill_awaited_slot();
        self.track_confidence().await;
        if self.session.handoff.is_some() {
            return;
        }
        if self.ask_to_clarify().await {
            return;
        }

        let answer = if self.c.fast_path {
            self.fast_path().await
        } else {
            None
        };
        let answer = match answer {
            Some(a) => a,
            None => match self.open_question().await {
                Some(a) => a,
                // The LLM streamed its own reply.
                None => return,
            },
        };
        self.finish(answer).await;
    }

    /// A yes to "do you want to cancel your order?" is that intent, with
    /// the order the question named and the other slots of the message
    /// that was asked about.
    fn take_clarified(&mut self, folded: &str) {
        let asked_slots = self.session.slots.clarifying_slots.take();
        let Some(asked) = self.session.slots.clarifying.take() else {
            return;
        };
        if self.inner.words.yes.iter().any(|w| w == folded) {
            if let Some(earlier) = asked_slots {
                self.c.slots.fill_from(earlier);
            }
            self.c.intent = asked;
            self.c.fast_path = true;
            self.c.clarify = None;
            self.c.confidence = self
                .c
                .confidence
                .max(self.inner.config.thresholds.write_from);
        }
    }

    /// A careful intent the classifier is not sure of (a write, checkout)
    /// is asked about instead of acted on: "Do you want to cancel your
    /// order 2210, or is it something else?". `false` when there is nothing
    /// to ask, or no question for that intent in the templates.
    async fn ask_to_clarify(&mut self) -> bool {
        let Some(intent) = self.c.clarify.clone().filter(|_| !self.c.fast_path) else {
            return false;
        };
        let key = format!("clarify_{intent}");
        let order = self
            .c
            .slots
            .order
            .as_ref()
            .map_or(String::new(), |o| format!(" {o}"));
        let text = self.render(&key, &[("order", &order)]);
        if text == key {
            return false;
        }
        if let Some(o) = &self.c.slots.order {
            self.session.slots.order = Some(o.clone());
        }
        self.session.slots.clarifying = Some(intent);
        self.session.slots.clarifying_slots = Some(self.c.slots.clone());
        self.finish(Answer::done(text)).await;
        true
    }

    /// A reply to "which day?" or "which order?" is read as the awaited
    /// slot of the intent that asked.
    fn fill_awaited_slot(&mut self) {
        let Some(awaited) = self.session.slots.awaiting_slot_for.take() else {
            return;
        };
        let s = &self.c.slots;
        let fills = match awaited.as_str() {
            "delivery_change" => s.date.is_some(),
            "address_change" => s.address.is_some(),
            _ => s.order.is_some(),
        };
        let unsure = !self.c.fast_path || self.c.intent == UNKNOWN || self.c.intent == awaited;
        if fills && unsure {
            self.c.intent = awaited;
            self.c.fast_path = true;
            self.c.confidence = self
                .c
                .confidence
                .max(self.inner.config.thresholds.fast_path_from);
        }
    }

    /// Counts unsure turns of a known customer; enough of them hand over.
    async fn track_confidence(&mut self) {
        let h = self.inner.config.handoff;
        if self.c.confidence >= h.low_confidence_below {
            self.session.low_confidence_turns = 0;
            return;
        }
        let qualified = !self.session.cart.is_empty()
            || matches!(
                self.inner.commerce.customer(&self.msg.from).await,
                Ok(Some(_))
            );
        if !qualified {
            return;
        }
        self.session.low_confidence_turns += 1;
        if self.session.low_confidence_turns >= h.low_confidence_turns {
            self.hand_off("low_confidence").await;
        }
    }

    async fn hand_off(&mut self, reason: &str) {
        self.start_handoff(reason);
        let text = self.render("handoff", &[]);
        self.say(&text).await;
    }

    /// From now on a person answers this number, until released.
    fn start_handoff(&mut self, reason: &str) {
        self.session.handoff = Some(Handoff {
            reason: reason.into(),
            since: self.now,
        });
        self.session.stage = Stage::Handoff;
        self.session.pending = None;
        self.actions.push(Action::HandedOff {
            reason: reason.into(),
        });
    }

    fn silent(&mut self) {
        self.delivery = Delivery::None;
        self.source = Source::Silent;
    }

    fn record_choice(&self, kind: &str, choice: &Choice) {
        if let Err(e) = self
            .inner
            .sessions
            .record_choice(&self.msg.from, kind, choice)
        {
            tracing::error!(error = %e, kind, "choice not recorded");
        }
    }

    /// The template answer for a confident intent, or `None` to treat the
    /// message as an open question.
    async fn fast_path(&mut self) -> Option<Answer> {
        let intent = self.c.intent.clone();
        let result = match intent.as_str() {
            "greeting" => self.greeting().await,
            "product_search" | "price_inquiry" | "availability_shipping" => {
                self.product(&intent).await
            }
            "cart_add" => self.cart_add().await,
            "cart_view" => self.cart_view().await,
            "checkout" => self.checkout().await,
            "order_status" | "payment_status" | "delivery_change" | "address_change"
            | "cancel_order" | "refund_request" => self.order_intent(&intent).await,
            "complaint" | "human_handoff" => {
                let (reason, reply) = if intent == "complaint" {
                    ("complaint", "complaint")
                } else {
                    ("asked", "handoff")
                };
                self.start_handoff(reason);
                let text = self.render(reply, &[]);
                self.say(&text).await;
                return Some(Answer::done(String::new()));
            }
            "opt_out" => {
                let choice = self.choice();
                self.record_choice("stop", &choice);
                self.session.opted_out = Some(choice);
                self.actions.push(Action::OptedOut);
                self.delivery = Delivery::Text;
                Ok(Some(Answer::done(self.render("opt_out", &[]))))
            }
            "text_only" => {
                let choice = self.choice();
                self.record_choice("text_only", &choice);
                self.session.text_only = Some(choice);
                self.actions.push(Action::TextOnly);
                self.delivery = Delivery::Text;
                Ok(Some(Answer::done(self.render("text_only", &[]))))
            }
            "thanks_bye" => {
                self.session.stage = Stage::Greeting;
                Ok(Some(Answer::done(self.render("thanks_bye", &[]))))
            }
            "faq" => Ok(self.kb_answer()),
            other => {
                // An intent the operator added with a reply of the same name.
                let text = self.render(other, &[]);
                Ok((text != other).then(|| Answer::done(text)))
            }
        };
        match result {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "commerce backend failed");
                self.needs_review = true;
                Some(Answer {
                    text: self.render("backend_error", &[]),
                    resolved: false,
                })
            }
        }
    }

    async fn greeting(&mut self) -> Result<Option<Answer>, CommerceError> {
        let name = match self.inner.commerce.customer(&self.msg.from).await {
            Ok(Some(c)) => format!(" {}", c.name),
            _ => String::new(),
        };
        self.session.stage = Stage::Greeting;
        Ok(Some(Answer::done(
            self.render("greeting", &[("name", &name)]),
        )))
    }

    // Shop, order and open-question handlers live in the submodules.

    async fn finish(&mut self, answer: Answer) {
        if answer.resolved {
            self.session.unresolved_turns = 0;
        } else {
            self.session.unresolved_turns += 1;
            if self.session.unresolved_turns >= self.inner.config.handoff.unresolved_turns {
                self.hand_off("unresolved").await;
                return;
            }
        }
        if !answer.text.is_empty() {
            self.say(&answer.text).await;
        }
    }

    async fn send(&mut self, chunk: String) {
        // A receiver that went away (the pipeline gave up) is not an error
        // of this stage: the rest is simply not wanted.
        let _ = self.tx.send(chunk.clone()).await;
        self.sent.push(chunk);
    }

    /// Sends a complete reply, capped for voice, sentence by sentence.
    async fn say(&mut self, text: &str) {
        let mut text = text.to_string();
        if let Some(p) = self.prefix.take() {
            text = format!("{p} {text}");
        }
        if self.delivery == Delivery::Voice {
            text = cap_voice(&text, &self.inner.config.voice);
        }
        for s in sentences(&text) {
            self.send(s).await;
        }
        self.voice_notice().await;
        self.record_reply();
    }

    /// The first voice reply to a customer says, once, that voice notes are
    /// transcribed automatically.
    async fn voice_notice(&mut self) {
        if self.delivery == Delivery::Voice
            && !self.session.voice_notice_given
            && !self.sent.is_empty()
        {
            self.session.voice_notice_given = true;
            let notice = self.render("voice_notice", &[]);
            self.send(notice).await;
        }
    }

    fn record_reply(&mut self) {
        if self.sent.is_empty() {
            return;
        }
        self.session.record(Turn {
            at: self.now,
            role: "bot".into(),
            text: self.sent.join(" "),
            intent: None,
        });
    }
}

fn is_no(folded: &str) -> bool {
    matches!(
        folded.split(' ').next(),
        Some("no" | "nope" | "nao" | "wait" | "espera" | "aspetta" | "non")
    )
}

fn capitalise(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The dialog stage with an in-memory session store and demo shop seeded
/// for `today`: for trying things out without touching the store file.
pub async fn open_in_memory(config: DialogConfig, today: Date) -> Result<DialogStage, DialogError> {
    let seed = Seed::load(&config.data_dir.join("catalogue.toml"))?;
    let shop = EmbeddedStore::in_memory(&seed, today)?;
    let sessions = SessionStore::in_memory()?;
    DialogStage::with_parts(config, Arc::new(shop), sessions, Arc::new(system_now)).await
}

/// The data folder shipped with the crate, for tests and benches.
pub fn bundled_data() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// On a runtime of one thread (tokio's test runtime), other tasks run
    /// while a message is classified, and the classification holds its
    /// permit meanwhile. N-grams alone keep the test quick: what it checks
    /// is where the classification runs, not how long it takes.
    #[tokio::test]
    async fn classification_leaves_the_runtime_to_other_tasks() {
        let config = DialogConfig {
            data_dir: bundled_data(),
            sentence_encoder: Some(std::path::PathBuf::new()),
            ..Default::default()
        };
        let model = Arc::new(crate::dialog::cli::intent_model(&config).unwrap());
        let ticks = Arc::new(AtomicUsize::new(0));
        let slots = Arc::new(tokio::sync::Semaphore::new(1));
        let held = Arc::new(AtomicUsize::new(0));
        let ticker = tokio::spawn({
            let (ticks, slots, held) = (Arc::clone(&ticks), Arc::clone(&slots), Arc::clone(&held));
            async move {
                loop {
                    ticks.fetch_add(1, Ordering::SeqCst);
                    if slots.available_permits() == 0 {
                        held.fetch_add(1, Ordering::SeqCst);
                    }
                    tokio::task::yield_now().await;
                }
            }
        });
        tokio::task::yield_now().await;
        let long = "where is my order 1842, it was due on monday ".repeat(90);
        let before = ticks.load(Ordering::SeqCst);
        let c = classify_off_the_runtime(&slots, Arc::clone(&model), &long, None).await;
        let after = ticks.load(Ordering::SeqCst);
        ticker.abort();
        assert!(
            held.load(Ordering::SeqCst) > 0,
            "the permit was not held while classifying"
        );
        assert_eq!(
            slots.available_permits(),
            1,
            "the permit was not given back"
        );
        assert!(after > before, "no other task ran while classifying");
        let inline = model.classify(&long, None);
        assert_eq!((c.intent, c.language), (inline.intent, inline.language));
    }
}
