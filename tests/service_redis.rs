//! The service on the Redis store (`VOXLINE_STORE=redis`): webhooks
//! acknowledged into a real redis-server, turns answered from it, and what
//! it holds outliving the process that wrote it.

#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::time::Duration;

use redis_server::RedisServer;
use support::fake_graph::FakeGraph;
use support::*;
use voxline::dialog::session::{Handoff, SessionStore};
use voxline::store::{BackendKind, TurnState};

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn turns_are_stored_in_redis_and_outlive_the_process() {
    let redis = RedisServer::start();
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = echo_config_for(&graph, dir.path());
    config
        .apply_env(|name| match name {
            "VOXLINE_STORE" => Some("redis".into()),
            "VOXLINE_REDIS_URL" => Some(redis.url()),
            _ => None,
        })
        .unwrap();
    assert_eq!(config.store.backend, BackendKind::Redis);
    let service = start(&config, FixedStt::new("x")).await;
    let c = client();
    // Two customers, three messages each, one delivered twice.
    for i in 0..3 {
        for from in ["15550000021", "34600000022"] {
            let body = text(&format!("wamid.R{from}{i}"), from, &format!("message {i}"));
            assert_eq!(deliver(&c, service.addr(), &body).await, 200);
        }
    }
    let again = text("wamid.R155500000210", "15550000021", "message 0");
    assert_eq!(deliver(&c, service.addr(), &again).await, 200);
    let sent = graph.wait_for_sends(6, WAIT).await;
    for from in ["15550000021", "34600000022"] {
        let texts: Vec<String> = sent
            .iter()
            .filter(|s| s.to == from)
            .map(|s| s.text.clone().unwrap())
            .collect();
        let expected: Vec<String> = (0..3)
            .map(|i| format!("You wrote: \u{201c}message {i}\u{201d}"))
            .collect();
        assert_eq!(texts, expected, "{from}: each once, in order");
    }
    let turn = wait_final(service.store(), "wamid.R346000000222").await;
    assert_eq!(turn.state, TurnState::Replied);
    let ready = c
        .get(format!("http://{}/readyz", service.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    service.stop().await.unwrap();

    // Another process, with none of the first one's files, finds the turns
    // in Redis: a redelivery is still recognised and nothing is answered
    // twice.
    let other = tempfile::tempdir().unwrap();
    let mut config = config.clone();
    config.store.data_dir = other.path().to_path_buf();
    let service = start(&config, FixedStt::new("x")).await;
    assert_eq!(deliver(&c, service.addr(), &again).await, 200);
    let turn = service.store().turn("wamid.R155500000212").await.unwrap();
    assert_eq!(turn.state, TurnState::Replied);
    assert_eq!(
        turn.reply_text.as_deref(),
        Some("You wrote: \u{201c}message 2\u{201d}")
    );
    let traces = service.store().recent_traces(10).await.unwrap();
    assert_eq!(
        traces.len(),
        6,
        "the console reads the first process's traces"
    );
    assert!(!graph.sends_beyond(6, Duration::from_millis(500)).await);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn an_unreachable_redis_stops_start_up_with_its_address() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = echo_config_for(&graph, dir.path());
    config.store.backend = BackendKind::Redis;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    config.store.redis.url = format!("redis://127.0.0.1:{port}/0");
    config.store.redis.timeout_ms = 300;
    let started = voxline::service::Service::start(&config, FixedStt::new("x")).await;
    let Err(error) = started else {
        panic!("started without its store")
    };
    assert!(error.to_string().contains(&port.to_string()), "{error}");
}

/// A customer's STOP, taken by one process, holds in another that shares
/// the Redis store: sessions and choices live there, not in either
/// process's files.
#[tokio::test]
async fn a_stop_taken_by_one_process_holds_in_another() {
    let redis = RedisServer::start();
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    config.store.backend = BackendKind::Redis;
    config.store.redis.url = redis.url();
    let customer = "34611222333";
    let service = start(&config, FixedStt::new("x")).await;
    let c = client();
    let stop = text("wamid.S1", customer, "STOP");
    assert_eq!(deliver(&c, service.addr(), &stop).await, 200);
    let sent = graph.wait_for_sends(1, WAIT).await;
    assert!(
        sent[0].text.as_deref().unwrap().contains("START"),
        "{sent:?}"
    );
    service.stop().await.unwrap();

    let other = tempfile::tempdir().unwrap();
    config.store.data_dir = other.path().to_path_buf();
    let service = start(&config, FixedStt::new("x")).await;
    let after = text("wamid.S2", customer, "where is my order 1842");
    assert_eq!(deliver(&c, service.addr(), &after).await, 200);
    let turn = wait_final(service.store(), "wamid.S2").await;
    assert_eq!(turn.state, TurnState::Silent, "the STOP holds here too");
    assert_eq!(graph.sent().len(), 1);
    service.stop().await.unwrap();

    let sessions = SessionStore::for_config(&config.dialog()).unwrap();
    let choices = sessions.choices(customer).unwrap();
    assert_eq!(choices.len(), 1, "{choices:?}");
    assert_eq!(choices[0].0, "stop");
    let mut session = sessions.load(customer).unwrap();
    assert!(session.opted_out.is_some());
    // Hand-offs are listed for any process's console, and released.
    session.handoff = Some(Handoff {
        reason: "asked for a person".into(),
        since: 5,
    });
    sessions.save(&session).unwrap();
    let waiting = sessions.handoffs().unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].number, customer);
    assert!(sessions.release(customer).unwrap());
    assert!(sessions.handoffs().unwrap().is_empty());
    // The right to erasure: session and choices go.
    assert_eq!(sessions.forget(customer).unwrap(), 2);
    assert!(sessions.choices(customer).unwrap().is_empty());
    assert!(sessions.load(customer).unwrap().opted_out.is_none());
}
