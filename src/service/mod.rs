//! `voxline serve`: the long-running service.
//!
//! Start-up checks the configuration, opens the store, loads the speech
//! model, opens the reply provider (`[service] reply`: the dialog stage,
//! whose replies to voice notes are spoken with `[tts]` and `[encode]`, or
//! the echo), resumes every unfinished turn, then listens. The router has the
//! channel's webhook (which writes the inbox and hands new messages to the
//! [`workers`]), `GET /healthz` (the process is up) and `GET /readyz` (the
//! model is loaded and the store takes writes). SIGTERM or Ctrl-C stops
//! intake, lets turns in flight finish up to `[service]
//! shutdown_grace_ms`, and leaves the rest in the inbox for the next start.

pub mod workers;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde::Deserialize;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::channel::whatsapp::webhook::{self, WebhookState};
use crate::channel::whatsapp::{GraphClient, Secret};
use crate::channel::{Channel, ChannelError};
use crate::config::{Config, ConfigError};
use crate::dialog::stage::DialogError;
use crate::dialog::DialogStage;
use crate::pipeline::budget::{BudgetHandle, BudgetStage};
use crate::pipeline::dialog::DialogRespond;
use crate::pipeline::reply::{Echo, Respond};
use crate::pipeline::turn::{Arrival, TurnContext};
use crate::store::{Backend, Queue, Store, StoreError, Traces};
use crate::stt::whisper::WhisperStt;
use crate::stt::{SpeechToText, SttConfig, SttError};
use crate::tts::cache::{SpeechCache, WarmUp};
use crate::tts::{Language, TextToSpeech, TtsError};
use workers::Workers;

/// How long the start-up waits for the shop's catalogue, read so that the
/// speech cache renders its price replies ahead.
const CATALOGUE_READ: std::time::Duration = std::time::Duration::from_secs(5);

/// `[service]` in `voxline.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Listen address. `VOXLINE_ADDR`. Default `127.0.0.1:8080`.
    pub addr: SocketAddr,
    /// Turns in flight at once, across customers. Default 16: most of a
    /// turn is waiting on the network.
    pub workers: usize,
    /// Transcriptions at once. Default 1: one transcription already uses
    /// `[stt] threads` cores.
    pub stt_concurrency: usize,
    /// How long SIGTERM waits for turns in flight. Default 20 000 ms.
    pub shutdown_grace_ms: u64,
    /// Who answers: `"dialog"` (default), the dialog stage configured in
    /// `[dialog]`; or `"echo"`, which says back what it understood (for
    /// trying the channel and the speech model without a shop).
    pub reply: ReplyProvider,
    /// The business's languages (ISO 639-1): the languages its customers are
    /// heard and answered in. Default `["en", "es", "it", "pt", "fr"]`. Each
    /// needs reply templates (`data/templates/<lang>.toml`) and a voice; a
    /// note in another language is not acted on, and the customer is asked
    /// to say it again or type it.
    #[serde(deserialize_with = "languages")]
    pub languages: Vec<String>,
    /// Bearer token for the operator console (`/console`) and the
    /// operators' hand-off endpoints (`GET /operator/handoffs`,
    /// `POST /operator/handoffs/{number}/release`), needed on every
    /// address, loopback included. `VOXLINE_OPERATOR_TOKEN`. Default none:
    /// they answer 403 unless `console_open`.
    pub operator_token: Option<Secret>,
    /// Opens the console and the hand-off endpoints to anyone who reaches
    /// the address, without the token. Default false; the sandbox sets it.
    pub console_open: bool,
    /// What this process does (`voxline serve --role`): `all` (default)
    /// takes webhooks and runs turns; `webhook` verifies, stores and
    /// acknowledges only; `worker` runs turns only. The last two need a
    /// store the processes share (`[store] backend = "redis"`).
    pub role: Role,
}

/// `[service] role`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    #[default]
    All,
    Webhook,
    Worker,
}

/// `[service] reply`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReplyProvider {
    #[default]
    Dialog,
    Echo,
}

/// `[service] languages`' default: the five languages of the businesses
/// voxline serves.
pub fn default_languages() -> Vec<String> {
    crate::tts::Language::ALL
        .iter()
        .map(|l| l.code().to_string())
        .collect()
}

