//! The store's suite, run through the traits against both backends: the
//! SQLite file and a real redis-server started by the test. Whatever the
//! service relies on (dedupe by wamid, arrival order, a final state never
//! left, the outbox's deferred turns, traces) must hold on each.

#[path = "support/redis_server.rs"]
mod redis_server;

use std::sync::Arc;

use redis_server::RedisServer;
use voxline::channel::{Content, InboundMessage, StatusUpdate};
use voxline::pipeline::trace::{TurnEnd, TurnTrace};
use voxline::store::redis::{RedisConfig, RedisStore};
use voxline::store::sqlite::SqliteStore;
use voxline::store::{Backend, Inbox, Progress, Queue, StoreConfig, StoreError, TurnState};

fn message(id: &str, from: &str) -> InboundMessage {
    InboundMessage {
        id: id.into(),
        from: from.into(),
        to: "1".into(),
        timestamp: 1,
        profile_name: None,
        content: Content::Text { body: "hi".into() },
    }
}

fn trace(id: &str, started: i64) -> TurnTrace {
    TurnTrace {
        message_id: id.into(),
        from: "1".into(),
        kind: "audio".into(),
        started_unix_ms: started,
        spans: Vec::new(),
        turn_ms: 420.0,
        sequential_ms: 600.0,
        end: TurnEnd::Voice,
        transcript: None,
        language: None,
        intent: None,
        fast_path: None,
        reply_text: None,
        reply_bytes: None,
        audio_ms: None,
        note: None,
        routing: None,
        budgets_ms: Default::default(),
    }
}

/// Each backend, fresh, with what keeps it alive.
enum Fixture {
    Sqlite(tempfile::TempDir),
    Redis(RedisServer),
}

impl Fixture {
    fn name(&self) -> &'static str {
        match self {
            Fixture::Sqlite(_) => "sqlite",
            Fixture::Redis(_) => "redis",
        }
    }

    /// A connection to this backend's store; a second call opens a second
    /// one, as another process would.
    async fn open(&self) -> Arc<dyn Backend> {
        match self {
            Fixture::Sqlite(dir) => Arc::new(
                SqliteStore::open(&StoreConfig {
                    data_dir: dir.path().to_path_buf(),
                    ..StoreConfig::default()
                })
                .unwrap(),
            ),
            Fixture::Redis(server) => Arc::new(
                RedisStore::connect(&RedisConfig {
                    url: server.url(),
                    ..RedisConfig::default()
                })
                .await
                .unwrap(),
            ),
        }
    }
}

/// The ids of the unfinished turns, in arrival order.
async fn unfinished_ids(store: &RedisStore) -> Vec<String> {
    store
        .unfinished()
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.message.id)
        .collect()
}

/// A store on `server` with the default settings.
async fn redis_store(server: &RedisServer) -> RedisStore {
    RedisStore::connect(&RedisConfig {
        url: server.url(),
        ..RedisConfig::default()
    })
    .await
    .unwrap()
}

fn backends() -> Vec<Fixture> {
    vec![
        Fixture::Sqlite(tempfile::tempdir().unwrap()),
        Fixture::Redis(RedisServer::start()),
    ]
}

#[tokio::test]
async fn duplicates_are_dropped_and_arrival_order_kept() {
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        let first = store
            .accept(&[message("w1", "a"), message("w2", "b")], &[], &[])
            .await
            .unwrap();
        assert_eq!(first, vec![true, true], "{name}");
        let again = store
            .accept(&[message("w2", "b"), message("w3", "a")], &[], &[])
            .await
            .unwrap();
        assert_eq!(again, vec![false, true], "{name}: a redelivery is dropped");
        let left = store.unfinished().await.unwrap();
        let ids: Vec<&str> = left.iter().map(|t| t.message.id.as_str()).collect();
        assert_eq!(ids, ["w1", "w2", "w3"], "{name}");
        assert!(left.windows(2).all(|w| w[0].seq < w[1].seq), "{name}");
        assert!(left.iter().all(|t| t.state == TurnState::Received));
        assert_eq!(left[0].message.content, Content::Text { body: "hi".into() });
        let heard = store.last_heard("a").await.unwrap();
        assert!(heard.is_some_and(|t| t >= left[0].received_at_ms), "{name}");
        assert_eq!(store.last_heard("nobody").await.unwrap(), None, "{name}");
        store.check_writable().await.unwrap();
    }
}

