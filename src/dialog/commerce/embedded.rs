//! The embedded demo shop: catalogue, customers, orders and the log of
//! committed changes in one SQLite file, seeded from `data/catalogue.toml`
//! when the file is new.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension};

use super::seed::Seed;
use super::{
    BoxFuture, Change, Commerce, CommerceError, Customer, Order, OrderStatus, PaymentStatus,
    Product,
};
use crate::dialog::calendar::Date;

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS shop_categories (id TEXT PRIMARY KEY, names TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS shop_products (
  id TEXT PRIMARY KEY, category TEXT NOT NULL, names TEXT NOT NULL,
  price_cents INTEGER NOT NULL, currency TEXT NOT NULL, stock INTEGER NOT NULL,
  ships_in_days INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS shop_customers (
  phone TEXT PRIMARY KEY, name TEXT NOT NULL, language TEXT, address TEXT);
CREATE TABLE IF NOT EXISTS shop_orders (
  id TEXT PRIMARY KEY, phone TEXT NOT NULL, status TEXT NOT NULL, payment TEXT NOT NULL,
  delivery_date TEXT, address TEXT, items TEXT NOT NULL, total_cents INTEGER NOT NULL,
  currency TEXT NOT NULL, created_at INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS shop_orders_phone ON shop_orders (phone);
CREATE TABLE IF NOT EXISTS shop_changes (
  id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, phone TEXT NOT NULL,
  kind TEXT NOT NULL, detail TEXT NOT NULL, confirmed_turn TEXT NOT NULL, at INTEGER NOT NULL);
";

/// A committed change as logged.
#[derive(Debug, Clone, PartialEq)]
pub struct LoggedChange {
    pub order: String,
    pub phone: String,
    pub kind: String,
    pub detail: String,
    pub confirmed_turn: String,
}

#[derive(Clone)]
pub struct EmbeddedStore {
    conn: Arc<Mutex<Connection>>,
}

fn now_secs() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl EmbeddedStore {
    /// Opens (or creates) the database at `path`; a new database is seeded
    /// from `seed`, with delivery dates counted from `today`.
    pub fn open(path: &Path, seed: &Seed, today: Date) -> Result<Self, CommerceError> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                CommerceError::Seed(format!("cannot create {}: {e}", dir.display()))
            })?;
        }
        let conn = Connection::open(path)?;
        Self::with_connection(conn, seed, today)
    }

    /// An in-memory shop, for tests and `voxline intent`.
    pub fn in_memory(seed: &Seed, today: Date) -> Result<Self, CommerceError> {
        Self::with_connection(Connection::open_in_memory()?, seed, today)
    }

    fn with_connection(conn: Connection, seed: &Seed, today: Date) -> Result<Self, CommerceError> {
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        conn.execute_batch(SCHEMA)?;
        let seeded: i64 = conn.query_row("SELECT COUNT(*) FROM shop_products", [], |r| r.get(0))?;
        let store = Self {
            conn: Arc::new(Mutex::new(conn)),
        };
        if seeded == 0 {
            store.seed(seed, today)?;
        }
        Ok(store)
    }

    fn seed(&self, seed: &Seed, today: Date) -> Result<(), CommerceError> {
        let mut conn = self.conn.lock().unwrap_or_else(|e| e.into_inner());
        let tx = conn.transaction()?;
        let json = |v: &BTreeMap<String, Vec<String>>| serde_json::to_string(v).unwrap_or_default();
        for c in &seed.categories {
            tx.execute(
                "INSERT OR REPLACE INTO shop_categories VALUES (?1, ?2)",
                params![c.id, json(&c.names)],
            )?;
        }
        for p in &seed.products {
            tx.execute(
                "INSERT OR REPLACE INTO shop_products VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    p.id,
                    p.category,
                    json(&p.names),
                    p.price_cents,
                    seed.currency,
                    p.stock,
                    p.ships_in_days
                ],
            )?;
        }
        for c in &seed.customers {
            tx.execute(
                "INSERT OR REPLACE INTO shop_customers VALUES (?1, ?2, ?3, ?4)",
                params![c.phone, c.name, c.language, c.address],
            )?;
        }
        for o in &seed.orders {
            let mut total = 0;
            for i in &o.items {
                let p = seed
                    .products
                    .iter()
                    .find(|p| p.id == i.product)
                    .ok_or_else(|| {
                        CommerceError::Seed(format!(
                            "order {}: unknown product {}",
                            o.id, i.product
                        ))
                    })?;
                total += p.price_cents * i64::from(i.quantity);
            }
            let address = seed
                .customers
                .iter()
                .find(|c| c.phone == o.phone)
                .and_then(|c| c.address.clone());
            tx.execute(
                "INSERT OR REPLACE INTO shop_orders VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
                params![
                    o.id,
                    o.phone,
                    o.status.as_str(),
                    o.payment.as_str(),
                    today.plus_days(o.delivery_in_days).to_string(),
                    address,
                    serde_json::to_string(&o.items).unwrap_or_default(),
                    total,
                    seed.currency,
                    now_secs()
                ],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The change log, oldest first.
    pub fn changes(&self) -> Result<Vec<LoggedChange>, CommerceError> {
        let conn = self.lock();
        let mut stmt = conn.prepare(
            "SELECT order_id, phone, kind, detail, confirmed_turn FROM shop_changes ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok(LoggedChange {
                order: r.get(0)?,
                phone: r.get(1)?,
                kind: r.get(2)?,
                detail: r.get(3)?,
                confirmed_turn: r.get(4)?,
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn product_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Product> {
        let names: String = r.get(2)?;
        Ok(Product {
            id: r.get(0)?,
            category: r.get(1)?,
            names: serde_json::from_str(&names).unwrap_or_default(),
            price_cents: r.get(3)?,
            currency: r.get(4)?,
            stock: r.get(5)?,
            ships_in_days: r.get(6)?,
        })
    }

    fn order_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Order> {
        let status: String = r.get(2)?;
        let payment: String = r.get(3)?;
        let date: Option<String> = r.get(4)?;
        let items: String = r.get(6)?;
        Ok(Order {
            id: r.get(0)?,
            phone: r.get(1)?,
            status: OrderStatus::parse(&status).unwrap_or(OrderStatus::Processing),
            payment: PaymentStatus::parse(&payment).unwrap_or(PaymentStatus::Pending),
            delivery_date: date.as_deref().and_then(Date::parse),
            address: r.get(5)?,
            items: serde_json::from_str(&items).unwrap_or_default(),
            total_cents: r.get(7)?,
            currency: r.get(8)?,
        })
    }

    fn order_sync(
        conn: &Connection,
        phone: &str,
        id: &str,
    ) -> Result<Option<Order>, CommerceError> {
        Ok(conn
            .query_row(
                "SELECT id, phone, status, payment, delivery_date, address, items, total_cents, currency
                 FROM shop_orders WHERE id = ?1 AND phone = ?2",
                params![id, phone],
                Self::order_row,
            )
            .optional()?)
    }

    fn apply_sync(&self, phone: &str, change: &Change, turn: &str) -> Result<Order, CommerceError> {
        let mut conn = self.lock();
        let tx = conn.transaction()?;
        let open = |id: &str| -> Result<Order, CommerceError> {
            let o = Self::order_sync(&tx, phone, id)?
                .ok_or_else(|| CommerceError::NoSuchOrder(id.to_string()))?;
            Ok(o)
        };
        let order_id = match change {
            Change::Reschedule {
                order,
                delivery_date,
            } => {
                let o = open(order)?;
                if !o.status.is_open() {
                    return Err(CommerceError::Refused(format!(
                        "order {order} is {}",
                        o.status.as_str()
                    )));
                }
                tx.execute(
                    "UPDATE shop_orders SET delivery_date = ?1 WHERE id = ?2",
                    params![delivery_date.to_string(), order],
                )?;
                order.clone()
            }
            Change::Readdress { order, address } => {
                let o = open(order)?;
                if !o.status.is_open() {
                    return Err(CommerceError::Refused(format!(
                        "order {order} is {}",
                        o.status.as_str()
                    )));
                }
                tx.execute(
                    "UPDATE shop_orders SET address = ?1 WHERE id = ?2",
                    params![address, order],
                )?;
                order.clone()
            }
            Change::Cancel { order } => {
                let o = open(order)?;
                if o.status != OrderStatus::Processing {
                    return Err(CommerceError::Refused(format!(
                        "order {order} is {}",
                        o.status.as_str()
                    )));
                }
                let payment = if o.payment == PaymentStatus::Paid {
                    "refunded"
                } else {
                    o.payment.as_str()
                };
                tx.execute(
                    "UPDATE shop_orders SET status = 'cancelled', payment = ?1 WHERE id = ?2",
                    params![payment, order],
                )?;
                order.clone()
            }
            Change::Refund { order } => {
                let o = open(order)?;
                if o.payment != PaymentStatus::Paid {
                    return Err(CommerceError::Refused(format!(
                        "order {order} payment is {}",
                        o.payment.as_str()
                    )));
                }
                tx.execute(
                    "UPDATE shop_orders SET payment = 'refunded' WHERE id = ?1",
                    params![order],
                )?;
                order.clone()
            }
            Change::PlaceOrder { items } => {
                let mut total = 0;
                let mut ships = 0;
                let mut currency = String::new();
                for i in items {
                    let (price, stock, days, cur): (i64, i64, i64, String) = tx
                        .query_row(
                            "SELECT price_cents, stock, ships_in_days, currency FROM shop_products WHERE id = ?1",
                            params![i.product],
                            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
                        )
                        .optional()?
                        .ok_or_else(|| CommerceError::NoSuchProduct(i.product.clone()))?;
                    if stock < i64::from(i.quantity) {
                        return Err(CommerceError::Refused(format!(
                            "only {stock} of {} in stock",
                            i.product
                        )));
                    }
                    tx.execute(
                        "UPDATE shop_products SET stock = stock - ?1 WHERE id = ?2",
                        params![i.quantity, i.product],
                    )?;
                    total += price * i64::from(i.quantity);
                    ships = ships.max(days);
                    currency = cur;
                }
                let next: i64 = tx.query_row(
                    "SELECT COALESCE(MAX(CAST(id AS INTEGER)), 1000) + 1 FROM shop_orders",
                    [],
                    |r| r.get(0),
                )?;
                let address: Option<String> = tx
                    .query_row(
                        "SELECT address FROM shop_customers WHERE phone = ?1",
                        params![phone],
                        |r| r.get(0),
                    )
                    .optional()?
                    .flatten();
                let id = next.to_string();
                tx.execute(
                    "INSERT INTO shop_orders VALUES (?1, ?2, 'processing', 'pending', ?3, ?4, ?5, ?6, ?7, ?8)",
                    params![
                        id,
                        phone,
                        Date::today(0).plus_days(ships).to_string(),
                        address,
                        serde_json::to_string(items).unwrap_or_default(),
                        total,
                        currency,
                        now_secs()
                    ],
                )?;
                id
            }
        };
        tx.execute(
            "INSERT INTO shop_changes (order_id, phone, kind, detail, confirmed_turn, at) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            params![order_id, phone, change.kind(), serde_json::to_string(change).unwrap_or_default(), turn, now_secs()],
        )?;
        let order =
            Self::order_sync(&tx, phone, &order_id)?.ok_or(CommerceError::NoSuchOrder(order_id))?;
        tx.commit()?;
        Ok(order)
    }
}

impl Commerce for EmbeddedStore {
    fn products(&self, key: &str) -> BoxFuture<'_, Result<Vec<Product>, CommerceError>> {
        let key = key.to_string();
        Box::pin(async move {
            let conn = self.lock();
            let mut stmt = conn.prepare(
                "SELECT id, category, names, price_cents, currency, stock, ships_in_days
                 FROM shop_products WHERE id = ?1 OR category = ?1 ORDER BY price_cents",
            )?;
            let rows = stmt.query_map(params![key], Self::product_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn lexicon(&self) -> BoxFuture<'_, Result<Vec<(String, String)>, CommerceError>> {
        Box::pin(async move {
            let conn = self.lock();
            let mut out = Vec::new();
            for table in ["shop_products", "shop_categories"] {
                let mut stmt = conn.prepare(&format!("SELECT id, names FROM {table}"))?;
                let rows =
                    stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
                for row in rows {
                    let (id, names) = row?;
                    let names: BTreeMap<String, Vec<String>> =
                        serde_json::from_str(&names).unwrap_or_default();
                    out.extend(names.into_values().flatten().map(|n| (n, id.clone())));
                }
            }
            Ok(out)
        })
    }

    fn customer(&self, phone: &str) -> BoxFuture<'_, Result<Option<Customer>, CommerceError>> {
        let phone = phone.to_string();
        Box::pin(async move {
            let conn = self.lock();
            Ok(conn
                .query_row(
                    "SELECT phone, name, language, address FROM shop_customers WHERE phone = ?1",
                    params![phone],
                    |r| {
                        Ok(Customer {
                            phone: r.get(0)?,
                            name: r.get(1)?,
                            language: r.get(2)?,
                            address: r.get(3)?,
                        })
                    },
                )
                .optional()?)
        })
    }

    fn orders(&self, phone: &str) -> BoxFuture<'_, Result<Vec<Order>, CommerceError>> {
        let phone = phone.to_string();
        Box::pin(async move {
            let conn = self.lock();
            let mut stmt = conn.prepare(
                "SELECT id, phone, status, payment, delivery_date, address, items, total_cents, currency
                 FROM shop_orders WHERE phone = ?1 ORDER BY created_at DESC, id DESC",
            )?;
            let rows = stmt.query_map(params![phone], Self::order_row)?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    fn order(&self, phone: &str, id: &str) -> BoxFuture<'_, Result<Option<Order>, CommerceError>> {
        let (phone, id) = (phone.to_string(), id.to_string());
        Box::pin(async move { Self::order_sync(&self.lock(), &phone, &id) })
    }

    fn apply(
        &self,
        phone: &str,
        change: &Change,
        confirmed_turn: &str,
    ) -> BoxFuture<'_, Result<Order, CommerceError>> {
        let (phone, change, turn) = (
            phone.to_string(),
            change.clone(),
            confirmed_turn.to_string(),
        );
        Box::pin(async move { self.apply_sync(&phone, &change, &turn) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::commerce::OrderItem;

    fn store() -> EmbeddedStore {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/catalogue.toml");
        EmbeddedStore::in_memory(
            &Seed::load(&path).unwrap(),
            Date::from_ymd(2026, 11, 24).unwrap(),
        )
        .unwrap()
    }

    fn block<T>(f: impl std::future::Future<Output = T>) -> T {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn orders_are_scoped_to_their_customer() {
        let s = store();
        let o = block(s.order("15550001842", "1842")).unwrap().unwrap();
        assert_eq!(o.status, OrderStatus::Shipped);
        assert_eq!(o.delivery_date.unwrap().to_string(), "2026-11-26");
        assert_eq!(o.total_cents, 3990 + 2 * 1500);
        assert_eq!(block(s.order("34600112210", "1842")).unwrap(), None);
    }

    #[test]
    fn changes_are_committed_and_logged_with_the_confirming_turn() {
        let s = store();
        let date = Date::from_ymd(2026, 11, 28).unwrap();
        let change = Change::Reschedule {
            order: "1842".into(),
            delivery_date: date,
        };
        let o = block(s.apply("15550001842", &change, "wamid.yes")).unwrap();
        assert_eq!(o.delivery_date, Some(date));
        let log = s.changes().unwrap();
        assert_eq!(log.len(), 1);
        assert_eq!(log[0].confirmed_turn, "wamid.yes");
        assert_eq!(log[0].kind, "reschedule");
        // A delivered order cannot be cancelled; someone else's not found.
        let err = block(s.apply(
            "393331113057",
            &Change::Cancel {
                order: "3057".into(),
            },
            "t",
        ))
        .unwrap_err();
        assert!(matches!(err, CommerceError::Refused(_)), "{err}");
        let err = block(s.apply(
            "393331113057",
            &Change::Cancel {
                order: "1842".into(),
            },
            "t",
        ))
        .unwrap_err();
        assert!(matches!(err, CommerceError::NoSuchOrder(_)), "{err}");
        assert_eq!(s.changes().unwrap().len(), 1);
    }

    #[test]
    fn placing_an_order_takes_stock() {
        let s = store();
        let items = vec![OrderItem {
            product: "bottle-steel".into(),
            quantity: 3,
        }];
        let o = block(s.apply("15550001842", &Change::PlaceOrder { items }, "t1")).unwrap();
        assert_eq!(o.total_cents, 4500);
        let p = block(s.products("bottle-steel")).unwrap();
        assert_eq!(p[0].stock, 37);
        let too_many = vec![OrderItem {
            product: "lamp-desk".into(),
            quantity: 1,
        }];
        assert!(
            block(s.apply("15550001842", &Change::PlaceOrder { items: too_many }, "t2")).is_err()
        );
    }

    #[test]
    fn lexicon_has_products_and_categories() {
        let lex = block(store().lexicon()).unwrap();
        assert!(lex.contains(&("mochila azul".to_string(), "backpack-blue".to_string())));
        assert!(lex.contains(&("zaino".to_string(), "backpack".to_string())));
    }
}
