//! The service answered by the dialog stage (`[service] reply = "dialog"`,
//! the default), in process against the fake Graph API with the committed
//! `data/` folder: a customer asking about a seeded order gets its status
//! from the shop; after STOP, nothing at all is sent until START, and a
//! silent reply stored before a crash stays silent after the restart.

mod support;

use std::time::Duration;

use support::fake_graph::FakeGraph;
use support::*;
use voxline::channel::{Content, InboundMessage};
use voxline::store::sqlite::SqliteStore;
use voxline::store::{Inbox, Progress, Queue, StoreConfig, TurnState};

const WAIT: Duration = Duration::from_secs(20);

/// Maria, who placed order 1842 (shipped), in `data/catalogue.toml`.
const MARIA: &str = "15550001842";

#[tokio::test]
async fn an_order_question_is_answered_with_its_status_from_the_shop() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let c = client();
    let body = text("wamid.DLG1", MARIA, "where is my order 1842");
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);

    let sent = graph.wait_for_sends(1, WAIT).await;
    let turn = wait_final(service.store(), "wamid.DLG1").await;
    service.stop().await.unwrap();
    assert_eq!(graph.sent().len(), 1, "{:?}", graph.sent());
    assert_eq!(sent[0].to, MARIA);
    assert_eq!(sent[0].kind, "text");
    let reply = sent[0].text.as_deref().unwrap();
    // "shipped" in the catalogue reads "on its way" in the English templates.
    assert!(
        reply.starts_with("Order 1842 is on its way. It should arrive on "),
        "{reply}"
    );
    assert_eq!(turn.state, TurnState::Replied);
    assert_eq!(turn.reply_text.as_deref(), Some(reply));

    // The sessions and the demo shop live beside the inbox, not in `data/`.
    let db = rusqlite::Connection::open(dir.path().join("voxline.db")).unwrap();
    let sessions: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM dialog_sessions WHERE number = ?1",
            [MARIA],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(sessions, 1);
    assert!(!crate_dir().join("data").join("voxline.db").exists());
}

#[tokio::test]
async fn after_stop_nothing_is_sent_until_start() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let store = service.store();
    let c = client();

    let stop = text("wamid.STOP1", MARIA, "STOP");
    assert_eq!(deliver(&c, service.addr(), &stop).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    assert_eq!(
        sent[0].text.as_deref(),
        Some("You won't get any more messages from us. Send START to hear from us again.")
    );
    assert_eq!(
        wait_final(store, "wamid.STOP1").await.state,
        TurnState::Replied
    );

    let after = text("wamid.STOP2", MARIA, "where is my order 1842");
    assert_eq!(deliver(&c, service.addr(), &after).await, 200);
    let turn = wait_final(store, "wamid.STOP2").await;
    assert_eq!(turn.state, TurnState::Silent);
    assert_eq!(turn.reply_id, None);
    assert_eq!(graph.sent().len(), 1, "{:?}", graph.sent());

    let start_again = text("wamid.STOP3", MARIA, "START");
    assert_eq!(deliver(&c, service.addr(), &start_again).await, 200);
    let sent = graph.wait_for_sends(2, WAIT).await;
    assert_eq!(
        sent[1].text.as_deref(),
        Some("Welcome back! How can I help?")
    );
    service.stop().await.unwrap();
    assert_eq!(graph.sent().len(), 2, "{:?}", graph.sent());
}

#[tokio::test]
async fn a_silent_reply_stored_before_a_crash_stays_silent() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&graph, dir.path());
    {
        // The state a crash leaves after the dialog decided to say nothing
        // and before the turn was marked finished.
        let store = SqliteStore::open(&StoreConfig {
            data_dir: dir.path().to_path_buf(),
            ..StoreConfig::default()
        })
        .unwrap();
        let message = InboundMessage {
            id: "wamid.QUIET".into(),
            from: MARIA.into(),
            to: PHONE_NUMBER_ID.into(),
            timestamp: 1_744_344_496,
            profile_name: None,
            content: Content::Text {
                body: "where is my order 1842".into(),
            },
        };
        assert_eq!(store.accept(&[message], &[], &[]).await.unwrap(), [true]);
        store
            .advance(
                "wamid.QUIET",
                Progress::Understood {
                    transcript: None,
                    reply: "",
                },
            )
            .await
            .unwrap();
    }

    let service = start(&config, FixedStt::new("x")).await;
    let turn = wait_final(service.store(), "wamid.QUIET").await;
    service.stop().await.unwrap();
    assert_eq!(turn.state, TurnState::Silent);
    assert!(graph.sent().is_empty(), "{:?}", graph.sent());
}

#[tokio::test]
async fn operators_see_a_handoff_and_release_it_over_http() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    config.service.operator_token = Some(voxline::channel::whatsapp::Secret::new("op-token-123"));
    let service = start(&config, FixedStt::new("x")).await;
    let c = client();
    let base = format!("http://{}/operator/handoffs", service.addr());

    let ask = text("wamid.HUMAN1", MARIA, "I want to talk to a person");
    assert_eq!(deliver(&c, service.addr(), &ask).await, 200);
    wait_final(service.store(), "wamid.HUMAN1").await;

    let unauthorised = c.get(&base).send().await.unwrap();
    assert_eq!(unauthorised.status(), 401);
    let wrong = c.get(&base).bearer_auth("nope").send().await.unwrap();
    assert_eq!(wrong.status(), 401);

    let list: serde_json::Value = c
        .get(&base)
        .bearer_auth("op-token-123")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let waiting = list.as_array().expect("a list of hand-offs");
    assert_eq!(waiting.len(), 1, "{list}");
    assert!(list.to_string().contains(MARIA), "{list}");

    let released = c
        .post(format!("{base}/{MARIA}/release"))
        .bearer_auth("op-token-123")
        .send()
        .await
        .unwrap();
    assert!(released.status().is_success(), "{}", released.status());
    let after: serde_json::Value = c
        .get(&base)
        .bearer_auth("op-token-123")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    service.stop().await.unwrap();
    assert_eq!(after.as_array().map(Vec::len), Some(0), "{after}");
}
