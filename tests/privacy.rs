//! Privacy by default: one customer erased everywhere on request
//! (`voxline forget`), their redelivered messages still dropped, and a
//! webhook message older than the replay horizon acknowledged and dropped.

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_graph::FakeGraph;
use support::*;
use voxline::channel::Content;
use voxline::store::sqlite::SqliteStore;
use voxline::store::{Queue, Traces, TurnState};

const WAIT: Duration = Duration::from_secs(20);
const ANA: &str = "34611222333";
const BEN: &str = "447700900123";

fn session_rows(dir: &std::path::Path, number: &str) -> i64 {
    let c = rusqlite::Connection::open(dir.join("voxline.db")).unwrap();
    c.query_row(
        "SELECT COUNT(*) FROM dialog_sessions WHERE number = ?1",
        [number],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forget_erases_one_customer_everywhere_and_replays_stay_dropped() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&graph, dir.path());
    let service = start(&config, FixedStt::new("x")).await;
    let c = client();
    for (id, from) in [("wamid.ANA1", ANA), ("wamid.BEN1", BEN)] {
        let body = text(id, from, "hello, is the blue backpack in stock?");
        assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    }
    let sent = graph.wait_for_sends(2, WAIT).await;
    let to_ana = sent.iter().find(|s| s.to == ANA).unwrap().id.clone();
    let report = statuses(
        json!([{"id": to_ana, "status": "delivered", "timestamp": now_s(), "recipient_id": ANA}]),
    );
    assert_eq!(deliver(&c, service.addr(), &report).await, 200);
    for id in ["wamid.ANA1", "wamid.BEN1"] {
        assert_eq!(
            wait_final(service.store(), id).await.state,
            TurnState::Replied
        );
    }
    // Traces are written after the send.
    tokio::time::sleep(Duration::from_millis(300)).await;
    service.stop().await.unwrap();
    assert_eq!(session_rows(dir.path(), ANA), 1);

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_voxline"))
        .args(["forget", &format!("+{ANA}")])
        .env("VOXLINE_DATA_DIR", dir.path())
        .current_dir(crate_dir())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("1 messages erased"), "{said}");
    assert!(!said.contains(ANA), "the number is masked: {said}");

    let store = SqliteStore::open(&config.store).unwrap();
    let ana = store.turn("wamid.ANA1").await.unwrap();
    assert_eq!(ana.message.from, "");
    assert_eq!(
        ana.message.content,
        Content::Unsupported {
            kind: "erased".into()
        }
    );
    assert_eq!((ana.transcript, ana.reply_text), (None, None));
    assert!(store.statuses_of(&to_ana).await.unwrap().is_empty());
    let traces = store.recent_traces(100).await.unwrap();
    assert!(traces.iter().all(|t| t.from != ANA));
    assert!(traces.iter().any(|t| t.from == BEN));
    assert_eq!(session_rows(dir.path(), ANA), 0);
    // Ben is untouched.
    let ben = store.turn("wamid.BEN1").await.unwrap();
    assert_eq!(ben.message.from, BEN);
    assert!(ben.reply_text.is_some());
    assert_eq!(session_rows(dir.path(), BEN), 1);
    drop(store);

    // Meta redelivers Ana's message: still recognised, not answered again.
    let service = start(&config, FixedStt::new("x")).await;
    let body = text("wamid.ANA1", ANA, "hello, is the blue backpack in stock?");
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(graph.sent().len(), 2);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_message_older_than_the_replay_horizon_is_acknowledged_and_dropped() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&echo_config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let weeks_ago = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 15 * 86_400;
    let old = notification(
        json!([{"from": ANA, "id": "wamid.STALE", "timestamp": weeks_ago.to_string(), "type": "text", "text": {"body": "hi"}}]),
        json!([{"profile": {"name": "Ana"}, "wa_id": ANA}]),
    );
    assert_eq!(deliver(&client(), service.addr(), &old).await, 200);
    let fresh = text("wamid.FRESH", ANA, "hi again");
    assert_eq!(deliver(&client(), service.addr(), &fresh).await, 200);
    graph.wait_for_sends(1, WAIT).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(graph.sent().len(), 1);
    assert_eq!(service.store().message_count().await.unwrap(), 1);
    service.stop().await.unwrap();
}
