//! The WhatsApp Cloud API channel: Meta's webhook in ([`webhook`],
//! [`payload`]) and the Graph API out ([`graph`]), configured by
//! `[whatsapp]` ([`config`]).

pub mod config;
pub mod graph;
pub mod payload;
pub mod webhook;

pub use config::{Credentials, Secret, WhatsAppConfig};
pub use graph::GraphClient;
