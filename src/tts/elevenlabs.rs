//! The ElevenLabs `stream-input` WebSocket: text goes in as the dialog
//! writes it, base64 PCM comes back as it is generated.
//!
//! One socket carries one reply: a first message with the voice settings and
//! the key (its text a single space), then each chunk with `flush: true` so
//! audio starts without waiting for the server's buffer to fill, then an
//! empty text to end the input; the server answers the last audio with
//! `isFinal: true`. To keep the handshake out of the next reply, a spare
//! socket is opened and greeted in the background after each reply, and is
//! used if it is younger than the server's inactivity timeout.
//!
//! A dead socket (a peer gone without a close frame, a NAT that dropped the
//! flow) shows as silence, so silence is probed: with nothing received for
//! `read_timeout_ms`, the socket is pinged, and with nothing at all for
//! `ping_timeout_ms` more it is declared dead. A socket that dies before any
//! audio is replaced once and the reply's text resent.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use base64::Engine as _;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::time::sleep_until;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

use super::config::ElevenLabsConfig;
use super::{
    AudioChunk, AudioClock, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError,
};

const PROVIDER: &str = "elevenlabs";

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// A greeted socket waiting for the next reply.
struct Spare {
    socket: Socket,
    language: Language,
    opened: Instant,
}

/// The ElevenLabs WebSocket provider.
#[derive(Clone)]
pub struct ElevenLabsTts {
    config: ElevenLabsConfig,
    spare: Arc<Mutex<Option<Spare>>>,
}

impl std::fmt::Debug for ElevenLabsTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ElevenLabsTts")
            .field("base_url", &self.config.base_url)
            .field("voice_id", &self.config.voice_id)
            .finish_non_exhaustive()
    }
}

/// How one attempt on one socket ended.
enum Attempt {
    Done,
    /// The socket failed; `audio_sent` tells whether a retry is possible.
    Failed {
        error: TtsError,
        audio_sent: bool,
    },
}

impl ElevenLabsTts {
    pub fn new(config: &ElevenLabsConfig) -> Result<Self, TtsError> {
        if !matches!(config.sample_rate, 16_000 | 24_000) {
            return Err(TtsError::Unavailable {
                provider: PROVIDER.into(),
                reason: format!("sample_rate {} is not 16000 or 24000", config.sample_rate),
            });
        }
        Ok(Self {
            config: config.clone(),
            spare: Arc::new(Mutex::new(None)),
        })
    }

    fn url(&self, language: Language) -> String {
        let c = &self.config;
        format!(
            "{}/v1/text-to-speech/{}/stream-input?model_id={}&output_format=pcm_{}&inactivity_timeout={}&language_code={}",
            c.base_url.trim_end_matches('/'),
            c.voice_id,
            c.model_id,
            c.sample_rate,
            c.inactivity_timeout_s,
            language.code()
        )
    }

    fn transport(reason: impl ToString) -> TtsError {
        TtsError::Transport {
            provider: PROVIDER.into(),
            reason: reason.to_string(),
        }
    }

    /// Opens a socket and sends the first message.
    async fn connect(&self, language: Language) -> Result<Socket, TtsError> {
        let timeout = Duration::from_millis(self.config.connect_timeout_ms);
        let (mut socket, _) = tokio::time::timeout(
            timeout,
            tokio_tungstenite::connect_async(self.url(language)),
        )
        .await
        .map_err(|_| TtsError::Timeout {
            provider: PROVIDER.into(),
            what: "connection",
            after: timeout,
        })?
        .map_err(Self::transport)?;
        let mut greeting = json!({
            "text": " ",
            "voice_settings": {
                "stability": self.config.stability,
                "similarity_boost": self.config.similarity_boost,
            },
        });
        if let Some(key) = &self.config.api_key {
            greeting["xi_api_key"] = json!(key);
        }
        socket
            .send(Message::text(greeting.to_string()))
            .await
            .map_err(Self::transport)?;
        Ok(socket)
    }

    /// The spare socket if it fits and is fresh, else a new one.
    async fn socket(&self, language: Language) -> Result<(Socket, bool), TtsError> {
        let spare = self.spare.lock().ok().and_then(|mut spare| spare.take());
        if let Some(spare) = spare {
            // Leave the server a margin before its inactivity timeout.
            let fresh = Duration::from_secs(self.config.inactivity_timeout_s.saturating_sub(5));
            if spare.language == language && spare.opened.elapsed() < fresh {
                return Ok((spare.socket, true));
            }
        }
        Ok((self.connect(language).await?, false))
    }

    /// Opens the spare for the next reply in the background.
    fn prepare_spare(&self, language: Language) {
        let this = self.clone();
        tokio::spawn(async move {
            if let Ok(socket) = this.connect(language).await {
                if let Ok(mut spare) = this.spare.lock() {
                    *spare = Some(Spare {
                        socket,
                        language,
                        opened: Instant::now(),
                    });
                }
            }
        });
    }

