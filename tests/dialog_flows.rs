//! What a customer sees from the dialog stage: template answers filled from
//! the embedded shop, confirmations that only a clear yes commits, STOP and
//! text-only that hold, hand-offs, and sessions that survive a restart.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use voxline::dialog::calendar::Date;
use voxline::dialog::commerce::embedded::EmbeddedStore;
use voxline::dialog::commerce::seed::Seed;
use voxline::dialog::commerce::{Commerce, OrderStatus};
use voxline::dialog::session::SessionStore;
use voxline::dialog::stage::bundled_data;
use voxline::dialog::{Action, Delivery, DialogConfig, DialogStage, Message, Source};

const MARIA: &str = "15550001842"; // order 1842, shipped, English
const LUCIA: &str = "34600112210"; // order 2210, processing, Spanish
const STRANGER: &str = "4479000000";

/// Tuesday 24 November 2026, 10:00 UTC.
const NOW: i64 = 1_795_514_400;

struct Shop {
    stage: DialogStage,
    store: EmbeddedStore,
    clock: Arc<AtomicI64>,
    n: AtomicI64,
}

fn today() -> Date {
    Date::from_days(NOW / 86_400)
}

fn config() -> DialogConfig {
    DialogConfig {
        data_dir: bundled_data(),
        ..DialogConfig::default()
    }
}

async fn shop() -> Shop {
    shop_with(config()).await
}

async fn shop_with(config: DialogConfig) -> Shop {
    let seed = Seed::load(&bundled_data().join("catalogue.toml")).unwrap();
    let store = EmbeddedStore::in_memory(&seed, today()).unwrap();
    let clock = Arc::new(AtomicI64::new(NOW));
    let c = clock.clone();
    let stage = DialogStage::with_parts(
        config,
        Arc::new(store.clone()),
        SessionStore::in_memory().unwrap(),
        Arc::new(move || c.load(Ordering::SeqCst)),
    )
    .await
    .unwrap();
    Shop {
        stage,
        store,
        clock,
        n: AtomicI64::new(0),
    }
}

impl Shop {
    fn id(&self) -> String {
        format!("wamid.{}", self.n.fetch_add(1, Ordering::SeqCst))
    }

    async fn text(&self, from: &str, text: &str) -> (String, voxline::dialog::Outcome) {
        self.stage
            .answer(Message::text(&self.id(), from, text))
            .await
    }

    async fn voice(
        &self,
        from: &str,
        text: &str,
        lang: &str,
        conf: f32,
    ) -> (String, voxline::dialog::Outcome) {
        self.stage
            .answer(Message::voice(&self.id(), from, text, lang, conf))
            .await
    }
}

#[tokio::test]
async fn order_status_comes_from_the_backend_in_the_customers_language() {
    let shop = shop().await;
    let (reply, o) = shop.text(MARIA, "Where is my order 1842?").await;
    assert_eq!(
        reply,
        "Order 1842 is on its way. It should arrive on Thursday 26 November."
    );
    assert_eq!(o.intent, "order_status");
    assert!(o.fast_path);
    assert_eq!(o.source, Source::FastPath);
    assert!(!o.llm_asked);
    let (reply, _) = shop
        .text(LUCIA, "¿Dónde está mi pedido dos dos uno cero?")
        .await;
    assert_eq!(
        reply,
        "El pedido 2210 está en preparación. Debería llegar el sábado 28 de noviembre."
    );
    let (reply, _) = shop.text(LUCIA, "cuánto cuesta la mochila azul").await;
    assert_eq!(reply, "Mochila azul: 39,90 €.");
}

#[tokio::test]
async fn another_customers_order_is_not_revealed() {
    let shop = shop().await;
    let (reply, _) = shop.text(STRANGER, "where is order 1842").await;
    assert_eq!(
        reply,
        "I can't find order 1842 for this number. Please check the number."
    );
}

