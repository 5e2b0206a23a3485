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