#[tokio::test]
async fn a_turn_moves_forward_and_never_leaves_a_final_state() {
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        store
            .accept(&[message("w1", "a"), message("w2", "b")], &[], &[])
            .await
            .unwrap();
        store.advance("w1", Progress::Fetching).await.unwrap();
        assert_eq!(store.turn("w1").await.unwrap().state, TurnState::Fetching);
        let understood = Progress::Understood {
            transcript: Some("hello"),
            reply: "I heard: hello",
        };
        store.advance("w1", understood).await.unwrap();
        let reply = Progress::ReplyAccepted {
            reply_id: "wamid.R",
        };
        store.advance("w1", reply).await.unwrap();
        // A late worker cannot undo the reply.
        store.advance("w1", Progress::Fetching).await.unwrap();
        let failed = Progress::Failed {
            reason: "late",
            dead_letter: false,
        };
        store.advance("w1", failed).await.unwrap();
        let done = store.turn("w1").await.unwrap();
        assert_eq!(done.state, TurnState::Replied, "{name}");
        assert_eq!(done.transcript.as_deref(), Some("hello"), "{name}");
        assert_eq!(done.reply_text.as_deref(), Some("I heard: hello"));
        assert_eq!(done.reply_id.as_deref(), Some("wamid.R"));
        assert_eq!(done.failure, None, "{name}");
        assert_eq!(done.said(), Some("hello"));

        // A silent reply is kept as an empty one, so that a resumed turn
        // stays silent rather than being heard again.
        let silent = Progress::Understood {
            transcript: None,
            reply: "",
        };
        store.advance("w2", silent).await.unwrap();
        let w2 = store.turn("w2").await.unwrap();
        assert_eq!(w2.reply_text.as_deref(), Some(""), "{name}");
        let dead = Progress::Failed {
            reason: "rejected: (#100) invalid parameter",
            dead_letter: true,
        };
        store.advance("w2", dead).await.unwrap();
        let w2 = store.turn("w2").await.unwrap();
        assert_eq!((w2.state, w2.dead_letter), (TurnState::Failed, true));
        assert!(w2.failure.unwrap().contains("invalid parameter"));
        assert!(store.unfinished().await.unwrap().is_empty(), "{name}");
        assert!(matches!(
            store.advance("nope", Progress::Fetching).await,
            Err(StoreError::NotFound(_))
        ));
        assert!(matches!(
            store.turn("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }
}

#[tokio::test]
async fn a_deferred_turn_keeps_its_reply_and_voice_and_waits() {
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        store
            .accept(&[message("wamid.D", "34600")], &[], &[])
            .await
            .unwrap();
        store.advance("wamid.D", Progress::Fetching).await.unwrap();
        let fetch = Progress::Deferred {
            reason: "fetch failed: server error 500",
            retry_at_ms: 5,
            voice: None,
        };
        store.advance("wamid.D", fetch).await.unwrap();
        let t = store.turn("wamid.D").await.unwrap();
        assert_eq!(
            (t.state, t.attempts, t.retry_at_ms),
            (TurnState::Received, 1, Some(5)),
            "{name}: a fetch that failed goes back to received"
        );
        assert_eq!(t.waiting.as_deref(), Some("fetch failed: server error 500"));
        let understood = Progress::Understood {
            transcript: Some("hi"),
            reply: "hello",
        };
        store.advance("wamid.D", understood).await.unwrap();
        // Not valid UTF-8, as an Ogg page is not.
        let note = [b'O', b'g', b'g', b'S', 0, 0xff, 0xfe, 7];
        let send = Progress::Deferred {
            reason: "send failed: server error 500",
            retry_at_ms: 9,
            voice: Some(&note),
        };
        store.advance("wamid.D", send).await.unwrap();
        let t = store.turn("wamid.D").await.unwrap();
        assert_eq!((t.state, t.attempts), (TurnState::Transcribed, 2), "{name}");
        assert_eq!(t.reply_text.as_deref(), Some("hello"));
        assert_eq!(t.reply_voice.as_deref(), Some(&note[..]), "{name}");
        assert!(store.retry_now("wamid.D").await.unwrap(), "{name}");
        let due = store.turn("wamid.D").await.unwrap().retry_at_ms.unwrap();
        assert!(due > 9, "{name}: due now, not at 9");
        let accepted = Progress::ReplyAccepted {
            reply_id: "wamid.OUT",
        };
        store.advance("wamid.D", accepted).await.unwrap();
        let t = store.turn("wamid.D").await.unwrap();
        assert_eq!(t.state, TurnState::Replied);
        assert_eq!(
            (t.waiting, t.reply_voice, t.retry_at_ms),
            (None, None, None)
        );
        assert!(!store.retry_now("wamid.D").await.unwrap(), "{name}");
        assert!(!store.retry_now("nope").await.unwrap(), "{name}");
    }
}

#[tokio::test]
async fn reports_and_errors_are_taken_with_the_messages() {
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        let failed = StatusUpdate {
            message_id: "wamid.R".into(),
            status: "failed".into(),
            recipient: "a".into(),
            timestamp: 2,
            error: Some((131_047, "Re-engagement message".into())),
        };
        let fresh = store
            .accept(
                &[message("w1", "a")],
                &[failed],
                &[(131_000, "Something went wrong".into())],
            )
            .await
            .unwrap();
        assert_eq!(fresh, vec![true], "{name}");
        assert_eq!(
            store.statuses_of("wamid.R").await.unwrap(),
            vec![("failed".to_string(), Some(131_047))],
            "{name}"
        );
        assert!(store.statuses_of("wamid.other").await.unwrap().is_empty());
        // Reports alone are a webhook too.
        let fresh = store.accept(&[], &[], &[(1, "x".into())]).await.unwrap();
        assert!(fresh.is_empty(), "{name}");
    }
}

#[tokio::test]
async fn retention_erases_content_then_ids_and_keeps_unfinished_turns() {
    const DAY: i64 = 86_400_000;
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        let report = StatusUpdate {
            message_id: "wamid.OUT".into(),
            status: "read".into(),
            recipient: "a".into(),
            timestamp: 2,
            error: None,
        };
        store
            .accept(&[message("w1", "a"), message("w2", "b")], &[report], &[])
            .await
            .unwrap();
        let understood = Progress::Understood {
            transcript: Some("my address is 1 High St"),
            reply: "noted",
        };
        store.advance("w1", understood).await.unwrap();
        let reply = Progress::ReplyAccepted {
            reply_id: "wamid.OUT",
        };
        store.advance("w1", reply).await.unwrap();
        let config = StoreConfig::default();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;

        let nothing = store.sweep(&config, now).await.unwrap();
        assert_eq!((nothing.messages, nothing.ids), (0, 0), "{name}");
        let later = now + 31 * DAY;
        let erased = store.sweep(&config, later).await.unwrap();
        assert_eq!((erased.messages, erased.ids), (1, 0), "{name}");
        assert_eq!(erased.statuses, 1, "{name}");
        let w1 = store.turn("w1").await.unwrap();
        assert_eq!(w1.state, TurnState::Replied, "{name}");
        assert_eq!((w1.transcript, w1.reply_text), (None, None), "{name}");
        assert_eq!(w1.message.from, "", "{name}");
        assert_eq!(store.last_heard("a").await.unwrap(), None, "{name}");
        assert!(store.statuses_of("wamid.OUT").await.unwrap().is_empty());
        // The id still stops a redelivery.
        let again = store.accept(&[message("w1", "a")], &[], &[]).await;
        assert_eq!(again.unwrap(), vec![false], "{name}");

        let erased = store.sweep(&config, now + 61 * DAY).await.unwrap();
        assert_eq!((erased.messages, erased.ids), (0, 1), "{name}");
        assert!(matches!(
            store.turn("w1").await,
            Err(StoreError::NotFound(_))
        ));
        // An unfinished turn keeps everything, however old.
        let left = store.unfinished().await.unwrap();
        assert_eq!(left.len(), 1, "{name}");
        assert_eq!(left[0].message.from, "b", "{name}");
        assert_eq!(store.message_count().await.unwrap(), 1, "{name}");
    }
}

