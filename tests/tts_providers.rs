//! The network TTS providers against fake servers on 127.0.0.1 that behave
//! like the real ones, faults included: an OpenAI-compatible HTTP server and
//! an ElevenLabs `stream-input` WebSocket server. The fallback chain must
//! answer within its budget whatever they do.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use voxline::tts::config::{
    ElevenLabsConfig, EspeakConfig, FallbackConfig, OpenAiConfig, OpenAiFormat,
};
use voxline::tts::elevenlabs::ElevenLabsTts;
use voxline::tts::espeak::EspeakTts;
use voxline::tts::fallback::FallbackTts;
use voxline::tts::openai::OpenAiTts;
use voxline::tts::{AudioChunk, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError};

/// How a fake server behaves.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Behaviour {
    Normal,
    /// Waits this long before the first audio.
    SlowFirstAudio(Duration),
    /// Accepts, then never sends anything (a peer gone without a close
    /// frame or FIN, as behind a NAT that dropped the flow).
    Silent,
    /// Closes the TCP connection without a close frame after the first text.
    Drop,
    /// Answers with an error.
    Error,
    /// Sends some audio, then goes silent.
    DieAfterAudio,
}

/// 100 ms of a 440 Hz tone as s16le.
fn tone_bytes(rate: u32) -> Vec<u8> {
    (0..rate / 10)
        .flat_map(|i| {
            let s = (i as f32 * 440.0 * std::f32::consts::TAU / rate as f32).sin();
            ((s * 8000.0) as i16).to_le_bytes()
        })
        .collect()
}

#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    messages: Mutex<Vec<Value>>,
    headers: Mutex<Vec<String>>,
}

// ---------------------------------------------------------------- HTTP ---

async fn http_server(behaviour: Behaviour) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                let _ = serve_http(stream, behaviour, state).await;
            });
        }
    });
    (base, seen)
}

/// Reads one request (head and Content-Length body).
async fn read_request(stream: &mut TcpStream) -> std::io::Result<(String, Vec<u8>)> {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1024];
    let head_end = loop {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&byte[..n]);
        if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let length = head
        .lines()
        .find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = buf[head_end..].to_vec();
    while body.len() < length {
        let n = stream.read(&mut byte).await?;
        if n == 0 {
            break;
        }
        body.extend_from_slice(&byte[..n]);
    }
    Ok((head, body))
}

async fn serve_http(
    mut stream: TcpStream,
    behaviour: Behaviour,
    seen: Arc<Seen>,
) -> std::io::Result<()> {
    loop {
        let (head, body) = read_request(&mut stream).await?;
        seen.headers.lock().unwrap().push(head.clone());
        if let Ok(value) = serde_json::from_slice::<Value>(&body) {
            seen.messages.lock().unwrap().push(value);
        }
        let chunked = |data: &[u8]| {
            let mut out = format!("{:x}\r\n", data.len()).into_bytes();
            out.extend_from_slice(data);
            out.extend_from_slice(b"\r\n");
            out
        };
        match behaviour {
            Behaviour::Error => {
                let body =
                    r#"{"error":{"message":"The server is overloaded","type":"server_error"}}"#;
                let response = format!(
                    "HTTP/1.1 500 Internal Server Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                    body.len()
                );
                stream.write_all(response.as_bytes()).await?;
                continue;
            }
            Behaviour::Silent => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                return Ok(());
            }
            Behaviour::Drop => return Ok(()),
            _ => {}
        }
        stream
            .write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: audio/pcm\r\ntransfer-encoding: chunked\r\n\r\n",
            )
            .await?;
        if let Behaviour::SlowFirstAudio(delay) = behaviour {
            tokio::time::sleep(delay).await;
        }
        let audio = tone_bytes(24_000);
        // An odd split: a sample straddles two body chunks.
        stream.write_all(&chunked(&audio[..1001])).await?;
        if behaviour == Behaviour::DieAfterAudio {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        stream.write_all(&chunked(&audio[1001..])).await?;
        stream.write_all(&chunked(&audio)).await?;
        stream.write_all(b"0\r\n\r\n").await?;
    }
}

fn openai(base: &str) -> OpenAiTts {
    OpenAiTts::new(&OpenAiConfig {
        base_url: base.into(),
        api_key: Some("test-key".into()),
        read_timeout_ms: 400,
        ..OpenAiConfig::default()
    })
    .unwrap()
}

