//! The webhook and the turn against a fake Graph API, in process, with a
//! stand-in speech-to-text provider: what Meta gets back for each kind of
//! request, what the customer receives, and what happens under Graph API
//! faults. Tests that check what was understood word for word answer with
//! the echo (`[service] reply = "echo"`); the rest with the dialog stage.

mod support;

use std::time::Duration;

use serde_json::json;
use support::fake_graph::{FakeGraph, Faults};
use support::*;
use voxline::store::TurnState;

const WAIT: Duration = Duration::from_secs(20);

#[tokio::test]
async fn verification_answers_the_challenge_only_with_the_right_token() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let c = client();
    let get = |q: String| {
        let c = c.clone();
        let url = format!("http://{}/webhook?{q}", service.addr());
        async move { c.get(url).send().await.unwrap() }
    };
    let ok = get(format!(
        "hub.mode=subscribe&hub.verify_token={VERIFY_TOKEN}&hub.challenge=1158201444"
    ))
    .await;
    assert_eq!(ok.status(), 200);
    assert!(ok.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    assert_eq!(ok.text().await.unwrap(), "1158201444");
    let wrong = get("hub.mode=subscribe&hub.verify_token=nope&hub.challenge=1".into()).await;
    assert_eq!(wrong.status(), 403);
    let no_mode = get(format!("hub.verify_token={VERIFY_TOKEN}&hub.challenge=1")).await;
    assert_eq!(no_mode.status(), 403);
    assert_eq!(
        c.get(format!("http://{}/healthz", service.addr()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    let ready = c
        .get(format!("http://{}/readyz", service.addr()))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn rejected_webhooks_store_nothing() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let c = client();
    let url = format!("http://{}/webhook", service.addr());
    let body = text("wamid.REJ", "15551230000", "hello");

    let unsigned = c.post(&url).body(body.clone()).send().await.unwrap();
    assert_eq!(unsigned.status(), 401);
    let wrong = c
        .post(&url)
        .header(
            "x-hub-signature-256",
            voxline::channel::whatsapp::webhook::sign("not-the-secret", body.as_bytes()),
        )
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    let tampered = body.replace("hello", "hellO");
    let tampered_status = c
        .post(&url)
        .header(
            "x-hub-signature-256",
            voxline::channel::whatsapp::webhook::sign(APP_SECRET, body.as_bytes()),
        )
        .body(tampered)
        .send()
        .await
        .unwrap()
        .status();
    assert_eq!(tampered_status, 401);

    let huge = format!("{{\"object\":\"{}\"}}", "x".repeat(3 * 1024 * 1024));
    assert_eq!(deliver(&c, service.addr(), &huge).await, 413);
    assert_eq!(
        deliver(&c, service.addr(), "{\"object\": [broken").await,
        400
    );

    assert_eq!(service.store().message_count().await.unwrap(), 0);
    assert!(graph.sent().is_empty());
    // Still serving after all that.
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    graph.wait_for_sends(1, WAIT).await;
    service.stop().await.unwrap();
}

#[tokio::test]
async fn each_message_type_gets_its_reply() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stt = FixedStt::new(" Where is my order?");
    let service = start(&echo_config_for(&graph, dir.path()), stt.clone()).await;
    graph.add_media(
        "media-1",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg",
    );
    let c = client();
    let addr = service.addr();

    assert_eq!(
        deliver(&c, addr, &voice_note("wamid.V1", "15550000001", "media-1")).await,
        200
    );
    assert_eq!(
        deliver(&c, addr, &text("wamid.T1", "15550000002", "hello there")).await,
        200
    );
    let button = notification(
        json!([{"from": "15550000003", "id": "wamid.B1", "timestamp": now_s(), "type": "interactive",
                "interactive": {"type": "button_reply", "button_reply": {"id": "confirm-yes", "title": "Yes"}}}]),
        json!([]),
    );
    let list = notification(
        json!([{"from": "15550000004", "id": "wamid.L1", "timestamp": now_s(), "type": "interactive",
                "interactive": {"type": "list_reply", "list_reply": {"id": "size-42", "title": "Size 42", "description": "EU"}}}]),
        json!([]),
    );
    let sticker = notification(
        json!([{"from": "15550000005", "id": "wamid.S1", "timestamp": now_s(), "type": "sticker",
                "sticker": {"mime_type": "image/webp", "sha256": "x", "id": "55", "animated": false}}]),
        json!([]),
    );
    for body in [&button, &list, &sticker] {
        assert_eq!(deliver(&c, addr, body).await, 200);
    }

    let sent = graph.wait_for_sends(5, WAIT).await;
    let reply_to = |n: &str| {
        let r: Vec<_> = sent.iter().filter(|s| s.to == n).collect();
        assert_eq!(r.len(), 1, "replies to {n}: {sent:?}");
        r[0].text.clone().unwrap()
    };
    assert_eq!(
        reply_to("15550000001"),
        "I heard: \u{201c}Where is my order?\u{201d}"
    );
    assert_eq!(
        reply_to("15550000002"),
        "You wrote: \u{201c}hello there\u{201d}"
    );
    assert_eq!(reply_to("15550000003"), "You chose: Yes");
    assert_eq!(reply_to("15550000004"), "You chose: Size 42");
    assert!(reply_to("15550000005").contains("voice notes and text messages"));
    assert_eq!(stt.calls.load(std::sync::atomic::Ordering::SeqCst), 1);

    let store = service.store();
    let turn = wait_final(store, "wamid.V1").await;
    assert_eq!(turn.state, TurnState::Replied);
    assert_eq!(
        turn.reply_id.as_deref(),
        Some(
            sent.iter()
                .find(|s| s.to == "15550000001")
                .unwrap()
                .id
                .as_str()
        )
    );
    assert_eq!(turn.transcript.as_deref(), Some(" Where is my order?"));
    let mut read = graph.wait_for_reads(5, WAIT).await;
    read.sort();
    assert_eq!(
        read,
        ["wamid.B1", "wamid.L1", "wamid.S1", "wamid.T1", "wamid.V1"]
    );
    service.stop().await.unwrap();
}

#[tokio::test]
async fn statuses_are_recorded_and_not_answered() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let c = client();
    let body = statuses(json!([
        {"id": "wamid.OUT1", "status": "sent", "timestamp": "1750263773", "recipient_id": "15550000001",
         "conversation": {"id": "c1", "origin": {"type": "service"}}, "pricing": {"billable": true, "pricing_model": "PMP", "category": "service"}},
        {"id": "wamid.OUT1", "status": "delivered", "timestamp": "1750263774", "recipient_id": "15550000001"},
        {"id": "wamid.OUT1", "status": "read", "timestamp": "1750263775", "recipient_id": "15550000001"},
        {"id": "wamid.OUT2", "status": "failed", "timestamp": "1750263776", "recipient_id": "15550000002",
         "errors": [{"code": 131047, "title": "Re-engagement message", "message": "Re-engagement message",
                     "error_data": {"details": "Message failed to send because more than 24 hours have passed since the customer last replied to this number."}}]}
    ]));
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    let store = service.store();
    let one: Vec<String> = store
        .statuses_of("wamid.OUT1")
        .await
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(one, ["sent", "delivered", "read"]);
    assert_eq!(
        store.statuses_of("wamid.OUT2").await.unwrap(),
        [("failed".to_string(), Some(131_047))]
    );
    assert_eq!(store.message_count().await.unwrap(), 0);
    assert!(graph.sent().is_empty());
    service.stop().await.unwrap();
}

#[tokio::test]
async fn redelivered_webhooks_are_answered_once() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stt = FixedStt::new("Can this ship tomorrow?");
    let service = start(&config_for(&graph, dir.path()), stt.clone()).await;
    graph.add_media(
        "media-2",
        fixture("commerce/en/availability_ship_tomorrow.ogg"),
        "audio/ogg",
    );
    let c = client();
    let body = voice_note("wamid.DUP", "15550000009", "media-2");
    let (a, b, d) = tokio::join!(
        deliver(&c, service.addr(), &body),
        deliver(&c, service.addr(), &body),
        deliver(&c, service.addr(), &body)
    );
    assert_eq!((a, b, d), (200, 200, 200));
    graph.wait_for_sends(1, WAIT).await;
    // A fourth delivery after the reply is acknowledged and dropped too.
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    service.stop().await.unwrap(); // drains: nothing left that could still send
    assert_eq!(graph.sent().len(), 1);
    assert_eq!(stt.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_customers_messages_are_answered_in_order() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&echo_config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let c = client();
    for i in 0..6 {
        let body = text(
            &format!("wamid.ORD{i}"),
            "15550000010",
            &format!("message {i}"),
        );
        assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    }
    let sent = graph.wait_for_sends(6, WAIT).await;
    let texts: Vec<String> = sent.iter().map(|s| s.text.clone().unwrap()).collect();
    let expected: Vec<String> = (0..6)
        .map(|i| format!("You wrote: \u{201c}message {i}\u{201d}"))
        .collect();
    assert_eq!(texts, expected);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn download_faults_are_retried_until_the_note_is_heard() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let stt = FixedStt::new("Cancel order 2210.");
    let service = start(&echo_config_for(&graph, dir.path()), stt.clone()).await;
    graph.add_media(
        "media-3",
        fixture("commerce/en/cancel_order_2210.ogg"),
        "audio/ogg",
    );
    graph.set_faults(Faults {
        metadata_500: 1,
        expire_urls: 1,
        truncate_media: 1,
        slow_media: Some(Duration::from_millis(2)),
        ..Faults::default()
    });
    let c = client();
    assert_eq!(
        deliver(
            &c,
            service.addr(),
            &voice_note("wamid.F1", "15550000011", "media-3")
        )
        .await,
        200
    );
    let sent = graph.wait_for_sends(1, WAIT).await;
    assert_eq!(
        sent[0].text.as_deref(),
        Some("I heard: \u{201c}Cancel order 2210.\u{201d}")
    );
    // Expired once, cut once, then whole.
    assert_eq!(graph.downloads_started(), 2);
    assert_eq!(stt.calls.load(std::sync::atomic::Ordering::SeqCst), 1);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn send_errors_are_retried_or_recorded_by_class() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let service = start(&config_for(&graph, dir.path()), FixedStt::new("x")).await;
    let c = client();
    let addr = service.addr();

    // 500, 130429 and 131056 are retried: one reply.
    graph.set_faults(Faults {
        send_500: 1,
        send_rate_limited: 1,
        send_pair_limited: 1,
        ..Faults::default()
    });
    assert_eq!(
        deliver(&c, addr, &text("wamid.E1", "15550000020", "one")).await,
        200
    );
    let sent = graph.wait_for_sends(1, WAIT).await;
    assert_eq!(sent[0].to, "15550000020");

    // 131047 is not retried; the turn fails with the reason.
    graph.set_faults(Faults {
        outside_window: true,
        ..Faults::default()
    });
    assert_eq!(
        deliver(&c, addr, &text("wamid.E2", "15550000021", "two")).await,
        200
    );
    let store = service.store();
    let turn = wait_final(store, "wamid.E2").await;
    assert_eq!(turn.state, TurnState::Failed);
    assert!(
        turn.failure.as_deref().unwrap().contains("131047"),
        "{:?}",
        turn.failure
    );
    assert!(!turn.dead_letter);

    // Any other 4xx is a dead letter.
    graph.set_faults(Faults {
        send_invalid: true,
        ..Faults::default()
    });
    assert_eq!(
        deliver(&c, addr, &text("wamid.E3", "15550000022", "three")).await,
        200
    );
    let turn = wait_final(store, "wamid.E3").await;
    assert_eq!(turn.state, TurnState::Failed);
    assert!(turn.dead_letter);
    assert_eq!(graph.sent().len(), 1);
    service.stop().await.unwrap();
}

#[tokio::test]
async fn graph_client_uploads_voice_replies_and_streams_media() {
    use futures::StreamExt;
    use voxline::channel::whatsapp::GraphClient;
    use voxline::channel::{Channel, ChannelError};

    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&graph, dir.path());
    let credentials = config.whatsapp.validate().unwrap();
    let client = GraphClient::new(&config.whatsapp, &credentials).unwrap();

    // A voice reply: multipart upload of Ogg/Opus, then an audio message
    // with voice: true.
    let ogg = fixture("commerce/en/greeting_hello.ogg");
    let media_id = client.upload_voice(ogg.clone().into()).await.unwrap();
    let sent = client.send_voice("15550000030", &media_id).await.unwrap();
    let recorded = graph.sent();
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].id, sent.message_id);
    assert_eq!(recorded[0].kind, "audio");
    assert!(recorded[0].voice);
    // Something that is not Ogg/Opus is refused, and not retried.
    let err = client
        .upload_voice(bytes::Bytes::from_static(b"ID3\x04 not opus"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, ChannelError::Rejected { code: 131_053, .. }),
        "{err}"
    );

    // Media streams in and adds up to the file.
    graph.add_media("m-1", ogg.clone(), "audio/ogg");
    let download = client.open_media("m-1").await.unwrap();
    assert_eq!(download.size, Some(ogg.len() as u64));
    let chunks: Vec<_> = download.chunks.collect().await;
    let got: Vec<u8> = chunks
        .into_iter()
        .flat_map(|c| c.unwrap().to_vec())
        .collect();
    assert_eq!(got, ogg);

    // A cut download ends in an error the turn retries.
    graph.set_faults(Faults {
        truncate_media: 1,
        ..Faults::default()
    });
    let download = client.open_media("m-1").await.unwrap();
    let last = download.chunks.collect::<Vec<_>>().await.pop().unwrap();
    assert!(
        matches!(last, Err(ChannelError::MediaCut { .. })),
        "{last:?}"
    );

    // An expired URL is reported as such.
    graph.set_faults(Faults {
        expire_urls: 1,
        ..Faults::default()
    });
    assert!(matches!(
        client.open_media("m-1").await,
        Err(ChannelError::MediaExpired)
    ));

    // A file over the cap is refused before its bytes are read.
    let mut small = config.whatsapp.clone();
    small.max_media_bytes = 1000;
    let capped = GraphClient::new(&small, &credentials).unwrap();
    assert!(matches!(
        capped.open_media("m-1").await,
        Err(ChannelError::MediaTooLarge { limit: 1000 })
    ));

    // The token goes to media URLs on allowed hosts only: this fake serves
    // media over plain http, allowed for the tests by name.
    let mut strict = config.whatsapp.clone();
    strict.media_hosts = vec!["lookaside.fbsbx.com".into()];
    let strict = GraphClient::new(&strict, &credentials).unwrap();
    assert!(matches!(
        strict.open_media("m-1").await,
        Err(ChannelError::MediaHostRefused { .. })
    ));

    // A rejected token (190) pauses the client: the calls after it fail at
    // once, without reaching Meta, until a new token is loaded.
    let mut wrong = credentials.clone();
    wrong.access_token = voxline::channel::whatsapp::Secret::new("expired-token");
    let unauthorised = GraphClient::new(&config.whatsapp, &wrong).unwrap();
    let err = unauthorised
        .send_text("15550000030", "hi")
        .await
        .unwrap_err();
    assert!(matches!(err, ChannelError::TokenRejected { .. }), "{err}");
    assert!(unauthorised.paused().is_some());
    unauthorised.set_token(credentials.access_token.clone());
    assert!(unauthorised.paused().is_none());
    unauthorised.send_text("15550000030", "hi").await.unwrap();
    assert_eq!(graph.sent().len(), 2);
}

