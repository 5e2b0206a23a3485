//! The commerce backend: the only source of prices, stock, order status and
//! delivery dates in a reply.
//!
//! [`Commerce`] has two implementations: [`embedded::EmbeddedStore`], a demo
//! shop in a SQLite file seeded from `data/catalogue.toml`, and
//! [`http::HttpCommerce`], which calls a business's own backend with the
//! JSON requests documented there. Every order lookup is scoped to the
//! customer's phone number: a customer never learns about someone else's
//! order. Every write carries the turn that confirmed it as its idempotency
//! key, so a confirmation answered twice changes the shop once.

pub mod embedded;
pub mod http;
pub mod seed;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

use super::calendar::Date;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Product {
    pub id: String,
    pub category: String,
    /// Display names per language code; the first is the one spoken.
    pub names: BTreeMap<String, Vec<String>>,
    pub price_cents: i64,
    pub currency: String,
    pub stock: i64,
    /// Days from an order today to its delivery.
    pub ships_in_days: i64,
}

impl Product {
    /// The product's name in `lang`, else English, else its id.
    pub fn name(&self, lang: &str) -> &str {
        self.names
            .get(lang)
            .or_else(|| self.names.get("en"))
            .and_then(|n| n.first())
            .map_or(self.id.as_str(), String::as_str)
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Customer {
    pub phone: String,
    pub name: String,
    pub language: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Processing,
    Shipped,
    Delivered,
    Cancelled,
}

impl OrderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Processing => "processing",
            Self::Shipped => "shipped",
            Self::Delivered => "delivered",
            Self::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "processing" => Self::Processing,
            "shipped" => Self::Shipped,
            "delivered" => Self::Delivered,
            "cancelled" => Self::Cancelled,
            _ => return None,
        })
    }

    /// Still to be delivered, so it can be moved, readdressed or cancelled.
    pub fn is_open(self) -> bool {
        matches!(self, Self::Processing | Self::Shipped)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PaymentStatus {
    Pending,
    Paid,
    Failed,
    Refunded,
}

impl PaymentStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Paid => "paid",
            Self::Failed => "failed",
            Self::Refunded => "refunded",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "pending" => Self::Pending,
            "paid" => Self::Paid,
            "failed" => Self::Failed,
            "refunded" => Self::Refunded,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OrderItem {
    pub product: String,
    pub quantity: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub id: String,
    pub phone: String,
    pub status: OrderStatus,
    pub payment: PaymentStatus,
    pub delivery_date: Option<Date>,
    pub address: Option<String>,
    pub items: Vec<OrderItem>,
    pub total_cents: i64,
    pub currency: String,
}

/// A write the customer confirmed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Change {
    Reschedule { order: String, delivery_date: Date },
    Readdress { order: String, address: String },
    Cancel { order: String },
    Refund { order: String },
    PlaceOrder { items: Vec<OrderItem> },
}

impl Change {
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Reschedule { .. } => "reschedule",
            Self::Readdress { .. } => "readdress",
            Self::Cancel { .. } => "cancel",
            Self::Refund { .. } => "refund",
            Self::PlaceOrder { .. } => "place_order",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CommerceError {
    #[error("order {0} not found for this customer")]
    NoSuchOrder(String),
    #[error("product {0} not found")]
    NoSuchProduct(String),
    #[error("not allowed: {0}")]
    Refused(String),
    #[error("commerce database: {0}")]
    Database(#[from] rusqlite::Error),
    #[error("commerce backend request failed: {0}")]
    Http(String),
    #[error("commerce seed: {0}")]
    Seed(String),
}

/// The shop, as the dialog stage sees it.
pub trait Commerce: Send + Sync {
    /// Products whose id or category is `key`.
    fn products(&self, key: &str) -> BoxFuture<'_, Result<Vec<Product>, CommerceError>>;
    /// Every product name and category name per language, for the slot
    /// extractor: (phrase, product id or category).
    fn lexicon(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, CommerceError>>;
    fn customer(&self, phone: &str) -> BoxFuture<'_, Result<Option<Customer>, CommerceError>>;
    /// The customer's orders, newest first.
    fn orders(&self, phone: &str) -> BoxFuture<'_, Result<Vec<Order>, CommerceError>>;
    /// One order, only if it belongs to `phone`.
    fn order(&self, phone: &str, id: &str) -> BoxFuture<'_, Result<Option<Order>, CommerceError>>;
    /// Commits a confirmed change; `confirmed_turn` names the message that
    /// said yes, is kept with the change and is its idempotency key: called
    /// again with the same turn (a confirmation replayed after a crash), the
    /// backend answers what it answered the first time and applies nothing.
    fn apply(
        &self,
        phone: &str,
        change: &Change,
        confirmed_turn: &str,
    ) -> BoxFuture<'_, Result<Order, CommerceError>>;
}