// ----------------------------------------------------------- WebSocket ---

async fn ws_server(behaviour: Behaviour) -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("ws://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let state = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            state.connections.fetch_add(1, Ordering::SeqCst);
            let state = state.clone();
            tokio::spawn(async move {
                let _ = serve_ws(stream, behaviour, state).await;
            });
        }
    });
    (base, seen)
}

// The handshake callback's error type is tungstenite's, large by design.
#[allow(clippy::result_large_err)]
async fn serve_ws(
    stream: TcpStream,
    behaviour: Behaviour,
    seen: Arc<Seen>,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let path = Arc::new(Mutex::new(String::new()));
    let record = path.clone();
    let mut ws = tokio_tungstenite::accept_hdr_async(
        stream,
        move |request: &tokio_tungstenite::tungstenite::handshake::server::Request, response| {
            *record.lock().unwrap() = request.uri().to_string();
            Ok(response)
        },
    )
    .await?;
    seen.headers
        .lock()
        .unwrap()
        .push(path.lock().unwrap().clone());
    let rate = if path.lock().unwrap().contains("pcm_24000") {
        24_000
    } else {
        16_000
    };
    let mut first_audio = true;
    let mut texts = 0;
    while let Some(message) = ws.next().await {
        let Message::Text(body) = message? else {
            continue;
        };
        let value: Value = serde_json::from_str(&body)?;
        seen.messages.lock().unwrap().push(value.clone());
        let text = value["text"].as_str().unwrap_or_default();
        if text == " " {
            continue; // the opening message
        }
        if text.is_empty() {
            ws.send(Message::text(json!({"isFinal": true}).to_string()))
                .await?;
            ws.close(None).await?;
            return Ok(());
        }
        texts += 1;
        match behaviour {
            Behaviour::Silent => {
                // Hold the socket without reading: no pongs, no close.
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Behaviour::Drop => return Ok(()),
            Behaviour::Error => {
                ws.send(Message::text(
                    json!({"message": "Invalid API key", "error": "auth_error", "code": 1008})
                        .to_string(),
                ))
                .await?;
                ws.close(None).await?;
                return Ok(());
            }
            Behaviour::DieAfterAudio if texts > 1 => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
            }
            Behaviour::SlowFirstAudio(delay) if first_audio => tokio::time::sleep(delay).await,
            _ => {}
        }
        first_audio = false;
        let audio = base64::engine::general_purpose::STANDARD.encode(tone_bytes(rate));
        ws.send(Message::text(
            json!({"audio": audio, "isFinal": null, "normalizedAlignment": null}).to_string(),
        ))
        .await?;
    }
    Ok(())
}

fn elevenlabs(base: &str) -> ElevenLabsTts {
    ElevenLabsTts::new(&ElevenLabsConfig {
        base_url: base.into(),
        api_key: Some("xi-test".into()),
        read_timeout_ms: 300,
        ping_timeout_ms: 200,
        ..ElevenLabsConfig::default()
    })
    .unwrap()
}

// ------------------------------------------------------------- helpers ---

/// Speaks `chunks` through `tts`, collecting the audio.
async fn speak(
    tts: &dyn TextToSpeech,
    chunks: &[&str],
) -> (Result<SpeechReport, TtsError>, Vec<AudioChunk>, Duration) {
    let (text_tx, text_rx) = mpsc::channel(8);
    for chunk in chunks {
        text_tx.send(chunk.to_string()).await.unwrap();
    }
    drop(text_tx);
    let (audio_tx, mut audio_rx) = mpsc::channel(64);
    let request = SpeechRequest {
        language: Language::En,
    };
    let started = Instant::now();
    let collect = async {
        let mut out = Vec::new();
        while let Some(chunk) = audio_rx.recv().await {
            out.push(chunk);
        }
        out
    };
    let (result, audio) = tokio::join!(
        tts.speak(&request, text_rx, audio_tx, CancellationToken::new()),
        collect
    );
    (result, audio, started.elapsed())
}

fn samples(audio: &[AudioChunk]) -> usize {
    audio.iter().map(|c| c.samples.len()).sum()
}

// --------------------------------------------------------------- tests ---