#[tokio::test]
async fn a_delivery_change_is_confirmed_first_and_committed_on_yes() {
    let shop = shop().await;
    let (reply, o) = shop
        .text(MARIA, "Can you deliver order 1842 on Saturday instead?")
        .await;
    assert_eq!(
        reply,
        "I can move order 1842 to Saturday 28 November. Reply yes to confirm."
    );
    assert!(matches!(o.actions[..], [Action::Proposed { .. }]));
    assert!(
        shop.store.changes().unwrap().is_empty(),
        "nothing committed before the yes"
    );

    let yes = Message::text("wamid.yes", MARIA, "Yes");
    let (reply, o) = shop.stage.answer(yes).await;
    assert_eq!(
        reply,
        "Done: order 1842 now arrives on Saturday 28 November."
    );
    assert!(
        matches!(&o.actions[..], [Action::Committed { confirmed_turn, .. }] if confirmed_turn == "wamid.yes")
    );
    let log = shop.store.changes().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].confirmed_turn, "wamid.yes");
    let order = shop.store.order(MARIA, "1842").await.unwrap().unwrap();
    assert_eq!(order.delivery_date.unwrap().to_string(), "2026-11-28");
}

#[tokio::test]
async fn a_yes_whose_turn_gave_up_commits_nothing_until_asked_again() {
    use voxline::dialog::Dialog;
    let shop = shop().await;
    shop.text(MARIA, "Can you deliver order 1842 on Saturday instead?")
        .await;
    // The turn's dialog budget ran out: it stopped reading the reply before
    // the dialog reached the commit.
    let reply = shop
        .stage
        .respond(Message::text("wamid.lateyes", MARIA, "Yes"));
    drop(reply.chunks);
    let _ = reply.outcome.await;
    assert!(
        shop.store.changes().unwrap().is_empty(),
        "a write landed after the customer was told to ask again"
    );
    // The customer says yes again: committed once, under that turn.
    let (reply, _) = shop
        .stage
        .answer(Message::text("wamid.yes2", MARIA, "Yes"))
        .await;
    assert_eq!(
        reply,
        "Done: order 1842 now arrives on Saturday 28 November."
    );
    let log = shop.store.changes().unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].confirmed_turn, "wamid.yes2");
}

#[tokio::test]
async fn no_wait_cancels_and_a_later_yes_commits_nothing() {
    let shop = shop().await;
    let (reply, _) = shop.text(LUCIA, "Cancela mi pedido 2210").await;
    assert_eq!(
        reply,
        "Puedo cancelar el pedido 2210, de 74 €. Responde sí para confirmar."
    );
    let (reply, o) = shop.text(LUCIA, "no, espera").await;
    assert_eq!(reply, "De acuerdo, no cambio nada.");
    assert!(matches!(o.actions[..], [Action::Declined { .. }]));
    let (_, o) = shop.text(LUCIA, "sí").await;
    assert!(!o
        .actions
        .iter()
        .any(|a| matches!(a, Action::Committed { .. })));
    assert!(shop.store.changes().unwrap().is_empty());
    let order = shop.store.order(LUCIA, "2210").await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Processing);
}

#[tokio::test]
async fn anything_but_yes_cancels_and_is_answered_itself() {
    let shop = shop().await;
    shop.text(MARIA, "please cancel order 1842").await;
    // A write the classifier is not sure enough of (delivery_change at
    // 0.947 with the sentence encoder, under write_from 0.95) is asked
    // about first; the yes goes on to the proposal, with the day the
    // customer already gave.
    let (reply, _) = shop
        .text(MARIA, "Can you deliver order 1842 on Friday?")
        .await;
    assert_eq!(
        reply,
        "Do you want to move the delivery of your order 1842 to another day, or is it something else?"
    );
    let (reply, _) = shop.text(MARIA, "yes").await;
    assert_eq!(
        reply,
        "I can move order 1842 to Friday 27 November. Reply yes to confirm."
    );
    let (reply, _) = shop.text(MARIA, "how much is the water bottle").await;
    assert_eq!(
        reply,
        "Okay, I won't change anything. The water bottle costs €15."
    );
    assert!(shop.store.changes().unwrap().is_empty());
}

