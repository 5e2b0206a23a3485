//! Nothing lost when the Graph API fails: replies and notes that could not
//! go through wait in the outbox and go out, once each and in order, when
//! Meta answers again; a rejected access token pauses sending until a new
//! one is loaded; the read receipt never holds a turn. Against the fake
//! Graph API on 127.0.0.1, in process, answered by the echo.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use support::fake_graph::{FakeGraph, Faults, Sent};
use support::*;
use voxline::store::TurnState;

const WAIT: Duration = Duration::from_secs(30);

/// Waits until `n` turns wait in the outbox.
async fn wait_waiting(service: &voxline::service::Service, n: usize) -> Vec<voxline::store::Turn> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting = service.store().waiting().await.unwrap();
        if waiting.len() >= n {
            return waiting;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of {n} turns wait in the outbox",
            waiting.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The texts each customer received, in the order they were sent.
fn by_customer(sent: &[Sent]) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for s in sent {
        out.entry(s.to.clone())
            .or_default()
            .push(s.text.clone().unwrap_or_default());
    }
    out
}

fn outbox_cli(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_voxline"))
        .arg("outbox")
        .args(args)
        .env("VOXLINE_DATA_DIR", data_dir)
        .output()
        .expect("voxline outbox")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_outage_loses_nothing_and_answers_each_message_once_in_order() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stt = FixedStt::new("Where is my order 1842?");
    let service = start(&echo_config_for(&graph, dir.path()), stt.clone()).await;
    graph.add_media(
        "media-o",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg",
    );
    graph.set_faults(Faults {
        outage: true,
        ..Faults::default()
    });
    let c = client();
    let customers = ["15550000301", "15550000302", "15550000303", "15550000304"];
    let mut expected = 0;
    for round in 1..=2 {
        for (i, from) in customers.iter().enumerate() {
            let id = format!("wamid.O{round}{i}");
            let body = text(&id, from, &format!("message {round}"));
            assert_eq!(deliver(&c, service.addr(), &body).await, 200);
            expected += 1;
        }
    }
    // A voice note from a fifth customer: its fetch fails too.
    let note = voice_note("wamid.ONOTE", "15550000305", "media-o");
    assert_eq!(deliver(&c, service.addr(), &note).await, 200);
    expected += 1;
    // And one from a sixth that an operator drops.
    let dropped = text("wamid.ODROP", "15550000306", "never mind");
    assert_eq!(deliver(&c, service.addr(), &dropped).await, 200);

    // A customer's second message waits behind the first: six heads wait.
    let waiting = wait_waiting(&service, 6).await;
    assert!(waiting.iter().all(|t| t.waiting.is_some()), "{waiting:?}");
    let note_turn = service.store().turn("wamid.ONOTE").await.unwrap();
    assert_eq!(note_turn.state, TurnState::Received, "no apology stored");
    assert!(
        note_turn
            .waiting
            .as_deref()
            .unwrap()
            .contains("fetch failed"),
        "{:?}",
        note_turn.waiting
    );
    assert!(graph.sent().is_empty());

    // The operator's view, from another process, and a drop.
    let listed = outbox_cli(dir.path(), &["list", "--json"]);
    assert!(listed.status.success(), "{listed:?}");
    let rows: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    let ids: Vec<&str> = rows
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert!(ids.contains(&"wamid.ODROP"), "{ids:?}");
    assert!(
        rows[0]["reason"].as_str().unwrap().contains("500"),
        "{rows}"
    );
    let drop = outbox_cli(dir.path(), &["drop", "wamid.ODROP"]);
    assert!(drop.status.success(), "{drop:?}");

    // Meta answers again after a while: everything goes out.
    tokio::time::sleep(Duration::from_secs(2)).await;
    for turn in service.store().unfinished().await.unwrap() {
        assert!(!turn.state.is_final());
    }
    graph.set_faults(Faults::default());
    let sent = graph.wait_for_sends(expected, WAIT).await;
    // Nothing more arrives later: each message was answered once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let sent_after = graph.sent();
    assert_eq!(sent_after.len(), expected, "{sent_after:?}");
    assert_eq!(sent.len(), expected);

    let received = by_customer(&sent_after);
    for from in customers {
        assert_eq!(
            received[from],
            [
                "You wrote: \u{201c}message 1\u{201d}",
                "You wrote: \u{201c}message 2\u{201d}"
            ],
            "{from}"
        );
    }
    assert_eq!(
        received["15550000305"],
        ["I heard: \u{201c}Where is my order 1842?\u{201d}"]
    );
    assert!(!received.contains_key("15550000306"));
    let dropped = service.store().turn("wamid.ODROP").await.unwrap();
    assert_eq!(dropped.state, TurnState::Failed);
    for round in 1..=2 {
        for i in 0..customers.len() {
            let turn = service
                .store()
                .turn(&format!("wamid.O{round}{i}"))
                .await
                .unwrap();
            assert_eq!(turn.state, TurnState::Replied);
        }
    }
    service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rejected_token_pauses_sending_until_a_new_one_is_loaded() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("voxline.toml");
    std::fs::write(
        &config_file,
        format!(
            "[whatsapp]\naccess_token = \"{}\"\n",
            support::fake_graph::TOKEN
        ),
    )
    .unwrap();
    let service = start(&echo_config_for(&graph, dir.path()), FixedStt::new("x")).await;
    service.watch_access_token(config_file.clone());
    // The token expires.
    graph.set_token("EAAG-renewed-token-2");
    let c = client();
    for (i, from) in ["15550000311", "15550000312", "15550000313"]
        .iter()
        .enumerate()
    {
        let body = text(&format!("wamid.T{i}"), from, "hello");
        assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    }
    let waiting = wait_waiting(&service, 3).await;
    assert!(
        waiting
            .iter()
            .all(|t| t.waiting.as_deref().unwrap().contains("190")),
        "{waiting:?}"
    );
    assert!(
        voxline::metrics::global()
            .encode()
            .contains("voxline_sending_paused 1"),
        "the pause shows in /metrics"
    );
    // Nothing is lost while it waits, nothing is final.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(graph.sent().is_empty());
    assert_eq!(service.store().unfinished().await.unwrap().len(), 3);

    // The operator loads the new token: the config file changes.
    std::fs::write(
        &config_file,
        "[whatsapp]\naccess_token = \"EAAG-renewed-token-2\"\n",
    )
    .unwrap();
    let sent = graph.wait_for_sends(3, WAIT).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(graph.sent().len(), 3, "{sent:?}");
    for i in 0..3 {
        let turn = service.store().turn(&format!("wamid.T{i}")).await.unwrap();
        assert_eq!(turn.state, TurnState::Replied);
    }
    assert!(voxline::metrics::global()
        .encode()
        .contains("voxline_sending_paused 0"));
    service.stop().await.unwrap();
}

#[tokio::test]
async fn a_hanging_read_receipt_does_not_hold_the_turn() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&echo_config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let c = client();
    // Answered at once: the receipt shows the typing indicator.
    let body = text("wamid.R1", "15550000321", "first");
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    graph.wait_for_sends(1, WAIT).await;
    let deadline = tokio::time::Instant::now() + WAIT;
    while !graph.typing_shown().contains(&"wamid.R1".to_string()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no typing indicator"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // The Graph API now holds read receipts for a minute; before, the
    // turn waited for the receipt's retries (10 s timeout, 5 tries).
    graph.set_faults(Faults {
        read_delay: Some(Duration::from_secs(60)),
        ..Faults::default()
    });
    let body = text("wamid.R2", "15550000321", "second");
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    let sent = graph.wait_for_sends(2, Duration::from_secs(8)).await;
    assert_eq!(
        sent[1].text.as_deref(),
        Some("You wrote: \u{201c}second\u{201d}")
    );
    service.stop().await.unwrap();
}