    /// Runs the reply on one socket. `sent` holds the chunks already sent
    /// on an earlier socket, which are sent again first.
    #[allow(clippy::too_many_arguments)]
    async fn attempt(
        &self,
        mut socket: Socket,
        sent: &mut Vec<String>,
        text: &mut mpsc::Receiver<String>,
        text_done: &mut bool,
        audio: &mpsc::Sender<AudioChunk>,
        clock: &mut AudioClock,
        cancel: &CancellationToken,
    ) -> Attempt {
        let fail = |error: TtsError, clock: &AudioClock| Attempt::Failed {
            error,
            audio_sent: clock.sent_audio(),
        };
        for chunk in sent.iter() {
            if let Err(e) = socket.send(text_message(chunk)).await {
                return fail(Self::transport(e), clock);
            }
        }
        if *text_done {
            if let Err(e) = socket
                .send(Message::text(json!({"text": ""}).to_string()))
                .await
            {
                return fail(Self::transport(e), clock);
            }
        }
        let read_timeout = Duration::from_millis(self.config.read_timeout_ms);
        let ping_timeout = Duration::from_millis(self.config.ping_timeout_ms);
        let mut last_heard = Instant::now();
        let mut pinged = false;
        loop {
            let deadline = if pinged {
                last_heard + read_timeout + ping_timeout
            } else {
                last_heard + read_timeout
            };
            tokio::select! {
                () = cancel.cancelled() => {
                    let _ = socket.close(None).await;
                    return fail(TtsError::Cancelled, clock);
                }
                chunk = text.recv(), if !*text_done => {
                    let message = match chunk {
                        Some(chunk) if chunk.trim().is_empty() => continue,
                        Some(chunk) => {
                            clock.text();
                            let message = text_message(&chunk);
                            sent.push(chunk);
                            message
                        }
                        None => {
                            *text_done = true;
                            Message::text(json!({"text": ""}).to_string())
                        }
                    };
                    if let Err(e) = socket.send(message).await {
                        return fail(Self::transport(e), clock);
                    }
                }
                message = socket.next() => {
                    last_heard = Instant::now();
                    pinged = false;
                    let message = match message {
                        Some(Ok(message)) => message,
                        Some(Err(e)) => return fail(Self::transport(e), clock),
                        None => return fail(Self::transport("socket closed before isFinal"), clock),
                    };
                    let body = match message {
                        Message::Text(body) => body,
                        Message::Close(frame) => {
                            let reason = frame.map_or_else(String::new, |f| format!("{} {}", f.code, f.reason));
                            return fail(Self::transport(format!("closed by server: {reason}")), clock);
                        }
                        _ => continue,
                    };
                    match parse(&body, self.config.sample_rate) {
                        Ok(Reply::Audio(chunk)) => {
                            clock.audio(&chunk);
                            if audio.send(chunk).await.is_err() {
                                return fail(TtsError::Cancelled, clock);
                            }
                        }
                        Ok(Reply::Final) => {
                            let _ = socket.close(None).await;
                            return Attempt::Done;
                        }
                        Ok(Reply::Other) => {}
                        Err(e) => return fail(e, clock),
                    }
                }
                () = sleep_until(deadline.into()), if !sent.is_empty() || *text_done => {
                    if pinged {
                        return fail(
                            TtsError::Timeout {
                                provider: PROVIDER.into(),
                                what: "sign of life from the socket",
                                after: read_timeout + ping_timeout,
                            },
                            clock,
                        );
                    }
                    pinged = true;
                    if let Err(e) = socket.send(Message::Ping(Vec::new().into())).await {
                        return fail(Self::transport(e), clock);
                    }
                }
            }
        }
    }
}

fn text_message(chunk: &str) -> Message {
    // The protocol wants each text to end with a space.
    let text = format!("{} ", chunk.trim_end());
    Message::text(json!({"text": text, "flush": true}).to_string())
}

enum Reply {
    Audio(AudioChunk),
    Final,
    Other,
}

fn parse(body: &str, sample_rate: u32) -> Result<Reply, TtsError> {
    let value: Value = serde_json::from_str(body)
        .map_err(|e| ElevenLabsTts::transport(format!("bad message: {e}")))?;
    if let Some(encoded) = value["audio"].as_str() {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(encoded)
            .map_err(|e| ElevenLabsTts::transport(format!("bad audio: {e}")))?;
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|p| i16::from_le_bytes([p[0], p[1]]))
            .collect();
        if !samples.is_empty() {
            return Ok(Reply::Audio(AudioChunk::from_i16(sample_rate, &samples)));
        }
    }
    if value["isFinal"].as_bool() == Some(true) {
        return Ok(Reply::Final);
    }
    if value.get("error").is_some() || value.get("message").is_some() {
        let message = value["message"]
            .as_str()
            .or(value["error"].as_str())
            .unwrap_or("error")
            .to_string();
        return Err(TtsError::Refused {
            provider: PROVIDER.into(),
            status: value["code"].to_string(),
            message,
        });
    }
    Ok(Reply::Other)
}

#[async_trait]
impl TextToSpeech for ElevenLabsTts {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn speak(
        &self,
        request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        let mut clock = AudioClock::new();
        let mut sent = Vec::new();
        let mut text_done = false;
        // A spare may have died while idle; one fresh socket is allowed.
        let mut fresh_tries = 1;
        loop {
            let (socket, was_spare) = tokio::select! {
                socket = self.socket(request.language) => socket?,
                () = cancel.cancelled() => return Err(TtsError::Cancelled),
            };
            let outcome = self
                .attempt(
                    socket,
                    &mut sent,
                    &mut text,
                    &mut text_done,
                    &audio,
                    &mut clock,
                    &cancel,
                )
                .await;
            match outcome {
                Attempt::Done => {
                    self.prepare_spare(request.language);
                    return Ok(clock.report(PROVIDER));
                }
                Attempt::Failed { error, audio_sent } => {
                    let retry = !audio_sent
                        && !matches!(error, TtsError::Cancelled | TtsError::Refused { .. })
                        && (was_spare || fresh_tries > 0);
                    if !retry {
                        return Err(error);
                    }
                    if !was_spare {
                        fresh_tries -= 1;
                    }
                    tracing::debug!(%error, "elevenlabs socket failed before audio; reconnecting");
                }
            }
        }
    }
}