#[tokio::test]
async fn a_mumbled_spoken_yes_is_asked_again() {
    let shop = shop().await;
    shop.voice(
        MARIA,
        "I want to change my delivery address to 5 Elm Road",
        "en",
        0.9,
    )
    .await;
    let (reply, o) = shop.voice(MARIA, "yes", "en", 0.3).await;
    assert_eq!(
        reply,
        "Sorry, I didn't catch that. Reply yes to confirm, or no to leave it."
    );
    assert!(o.actions.is_empty());
    let (reply, _) = shop.voice(MARIA, "yes", "en", 0.95).await;
    assert_eq!(reply, "Done: order 1842 goes to 5 Elm Road.");
    assert_eq!(shop.store.changes().unwrap().len(), 1);
}

#[tokio::test]
async fn stop_is_honoured_until_start_and_recorded() {
    let shop = shop().await;
    let (reply, o) = shop.text(MARIA, "STOP").await;
    assert!(
        reply.starts_with("You won't get any more messages from us."),
        "{reply}"
    );
    assert!(matches!(o.actions[..], [Action::OptedOut]));
    let (reply, o) = shop.voice(MARIA, "where is my order", "en", 0.9).await;
    assert_eq!(reply, "");
    assert_eq!(o.delivery, Delivery::None);
    let (reply, _) = shop.text(MARIA, "start").await;
    assert_eq!(reply, "Welcome back! How can I help?");
    let kinds: Vec<String> = shop
        .stage
        .sessions()
        .choices(MARIA)
        .unwrap()
        .into_iter()
        .map(|c| c.0)
        .collect();
    assert_eq!(kinds, ["stop", "start"]);
}

#[tokio::test]
async fn text_only_holds_for_later_voice_notes() {
    let shop = shop().await;
    let (reply, o) = shop
        .voice(MARIA, "Send me text, not voice.", "en", 0.9)
        .await;
    assert_eq!(reply, "Sure, I'll reply in text from now on.");
    assert_eq!(o.delivery, Delivery::Text);
    let (_, o) = shop.voice(MARIA, "where is my order", "en", 0.9).await;
    assert_eq!(o.delivery, Delivery::Text);
    let source = &shop.stage.sessions().choices(MARIA).unwrap()[0].2;
    assert!(source.starts_with("voice:wamid."), "{source}");
}

#[tokio::test]
async fn voice_replies_are_short_and_the_first_one_says_it_is_transcribed() {
    let shop = shop().await;
    let (reply, o) = shop.voice(MARIA, "Hello, good morning!", "en", 0.9).await;
    assert_eq!(o.delivery, Delivery::Voice);
    assert_eq!(
        reply,
        "Hi Maria! I can help with products, prices, your orders and deliveries. Voice notes are transcribed automatically."
    );
    let (reply, _) = shop
        .voice(MARIA, "Where is my order 1842?", "en", 0.9)
        .await;
    assert!(!reply.contains("transcribed"), "{reply}");
}

#[tokio::test]
async fn chunks_arrive_one_sentence_at_a_time() {
    let shop = shop().await;
    let mut reply = voxline::dialog::Dialog::respond(
        &shop.stage,
        Message::text("m1", MARIA, "where is my order 1842"),
    );
    let first = reply.chunks.recv().await.unwrap();
    assert_eq!(first, "Order 1842 is on its way.");
    let second = reply.chunks.recv().await.unwrap();
    assert!(second.starts_with("It should arrive"), "{second}");
    assert!(reply.chunks.recv().await.is_none());
}

#[tokio::test]
async fn asking_for_a_person_hands_off_until_released() {
    let shop = shop().await;
    let (reply, o) = shop.text(MARIA, "Talk to a person.").await;
    assert_eq!(
        reply,
        "I'll pass you to a colleague, who will continue here shortly."
    );
    assert!(matches!(&o.actions[..], [Action::HandedOff { reason }] if reason == "asked"));
    let (reply, o) = shop.text(MARIA, "hello?").await;
    assert_eq!(reply, "");
    assert_eq!(o.delivery, Delivery::None);
    let waiting = shop.stage.sessions().handoffs().unwrap();
    assert_eq!(waiting.len(), 1);
    assert_eq!(waiting[0].number, MARIA);
    assert!(waiting[0].history.iter().any(|t| t.text == "hello?"));
    assert!(shop.stage.sessions().release(MARIA).unwrap());
    let (reply, _) = shop.text(MARIA, "where is my order 1842").await;
    assert!(reply.starts_with("Order 1842"), "{reply}");
}