/// Reads `[service] languages`: known codes, at least one, no repeats.
fn languages<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let codes = Vec::<String>::deserialize(d)?;
    let mut out: Vec<String> = Vec::new();
    for code in codes {
        let lang = crate::tts::Language::from_code(code.trim()).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "language {code:?} is not one voxline speaks (en, es, it, pt, fr)"
            ))
        })?;
        if !out.iter().any(|l| l == lang.code()) {
            out.push(lang.code().to_string());
        }
    }
    if out.is_empty() {
        return Err(serde::de::Error::custom(
            "languages: at least one is needed",
        ));
    }
    Ok(out)
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            languages: default_languages(),
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            workers: 16,
            stt_concurrency: 1,
            shutdown_grace_ms: 20_000,
            reply: ReplyProvider::Dialog,
            operator_token: None,
            console_open: false,
            role: Role::All,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot load the speech-to-text model: {0}")]
    Stt(#[from] SttError),
    #[error("cannot set up the Graph API client: {0}")]
    Channel(#[from] ChannelError),
    #[error("cannot open the dialog stage: {0}")]
    Dialog(Box<DialogError>),
    #[error("cannot set up text to speech: {0}")]
    Tts(#[from] TtsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("server failed: {0}")]
    Server(std::io::Error),
}

/// A running service.
pub struct Service {
    addr: SocketAddr,
    store: Arc<dyn Backend>,
    workers: Workers,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<Result<(), ServeError>>,
    budgets: BudgetHandle,
    graph: Arc<GraphClient>,
    warm_up: Option<Arc<WarmUp>>,
}

#[derive(Clone)]
struct AppState {
    store: Arc<dyn Store>,
    model: String,
    /// The last write check and when it ran: `/readyz` proves the store
    /// writable at most once per [`READY_CHECK_EVERY`], so that a busy
    /// health checker does not add a durable write per call.
    checked: Arc<tokio::sync::Mutex<Option<WriteCheck>>>,
    /// The speech cache's start-up rendering, reported but never waited
    /// for.
    warm_up: Option<Arc<WarmUp>>,
}

/// When the store last proved writable, and what it said.
type WriteCheck = (Instant, Result<(), String>);

const READY_CHECK_EVERY: Duration = Duration::from_secs(10);

impl Service {
    /// Starts the service with `stt` as its speech-to-text provider and
    /// returns once it is listening.
    pub async fn start(config: &Config, stt: Arc<dyn SpeechToText>) -> Result<Self, ServeError> {
        Self::start_with_routes(config, stt, Router::new()).await
    }

    /// Starts the service with `extra` routes mounted beside its own (the
    /// sandbox's pages).
    pub async fn start_with_routes(
        config: &Config,
        stt: Arc<dyn SpeechToText>,
        extra: Router,
    ) -> Result<Self, ServeError> {
        let credentials = config.whatsapp.validate()?;
        let opened = crate::store::open(&config.store).await?;
        let role = config.service.role;
        if role != Role::All && opened.leases.is_none() {
            return Err(ServeError::Server(std::io::Error::other(format!(
                "[service] role = {role:?} needs a store the processes share: [store] backend = \"redis\""
            ))));
        }
        let store = opened.store;
        config
            .outbox
            .validate()
            .and_then(|()| config.store.validate())
            .and_then(|()| config.telemetry.validate())
            .map_err(|e| ServeError::Server(std::io::Error::other(e)))?;
        let role_name = match role {
            Role::All => "all",
            Role::Webhook => "webhook",
            Role::Worker => "worker",
        };
        let otlp = crate::telemetry::Otlp::start(&config.telemetry, role_name)
            .map_err(|e| ServeError::Server(std::io::Error::other(e)))?;
        let graph = Arc::new(GraphClient::new(&config.whatsapp, &credentials)?);
        let channel: Arc<dyn Channel> = graph.clone();
        let access = crate::console::OperatorAccess::new(
            config.service.operator_token.as_ref().map(|t| t.expose()),
            config.service.console_open,
        );
        let mut operator = None;
        let mut sessions = None;
        let mut retained_sessions = None;
        let mut tts = None;
        let mut learning = None;
        let mut warming = None;
        let respond: Arc<dyn Respond> = match config.service.reply {
            ReplyProvider::Dialog => {
                let stage = DialogStage::open(config.dialog())
                    .await
                    .map_err(|e| ServeError::Dialog(Box::new(e)))?;
                sessions = Some(stage.sessions().clone());
                learning = Some(stage.clone());
                retained_sessions = Some(stage.sessions().clone());
                operator = Some(crate::dialog::operator::router(
                    stage.sessions().clone(),
                    access.clone(),
                ));
                // A process that runs no turns loads no voices and renders
                // nothing ahead.
                if role != Role::Webhook {
                    let cache = Arc::new(SpeechCache::new(
                        &config.tts.cache,
                        Some(&config.store.data_dir.join("speech-cache")),
                    ));
                    let chain: Arc<dyn TextToSpeech> =
                        Arc::new(crate::tts::chain(&config.tts, Some(cache))?);
                    if config.tts.cache.warm && config.tts.cache.memory_mb > 0 {
                        // A remote shop that hangs must not hold the start.
                        let catalogue = match tokio::time::timeout(
                            CATALOGUE_READ,
                            stage.catalogue_texts(),
                        )
                        .await
                        {
                            Ok(catalogue) => catalogue,
                            Err(_) => {
                                tracing::warn!(
                                        "catalogue not read for the speech cache within {CATALOGUE_READ:?}"
                                    );
                                Vec::new()
                            }
                        };
                        let mut texts: Vec<(Language, String)> = Vec::new();
                        for code in stage.languages() {
                            let Some(language) = Language::from_code(code) else {
                                continue;
                            };
                            let own = stage.fixed_texts(language.code()).into_iter().chain(
                                catalogue
                                    .iter()
                                    .filter(|(l, _)| l == code)
                                    .map(|(_, text)| text.clone()),
                            );
                            texts.extend(own.map(|text| (language, text)));
                        }
                        warming = Some((
                            Arc::clone(&chain),
                            crate::tts::cache::fixed_sentences(&texts),
                        ));
                    }
                    tts = Some(chain);
                }
                Arc::new(DialogRespond::new(stage))
            }
            ReplyProvider::Echo => Arc::new(Echo),
        };
        let stt_fast = match &config.stt.fallback_model {
            Some(model) => {
                let fast = SttConfig {
                    model: model.clone(),
                    ..config.stt.clone()
                };
                let loaded = tokio::task::spawn_blocking(move || WhisperStt::load(&fast))
                    .await
                    .map_err(|e| ServeError::Server(std::io::Error::other(e)))??;
                Some(Arc::new(loaded) as Arc<dyn SpeechToText>)
            }
            None => None,
        };
        let budgets = BudgetHandle::new(config.budgets.clone());
        tracing::info!(reply = ?config.service.reply, "reply provider ready");
        let model = stt.name().to_string();
        let ctx = Arc::new(TurnContext {
            channel,
            queue: store.clone() as Arc<dyn Queue>,
            traces: match &otlp {
                Some(otlp) => Arc::new(crate::telemetry::ExportedTraces {
                    store: store.clone(),
                    otlp: otlp.clone(),
                }),
                None => store.clone() as Arc<dyn Traces>,
            },
            stt,
            stt_fast,
            stt_permits: Arc::new(Semaphore::new(config.service.stt_concurrency.max(1))),
            respond,
            tts,
            encode: config.encode.clone(),
            media: config.media.clone(),
            fetch_retry: config.whatsapp.retry_policy(),
            mark_read: config.whatsapp.mark_read,
            budgets: budgets.clone(),
            languages: config.service.languages.clone(),
            hearing: config.stt.hearing,
            outbox: config.outbox,
        });
        let workers = match (&opened.leases, role) {
            // Turns are for the workers; this process only acknowledges.
            (_, Role::Webhook) => Workers::new(ctx, 1),
            (Some(leases), _) => Workers::shared(
                ctx,
                config.service.workers,
                leases.clone(),
                config.store.redis.claim_idle_ms,
            ),
            (None, _) => {
                let workers = Workers::new(ctx, config.service.workers);
                let unfinished = store.unfinished().await?;
                if !unfinished.is_empty() {
                    tracing::info!(turns = unfinished.len(), "resuming unfinished turns");
                }
                for turn in unfinished {
                    workers.submit(&turn.message.from, turn.message.id, None);
                }
                workers
            }
        };

        let on_accepted = {
            let workers = workers.clone();
            let otlp = otlp.clone();
            Arc::new(
                move |messages: Vec<crate::channel::InboundMessage>, at: Instant| {
                    if let Some(otlp) = &otlp {
                        let committed = std::time::SystemTime::now();
                        let arrived = committed.checked_sub(at.elapsed()).unwrap_or(committed);
                        for m in &messages {
                            otlp.acknowledged(&m.id, m.content.kind(), arrived, committed);
                        }
                    }
                    if role == Role::Webhook {
                        return;
                    }
                    let arrival = Arrival {
                        at,
                        ack: at.elapsed(),
                    };
                    for m in messages {
                        workers.submit(&m.from, m.id, Some(arrival));
                    }
                },
            )
        };
        let ack_budget = {
            let budgets = budgets.clone();
            Arc::new(move || budgets.snapshot().get(BudgetStage::Ack).duration())
        };
        let webhook = webhook::routes(Arc::new(WebhookState {
            app_secret: credentials.app_secret,
            verify_token: credentials.verify_token,
            phone_number_id: credentials.phone_number_id,
            inbox: store.clone(),
            on_accepted,
            ack_budget,
            replay_horizon: config.store.replay_horizon(),
        }));
        let warm_up = warming.as_ref().map(|_| Arc::new(WarmUp::default()));
        let app = Router::new()
            .route("/healthz", get(|| async { "ok" }))
            .route("/readyz", get(readyz))
            .route("/metrics", get(metrics))
            .with_state(AppState {
                store: store.clone() as Arc<dyn Store>,
                model,
                checked: Default::default(),
                warm_up: warm_up.clone(),
            })
            .merge(if role == Role::Worker {
                Router::new()
            } else {
                webhook
            })
            .merge(operator.unwrap_or_default())
            .merge(crate::console::router(
                Arc::new(ServiceConsole {
                    traces: store.clone(),
                    channel: graph.clone(),
                    budgets: budgets.clone(),
                    sessions,
                    dialog: learning.clone(),
                }),
                access,
            ))
            .merge(extra);

        let addr = config.service.addr;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Listen { addr, source })?;
        let addr = listener
            .local_addr()
            .map_err(|source| ServeError::Listen { addr, source })?;
        let stop = CancellationToken::new();
        if role != Role::Webhook {
            tokio::spawn(count_outbox(store.clone(), stop.clone()));
        }
        // Operators' intent labels retrain the fast path as they arrive.
        if let Some(stage) = learning {
            stage.watch_labels(stop.clone());
        }
        tokio::spawn(retention(
            store.clone(),
            retained_sessions,
            config.store.clone(),
            stop.clone(),
        ));
        // The reply templates' fixed sentences are rendered while no turn
        // runs, so the first customers find them ready.
        if let (Some((chain, sentences)), Some(progress)) = (warming, warm_up.clone()) {
            let metrics = crate::metrics::global();
            let busy = move || metrics.in_flight().get() > 0 || metrics.queue_depth().get() > 0;
            tokio::spawn(crate::tts::cache::warm(
                chain,
                sentences,
                busy,
                progress,
                stop.clone(),
            ));
        }
        let grace = Duration::from_millis(config.service.shutdown_grace_ms);
        let task = {
            let stop = stop.clone();
            let workers = workers.clone();
            tokio::spawn(async move {
                let served = axum::serve(listener, app)
                    .with_graceful_shutdown(stop.cancelled_owned())
                    .await;
                tracing::info!("intake stopped; draining turns in flight");
                let drained = workers.drain(grace).await;
                if let Some(otlp) = otlp {
                    // The last turns' spans go out before the process ends.
                    let flushed = tokio::task::spawn_blocking(move || {
                        otlp.shutdown(Duration::from_secs(5));
                    });
                    let _ = flushed.await;
                }
                tracing::info!(abandoned = drained.abandoned, "stopped");
                served.map_err(ServeError::Server)
            })
        };
        tracing::info!(%addr, "listening");
        Ok(Self {
            addr,
            store,
            workers,
            stop,
            task,
            budgets,
            graph,
            warm_up,
        })
    }

    /// The speech cache's start-up rendering, when there is one.
    pub fn warm_up(&self) -> Option<&WarmUp> {
        self.warm_up.as_deref()
    }

    /// Loads a new access token (a config reload): a client paused by a
    /// rejected token (190) resumes, and the turns waiting in the outbox go
    /// out on their next try.
    pub fn set_access_token(&self, token: crate::channel::whatsapp::Secret) {
        self.graph.set_token(token);
    }

    /// Reloads the access token from `path` (and the environment) on SIGHUP
    /// and when the file changes, until the service stops.
    pub fn watch_access_token(&self, path: PathBuf) {
        let (graph, stop) = (self.graph.clone(), self.stop.clone());
        tokio::spawn(async move {
            let mut reloads =
                crate::pipeline::budget::changes(path.clone(), Duration::from_secs(1));
            loop {
                tokio::select! {
                    () = stop.cancelled() => return,
                    why = reloads.next() => {
                        let loaded = Config::from_file(&path).and_then(|mut c| {
                            c.apply_env(|k| std::env::var(k).ok())?;
                            Ok(c)
                        });
                        match loaded.map(|c| c.whatsapp.access_token) {
                            Ok(Some(token)) => graph.set_token(token),
                            Ok(None) => {}
                            Err(e) => tracing::error!(why, error = %e, "access token not reloaded"),
                        }
                    }
                }
            }
        });
    }

    /// The budgets in force.
    pub fn budgets(&self) -> &BudgetHandle {
        &self.budgets
    }

    /// Reloads the budgets from `path` on SIGHUP and when it changes,
    /// until the service stops.
    pub fn watch_budgets(&self, path: PathBuf) {
        tokio::spawn(crate::pipeline::budget::watch(
            self.budgets.clone(),
            path,
            Duration::from_secs(1),
            self.stop.clone(),
        ));
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The store, for inspection (tests, operators' commands).
    pub fn store(&self) -> &dyn Backend {
        self.store.as_ref()
    }

    /// Messages waiting or in flight.
    pub fn queued(&self) -> usize {
        self.workers.queued()
    }

    /// Stops intake, drains the turns in flight up to the grace period, and
    /// returns when the service has stopped.
    pub async fn stop(self) -> Result<(), ServeError> {
        self.stop.cancel();
        self.task
            .await
            .unwrap_or_else(|e| Err(ServeError::Server(std::io::Error::other(e))))
    }
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let result = {
        let mut checked = state.checked.lock().await;
        match &*checked {
            Some((at, result)) if at.elapsed() < READY_CHECK_EVERY => result.clone(),
            _ => {
                let result = state
                    .store
                    .check_writable()
                    .await
                    .map_err(|e| e.to_string());
                *checked = Some((Instant::now(), result.clone()));
                result
            }
        }
    };
    match result {
        Ok(()) => (
            StatusCode::OK,
            format!(
                "ready: model {}, store writable{}\n",
                state.model,
                state
                    .warm_up
                    .as_ref()
                    .map_or_else(String::new, |w| format!(", {}", w.describe()))
            ),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: store: {e}\n"),
        ),
    }
}

/// What the operator console reads: the stored traces, the budgets in
/// force and the dialog's hand-offs.
struct ServiceConsole {
    traces: Arc<dyn Backend>,
    channel: Arc<dyn Channel>,
    budgets: BudgetHandle,
    sessions: Option<crate::dialog::session::SessionStore>,
    /// The dialog stage, whose classifier operators teach.
    dialog: Option<DialogStage>,
}

#[async_trait::async_trait]
impl crate::console::ConsoleData for ServiceConsole {
    fn intents(&self) -> Vec<String> {
        self.dialog.as_ref().map_or_else(Vec::new, |d| {
            d.intents()
                .specs()
                .iter()
                .map(|s| s.intent.clone())
                .collect()
        })
    }

    async fn label(
        &self,
        message_id: &str,
        intent: &str,
    ) -> Result<crate::console::LabelDone, String> {
        let Some(dialog) = self.dialog.clone() else {
            return Err("this service has no intents to teach".into());
        };
        let turn = self
            .traces
            .turn(message_id)
            .await
            .map_err(|e| e.to_string())?;
        let text = turn.said().unwrap_or_default().to_string();
        let (id, intent) = (message_id.to_string(), intent.to_string());
        let label = tokio::task::spawn_blocking(move || dialog.label(&id, &text, &intent))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(crate::console::LabelDone {
            message_id: label.message_id,
            intent: label.intent,
            lang: label.lang,
            text: label.text,
        })
    }

    async fn recent_turns(
        &self,
        limit: usize,
    ) -> Result<Vec<crate::pipeline::trace::TurnTrace>, String> {
        self.traces
            .recent_traces(limit)
            .await
            .map_err(|e| e.to_string())
    }

    fn budgets(
        &self,
    ) -> (
        Arc<crate::pipeline::budget::Budgets>,
        crate::pipeline::budget::ReloadStatus,
    ) {
        (self.budgets.snapshot(), self.budgets.status())
    }

    async fn handoffs(&self) -> Result<Vec<crate::console::HandoffRow>, String> {
        let Some(sessions) = self.sessions.clone() else {
            return Ok(Vec::new());
        };
        let waiting = tokio::task::spawn_blocking(move || sessions.handoffs())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        Ok(waiting
            .iter()
            .filter_map(crate::console::HandoffRow::from_session)
            .collect())
    }

    async fn outbox(&self) -> Result<crate::console::OutboxView, String> {
        let waiting = self.traces.waiting().await.map_err(|e| e.to_string())?;
        Ok(crate::console::OutboxView {
            paused: self.channel.paused(),
            waiting: waiting
                .into_iter()
                .map(|t| crate::console::OutboxRow {
                    customer: crate::channel::mask_number(&t.message.from),
                    message_id: t.message.id,
                    state: t.state.name().to_string(),
                    attempts: t.attempts,
                    received_unix_ms: t.received_at_ms,
                    retry_at_unix_ms: t.retry_at_ms,
                    reason: t.waiting.unwrap_or_default(),
                })
                .collect(),
        })
    }
}

async fn metrics() -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        crate::metrics::global().encode(),
    )
}

/// Counts the outbox for `/metrics` every few seconds, until `stop`.
async fn count_outbox(store: Arc<dyn Backend>, stop: CancellationToken) {
    loop {
        match store.waiting().await {
            Ok(waiting) => {
                let now = crate::pipeline::turn::unix_ms();
                let oldest = waiting
                    .iter()
                    .map(|t| now.saturating_sub(t.received_at_ms).max(0) as u64 / 1000)
                    .max()
                    .unwrap_or(0);
                crate::metrics::global().set_outbox(waiting.len(), oldest);
            }
            Err(e) => tracing::warn!(error = %e, "could not count the outbox"),
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

/// The retention sweep, hourly until `stop`: traces past
/// `trace_retention_hours`, then [`Backend::sweep`] (messages' content,
/// old ids, delivery reports) and sessions past `session_retention_days`.
async fn retention(
    store: Arc<dyn Backend>,
    sessions: Option<crate::dialog::session::SessionStore>,
    config: crate::store::StoreConfig,
    stop: CancellationToken,
) {
    loop {
        let now = crate::pipeline::turn::unix_ms();
        let traces_before =
            now.saturating_sub((config.trace_retention_hours as i64).saturating_mul(3_600_000));
        match store.prune_traces(traces_before).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(traces = n, "old turn traces deleted"),
            Err(e) => tracing::warn!(error = %e, "could not delete old turn traces"),
        }
        match store.sweep(&config, now).await {
            Ok(e) if e == crate::store::Erased::default() => {}
            Ok(e) => tracing::info!(
                messages = e.messages,
                ids = e.ids,
                statuses = e.statuses,
                "retention: old content erased"
            ),
            Err(e) => tracing::warn!(error = %e, "retention sweep failed"),
        }
        if let Some(sessions) = &sessions {
            let before = now / 1000 - (config.session_retention_days as i64).saturating_mul(86_400);
            let sessions = sessions.clone();
            match tokio::task::spawn_blocking(move || sessions.prune(before)).await {
                Ok(Ok(0)) => {}
                Ok(Ok(n)) => tracing::info!(sessions = n, "retention: old sessions deleted"),
                Ok(Err(e)) => tracing::warn!(error = %e, "could not delete old sessions"),
                Err(e) => tracing::warn!(error = %e, "session sweep failed"),
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_secs(3600)) => {}
        }
    }
}

/// Runs the service until SIGTERM or Ctrl-C: the entry point of
/// `voxline serve`. `load_stt` is called once on a blocking thread; the
/// budgets reload from `config_file` when it changes or on SIGHUP.
pub async fn serve(
    config: Config,
    config_file: Option<PathBuf>,
    load_stt: impl FnOnce() -> Result<Arc<dyn SpeechToText>, SttError> + Send + 'static,
) -> Result<(), ServeError> {
    config.whatsapp.validate()?;
    let stt = tokio::task::spawn_blocking(load_stt)
        .await
        .map_err(|e| ServeError::Server(std::io::Error::other(e)))??;
    let service = Service::start(&config, stt).await?;
    if let Some(path) = config_file {
        service.watch_budgets(path.clone());
        service.watch_access_token(path);
    }
    shutdown_signal().await;
    tracing::info!("shutdown requested");
    service.stop().await
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
