//! The seed file of the embedded demo store (`data/catalogue.toml`).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::{CommerceError, OrderItem, OrderStatus, PaymentStatus};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seed {
    pub currency: String,
    #[serde(default)]
    pub categories: Vec<SeedCategory>,
    #[serde(default)]
    pub products: Vec<SeedProduct>,
    #[serde(default)]
    pub customers: Vec<SeedCustomer>,
    #[serde(default)]
    pub orders: Vec<SeedOrder>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCategory {
    pub id: String,
    pub names: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedProduct {
    pub id: String,
    pub category: String,
    pub price_cents: i64,
    pub stock: i64,
    pub ships_in_days: i64,
    pub names: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedCustomer {
    pub phone: String,
    pub name: String,
    pub language: Option<String>,
    pub address: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeedOrder {
    pub id: String,
    pub phone: String,
    pub status: OrderStatus,
    pub payment: PaymentStatus,
    /// Delivery date relative to the day the store is seeded.
    pub delivery_in_days: i64,
    pub items: Vec<OrderItem>,
}

impl Seed {
    pub fn load(path: &Path) -> Result<Self, CommerceError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| CommerceError::Seed(format!("cannot read {}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| CommerceError::Seed(format!("{}: {e}", path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_seed_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/catalogue.toml");
        let seed = Seed::load(&path).unwrap();
        assert!(seed.products.len() >= 5);
        assert!(seed.orders.iter().any(|o| o.id == "1842"));
        for o in &seed.orders {
            for i in &o.items {
                assert!(
                    seed.products.iter().any(|p| p.id == i.product),
                    "{}",
                    i.product
                );
            }
        }
    }
}