#[tokio::test]
async fn traces_are_kept_newest_first_and_pruned() {
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        for (id, started) in [("a", 1_000), ("b", 3_000), ("c", 2_000)] {
            store.save_trace(&trace(id, started)).await.unwrap();
        }
        // A resumed turn's trace replaces the old one.
        store.save_trace(&trace("a", 4_000)).await.unwrap();
        let ids: Vec<String> = store
            .recent_traces(10)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.message_id)
            .collect();
        assert_eq!(ids, ["a", "b", "c"], "{name}");
        assert_eq!(store.recent_traces(1).await.unwrap().len(), 1, "{name}");
        assert_eq!(store.prune_traces(2_500).await.unwrap(), 1, "{name}");
        let left: Vec<String> = store
            .recent_traces(10)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.message_id)
            .collect();
        assert_eq!(left, ["a", "b"], "{name}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_connections_racing_on_one_message_record_it_once() {
    for fixture in backends() {
        let name = fixture.name();
        let (one, two) = (fixture.open().await, fixture.open().await);
        let mut handles = Vec::new();
        for round in 0..50 {
            let id = format!("wamid.race{round}");
            for store in [one.clone(), two.clone()] {
                let id = id.clone();
                handles.push(tokio::spawn(async move {
                    store.accept(&[message(&id, "a")], &[], &[]).await.unwrap()[0]
                }));
            }
        }
        let mut fresh = 0;
        for handle in handles {
            fresh += usize::from(handle.await.unwrap());
        }
        assert_eq!(fresh, 50, "{name}: each message new exactly once");
        assert_eq!(one.unfinished().await.unwrap().len(), 50, "{name}");
    }
}

