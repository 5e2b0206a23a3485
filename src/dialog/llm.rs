//! The LLM stage: an OpenAI-compatible chat-completions client that streams
//! (`stream: true`, server-sent `data:` lines, `[DONE]`), which OpenAI,
//! Groq, Mistral, Ollama, llama.cpp's server and vLLM all speak, and a
//! fallback chain over the configured providers.
//!
//! Each attempt has its own time to first token and total time. A provider
//! that fails before passing on a chunk gives way to the next one; once a
//! chunk has been passed on, the answer is committed to that provider and a
//! later failure ends the stream instead of starting over (the customer
//! would hear the start twice).

use std::time::Duration;

use reqwest::Client;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One provider in `[[dialog.llm.providers]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderConfig {
    /// Shown in logs and in the turn's outcome.
    pub name: String,
    /// Up to and including the version, e.g. `https://api.openai.com/v1` or
    /// `http://127.0.0.1:11434/v1`; `/chat/completions` is appended.
    pub base_url: String,
    pub model: String,
    /// Environment variable with the API key; none for local servers.
    #[serde(default)]
    pub api_key_env: Option<String>,
    /// Time from the request to the first content chunk (default 1500 ms).
    #[serde(default = "default_first_token_ms")]
    pub first_token_timeout_ms: u64,
    /// Time for the whole answer (default 8000 ms).
    #[serde(default = "default_total_ms")]
    pub total_timeout_ms: u64,
}

fn default_first_token_ms() -> u64 {
    1500
}

fn default_total_ms() -> u64 {
    8000
}

/// `[dialog.llm]`. No providers: the dialog stage answers with the fast
/// path, the knowledge base and a hand-off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct LlmConfig {
    pub providers: Vec<ProviderConfig>,
    /// Default 160: two spoken sentences need far fewer.
    pub max_tokens: u32,
    /// Default 0.3.
    pub temperature: f32,
}

impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            providers: Vec::new(),
            max_tokens: 160,
            temperature: 0.3,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: &str, content: impl Into<String>) -> Self {
        Self {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LlmError {
    #[error("HTTP status {0}")]
    Status(u16),
    #[error("no first token within {0} ms")]
    FirstTokenTimeout(u64),
    #[error("answer not finished within {0} ms")]
    TotalTimeout(u64),
    #[error("connection: {0}")]
    Transport(String),
    #[error("malformed stream: {0}")]
    Malformed(String),
    #[error("stream ended before [DONE]")]
    Truncated,
    #[error("the reader went away")]
    Cancelled,
}

/// How one turn's LLM call went.
#[derive(Debug, Clone, Default)]
pub struct ChainOutcome {
    /// The provider whose answer was passed on.
    pub provider: Option<String>,
    /// Failed attempts, in order: (provider, error).
    pub failures: Vec<(String, LlmError)>,
    /// The answer was passed on in full (through `[DONE]`).
    pub complete: bool,
}

impl ChainOutcome {
    /// Something was passed on.
    pub fn answered(&self) -> bool {
        self.provider.is_some()
    }
}

pub struct LlmChain {
    client: Client,
    config: LlmConfig,
}

#[derive(Deserialize)]
struct StreamChunk {
    choices: Vec<StreamChoice>,
}

#[derive(Deserialize)]
struct StreamChoice {
    #[serde(default)]
    delta: Delta,
}

#[derive(Deserialize, Default)]
struct Delta {
    #[serde(default)]
    content: Option<String>,
}

enum Line {
    Content(String),
    Done,
    Skip,
}

/// One SSE line. Comments (`:`), `event:`/`id:` fields and empty lines are
/// skipped; a `data:` line must be `[DONE]` or a chat-completion chunk.
fn parse_line(line: &str) -> Result<Line, LlmError> {
    let line = line.trim_end_matches('\r');
    let Some(data) = line.strip_prefix("data:") else {
        return Ok(Line::Skip);
    };
    let data = data.trim();
    if data == "[DONE]" {
        return Ok(Line::Done);
    }
    let chunk: StreamChunk = serde_json::from_str(data).map_err(|e| {
        LlmError::Malformed(format!(
            "{e}: {}",
            data.chars().take(80).collect::<String>()
        ))
    })?;
    Ok(chunk
        .choices
        .into_iter()
        .next()
        .and_then(|c| c.delta.content)
        .filter(|c| !c.is_empty())
        .map_or(Line::Skip, Line::Content))
}

impl LlmChain {
    pub fn new(config: LlmConfig) -> Result<Self, LlmError> {
        let client = Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .build()
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        Ok(Self { client, config })
    }

    pub fn is_empty(&self) -> bool {
        self.config.providers.is_empty()
    }

    /// Streams the first answering provider's text into `tx`, chunk by
    /// chunk as the server sends them.
    ///
    /// `first_token` (the turn's `dialog_first_token` budget) shortens each
    /// provider's own first-token timeout when it is shorter.
    pub async fn stream(
        &self,
        messages: &[ChatMessage],
        tx: &mpsc::Sender<String>,
        first_token: Option<Duration>,
    ) -> ChainOutcome {
        let mut outcome = ChainOutcome::default();
        let metrics = crate::metrics::global();
        for (i, p) in self.config.providers.iter().enumerate() {
            let mut passed = false;
            let result = self
                .attempt(p, messages, tx, &mut passed, first_token)
                .await;
            if result.is_err() && !matches!(result, Err(LlmError::Cancelled)) {
                metrics.provider_error("llm", &p.name);
                if !passed && i + 1 < self.config.providers.len() {
                    metrics.provider_fallback("llm", &p.name);
                }
            }
            if passed {
                outcome.provider = Some(p.name.clone());
                match result {
                    Ok(()) => outcome.complete = true,
                    Err(e) => {
                        tracing::warn!(provider = %p.name, error = %e, "LLM stream broke after the first chunk; not retried");
                        outcome.failures.push((p.name.clone(), e));
                    }
                }
                return outcome;
            }
            match result {
                Err(LlmError::Cancelled) => return outcome,
                Err(e) => {
                    tracing::warn!(provider = %p.name, error = %e, "LLM provider failed; trying the next");
                    outcome.failures.push((p.name.clone(), e));
                }
                // [DONE] with no content at all: an empty answer is no answer.
                Ok(()) => outcome.failures.push((p.name.clone(), LlmError::Truncated)),
            }
        }
        outcome
    }

    async fn attempt(
        &self,
        p: &ProviderConfig,
        messages: &[ChatMessage],
        tx: &mpsc::Sender<String>,
        passed: &mut bool,
        first_token: Option<Duration>,
    ) -> Result<(), LlmError> {
        let start = Instant::now();
        let own = Duration::from_millis(p.first_token_timeout_ms);
        let first_timeout = first_token.map_or(own, |b| b.min(own));
        let first_deadline = start + first_timeout;
        let total_deadline = start + Duration::from_millis(p.total_timeout_ms);
        let deadline = |passed: bool| {
            if passed {
                total_deadline
            } else {
                first_deadline.min(total_deadline)
            }
        };
        let timeout_error = |passed: bool| {
            if passed {
                LlmError::TotalTimeout(p.total_timeout_ms)
            } else {
                LlmError::FirstTokenTimeout(first_timeout.as_millis() as u64)
            }
        };
        let body = serde_json::json!({
            "model": p.model,
            "messages": messages,
            "stream": true,
            "max_tokens": self.config.max_tokens,
            "temperature": self.config.temperature,
        });
        let url = format!("{}/chat/completions", p.base_url.trim_end_matches('/'));
        let mut req = self
            .client
            .post(url)
            .header("accept", "text/event-stream")
            .json(&body);
        if let Some(key) = p.api_key_env.as_deref().and_then(|v| std::env::var(v).ok()) {
            req = req.bearer_auth(key);
        }
        let mut resp = tokio::time::timeout_at(deadline(false), req.send())
            .await
            .map_err(|_| timeout_error(false))?
            .map_err(|e| LlmError::Transport(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(LlmError::Status(resp.status().as_u16()));
        }
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = tokio::time::timeout_at(deadline(*passed), resp.chunk())
                .await
                .map_err(|_| timeout_error(*passed))?
                .map_err(|e| LlmError::Transport(e.to_string()))?;
            let Some(bytes) = chunk else {
                return Err(LlmError::Truncated);
            };
            buf.extend_from_slice(&bytes);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line[..line.len() - 1]).into_owned();
                match parse_line(&line)? {
                    Line::Skip => {}
                    Line::Done => return Ok(()),
                    Line::Content(text) => {
                        tx.send(text).await.map_err(|_| LlmError::Cancelled)?;
                        *passed = true;
                    }
                }
            }
            // A server that never sends a newline must not grow the buffer
            // without bound.
            if buf.len() > 1 << 20 {
                return Err(LlmError::Malformed("line longer than 1 MiB".into()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_sse_lines() {
        let c = r#"data: {"id":"x","choices":[{"index":0,"delta":{"content":"Hel"}}]}"#;
        assert!(matches!(parse_line(c), Ok(Line::Content(t)) if t == "Hel"));
        assert!(matches!(parse_line("data: [DONE]"), Ok(Line::Done)));
        assert!(matches!(parse_line(": keep-alive"), Ok(Line::Skip)));
        assert!(matches!(parse_line(""), Ok(Line::Skip)));
        let role_only = r#"data: {"choices":[{"delta":{"role":"assistant"}}]}"#;
        assert!(matches!(parse_line(role_only), Ok(Line::Skip)));
        assert!(matches!(
            parse_line("data: {not json"),
            Err(LlmError::Malformed(_))
        ));
    }
}