#[tokio::test]
async fn shutdown_past_its_deadline_leaves_the_turn_for_the_next_start() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = echo_config_for(&graph, dir.path());
    config.service.shutdown_grace_ms = 200;
    let stt = FixedStt::new("Add two to my cart.");
    let service = start(&config, stt.clone()).await;
    graph.add_media(
        "media-slow",
        fixture("commerce/en/cart_add_two.ogg"),
        "audio/ogg",
    );
    // Seconds to download: longer than the grace period.
    graph.set_faults(Faults {
        slow_media: Some(Duration::from_millis(500)),
        ..Faults::default()
    });
    let c = client();
    let body = voice_note("wamid.SLOW", "15550000040", "media-slow");
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    graph.wait_for_downloads(1, WAIT).await;
    let stopping = std::time::Instant::now();
    service.stop().await.unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(3),
        "{:?}",
        stopping.elapsed()
    );
    assert!(graph.sent().is_empty());

    // The next start resumes it and answers once.
    graph.set_faults(Faults::default());
    let service = start(&config, stt.clone()).await;
    assert_eq!(
        service.store().turn("wamid.SLOW").await.unwrap().state,
        TurnState::Fetching
    );
    let sent = graph.wait_for_sends(1, WAIT).await;
    assert_eq!(
        sent[0].text.as_deref(),
        Some("I heard: \u{201c}Add two to my cart.\u{201d}")
    );
    // Redelivered after the restart: still one reply.
    assert_eq!(deliver(&c, service.addr(), &body).await, 200);
    service.stop().await.unwrap();
    assert_eq!(graph.sent().len(), 1);
}
