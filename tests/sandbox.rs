//! The sandbox with the real service: customers simulated by
//! `voxline::sandbox` send signed webhooks to the service's `/webhook`, and
//! the service answers through its production Graph API client, which talks
//! to the sandbox's stand-in.
//!
//! - A fixture voice note about order 1842 is answered with a voice note
//!   (Ogg/Opus) that, transcribed back, speaks of the order; a typed question
//!   gets a text naming it; the message is marked read.
//! - The page's HTTP API: a WAV made from the fixture's decoded speech,
//!   POSTed as the page does, is answered in the conversation, and the reply
//!   plays from the media endpoint as `audio/ogg`.
//! - The webhook is really verified: a notification signed with another
//!   secret, or not signed, is refused and never reaches the inbox. The
//!   stand-in answers bad Graph API calls with Meta's error codes; the page
//!   refuses oversized and malformed requests.
//!
//! The first two need `models/ggml-tiny.en.bin` (`./x setup`).

mod support;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use serde_json::Value;

use support::{client, crate_dir, fixture, generous_budgets, FixedStt};
use voxline::channel::whatsapp::webhook::sign;
use voxline::config::Config;
use voxline::media::{self, MediaConfig};
use voxline::sandbox::conversation::Content;
use voxline::sandbox::customer::{self, Business, Said};
use voxline::sandbox::{OutboundContent, Sandbox, SandboxConfig};
use voxline::service::Service;
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig, TranscribeOptions};

/// Owns order 1842 (shipped) in `data/catalogue.toml`.
const MARIA: &str = "15550001842";

/// A turn with tiny.en on a busy 2-core machine takes a few seconds.
const WAIT: Duration = Duration::from_secs(90);

fn tiny_en() -> Arc<dyn SpeechToText> {
    let config = SttConfig {
        model: "tiny.en".into(),
        models_dir: Some(crate_dir().join("models")),
        ..SttConfig::default()
    };
    Arc::new(WhisperStt::load(&config).expect("models/ggml-tiny.en.bin is missing: run ./x setup"))
}

/// The sandbox and the service wired together as `serve --sandbox` does,
/// with the data in a temporary folder.
struct Running {
    sandbox: Sandbox,
    service: Service,
    _dir: tempfile::TempDir,
}

impl Running {
    async fn start(stt: Arc<dyn SpeechToText>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
        let mut base = Config::default();
        base.service.addr = "127.0.0.1:0".parse().unwrap();
        base.store.data_dir = dir.path().to_path_buf();
        base.dialog.data_dir = crate_dir().join("data");
        // The four tests share two cores with real tiny.en: no budget may
        // turn a slow transcription into "please type".
        base.budgets = generous_budgets();
        support::quick_voice(&mut base);
        let config = sandbox.service_config(base);
        assert_eq!(config.whatsapp.graph_url, sandbox.graph_url());
        assert!(config.whatsapp.mark_read);
        // The page reads each turn's trace from the console, without a token.
        assert!(config.service.console_open);
        assert_eq!(config.store.data_dir, dir.path());
        let service = Service::start_with_routes(&config, stt, sandbox.routes())
            .await
            .unwrap();
        sandbox.set_webhook_url(format!("http://{}/webhook", service.addr()));
        sandbox.verify_webhook().await.unwrap();
        Self {
            sandbox,
            service,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.service.addr())
    }
}

/// What tiny.en hears in an Ogg/Opus reply.
fn hear(stt: &dyn SpeechToText, ogg: &[u8]) -> Vec<String> {
    let note = media::load(ogg, &MediaConfig::default()).unwrap();
    let transcript = stt
        .transcribe(&note.samples, &TranscribeOptions::default())
        .unwrap();
    voxline::fixtures::normalise_words(&transcript.text)
}