#[tokio::test]
async fn openai_streams_pcm_and_sends_the_documented_request() {
    let (base, seen) = http_server(Behaviour::Normal).await;
    let (result, audio, _) =
        speak(&openai(&base), &["Hello there.", "Your order ships today."]).await;
    let report = result.unwrap();
    assert_eq!(report.provider, "openai");
    assert!(report.first_audio.is_some());
    assert!(audio.iter().all(|c| c.sample_rate == 24_000));
    // Two requests of 200 ms each, no sample lost at the odd split.
    assert_eq!(samples(&audio), 2 * 2 * 2_400);
    let messages = seen.messages.lock().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[0]["input"], "Hello there.");
    assert_eq!(messages[0]["response_format"], "pcm");
    assert_eq!(messages[0]["model"], "gpt-4o-mini-tts");
    assert_eq!(messages[0]["voice"], "alloy");
    let head = &seen.headers.lock().unwrap()[0];
    assert!(head.starts_with("POST /v1/audio/speech "), "{head}");
    assert!(
        head.to_lowercase()
            .contains("authorization: bearer test-key"),
        "{head}"
    );
}

#[tokio::test]
async fn openai_errors_and_silence_are_reported_in_time() {
    let (base, _) = http_server(Behaviour::Error).await;
    let (result, _, _) = speak(&openai(&base), &["Hi."]).await;
    match result {
        Err(TtsError::Refused {
            status, message, ..
        }) => {
            assert!(status.starts_with("500"));
            assert_eq!(message, "The server is overloaded");
        }
        other => panic!("{other:?}"),
    }
    let (base, _) = http_server(Behaviour::Silent).await;
    let (result, _, took) = speak(&openai(&base), &["Hi."]).await;
    assert!(
        matches!(result, Err(TtsError::Timeout { .. })),
        "{result:?}"
    );
    assert!(took < Duration::from_millis(900), "{took:?}");
    let (base, _) = http_server(Behaviour::SlowFirstAudio(Duration::from_millis(200))).await;
    let (result, audio, _) = speak(&openai(&base), &["Hi."]).await;
    assert!(result.unwrap().first_audio.unwrap() >= Duration::from_millis(200));
    assert!(!audio.is_empty());
}

#[tokio::test]
async fn openai_opus_responses_are_decoded() {
    // A real Ogg/Opus body: the project's encoder's output, served whole.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let tone: Vec<f32> = (0..24_000).map(|i| (i as f32 * 0.1).sin() * 0.3).collect();
    let note = voxline::encode::encode(&tone, 24_000, &Default::default()).unwrap();
    tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let _ = read_request(&mut stream).await;
        let head = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: audio/ogg\r\ncontent-length: {}\r\n\r\n",
            note.bytes.len()
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        stream.write_all(&note.bytes).await.unwrap();
    });
    let tts = OpenAiTts::new(&OpenAiConfig {
        base_url: base,
        format: OpenAiFormat::Opus,
        ..OpenAiConfig::default()
    })
    .unwrap();
    let (result, audio, _) = speak(&tts, &["Hi."]).await;
    result.unwrap();
    assert!(audio.iter().all(|c| c.sample_rate == 48_000));
    assert_eq!(samples(&audio), 48_000);
}

#[tokio::test]
async fn elevenlabs_streams_and_reuses_a_greeted_socket() {
    let (base, seen) = ws_server(Behaviour::Normal).await;
    let tts = elevenlabs(&base);
    let (result, audio, _) = speak(&tts, &["Hello there.", "Your order ships today."]).await;
    result.unwrap();
    assert!(audio.iter().all(|c| c.sample_rate == 16_000));
    assert_eq!(samples(&audio), 2 * 1_600);
    {
        let messages = seen.messages.lock().unwrap();
        assert_eq!(messages[0]["text"], " ");
        assert_eq!(messages[0]["xi_api_key"], "xi-test");
        assert!(messages[0]["voice_settings"]["stability"].is_number());
        assert_eq!(messages[1]["text"], "Hello there. ");
        assert_eq!(messages[1]["flush"], true);
        assert_eq!(messages[3]["text"], "");
        let path = &seen.headers.lock().unwrap()[0];
        assert!(
            path.starts_with("/v1/text-to-speech/21m00Tcm4TlvDq8ikWAM/stream-input?"),
            "{path}"
        );
        assert!(
            path.contains("output_format=pcm_16000") && path.contains("model_id=eleven_flash_v2_5")
        );
    }
    // After a reply, a spare socket is opened and greeted in the background;
    // the next reply uses it instead of a new handshake.
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    let (result, _, _) = speak(&tts, &["Again."]).await;
    result.unwrap();
    let messages = seen.messages.lock().unwrap();
    let greetings = messages.iter().filter(|m| m["text"] == " ").count();
    assert_eq!(greetings, 2, "the second reply reused the spare socket");
}