#[tokio::test]
async fn three_unanswered_turns_hand_off() {
    let shop = shop().await;
    for _ in 0..2 {
        let (reply, _) = shop.text(STRANGER, "my cat is purple and sings").await;
        assert!(reply.starts_with("Sorry, I didn't get that."), "{reply}");
    }
    let (reply, o) = shop.text(STRANGER, "blorp zzt").await;
    assert_eq!(
        reply,
        "I'll pass you to a colleague, who will continue here shortly."
    );
    assert!(matches!(&o.actions[..], [Action::HandedOff { reason }] if reason == "unresolved"));
}

#[tokio::test]
async fn which_day_is_asked_and_the_answer_fills_it() {
    let shop = shop().await;
    let (reply, _) = shop
        .text(MARIA, "I need to change the delivery day of my order")
        .await;
    assert_eq!(reply, "Which day would you like order 1842 delivered?");
    let (reply, _) = shop.text(MARIA, "friday").await;
    assert_eq!(
        reply,
        "I can move order 1842 to Friday 27 November. Reply yes to confirm."
    );
}

#[tokio::test]
async fn the_conversation_lapses_after_its_timeout() {
    let shop = shop().await;
    shop.text(MARIA, "Can you deliver order 1842 on Saturday instead?")
        .await;
    shop.clock.fetch_add(3600, Ordering::SeqCst);
    let (_, o) = shop.text(MARIA, "yes").await;
    assert!(!o
        .actions
        .iter()
        .any(|a| matches!(a, Action::Committed { .. })));
    assert!(shop.store.changes().unwrap().is_empty());
}

#[tokio::test]
async fn cart_and_checkout() {
    let shop = shop().await;
    let (reply, o) = shop.text(MARIA, "add two water bottles to my cart").await;
    assert_eq!(
        reply,
        "I added 2 water bottle to your cart. Your cart total is €30."
    );
    assert!(matches!(
        &o.actions[..],
        [Action::CartAdded { quantity: 2, .. }]
    ));
    let (reply, _) = shop.text(MARIA, "what's in my cart").await;
    assert_eq!(reply, "Your cart has 2 water bottle, €30 in total.");
    let (reply, _) = shop.text(MARIA, "I want to check out").await;
    assert_eq!(reply, "Your order comes to €30. Reply yes to place it.");
    let (reply, o) = shop.text(MARIA, "yes").await;
    assert!(reply.starts_with("Order 4472 is placed."), "{reply}");
    assert!(matches!(&o.actions[..], [Action::Committed { .. }]));
}

#[tokio::test]
async fn sessions_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let config = DialogConfig {
        database: Some(dir.path().join("dialog.sqlite")),
        ..config()
    };
    {
        let stage = DialogStage::open(config.clone()).await.unwrap();
        let (reply, _) = stage
            .answer(Message::text("m1", LUCIA, "quiero cancelar el pedido 2210"))
            .await;
        assert!(
            reply.starts_with("Puedo cancelar el pedido 2210"),
            "{reply}"
        );
    }
    let stage = DialogStage::open(config).await.unwrap();
    let (reply, o) = stage.answer(Message::text("m2", LUCIA, "sí")).await;
    assert_eq!(reply, "El pedido 2210 está cancelado.");
    assert!(
        matches!(&o.actions[..], [Action::Committed { confirmed_turn, .. }] if confirmed_turn == "m2")
    );
}