/// The spoken order-status reply, as tiny.en hears it: the order's number,
/// or, when the voice's sampled noise makes tiny.en mishear the number (in
/// one CI run "eighteen forty-two" came back as "the rating for the 2"), the
/// status words around it. Whisper `base` mishears the same audio alike
/// ("order 18 for the 2 units way"), so the sentence after it, which says
/// when the order arrives, counts too.
fn names_the_order(words: &[String]) -> bool {
    let joined = words.join(" ");
    joined.contains("1842")
        || joined.contains("18 42")
        || joined.contains("eighteen")
        || joined.contains("on its way")
        || joined.contains("should arrive on")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_voice_note_gets_a_spoken_answer_and_a_text_gets_a_text() {
    let stt = tiny_en();
    let run = Running::start(stt.clone()).await;
    let sandbox = &run.sandbox;

    let note = Bytes::from(fixture("commerce/en/order_status_1842.ogg"));
    let wamid = sandbox
        .send_voice(MARIA, note, "audio/ogg; codecs=opus")
        .await
        .unwrap();
    let reply = sandbox
        .wait_reply(&wamid, WAIT)
        .await
        .expect("no reply to the voice note");
    assert_eq!(reply.to, MARIA);
    match &reply.content {
        OutboundContent::Audio {
            voice, mime_type, ..
        } => {
            assert!(voice, "sent as a voice note");
            assert_eq!(mime_type, "audio/ogg");
            let ogg = reply.audio().expect("the uploaded note is kept");
            assert!(ogg.starts_with(b"OggS"));
            let heard = hear(stt.as_ref(), ogg);
            println!("the reply as heard: {heard:?}");
            // tiny.en hears "Order" as "or the"; the number it mostly
            // gets right.
            assert!(names_the_order(&heard), "the reply says {heard:?}");
        }
        OutboundContent::Text(text) => assert!(text.contains("1842"), "{text}"),
    }
    // The service marked the note read when its turn started.
    let read = sandbox
        .conversation(MARIA, 0)
        .into_iter()
        .any(|m| matches!(&m.content, Content::Read { message_id } if *message_id == wamid));
    assert!(read, "no read receipt for {wamid}");

    let asked = sandbox
        .send_text(MARIA, "Where is my order 1842?")
        .await
        .unwrap();
    let reply = sandbox
        .wait_reply(&asked, WAIT)
        .await
        .expect("no reply to the text");
    let text = reply.text().expect("a text is answered with a text");
    assert!(text.contains("1842"), "{text}");
    // Waiting by number finds the reply to the latest message.
    let again = sandbox.wait_reply(MARIA, WAIT).await.unwrap();
    assert_eq!(again.id, reply.id);
    run.service.stop().await.unwrap();
}

/// A RIFF/WAVE file of 16-bit mono PCM, as the page's script writes it.
fn wav(samples: &[f32], rate: u32) -> Vec<u8> {
    let data = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + data as usize);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes()); // PCM
    out.extend_from_slice(&1u16.to_le_bytes()); // mono
    out.extend_from_slice(&rate.to_le_bytes());
    out.extend_from_slice(&(rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_api_sends_a_recorded_wav_and_shows_the_reply() {
    let run = Running::start(tiny_en()).await;
    let c = client();

    let page = c.get(run.url("/sandbox")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("/sandbox/app.js"));
    let script = c.get(run.url("/sandbox/app.js")).send().await.unwrap();
    assert_eq!(script.status(), 200);
    assert!(script.text().await.unwrap().contains("decodeAudioData"));

    let speech = media::load(
        &fixture("commerce/en/order_status_1842.ogg"),
        &MediaConfig::default(),
    )
    .unwrap();
    let recorded = wav(&speech.samples, 16_000);
    let sent: Value = c
        .post(run.url(&format!("/sandbox/api/voice?from={MARIA}")))
        .header("content-type", "audio/wav")
        .body(recorded)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let wamid = sent["id"].as_str().expect("a wamid").to_string();

    // Poll as the page does, until voxline's answer is in the conversation.
    let deadline = tokio::time::Instant::now() + WAIT;
    let (mut after, mut messages) = (0, Vec::<Value>::new());
    let reply = loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no reply in {WAIT:?}: {messages:?}"
        );
        let body: Value = c
            .get(run.url(&format!(
                "/sandbox/api/conversation?from={MARIA}&after={after}&wait_ms=2000"
            )))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        after = body["last_seq"].as_u64().unwrap();
        messages.extend(body["messages"].as_array().unwrap().iter().cloned());
        let answer = messages.iter().find(|m| {
            m["direction"] == "outbound" && (m["type"] == "audio" || m["type"] == "text")
        });
        if let Some(answer) = answer {
            break answer.clone();
        }
    };
    assert_eq!(messages[0]["id"], wamid.as_str());
    assert_eq!(messages[0]["direction"], "inbound");
    assert_eq!(messages[0]["mime_type"], "audio/wav");
    assert!(messages
        .iter()
        .any(|m| m["type"] == "read" && m["message_id"] == wamid.as_str()));
    if reply["type"] == "audio" {
        let id = reply["media_id"].as_str().unwrap();
        let media = c
            .get(run.url(&format!("/sandbox/api/media/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(media.status(), 200);
        assert_eq!(media.headers()["content-type"], "audio/ogg");
        assert!(media.bytes().await.unwrap().starts_with(b"OggS"));
    } else {
        assert!(reply["body"].as_str().unwrap().contains("1842"), "{reply}");
    }
    run.service.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_webhook_refuses_what_the_app_secret_did_not_sign() {
    let run = Running::start(FixedStt::new(" Where is my order 1842?")).await;
    let c = client();
    let business = Business {
        account_id: "102290129340398".into(),
        phone_number_id: run.sandbox.credentials().phone_number_id.clone(),
        display_phone_number: "15555550100".into(),
    };
    let body = customer::notification(
        &business,
        "wamid.FORGED",
        MARIA,
        "Mallory",
        // Sent now: an older message would be dropped as a replay.
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
        &Said::Text("cancel order 1842"),
    )
    .to_string();
    let post = |signature: Option<String>| {
        let mut request = c
            .post(run.url("/webhook"))
            .header("content-type", "application/json")
            .body(body.clone());
        if let Some(s) = signature {
            request = request.header("x-hub-signature-256", s);
        }
        request.send()
    };
    let forged = post(Some(sign("not-the-app-secret", body.as_bytes())))
        .await
        .unwrap();
    assert!(
        matches!(forged.status().as_u16(), 401 | 403),
        "{}",
        forged.status()
    );
    let unsigned = post(None).await.unwrap();
    assert!(matches!(unsigned.status().as_u16(), 401 | 403));
    assert!(
        run.service.store().turn("wamid.FORGED").await.is_err(),
        "a refused notification reached the inbox"
    );
    // The same body signed with the sandbox's secret is taken.
    let secret = run.sandbox.credentials().app_secret.expose().to_string();
    let signed = post(Some(sign(&secret, body.as_bytes()))).await.unwrap();
    assert_eq!(signed.status(), 200);
    assert!(run.service.store().turn("wamid.FORGED").await.is_ok());

    // The page's limits.
    let too_big = c
        .post(run.url("/sandbox/api/voice"))
        .header("content-type", "audio/wav")
        .body(vec![0u8; 16 * 1024 * 1024 + 1])
        .send()
        .await
        .unwrap();
    assert_eq!(too_big.status(), 413);
    let error: Value = too_big.json().await.unwrap();
    assert!(
        error["error"].as_str().unwrap().contains("16 MB"),
        "{error}"
    );
    let long_text = serde_json::json!({"from": MARIA, "text": "a".repeat(5000)});
    let r = c
        .post(run.url("/sandbox/api/text"))
        .json(&long_text)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    for bad in [
        serde_json::json!({"from": MARIA, "text": "  "}),
        serde_json::json!({"from": "12ab", "text": "hi"}),
        serde_json::json!({"text": 5}),
    ] {
        let r = c
            .post(run.url("/sandbox/api/text"))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
        let error: Value = r.json().await.unwrap();
        assert!(error["error"].is_string());
    }
    let missing = c
        .get(run.url("/sandbox/api/media/404"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    run.service.stop().await.unwrap();
}

/// Meta's error body's code.
async fn graph_code(response: reqwest::Response) -> (u16, i64) {
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    (status, body["error"]["code"].as_i64().unwrap())
}

#[tokio::test]
async fn the_graph_stand_in_answers_bad_calls_with_metas_errors() {
    let sandbox = Sandbox::start(SandboxConfig::default()).await.unwrap();
    let c = client();
    let graph = sandbox.graph_url();
    let credentials = sandbox.credentials().clone();
    let token = credentials.access_token.expose();
    let number = &credentials.phone_number_id;

    let no_token = c.get(format!("{graph}/123")).send().await.unwrap();
    assert_eq!(graph_code(no_token).await, (401, 190));
    let wrong = c
        .get(format!("{graph}/123"))
        .bearer_auth("EAAG-other")
        .send()
        .await
        .unwrap();
    assert_eq!(graph_code(wrong).await, (401, 190));
    let unknown = c
        .get(format!("{graph}/123"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(graph_code(unknown).await, (400, 100));

    let text = |to: &str| {
        serde_json::json!({"messaging_product": "whatsapp", "recipient_type": "individual",
            "to": to, "type": "text", "text": {"body": "hello"}})
    };
    // Nobody has written in: outside the customer service window.
    let cold = c
        .post(format!("{graph}/{number}/messages"))
        .bearer_auth(token)
        .json(&text(MARIA))
        .send()
        .await
        .unwrap();
    assert_eq!(graph_code(cold).await, (400, 131_047));
    let other_number = c
        .post(format!("{graph}/999/messages"))
        .bearer_auth(token)
        .json(&text(MARIA))
        .send()
        .await
        .unwrap();
    assert_eq!(graph_code(other_number).await, (400, 100));

    // Uploads must be Ogg/Opus when they say audio/ogg.
    let form = reqwest::multipart::Form::new()
        .text("messaging_product", "whatsapp")
        .text("type", "audio/ogg")
        .part(
            "file",
            reqwest::multipart::Part::bytes(b"RIFF0000WAVEfmt ".to_vec())
                .file_name("x.ogg")
                .mime_str("audio/ogg")
                .unwrap(),
        );
    let upload = c
        .post(format!("{graph}/{number}/media"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(graph_code(upload).await, (400, 131_053));
    let form = reqwest::multipart::Form::new()
        .text("messaging_product", "whatsapp")
        .text("type", "audio/ogg")
        .part(
            "file",
            reqwest::multipart::Part::bytes(fixture("commerce/en/order_status_1842.ogg"))
                .file_name("note.ogg")
                .mime_str("audio/ogg")
                .unwrap(),
        );
    let upload: Value = c
        .post(format!("{graph}/{number}/media"))
        .bearer_auth(token)
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = upload["id"].as_str().unwrap();
    // Metadata, then the bytes from the separate URL, with the token.
    let info: Value = c
        .get(format!("{graph}/{id}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let url = info["url"].as_str().unwrap();
    assert_eq!(
        c.get(url).send().await.unwrap().status(),
        401,
        "downloads need the token"
    );
    let bytes = c
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.len().to_string(), info["file_size"].as_str().unwrap());
    let forged = url.replace("sig=", "sig=0");
    let expired = c.get(forged).bearer_auth(token).send().await.unwrap();
    assert_eq!(expired.status(), 404);
}
