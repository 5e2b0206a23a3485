//! Voice replies in the service, answered by the dialog stage: a customer's
//! voice note is answered with one voice note (the default `[tts]`,
//! espeak-ng), which decodes to speech of a plausible length; with TTS
//! configured to an HTTP provider that cannot be reached, the same question
//! is answered with the text. Typed messages keep getting text
//! (`service_dialog.rs`).

mod support;

use std::time::Duration;

use support::fake_graph::FakeGraph;
use support::*;
use voxline::channel::{Content, InboundMessage};
use voxline::media::{self, MediaConfig, SpeechOutcome};
use voxline::pipeline::budget::{Action, Budget, BudgetStage};
use voxline::store::sqlite::SqliteStore;
use voxline::store::{Inbox, Progress, Queue, StoreConfig, TurnState};
use voxline::tts::ProviderKind;

const WAIT: Duration = Duration::from_secs(30);

/// Maria, who placed order 1842 (shipped), in `data/catalogue.toml`.
const MARIA: &str = "15550001842";

fn order_question() -> std::sync::Arc<FixedStt> {
    FixedStt::new(" Where is my order 1842?")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_is_answered_with_one_voice_note() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    // The default chain: Piper says the English reply.
    let mut config = config_for(&graph, dir.path());
    config.tts = voxline::tts::TtsConfig::default();
    config.tts.cache.warm = false;
    let service = start(&config, order_question()).await;
    graph.add_media(
        "media-order",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    let body = voice_note("wamid.VOICE1", MARIA, "media-order");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);

    graph.wait_for_sends(1, WAIT).await;
    let turn = wait_final(service.store(), "wamid.VOICE1").await;
    service.stop().await.unwrap();
    let sent = graph.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, MARIA);
    assert_eq!(sent[0].kind, "audio");
    assert!(sent[0].voice, "sent as a voice note: {sent:?}");
    assert_eq!(turn.state, TurnState::Replied);
    // The text stays the stored reply, for a resume and for the logs.
    let text = turn.reply_text.unwrap();
    assert!(text.starts_with("Order 1842 is on its way."), "{text}");

    let note = sent[0].audio.as_deref().expect("the uploaded note");
    assert!(note.len() < 512 * 1024, "{} bytes", note.len());
    let heard = media::load(note, &MediaConfig::default()).unwrap();
    assert_eq!(heard.outcome, SpeechOutcome::Speech);
    // Two sentences or so at a speaking pace.
    assert!(
        (1_500..30_000).contains(&heard.source_ms),
        "{} ms of audio",
        heard.source_ms
    );
    let rms = (heard.samples.iter().map(|s| s * s).sum::<f32>()
        / heard.samples.len().max(1) as f32)
        .sqrt();
    assert!(rms > 0.01, "silent note: rms {rms}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_tts_unreachable_the_reply_goes_out_as_text() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = config_for(&graph, dir.path());
    // Nothing listens there: the connection is refused.
    let unused = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = unused.local_addr().unwrap().port();
    drop(unused);
    config.tts.providers = vec![ProviderKind::Openai];
    config.tts.openai.base_url = format!("http://127.0.0.1:{port}");
    config.tts.openai.api_key = Some("sk-test".into());
    config
        .budgets
        .set(BudgetStage::TtsTotal, Budget::fixed(3000, Action::SendText))
        .unwrap();
    let service = start(&config, order_question()).await;
    graph.add_media(
        "media-order",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    let body = voice_note("wamid.VOICE2", MARIA, "media-order");
    let started = std::time::Instant::now();
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);

    graph.wait_for_sends(1, WAIT).await;
    let elapsed = started.elapsed();
    service.stop().await.unwrap();
    let sent = graph.sent();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].to, MARIA);
    assert_eq!(sent[0].kind, "text");
    let text = sent[0].text.as_deref().unwrap();
    assert!(text.starts_with("Order 1842 is on its way."), "{text}");
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
}

/// A crash after the reply to a voice note was written and before it was
/// sent: the restart speaks the stored reply again (the voice note itself
/// is not stored) in the conversation's language.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_voice_turn_is_spoken_again() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&graph, dir.path());
    graph.add_media(
        "media-order",
        fixture("commerce/en/order_status_1842.ogg"),
        "audio/ogg; codecs=opus",
    );
    // A first voice note sets the conversation's language.
    let service = start(&config, order_question()).await;
    let body = voice_note("wamid.FIRST", MARIA, "media-order");
    assert_eq!(deliver(&client(), service.addr(), &body).await, 200);
    wait_final(service.store(), "wamid.FIRST").await;
    service.stop().await.unwrap();
    {
        let store = SqliteStore::open(&StoreConfig {
            data_dir: dir.path().to_path_buf(),
            ..StoreConfig::default()
        })
        .unwrap();
        let message = InboundMessage {
            id: "wamid.RESUMED".into(),
            from: MARIA.into(),
            to: PHONE_NUMBER_ID.into(),
            timestamp: 1_744_344_500,
            profile_name: None,
            content: Content::Audio {
                media_id: "media-order".into(),
                mime_type: "audio/ogg; codecs=opus".into(),
                sha256: None,
                voice: true,
            },
        };
        assert_eq!(store.accept(&[message], &[], &[]).await.unwrap(), [true]);
        store
            .advance(
                "wamid.RESUMED",
                Progress::Understood {
                    transcript: Some("Where is my order 1842?"),
                    reply: "Order 1842 is on its way.",
                },
            )
            .await
            .unwrap();
    }
    let service = start(&config, order_question()).await;
    let turn = wait_final(service.store(), "wamid.RESUMED").await;
    service.stop().await.unwrap();
    assert_eq!(turn.state, TurnState::Replied);
    let sent = graph.sent();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert_eq!(sent[1].kind, "audio", "{sent:?}");
    let note = sent[1].audio.as_deref().expect("the uploaded note");
    let heard = media::load(note, &MediaConfig::default()).unwrap();
    assert_eq!(heard.outcome, SpeechOutcome::Speech);
}