#[tokio::test]
async fn the_state_survives_a_new_connection() {
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        store
            .accept(&[message("w1", "a"), message("w2", "a")], &[], &[])
            .await
            .unwrap();
        let understood = Progress::Understood {
            transcript: None,
            reply: "hello",
        };
        store.advance("w1", understood).await.unwrap();
        drop(store);
        let store = fixture.open().await;
        let left = store.unfinished().await.unwrap();
        assert_eq!(left.len(), 2, "{name}");
        assert_eq!(left[0].state, TurnState::Transcribed, "{name}");
        assert_eq!(left[0].reply_text.as_deref(), Some("hello"));
        assert_eq!(left[0].said(), Some("hi"), "{name}: a text's body");
        let again = store.accept(&[message("w1", "a")], &[], &[]).await;
        assert_eq!(again.unwrap(), vec![false], "{name}");
    }
}

/// With `appendfsync always`, a message the store acknowledged survives the
/// server being killed (no shutdown save) and restarted; the store's
/// connection comes back by itself.
#[tokio::test]
async fn redis_loses_no_acknowledged_message_when_the_server_is_killed() {
    let mut server = RedisServer::start();
    let store = redis_store(&server).await;
    let mut acknowledged = Vec::new();
    for i in 0..200 {
        let id = format!("wamid.K{i}");
        if i == 120 {
            server.kill_and_restart();
        }
        // Meta retries what was not acknowledged; so does this loop.
        let mut tries = 0;
        loop {
            tries += 1;
            match store.accept(&[message(&id, "a")], &[], &[]).await {
                Ok(_) => break,
                Err(e) => assert!(tries < 50, "{id} never stored: {e}"),
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        acknowledged.push(id);
    }
    server.kill_and_restart();
    let store = redis_store(&server).await;
    assert_eq!(unfinished_ids(&store).await, acknowledged);
    assert!(server.dir().join("appendonlydir").exists());
}

#[tokio::test]
async fn an_unreachable_server_is_a_clear_error_in_time() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let started = std::time::Instant::now();
    let result = RedisStore::connect(&RedisConfig {
        url: format!("redis://:secret@127.0.0.1:{port}/0"),
        timeout_ms: 500,
        ..RedisConfig::default()
    })
    .await;
    let Err(error) = result else {
        panic!("connected to nothing")
    };
    let text = error.to_string();
    assert!(text.contains(&port.to_string()), "{text}");
    assert!(!text.contains("secret"), "{text}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3));
}

#[tokio::test]
async fn a_customers_lease_is_one_processes_until_given_up_or_expired() {
    use voxline::store::Leases;
    let server = RedisServer::start();
    let config = RedisConfig {
        url: server.url(),
        ..RedisConfig::default()
    };
    let (a, b) = (
        RedisStore::connect(&config).await.unwrap(),
        RedisStore::connect(&config).await.unwrap(),
    );
    assert!(a.hold("34600", "a", 10_000).await.unwrap());
    assert!(!b.hold("34600", "b", 10_000).await.unwrap(), "held by a");
    assert!(a.hold("34600", "a", 10_000).await.unwrap(), "a renews");
    assert!(
        b.hold("39300", "b", 10_000).await.unwrap(),
        "another customer"
    );
    // Only the holder gives a lease up.
    b.release("34600", "b").await.unwrap();
    assert!(!b.hold("34600", "b", 10_000).await.unwrap());
    a.release("34600", "a").await.unwrap();
    assert!(b.hold("34600", "b", 200).await.unwrap());
    assert!(b.renew("34600", "b", 200).await.unwrap());
    assert!(!a.renew("34600", "a", 10_000).await.unwrap(), "a's is gone");
    // Not renewed (its process died): free after its time.
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(!b.renew("34600", "b", 200).await.unwrap(), "expired: lost");
    assert!(a.hold("34600", "a", 10_000).await.unwrap(), "expired");
}

#[tokio::test]
async fn each_customers_turns_come_in_arrival_order_and_wake_the_workers() {
    use voxline::store::Leases;
    let server = RedisServer::start();
    let store = redis_store(&server).await;
    let (position, nothing) = store.wait_for_work("0").await.unwrap();
    assert!(nothing.is_empty());
    let messages = [message("w1", "a"), message("w2", "b"), message("w3", "a")];
    store.accept(&messages, &[], &[]).await.unwrap();
    let (_, woken) = store.wait_for_work(&position).await.unwrap();
    assert_eq!(woken, ["a", "b"], "each customer once, in order");
    let mut busy = store.busy().await.unwrap();
    busy.sort_by(|x, y| x.customer.cmp(&y.customer));
    let free = |customer: &str| voxline::store::Busy {
        customer: customer.into(),
        held_for_ms: None,
    };
    assert_eq!(busy, [free("a"), free("b")]);
    // A held lease shows its time left.
    assert!(store.hold("b", "w", 10_000).await.unwrap());
    let busy = store.busy().await.unwrap();
    let b = busy.iter().find(|x| x.customer == "b").unwrap();
    assert!(
        b.held_for_ms
            .is_some_and(|left| (9_000..=10_000).contains(&left)),
        "{b:?}"
    );
    store.release("b", "w").await.unwrap();
    assert_eq!(store.next_turn("a").await.unwrap().as_deref(), Some("w1"));
    // A deferred turn stays first: the customer's later texts wait.
    let later = Progress::Deferred {
        reason: "send failed",
        retry_at_ms: 1,
        voice: None,
    };
    store.advance("w1", later).await.unwrap();
    assert_eq!(store.next_turn("a").await.unwrap().as_deref(), Some("w1"));
    store.advance("w1", Progress::NothingToSend).await.unwrap();
    assert_eq!(store.next_turn("a").await.unwrap().as_deref(), Some("w3"));
    let failed = Progress::Failed {
        reason: "x",
        dead_letter: false,
    };
    store.advance("w3", failed).await.unwrap();
    assert_eq!(store.next_turn("a").await.unwrap(), None);
    assert_eq!(store.busy().await.unwrap(), [free("b")]);
}

#[tokio::test]
async fn a_message_whose_record_vanished_holds_no_later_one() {
    use voxline::store::Leases;
    let server = RedisServer::start();
    let store = redis_store(&server).await;
    let messages = [message("v1", "a"), message("v2", "a"), message("v3", "b")];
    store.accept(&messages, &[], &[]).await.unwrap();
    // Evicted, as by a server that runs out of memory under an eviction
    // policy.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut evict = async |id: &str| {
        let _: i64 = redis::cmd("DEL")
            .arg(format!("{{voxline}}:msg:{id}"))
            .query_async(&mut conn)
            .await
            .unwrap();
    };
    evict("v1").await;
    assert_eq!(store.next_turn("a").await.unwrap().as_deref(), Some("v2"));
    let unfinished = unfinished_ids(&store).await;
    assert!(!unfinished.contains(&"v1".to_string()), "{unfinished:?}");
    // Only vanished ones: the customer is no longer busy.
    evict("v3").await;
    assert_eq!(store.next_turn("b").await.unwrap(), None);
    let busy: Vec<String> = store
        .busy()
        .await
        .unwrap()
        .into_iter()
        .map(|b| b.customer)
        .collect();
    assert_eq!(busy, ["a"]);
}

#[tokio::test]
async fn erasing_a_customer_keeps_only_their_message_ids() {
    for fixture in backends() {
        let name = fixture.name();
        let store = fixture.open().await;
        let report = StatusUpdate {
            message_id: "wamid.OUT".into(),
            status: "read".into(),
            recipient: "a".into(),
            timestamp: 2,
            error: None,
        };
        let messages = [message("a1", "a"), message("b1", "b"), message("a2", "a")];
        store.accept(&messages, &[report], &[]).await.unwrap();
        let understood = Progress::Understood {
            transcript: Some("my address is 1 High St"),
            reply: "noted",
        };
        store.advance("a1", understood).await.unwrap();
        let reply = Progress::ReplyAccepted {
            reply_id: "wamid.OUT",
        };
        store.advance("a1", reply).await.unwrap();
        store.save_trace(&trace("a1", 1_000)).await.unwrap();
        store.save_trace(&trace("b1", 2_000)).await.unwrap();

        let erased = store.erase_customer("a").await.unwrap();
        assert_eq!(
            (erased.messages, erased.statuses, erased.traces),
            (2, 1, 1),
            "{name}"
        );
        for id in ["a1", "a2"] {
            let t = store.turn(id).await.unwrap();
            assert_eq!(t.message.from, "", "{name}: {id}");
            assert_eq!((t.transcript, t.reply_text), (None, None), "{name}");
            assert!(t.state.is_final(), "{name}: {id} is not sent to any more");
        }
        let left: Vec<String> = store
            .unfinished()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.message.id)
            .collect();
        assert_eq!(left, ["b1"], "{name}");
        let traces: Vec<String> = store
            .recent_traces(10)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.message_id)
            .collect();
        assert_eq!(traces, ["b1"], "{name}");
        assert!(store.statuses_of("wamid.OUT").await.unwrap().is_empty());
        let again = store.accept(&[message("a2", "a")], &[], &[]).await;
        assert_eq!(again.unwrap(), vec![false], "{name}: still a redelivery");
        assert_eq!(store.last_heard("a").await.unwrap(), None, "{name}");
        assert!(store.last_heard("b").await.unwrap().is_some(), "{name}");
    }
}
