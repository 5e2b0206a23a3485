//! The HTTP commerce adapter against a fake business backend on 127.0.0.1
//! that speaks the JSON documented in `voxline::dialog::commerce::http`:
//! the customer's reply is filled from what the backend said, and a
//! confirmed change is posted with the turn that confirmed it, as its
//! `Idempotency-Key`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use voxline::dialog::commerce::http::{HttpCommerce, HttpCommerceConfig};
use voxline::dialog::commerce::{Change, Commerce};
use voxline::dialog::session::SessionStore;
use voxline::dialog::stage::bundled_data;
use voxline::dialog::{DialogConfig, DialogStage, Message};

/// What the backend was sent: method, path, `Idempotency-Key`, body.
type Log = Arc<Mutex<Vec<(String, String, Option<String>, String)>>>;

/// The backend's side of the writes: how many it applied, and the answer it
/// gave to each idempotency key.
#[derive(Default)]
struct Writes {
    applied: u32,
    answers: HashMap<String, (u16, String)>,
}

const ORDER: &str = r#"{"id":"9001","phone":"15550009001","status":"shipped","payment":"paid","delivery_date":"2026-12-02","address":"1 Test Lane","items":[{"product":"mug","quantity":1}],"total_cents":1250,"currency":"EUR"}"#;

async fn fake_backend() -> (String, Log, Arc<Mutex<Writes>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let log: Log = Arc::default();
    let writes: Arc<Mutex<Writes>> = Arc::default();
    let (l, w) = (log.clone(), writes.clone());
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let (l, w) = (l.clone(), w.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                let (head, body) = loop {
                    let n = sock.read(&mut tmp).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&tmp[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let len: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= end + 4 + len {
                            break (
                                text[..end].to_string(),
                                text[end + 4..end + 4 + len].to_string(),
                            );
                        }
                    }
                };
                let mut words = head.split_whitespace();
                let method = words.next().unwrap_or("").to_string();
                let path = words.next().unwrap_or("").to_string();
                let authorised = head
                    .to_ascii_lowercase()
                    .contains("authorization: bearer s3cret");
                let key = head.lines().find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("idempotency-key")
                        .then(|| value.trim().to_string())
                });
                l.lock()
                    .unwrap()
                    .push((method.clone(), path.clone(), key.clone(), body));
                let (code, json) = if !authorised {
                    (401, "{}".to_string())
                } else {
                    match (method.as_str(), path.as_str()) {
                        ("GET", "/lexicon") => (200, r#"[["mug","mug"]]"#.to_string()),
                        ("GET", "/products?key=mug") => (200, r#"[{"id":"mug","category":"mug","names":{"en":["coffee mug"]},"price_cents":1250,"currency":"EUR","stock":4,"ships_in_days":2}]"#.to_string()),
                        ("GET", "/customers/15550009001") => (200, r#"{"phone":"15550009001","name":"Sam","language":"en","address":"1 Test Lane"}"#.to_string()),
                        ("GET", "/customers/15550009001/orders") => (200, format!("[{ORDER}]")),
                        ("GET", "/customers/15550009001/orders/9001") => (200, ORDER.to_string()),
                        // Each change applied moves the order a day later
                        // (the 5th, then the 6th), so a change applied twice
                        // shows; a key seen before gets its first answer.
                        ("POST", "/customers/15550009001/changes") => {
                            let mut w = w.lock().unwrap();
                            match key.as_ref().and_then(|k| w.answers.get(k)) {
                                Some(first) => (first.0, first.1.clone()),
                                None => {
                                    w.applied += 1;
                                    let date = format!("2026-12-{:02}", 4 + w.applied);
                                    let answer = (200, ORDER.replace("2026-12-02", &date));
                                    if let Some(k) = key {
                                        w.answers.insert(k, answer.clone());
                                    }
                                    answer
                                }
                            }
                        }
                        _ => (404, "{}".to_string()),
                    }
                };
                let resp = format!("HTTP/1.1 {code} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{json}", json.len());
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    (base, log, writes)
}

#[tokio::test]
async fn replies_and_changes_go_through_the_business_backend() {
    let (base, log, writes) = fake_backend().await;
    // SAFETY of the test: the variable name is unique to this test binary.
    unsafe { std::env::set_var("VOXLINE_TEST_SHOP_TOKEN", "s3cret") };
    let commerce = Arc::new(
        HttpCommerce::new(&HttpCommerceConfig {
            base_url: base,
            token_env: Some("VOXLINE_TEST_SHOP_TOKEN".into()),
            timeout_ms: 2000,
        })
        .unwrap(),
    );
    let config = DialogConfig {
        data_dir: bundled_data(),
        ..DialogConfig::default()
    };
    // Tuesday 24 November 2026.
    let stage = DialogStage::with_parts(
        config,
        commerce.clone(),
        SessionStore::in_memory().unwrap(),
        Arc::new(|| 1_795_514_400),
    )
    .await
    .unwrap();
    let from = "15550009001";
    let (reply, _) = stage
        .answer(Message::text("m1", from, "how much is the mug"))
        .await;
    assert_eq!(reply, "The coffee mug costs €12.50.");
    let (reply, _) = stage
        .answer(Message::text("m2", from, "where is my order 9001"))
        .await;
    assert_eq!(
        reply,
        "Order 9001 is on its way. It should arrive on Wednesday 2 December."
    );
    let (reply, _) = stage
        .answer(Message::text(
            "m3",
            from,
            "can you deliver order 9001 on saturday instead",
        ))
        .await;
    assert_eq!(
        reply,
        "I can move order 9001 to Saturday 28 November. Reply yes to confirm."
    );
    assert!(
        !log.lock().unwrap().iter().any(|r| r.0 == "POST"),
        "nothing posted before the yes"
    );
    let before_yes = stage.sessions().load(from).unwrap();
    let (reply, _) = stage.answer(Message::text("m4", from, "yes")).await;
    // The backend moved it to the 5th: the reply says what the backend holds.
    assert_eq!(
        reply,
        "Done: order 9001 now arrives on Saturday 5 December."
    );
    let posted = log
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.0 == "POST")
        .cloned()
        .unwrap();
    assert_eq!(posted.2.as_deref(), Some("m4"), "the Idempotency-Key");
    let body: serde_json::Value = serde_json::from_str(&posted.3).unwrap();
    assert_eq!(body["confirmed_turn"], "m4");
    assert_eq!(body["change"]["kind"], "reschedule");
    assert_eq!(body["change"]["delivery_date"], "2026-11-28");

    // voxline stopped after the backend committed and before the session
    // recorded it: after the restart the same yes is answered again, with
    // the same key, and the backend gives its first answer.
    stage.sessions().save(&before_yes).unwrap();
    let (again, _) = stage.answer(Message::text("m4", from, "yes")).await;
    assert_eq!(again, reply);
    let posts: Vec<_> = log
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.0 == "POST")
        .map(|r| r.2.clone())
        .collect();
    assert_eq!(posts, [Some("m4".to_string()), Some("m4".to_string())]);
    assert_eq!(writes.lock().unwrap().applied, 1, "applied once");

    // Another confirmation is another key, and is applied.
    let change = Change::Reschedule {
        order: "9001".into(),
        delivery_date: voxline::dialog::calendar::Date::from_ymd(2026, 11, 28).unwrap(),
    };
    let order = commerce.apply(from, &change, "m9").await.unwrap();
    assert_eq!(order.delivery_date.unwrap().to_string(), "2026-12-06");
    assert_eq!(writes.lock().unwrap().applied, 2);
}