#[tokio::test]
async fn elevenlabs_detects_a_silent_socket_within_the_budget() {
    let (base, seen) = ws_server(Behaviour::Silent).await;
    let (result, _, took) = speak(&elevenlabs(&base), &["Hello."]).await;
    assert!(
        matches!(result, Err(TtsError::Timeout { .. })),
        "{result:?}"
    );
    // Read timeout 300 ms + ping timeout 200 ms, on the first socket and the
    // one reconnect.
    assert!(took < Duration::from_millis(1500), "{took:?}");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn elevenlabs_reconnects_after_a_drop_and_reports_errors() {
    let (base, seen) = ws_server(Behaviour::Drop).await;
    let (result, _, took) = speak(&elevenlabs(&base), &["Hello."]).await;
    assert!(
        matches!(result, Err(TtsError::Transport { .. })),
        "{result:?}"
    );
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2, "one reconnect");
    assert!(took < Duration::from_millis(500), "{took:?}");

    let (base, seen) = ws_server(Behaviour::Error).await;
    let (result, _, _) = speak(&elevenlabs(&base), &["Hello."]).await;
    match result {
        Err(TtsError::Refused { message, .. }) => assert_eq!(message, "Invalid API key"),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        seen.connections.load(Ordering::SeqCst),
        1,
        "no retry on a refusal"
    );
}

