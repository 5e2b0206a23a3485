//! The commerce adapter for a business's own backend, over HTTP and JSON.
//!
//! Every request carries `Authorization: Bearer <token>` when a token is
//! configured, and `Accept: application/json`. Bodies use the types of
//! [`super`] serialised with serde (dates as `YYYY-MM-DD`, money in cents).
//!
//! | request | answer |
//! | --- | --- |
//! | `GET {base}/products?key=backpack` (a product id or a category) | `200` `[Product]` |
//! | `GET {base}/lexicon` | `200` `[["mochila azul", "backpack-blue"], …]` |
//! | `GET {base}/customers/{phone}` | `200` `Customer`, or `404` |
//! | `GET {base}/customers/{phone}/orders` | `200` `[Order]`, newest first |
//! | `GET {base}/customers/{phone}/orders/{id}` | `200` `Order`, or `404` when it is not this customer's |
//! | `POST {base}/customers/{phone}/changes` with `{"change": Change, "confirmed_turn": "wamid…"}` and `Idempotency-Key: wamid…` | `200` `Order` after the change, `404` unknown order, `409` `{"error": "…"}` refused |
//!
//! **Idempotency.** Every write carries the id of the message that confirmed
//! it (the customer's "yes", a WhatsApp `wamid`, unique per message) twice:
//! as `confirmed_turn` in the body and as the `Idempotency-Key` header. The
//! same key can arrive again: voxline may stop after the backend committed
//! the change and before the conversation recorded it, and then answers the
//! same confirmation once more when it restarts. The backend must keep the
//! first answer to each key and give it again (the same status and `Order`)
//! without applying the change a second time: no second order, no stock
//! taken twice. A key that comes back with a different change or customer
//! is a mistake to refuse with `409`. voxline's embedded shop keeps the same
//! rule with a unique index on the confirming turn.
//!
//! `Change` is tagged by `kind`: `{"kind":"reschedule","order":"1842","delivery_date":"2026-11-28"}`,
//! `{"kind":"readdress","order":"1842","address":"22 Baker Street"}`, `{"kind":"cancel","order":"1842"}`,
//! `{"kind":"refund","order":"1842"}`, `{"kind":"place_order","items":[{"product":"bottle-steel","quantity":2}]}`.
//! `Order` is `{"id","phone","status":"processing|shipped|delivered|cancelled","payment":"pending|paid|failed|refunded","delivery_date","address","items":[{"product","quantity"}],"total_cents","currency"}`.

use std::time::Duration;

use reqwest::{Client, RequestBuilder, StatusCode};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::{BoxFuture, Change, Commerce, CommerceError, Customer, Order, Product};

/// `[dialog.commerce]` when `kind = "http"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCommerceConfig {
    /// Base URL, e.g. `https://shop.example/api/voxline`.
    pub base_url: String,
    /// Environment variable holding the bearer token (never the token
    /// itself in the file).
    #[serde(default)]
    pub token_env: Option<String>,
    /// Per-request timeout in milliseconds (default 2000).
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
}

/// The header that carries a write's confirming turn (see the module docs).
pub const IDEMPOTENCY_KEY: &str = "Idempotency-Key";

fn default_timeout_ms() -> u64 {
    2000
}

pub struct HttpCommerce {
    client: Client,
    base: String,
    token: Option<String>,
}

impl HttpCommerce {
    pub fn new(config: &HttpCommerceConfig) -> Result<Self, CommerceError> {
        let client = Client::builder()
            .timeout(Duration::from_millis(config.timeout_ms))
            .build()
            .map_err(|e| CommerceError::Http(e.to_string()))?;
        let token = config
            .token_env
            .as_deref()
            .and_then(|v| std::env::var(v).ok());
        Ok(Self {
            client,
            base: config.base_url.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn request(&self, req: RequestBuilder) -> RequestBuilder {
        let req = req.header("accept", "application/json");
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<Option<T>, CommerceError> {
        let resp = self
            .request(self.client.get(format!("{}{path}", self.base)))
            .send()
            .await
            .map_err(|e| CommerceError::Http(e.to_string()))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !resp.status().is_success() {
            return Err(CommerceError::Http(format!(
                "GET {path}: {}",
                resp.status()
            )));
        }
        resp.json()
            .await
            .map(Some)
            .map_err(|e| CommerceError::Http(format!("GET {path}: {e}")))
    }
}

/// Path segments are percent-encoded so that a phone number or order id
/// cannot change the path.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Commerce for HttpCommerce {
    fn products(&self, key: &str) -> BoxFuture<'_, Result<Vec<Product>, CommerceError>> {
        let path = format!("/products?key={}", seg(key));
        Box::pin(async move { Ok(self.get(&path).await?.unwrap_or_default()) })
    }

    fn lexicon(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, CommerceError>> {
        Box::pin(async move { Ok(self.get("/lexicon").await?.unwrap_or_default()) })
    }

    fn customer(&self, phone: &str) -> BoxFuture<'_, Result<Option<Customer>, CommerceError>> {
        let path = format!("/customers/{}", seg(phone));
        Box::pin(async move { self.get(&path).await })
    }

    fn orders(&self, phone: &str) -> BoxFuture<'_, Result<Vec<Order>, CommerceError>> {
        let path = format!("/customers/{}/orders", seg(phone));
        Box::pin(async move { Ok(self.get(&path).await?.unwrap_or_default()) })
    }

    fn order(&self, phone: &str, id: &str) -> BoxFuture<'_, Result<Option<Order>, CommerceError>> {
        let path = format!("/customers/{}/orders/{}", seg(phone), seg(id));
        Box::pin(async move { self.get(&path).await })
    }

    fn apply(
        &self,
        phone: &str,
        change: &Change,
        confirmed_turn: &str,
    ) -> BoxFuture<'_, Result<Order, CommerceError>> {
        let path = format!("/customers/{}/changes", seg(phone));
        let body = serde_json::json!({ "change": change, "confirmed_turn": confirmed_turn });
        let key = confirmed_turn.to_string();
        let order = match change {
            Change::Reschedule { order, .. }
            | Change::Readdress { order, .. }
            | Change::Cancel { order }
            | Change::Refund { order } => order.clone(),
            Change::PlaceOrder { .. } => String::new(),
        };
        Box::pin(async move {
            let resp = self
                .request(self.client.post(format!("{}{path}", self.base)))
                .header(IDEMPOTENCY_KEY, key)
                .json(&body)
                .send()
                .await
                .map_err(|e| CommerceError::Http(e.to_string()))?;
            match resp.status() {
                s if s.is_success() => resp
                    .json()
                    .await
                    .map_err(|e| CommerceError::Http(format!("POST {path}: {e}"))),
                StatusCode::NOT_FOUND => Err(CommerceError::NoSuchOrder(order)),
                StatusCode::CONFLICT => {
                    let v: serde_json::Value = resp.json().await.unwrap_or_default();
                    Err(CommerceError::Refused(
                        v["error"]
                            .as_str()
                            .unwrap_or("refused by the backend")
                            .to_string(),
                    ))
                }
                s => Err(CommerceError::Http(format!("POST {path}: {s}"))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_cannot_escape() {
        assert_eq!(seg("15550001842"), "15550001842");
        assert_eq!(seg("../admin?x=1"), "..%2Fadmin%3Fx%3D1");
    }
}
