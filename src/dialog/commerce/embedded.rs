//! The embedded demo shop: catalogue, customers, orders and the log of
//! committed changes in one SQLite file, seeded from `data/catalogue.toml`
//! when the file is new.
//!
//! A change, its effects (stock taken, order written) and its log row with
//! the order it left commit in one transaction, and the log is unique on the
//! confirming turn: a confirmation replayed after a crash (the shop
//! committed, the session had not yet recorded it) gets the first answer
//! back and changes nothing.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

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
  kind TEXT NOT NULL, detail TEXT NOT NULL, confirmed_turn TEXT NOT NULL, at INTEGER NOT NULL,
  outcome TEXT);
";

/// The index that makes a confirming turn commit at most one change.
const TURN_INDEX: &str = "shop_changes_confirmed_turn";

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
        Self::migrate(&conn)?;
        let seeded: i64 = conn.query_row("SELECT COUNT(*) FROM shop_products", [], |r| r.get(0))?;
        let store = Self {
            conn: Arc::new(Mutex::new(conn)),
        };
        if seeded == 0 {
            store.seed(seed, today)?;
        }
        Ok(store)
    }

    /// Brings a database made by an older voxline up to [`SCHEMA`]: the
    /// `outcome` column (the order a change left, answered again on a
    /// replay) and the unique index on `confirmed_turn`. A log that already
    /// holds a turn twice (a change applied twice before the index existed)
    /// cannot take that index whole: the rows are kept, the turns are named
    /// in a warning, and the index covers every row written from now on.
    fn migrate(conn: &Connection) -> Result<(), CommerceError> {
        let has_outcome: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM pragma_table_info('shop_changes') WHERE name = 'outcome'",
            [],
            |r| r.get(0),
        )?;
        if !has_outcome {
            conn.execute_batch("ALTER TABLE shop_changes ADD COLUMN outcome TEXT")?;
        }
        let indexed: bool = conn.query_row(
            "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'index' AND name = ?1",
            params![TURN_INDEX],
            |r| r.get(0),
        )?;
        if indexed {
            return Ok(());
        }
        let mut stmt = conn.prepare(
            "SELECT confirmed_turn, COUNT(*) FROM shop_changes
             GROUP BY confirmed_turn HAVING COUNT(*) > 1 ORDER BY MIN(id)",
        )?;
        let twice: Vec<(String, i64)> = stmt
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<Result<_, _>>()?;
        if twice.is_empty() {
            conn.execute_batch(&format!(
                "CREATE UNIQUE INDEX {TURN_INDEX} ON shop_changes (confirmed_turn)"
            ))?;
            return Ok(());
        }
        let last: i64 = conn.query_row("SELECT MAX(id) FROM shop_changes", [], |r| r.get(0))?;
        tracing::warn!(
            turns = %twice
                .iter()
                .map(|(turn, n)| format!("{turn} ({n} rows)"))
                .collect::<Vec<_>>()
                .join(", "),
            "shop_changes: these confirmed turns were applied more than once before voxline \
             kept one change per turn; their rows are kept (check those orders and stock by \
             hand), and every change from row {} on is unique per turn",
            last + 1
        );
        // A partial index's condition must be a constant expression, hence
        // the number in the statement rather than a parameter.
        conn.execute_batch(&format!(
            "CREATE UNIQUE INDEX {TURN_INDEX} ON shop_changes (confirmed_turn) WHERE id > {last}"
        ))?;
        Ok(())
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

    /// The answer a turn's change got when it was committed, if it was:
    /// the order as it stood then (as it stands now for a row logged before
    /// the outcome was kept). The same turn confirming a different change,
    /// or for another customer, is refused.
    fn committed(
        conn: &Connection,
        phone: &str,
        detail: &str,
        turn: &str,
    ) -> Result<Option<Order>, CommerceError> {
        let row: Option<(String, String, String, Option<String>)> = conn
            .query_row(
                "SELECT order_id, phone, detail, outcome FROM shop_changes
                 WHERE confirmed_turn = ?1 ORDER BY id LIMIT 1",
                params![turn],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((order_id, logged_phone, logged_detail, outcome)) = row else {
            return Ok(None);
        };
        if logged_phone != phone || logged_detail != detail {
            return Err(CommerceError::Refused(format!(
                "turn {turn} already confirmed another change"
            )));
        }
        if let Some(order) = outcome.and_then(|o| serde_json::from_str(&o).ok()) {
            return Ok(Some(order));
        }
        Self::order_sync(conn, phone, &order_id)?
            .map(Some)
            .ok_or(CommerceError::NoSuchOrder(order_id))
    }

    fn apply_sync(&self, phone: &str, change: &Change, turn: &str) -> Result<Order, CommerceError> {
        let mut conn = self.lock();
        // Immediate: the write lock is taken before the replay check, so no
        // other connection to the file can commit the same turn in between.
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let detail = serde_json::to_string(change).unwrap_or_default();
        if let Some(first) = Self::committed(&tx, phone, &detail, turn)? {
            tracing::info!(turn, order = %first.id, "shop change already committed by this turn: not applied again");
            return Ok(first);
        }
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
        let order = Self::order_sync(&tx, phone, &order_id)?
            .ok_or_else(|| CommerceError::NoSuchOrder(order_id.clone()))?;
        tx.execute(
            "INSERT INTO shop_changes (order_id, phone, kind, detail, confirmed_turn, at, outcome)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![
                order_id,
                phone,
                change.kind(),
                detail,
                turn,
                now_secs(),
                serde_json::to_string(&order).unwrap_or_default()
            ],
        )?;
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
    fn a_replayed_confirmation_gets_the_first_answer_and_changes_nothing() {
        let s = store();
        let phone = "15550001842";
        let place = Change::PlaceOrder {
            items: vec![OrderItem {
                product: "bottle-steel".into(),
                quantity: 3,
            }],
        };
        let orders_before = block(s.orders(phone)).unwrap().len();
        let first = block(s.apply(phone, &place, "wamid.yes")).unwrap();
        // The process died before the session recorded the commit: the same
        // yes is answered again after the restart.
        let again = block(s.apply(phone, &place, "wamid.yes")).unwrap();
        assert_eq!(again, first);
        assert_eq!(block(s.orders(phone)).unwrap().len(), orders_before + 1);
        assert_eq!(block(s.products("bottle-steel")).unwrap()[0].stock, 37);
        assert_eq!(s.changes().unwrap().len(), 1);

        // The answer is the one given then, even if the order moved since.
        let move_to = |day| Change::Reschedule {
            order: "1842".into(),
            delivery_date: Date::from_ymd(2026, 11, day).unwrap(),
        };
        let moved = block(s.apply(phone, &move_to(28), "wamid.sat")).unwrap();
        block(s.apply(phone, &move_to(30), "wamid.mon")).unwrap();
        assert_eq!(
            block(s.apply(phone, &move_to(28), "wamid.sat")).unwrap(),
            moved
        );
        let now = block(s.order(phone, "1842")).unwrap().unwrap();
        assert_eq!(
            now.delivery_date,
            Some(Date::from_ymd(2026, 11, 30).unwrap())
        );
        assert_eq!(s.changes().unwrap().len(), 3);

        // One turn confirms one change, for one customer.
        let err = block(s.apply(phone, &move_to(29), "wamid.sat")).unwrap_err();
        assert!(matches!(err, CommerceError::Refused(_)), "{err}");
        let err = block(s.apply("34600112210", &place, "wamid.yes")).unwrap_err();
        assert!(matches!(err, CommerceError::Refused(_)), "{err}");
        assert_eq!(block(s.products("bottle-steel")).unwrap()[0].stock, 37);
        assert_eq!(s.changes().unwrap().len(), 3);
    }

    #[test]
    fn the_log_takes_one_row_per_turn() {
        let s = store();
        let conn = s.lock();
        let row = "INSERT INTO shop_changes (order_id, phone, kind, detail, confirmed_turn, at)
                   VALUES ('1842', '15550001842', 'cancel', '{}', 'wamid.yes', 0)";
        conn.execute(row, []).unwrap();
        let err = conn.execute(row, []).unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation),
            "{err}"
        );
    }

    /// A shop file from before the turn was unique, in which a turn was
    /// already applied twice: it opens, keeps its rows, and is unique from
    /// then on.
    #[test]
    fn an_older_log_with_a_turn_applied_twice_still_opens() {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "CREATE TABLE shop_changes (
               id INTEGER PRIMARY KEY AUTOINCREMENT, order_id TEXT NOT NULL, phone TEXT NOT NULL,
               kind TEXT NOT NULL, detail TEXT NOT NULL, confirmed_turn TEXT NOT NULL,
               at INTEGER NOT NULL);
             INSERT INTO shop_changes (order_id, phone, kind, detail, confirmed_turn, at) VALUES
               ('1842', '15550001842', 'cancel', '{\"kind\":\"cancel\",\"order\":\"1842\"}', 'wamid.old', 0),
               ('1842', '15550001842', 'cancel', '{\"kind\":\"cancel\",\"order\":\"1842\"}', 'wamid.old', 0);",
        )
        .unwrap();
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/catalogue.toml");
        let s = EmbeddedStore::with_connection(
            conn,
            &Seed::load(&path).unwrap(),
            Date::from_ymd(2026, 11, 24).unwrap(),
        )
        .unwrap();
        assert_eq!(s.changes().unwrap().len(), 2);
        let phone = "15550001842";
        let place = Change::PlaceOrder {
            items: vec![OrderItem {
                product: "bottle-steel".into(),
                quantity: 1,
            }],
        };
        let first = block(s.apply(phone, &place, "wamid.new")).unwrap();
        assert_eq!(block(s.apply(phone, &place, "wamid.new")).unwrap(), first);
        assert_eq!(s.changes().unwrap().len(), 3);
        let err = s
            .lock()
            .execute(
                "INSERT INTO shop_changes (order_id, phone, kind, detail, confirmed_turn, at)
                 VALUES ('1842', '15550001842', 'cancel', '{}', 'wamid.new', 0)",
                [],
            )
            .unwrap_err();
        assert_eq!(
            err.sqlite_error_code(),
            Some(rusqlite::ErrorCode::ConstraintViolation)
        );
        // The old turn is answered from its first row, not applied again.
        let old = Change::Cancel {
            order: "1842".into(),
        };
        let o = block(s.apply(phone, &old, "wamid.old")).unwrap();
        assert_eq!(o.id, "1842");
        assert_eq!(o.status, OrderStatus::Shipped);
        assert_eq!(s.changes().unwrap().len(), 3);
    }

    #[test]
    fn lexicon_has_products_and_categories() {
        let lex = block(store().lexicon()).unwrap();
        assert!(lex.contains(&("mochila azul".to_string(), "backpack-blue".to_string())));
        assert!(lex.contains(&("zaino".to_string(), "backpack".to_string())));
    }
}