#[tokio::test]
async fn every_commerce_fixture_gets_an_answer_in_its_language() {
    let shop = shop().await;
    let manifest =
        voxline::fixtures::Manifest::load(bundled_data().parent().unwrap().join("audio-fixtures"))
            .unwrap();
    let mut answered = 0;
    for (i, f) in manifest
        .fixtures
        .iter()
        .filter(|f| f.intent.is_some())
        .enumerate()
    {
        if !["en", "es", "it", "pt"].contains(&f.language.as_str()) {
            continue;
        }
        let from = format!("1999000{i:04}");
        let (reply, o) = shop.voice(&from, &f.text, &f.language, 0.9).await;
        assert!(!reply.is_empty(), "{}: no reply", f.file);
        assert_eq!(o.language, f.language, "{}", f.file);
        // Voice replies: at most two sentences plus the one-time notice.
        assert!(
            voxline::dialog::reply::sentences(&reply).len() <= 3,
            "{}: {reply}",
            f.file
        );
        answered += 1;
    }
    assert!(answered >= 76, "{answered}");
}

#[tokio::test]
async fn a_complaint_is_apologised_for_and_handed_to_a_person() {
    let shop = shop().await;
    let (reply, o) = shop
        .text(LUCIA, "El paquete llegó dañado y la caja estaba abierta.")
        .await;
    assert_eq!(
        reply,
        "Lo siento mucho. Un compañero lo revisará y seguirá aquí."
    );
    assert!(matches!(&o.actions[..], [Action::HandedOff { reason }] if reason == "complaint"));
    let (reply, _) = shop.text(LUCIA, "¿hola?").await;
    assert_eq!(reply, "");
}

#[tokio::test]
async fn shop_questions_are_answered_from_the_knowledge_base() {
    let shop = shop().await;
    let (reply, o) = shop.text(STRANGER, "What are your opening hours?").await;
    assert_eq!(o.intent, "faq");
    assert_eq!(o.source, Source::KnowledgeBase);
    assert!(
        reply.starts_with("Customer service answers on WhatsApp from Monday to Saturday"),
        "{reply}"
    );
    let (reply, _) = shop
        .text(LUCIA, "¿Cuál es la política de devoluciones?")
        .await;
    assert!(
        reply.starts_with("Puedes devolver cualquier artículo sin usar"),
        "{reply}"
    );
}

#[tokio::test]
async fn the_knowledge_bases_answers_are_among_the_texts_rendered_ahead() {
    // The speech cache renders the dialog's fixed texts at start-up; a
    // knowledge-base answer is one, so an FAQ's voice reply is ready.
    let shop = shop().await;
    for (from, question, lang) in [
        (STRANGER, "What are your opening hours?", "en"),
        (LUCIA, "¿Cuál es la política de devoluciones?", "es"),
    ] {
        let (reply, o) = shop.text(from, question).await;
        assert_eq!(o.source, Source::KnowledgeBase, "{question}");
        let fixed = shop.stage.fixed_texts(lang);
        assert!(
            fixed.iter().any(|t| reply.starts_with(t.as_str())),
            "{reply:?} not among {} fixed texts of {lang}",
            fixed.len()
        );
    }
}

#[tokio::test]
async fn an_unsure_change_is_asked_about_and_a_yes_goes_on_to_the_proposal() {
    // Every careful intent below certainty is asked about.
    let mut config = config();
    config.thresholds.write_from = 1.01;
    let shop = shop_with(config).await;
    let (reply, outcome) = shop.text(LUCIA, "cancela el pedido 2210").await;
    assert_eq!(reply, "¿Quieres cancelar tu pedido 2210, o es otra cosa?");
    assert_eq!(outcome.intent, "cancel_order");
    assert!(!outcome.fast_path, "{outcome:?}");
    assert!(outcome.actions.is_empty(), "{:?}", outcome.actions);
    let (reply, outcome) = shop.text(LUCIA, "sí").await;
    assert!(reply.contains("2210") && reply.contains("sí"), "{reply}");
    assert!(
        matches!(outcome.actions.as_slice(), [Action::Proposed { .. }]),
        "{:?}",
        outcome.actions
    );
    let (_, outcome) = shop.text(LUCIA, "sí").await;
    assert!(
        matches!(outcome.actions.as_slice(), [Action::Committed { .. }]),
        "{:?}",
        outcome.actions
    );
    let order = shop.store.order(LUCIA, "2210").await.unwrap().unwrap();
    assert_eq!(order.status, OrderStatus::Cancelled);

    // Anything but yes is a new message, and nothing is proposed.
    let (reply, _) = shop.text(MARIA, "cancel order 1842").await;
    assert!(
        reply.starts_with("Do you want to cancel your order 1842"),
        "{reply}"
    );
    let (_, outcome) = shop.text(MARIA, "where is my order?").await;
    assert_eq!(outcome.intent, "order_status");
    assert!(outcome.actions.is_empty(), "{:?}", outcome.actions);
}