fn chain(providers: Vec<Arc<dyn TextToSpeech>>, first_audio_ms: u64) -> FallbackTts {
    FallbackTts::new(
        providers,
        FallbackConfig {
            first_audio_timeout_ms: first_audio_ms,
            stall_timeout_ms: 500,
            restart_mid_reply: true,
        },
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_answers_within_the_budget_whatever_fails() {
    let (silent_ws, _) = ws_server(Behaviour::Silent).await;
    let (dropping_ws, _) = ws_server(Behaviour::Drop).await;
    let (failing_http, _) = http_server(Behaviour::Error).await;
    let (slow_http, _) = http_server(Behaviour::SlowFirstAudio(Duration::from_secs(5))).await;
    let espeak: Arc<dyn TextToSpeech> =
        Arc::new(EspeakTts::start(&EspeakConfig::default()).unwrap());
    let tts = chain(
        vec![
            Arc::new(elevenlabs(&silent_ws)),
            Arc::new(elevenlabs(&dropping_ws)),
            Arc::new(openai(&failing_http)),
            Arc::new(
                OpenAiTts::new(&OpenAiConfig {
                    base_url: slow_http,
                    read_timeout_ms: 10_000,
                    ..OpenAiConfig::default()
                })
                .unwrap(),
            ),
            espeak,
        ],
        400,
    );
    let (result, audio, took) = speak(&tts, &["Your order is on its way.", "Anything else?"]).await;
    let report = result.unwrap();
    assert_eq!(report.provider, "espeak");
    assert!(samples(&audio) > 22_050, "both sentences spoken");
    // Four providers fail, each within the 400 ms first-audio limit.
    assert!(took < Duration::from_millis(2500), "{took:?}");
}

#[tokio::test]
async fn slow_first_audio_moves_on_and_all_failing_means_text() {
    let (slow_ws, _) = ws_server(Behaviour::SlowFirstAudio(Duration::from_secs(2))).await;
    let (normal_http, _) = http_server(Behaviour::Normal).await;
    let tts = chain(
        vec![
            Arc::new(elevenlabs(&slow_ws)),
            Arc::new(openai(&normal_http)),
        ],
        300,
    );
    let (result, audio, took) = speak(&tts, &["Hello."]).await;
    assert_eq!(result.unwrap().provider, "openai");
    assert!(!audio.is_empty());
    assert!(took < Duration::from_millis(800), "{took:?}");

    let (failing_http, _) = http_server(Behaviour::Error).await;
    let (error_ws, _) = ws_server(Behaviour::Error).await;
    let tts = chain(
        vec![
            Arc::new(openai(&failing_http)),
            Arc::new(elevenlabs(&error_ws)),
        ],
        300,
    );
    let (result, audio, took) = speak(&tts, &["Hello."]).await;
    match result {
        Err(TtsError::AllFailed(reasons)) => assert_eq!(reasons.len(), 2, "{reasons:?}"),
        other => panic!("{other:?}"),
    }
    assert!(audio.is_empty());
    assert!(took < Duration::from_millis(300), "{took:?}");
}

#[tokio::test]
async fn a_voice_stalling_mid_reply_is_replaced_by_the_next_from_the_start() {
    // The socket sends the first sentence's audio, then nothing.
    let (ws, _) = ws_server(Behaviour::DieAfterAudio).await;
    let (http, seen) = http_server(Behaviour::Normal).await;
    let tts = chain(
        vec![Arc::new(elevenlabs(&ws)), Arc::new(openai(&http))],
        300,
    );
    let (result, audio, took) = speak(&tts, &["First.", "Second."]).await;
    assert_eq!(result.unwrap().provider, "openai");
    let restarts: Vec<usize> = (0..audio.len())
        .filter(|&i| audio[i].is_restart())
        .collect();
    assert_eq!(restarts.len(), 1, "one restart mark");
    assert!(restarts[0] > 0, "the stalled voice's audio came first");
    let after = &audio[restarts[0] + 1..];
    assert!(after.iter().all(|c| c.sample_rate == 24_000));
    // The next voice was given the whole reply, not what was left of it.
    let said: Vec<String> = seen
        .messages
        .lock()
        .unwrap()
        .iter()
        .filter_map(|m| m["input"].as_str().map(str::to_string))
        .collect();
    let said = said.join(" ");
    assert!(
        said.contains("First.") && said.contains("Second."),
        "{said}"
    );
    assert_eq!(samples(after), said_chunks(&seen) * 2 * 2_400);
    // The stall is seen 500 ms after the last audio.
    assert!(took < Duration::from_millis(1500), "{took:?}");
}

/// Requests the fake HTTP voice answered; each gets 200 ms of tone.
fn said_chunks(seen: &Seen) -> usize {
    seen.messages.lock().unwrap().len()
}

#[tokio::test]
async fn a_voice_stalling_mid_reply_with_none_left_ends_the_reply() {
    let (ws, _) = ws_server(Behaviour::DieAfterAudio).await;
    let (http, _) = http_server(Behaviour::Normal).await;
    // The last voice stalls: nothing can speak the reply again.
    let tts = chain(vec![Arc::new(elevenlabs(&ws))], 300);
    let (result, audio, took) = speak(&tts, &["First.", "Second."]).await;
    assert!(
        matches!(result, Err(TtsError::Interrupted { .. })),
        "{result:?}"
    );
    assert!(!audio.is_empty(), "the first sentence was spoken");
    assert!(audio.iter().all(|c| !c.is_restart()));
    assert!(took < Duration::from_millis(1000), "{took:?}");

    // With restarts off, the chain ends the reply too.
    let (ws, _) = ws_server(Behaviour::DieAfterAudio).await;
    let tts = FallbackTts::new(
        vec![Arc::new(elevenlabs(&ws)), Arc::new(openai(&http))],
        FallbackConfig {
            first_audio_timeout_ms: 300,
            stall_timeout_ms: 500,
            restart_mid_reply: false,
        },
    );
    let (result, _, _) = speak(&tts, &["First.", "Second."]).await;
    assert!(
        matches!(result, Err(TtsError::Interrupted { .. })),
        "{result:?}"
    );
}

#[tokio::test]
async fn cancelling_stops_the_chain() {
    let (ws, _) = ws_server(Behaviour::Silent).await;
    let tts = chain(vec![Arc::new(elevenlabs(&ws))], 5_000);
    let (text_tx, text_rx) = mpsc::channel(1);
    text_tx.send("Hello.".into()).await.unwrap();
    let (audio_tx, _audio_rx) = mpsc::channel(1);
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stop.cancel();
    });
    let started = Instant::now();
    let request = SpeechRequest {
        language: Language::En,
    };
    let result = tts.speak(&request, text_rx, audio_tx, cancel).await;
    assert!(matches!(result, Err(TtsError::Cancelled)), "{result:?}");
    assert!(started.elapsed() < Duration::from_millis(300));
}