#[tokio::test]
async fn an_operators_label_is_learned_on_reload() {
    let data = tempfile::tempdir().unwrap();
    let copy = |from: &std::path::Path, to: &std::path::Path| {
        let status = std::process::Command::new("cp")
            .arg("-r")
            .arg(from)
            .arg(to)
            .status()
            .unwrap();
        assert!(status.success());
    };
    copy(&bundled_data(), &data.path().join("data"));
    let config = DialogConfig {
        data_dir: data.path().join("data"),
        ..DialogConfig::default()
    };
    let shop = shop_with(config).await;
    // Words the training data has never seen, that mean "reply in text"
    // to this operator's customers.
    let phrase = "zorblax quimble frobnitz pls";
    let before = shop.stage.intents().classify(phrase, Some("en"));
    assert_ne!(before.intent, "text_only", "{before:?}");
    let stop = tokio_util::sync::CancellationToken::new();
    shop.stage.watch_labels(stop.clone());
    let label = voxline::dialog::intent::Label {
        lang: "en".into(),
        text: phrase.into(),
        intent: "text_only".into(),
        message_id: "wamid.labelled".into(),
        at: NOW,
    };
    voxline::dialog::intent::append_label(&data.path().join("data/intents"), &label).unwrap();
    // The watcher polls every second; retraining takes well under one.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let after = loop {
        let c = shop.stage.intents().classify(phrase, Some("en"));
        if c.learned || std::time::Instant::now() > deadline {
            break c;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    stop.cancel();
    assert_eq!(after.intent, "text_only", "{after:?}");
    assert!(after.learned && after.fast_path, "{after:?}");
    // The turn uses the new model too.
    let (reply, outcome) = shop.text(MARIA, phrase).await;
    assert_eq!(outcome.intent, "text_only");
    assert_eq!(reply, "Sure, I'll reply in text from now on.");
}

#[tokio::test]
async fn the_catalogue_replies_rendered_ahead_are_the_ones_the_fast_path_gives() {
    let shop = shop().await;
    let ahead_in = |lang: &'static str| {
        let stage = shop.stage.clone();
        async move {
            stage
                .catalogue_texts()
                .await
                .into_iter()
                .filter(|(l, _)| l == lang)
                .map(|(_, text)| text)
                .collect::<Vec<String>>()
        }
    };
    for (from, lang, question) in [
        (LUCIA, "es", "cuánto cuesta la mochila azul"),
        (LUCIA, "es", "¿cuánto cuestan las mochilas?"),
        (MARIA, "en", "how much are the backpacks?"),
    ] {
        let ahead = ahead_in(lang).await;
        let (reply, o) = shop.text(from, question).await;
        assert_eq!(o.intent, "price_inquiry", "{question}");
        assert!(
            ahead.iter().any(|t| reply.starts_with(t.as_str())),
            "{question}: {reply:?} not among {} rendered ahead",
            ahead.len()
        );
    }
    // every product's price and every category's list, in each language
    let es = ahead_in("es").await;
    assert!(es.contains(&"Mochila azul: 39,90 €.".to_string()), "{es:?}");
    assert!(es.len() >= 10, "{es:?}");
    let fr = ahead_in("fr").await;
    assert!(fr.iter().all(|t| !es.contains(t)), "{fr:?}");
}
