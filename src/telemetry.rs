//! Optional export of each message's spans to an OpenTelemetry collector,
//! over OTLP/HTTP (protobuf), with the `opentelemetry` crates. Off unless
//! `[telemetry] otlp_endpoint` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or
//! `OTEL_EXPORTER_OTLP_ENDPOINT`) is set.
//!
//! One message is one trace, across processes. Its trace id is derived from
//! the message id (a hash), and so is the span id of its `webhook` span, so
//! the process that acknowledged the webhook and the worker that ran the
//! turn, on another machine or days later from the outbox, put their spans
//! in the same trace without anything passed between them:
//!
//! - `webhook` (the process that acknowledged): the webhook's arrival to
//!   the inbox commit;
//! - `turn` (the process that ran the turn), a child of `webhook`: the turn
//!   from its queue wait to its end, with one child span per stage of its
//!   [`TurnTrace`] (`fetch`, `decode`, `stt`, `dialog`, `tts`, ...) at the
//!   times the trace recorded. A turn that runs twice (resumed after a
//!   crash, retried from the outbox) adds a second `turn` span.
//!
//! Spans are made after the fact from what the pipeline recorded, and
//! handed to the SDK's batch processor, which exports them from its own
//! thread. Export is best-effort and bounded: a full queue drops spans, and
//! a collector that is down or slow never delays a turn.

use std::borrow::Cow;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator, RandomIdGenerator, SpanData, SpanEvents,
    SpanLinks, SpanProcessor,
};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::record::{SpanOutcome, Stage, TurnEnd, TurnTrace};
use crate::store::{StoreError, Traces};

/// `[telemetry]` in `voxline.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// The collector's OTLP/HTTP traces URL, such as
    /// `http://collector:4318/v1/traces`; no export when unset.
    /// `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`, or `OTEL_EXPORTER_OTLP_ENDPOINT`
    /// with `/v1/traces` appended.
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans. Default `voxline`.
    /// `OTEL_SERVICE_NAME`.
    pub service_name: String,
    /// How often queued spans are sent, in ms. Default 2000.
    pub export_interval_ms: u64,
    /// How long one export may take before it is given up, in ms.
    /// Default 5000.
    pub timeout_ms: u64,
    /// Spans kept while the collector is slow or away; beyond, new spans
    /// are dropped. Default 8192 (a few hundred turns).
    pub max_queued_spans: usize,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            otlp_endpoint: None,
            service_name: "voxline".into(),
            export_interval_ms: 2_000,
            timeout_ms: 5_000,
            max_queued_spans: 8_192,
        }
    }
}

impl TelemetryConfig {
    /// The endpoint, when export is on.
    pub fn endpoint(&self) -> Option<&str> {
        self.otlp_endpoint
            .as_deref()
            .map(str::trim)
            .filter(|e| !e.is_empty())
    }

    pub fn validate(&self) -> Result<(), String> {
        if let Some(endpoint) = self.endpoint() {
            let url = reqwest::Url::parse(endpoint)
                .map_err(|e| format!("telemetry: otlp_endpoint {endpoint:?} is not a URL ({e})"))?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "telemetry: otlp_endpoint {endpoint:?} must be http or https (OTLP over HTTP)"
                ));
            }
        }
        if self.export_interval_ms == 0 || self.timeout_ms == 0 || self.max_queued_spans == 0 {
            return Err(
                "telemetry: export_interval_ms, timeout_ms and max_queued_spans must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("telemetry: {0}")]
    Config(String),
    #[error("telemetry: cannot set up the OTLP exporter: {0}")]
    Exporter(String),
}

/// The trace of message `message_id`, the same in every process.
pub fn trace_id(message_id: &str) -> TraceId {
    let hash = hash(b"voxline trace", message_id);
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash[..16]);
    TraceId::from_bytes(nonzero(bytes))
}

/// The span id of message `message_id`'s `webhook` span, the parent of
/// its turns' spans.
pub fn webhook_span_id(message_id: &str) -> SpanId {
    let hash = hash(b"voxline webhook", message_id);
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&hash[..8]);
    SpanId::from_bytes(nonzero(bytes))
}

fn hash(domain: &[u8], message_id: &str) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update(domain);
    h.update([0]);
    h.update(message_id.as_bytes());
    h.finalize().into()
}

/// An all-zero id is invalid in OpenTelemetry.
fn nonzero<const N: usize>(mut bytes: [u8; N]) -> [u8; N] {
    if bytes.iter().all(|&b| b == 0) {
        bytes[N - 1] = 1;
    }
    bytes
}

/// The exporter of one process.
#[derive(Debug)]
pub struct Otlp {
    processor: BatchSpanProcessor,
    scope: InstrumentationScope,
    ids: RandomIdGenerator,
}

impl Otlp {
    /// Starts the export `config` asks for, from a process in `role`
    /// (`all`, `webhook`, `worker`); `None` when export is off. Must be
    /// called on the tokio runtime the exports are to run on.
    pub fn start(
        config: &TelemetryConfig,
        role: &str,
    ) -> Result<Option<Arc<Self>>, TelemetryError> {
        let Some(endpoint) = config.endpoint() else {
            return Ok(None);
        };
        config.validate().map_err(TelemetryError::Config)?;
        let timeout = Duration::from_millis(config.timeout_ms);
        let client = HttpOnRuntime {
            client: reqwest::Client::builder()
                .timeout(timeout)
                .build()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?,
            runtime: tokio::runtime::Handle::try_current()
                .map_err(|e| TelemetryError::Exporter(e.to_string()))?,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(endpoint)
            .with_timeout(timeout)
            .build()
            .map_err(|e| TelemetryError::Exporter(e.to_string()))?;
        let batches = BatchConfigBuilder::default()
            .with_scheduled_delay(Duration::from_millis(config.export_interval_ms))
            .with_max_queue_size(config.max_queued_spans)
            .build();
        let mut processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batches)
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attributes([
                KeyValue::new("service.instance.id", instance_id()),
                KeyValue::new("voxline.role", role.to_string()),
            ])
            .build();
        processor.set_resource(&resource);
        tracing::info!(endpoint, "exporting turn spans over OTLP");
        Ok(Some(Arc::new(Self {
            processor,
            scope: InstrumentationScope::builder("voxline")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
            ids: RandomIdGenerator::default(),
        })))
    }

    /// The webhook that brought message `message_id` (a `kind` such as
    /// `audio`) arrived at `arrived` and was committed to the inbox at
    /// `committed`.
    pub fn acknowledged(
        &self,
        message_id: &str,
        kind: &str,
        arrived: SystemTime,
        committed: SystemTime,
    ) {
        let context = sampled(trace_id(message_id), webhook_span_id(message_id));
        self.processor.on_end(self.span(
            context,
            SpanId::INVALID,
            "webhook",
            SpanKind::Server,
            (arrived, committed.max(arrived)),
            vec![
                KeyValue::new("messaging.system", "whatsapp"),
                KeyValue::new("messaging.message.id", message_id.to_string()),
                KeyValue::new("voxline.kind", kind.to_string()),
            ],
            Status::Ok,
        ));
    }

    /// A finished turn: its `turn` span and one span per stage.
    pub fn turn(&self, trace: &TurnTrace) {
        let zero = unix_ms(trace.started_unix_ms);
        let at = |ms: f64| zero + Duration::from_secs_f64(ms.max(0.0) / 1000.0);
        // The webhook's own span stands for the acknowledgement; the turn
        // starts where the process that ran it took over.
        let stages: Vec<_> = trace
            .spans
            .iter()
            .filter(|s| s.stage != Stage::Ack)
            .collect();
        let start = stages
            .iter()
            .map(|s| s.start_ms)
            .reduce(f64::min)
            .unwrap_or(0.0);
        let end = stages.iter().map(|s| s.end_ms).fold(0.0, f64::max);
        let trace_id = trace_id(&trace.message_id);
        let turn = sampled(trace_id, self.ids.new_span_id());
        let mut attributes = vec![
            KeyValue::new("messaging.message.id", trace.message_id.clone()),
            KeyValue::new("voxline.customer", crate::channel::mask_number(&trace.from)),
            KeyValue::new("voxline.kind", trace.kind.clone()),
            KeyValue::new("voxline.end", trace.end.name()),
            KeyValue::new("voxline.turn_ms", trace.turn_ms),
        ];
        let optional = [
            ("voxline.language", trace.language.clone()),
            ("voxline.intent", trace.intent.clone()),
            ("voxline.routing", trace.routing.clone()),
            ("voxline.note", trace.note.clone()),
        ];
        for (key, value) in optional {
            if let Some(value) = value {
                attributes.push(KeyValue::new(key, value));
            }
        }
        if let Some(fast) = trace.fast_path {
            attributes.push(KeyValue::new("voxline.fast_path", fast));
        }
        if let Some(audio) = trace.audio_ms {
            attributes.push(KeyValue::new("voxline.audio_ms", audio));
        }
        let status = match trace.end {
            TurnEnd::Failed => Status::error(trace.note.clone().unwrap_or_default()),
            _ => Status::Ok,
        };
        let mut spans = vec![self.span(
            turn.clone(),
            webhook_span_id(&trace.message_id),
            "turn",
            SpanKind::Consumer,
            (at(start), at(end)),
            attributes,
            status,
        )];
        for stage in stages {
            let mut attributes = Vec::new();
            if let Some(first) = stage.first_output_ms() {
                attributes.push(KeyValue::new("voxline.first_output_ms", first));
            }
            let status = match &stage.outcome {
                SpanOutcome::Ok => Status::Ok,
                SpanOutcome::Overrun { budget, action } => {
                    attributes.push(KeyValue::new("voxline.budget", budget.name()));
                    attributes.push(KeyValue::new("voxline.action", action.name()));
                    Status::error(format!("over its budget: {}", action.name()))
                }
                SpanOutcome::Error { reason } => Status::error(reason.clone()),
            };
            spans.push(self.span(
                sampled(trace_id, self.ids.new_span_id()),
                turn.span_id(),
                stage.stage.name(),
                SpanKind::Internal,
                (at(stage.start_ms), at(stage.end_ms.max(stage.start_ms))),
                attributes,
                status,
            ));
        }
        for span in spans {
            self.processor.on_end(span);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn span(
        &self,
        context: SpanContext,
        parent: SpanId,
        name: &'static str,
        kind: SpanKind,
        (start, end): (SystemTime, SystemTime),
        attributes: Vec<KeyValue>,
        status: Status,
    ) -> SpanData {
        SpanData {
            span_context: context,
            parent_span_id: parent,
            // The webhook's span was made by another process, or by this
            // one in another part: remote either way for the turn.
            parent_span_is_remote: parent != SpanId::INVALID,
            span_kind: kind,
            name: Cow::Borrowed(name),
            start_time: start,
            end_time: end,
            attributes,
            dropped_attributes_count: 0,
            events: SpanEvents::default(),
            links: SpanLinks::default(),
            status,
            instrumentation_scope: self.scope.clone(),
        }
    }

    /// Sends what is queued and stops, waiting up to `timeout`. Blocks:
    /// call it off the runtime's worker threads.
    pub fn shutdown(&self, timeout: Duration) {
        if let Err(e) = self.processor.shutdown_with_timeout(timeout) {
            tracing::warn!(error = %e, "spans not all exported at shutdown");
        }
    }
}

/// A span of this process's making, always exported.
fn sampled(trace_id: TraceId, span_id: SpanId) -> SpanContext {
    SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

fn unix_ms(ms: i64) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64)
}

/// `service.instance.id`: host and process id.
fn instance_id() -> String {
    format!("{}-{}", host_name(), std::process::id())
}

/// This machine's name (`HOSTNAME`, else `/etc/hostname`), for naming this
/// process to the collector and to the other processes (its leases).
pub fn host_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "voxline".into())
}

/// The exporter's HTTP client: voxline's reqwest, run on the service's
/// tokio runtime. The SDK's batch processor exports from its own thread,
/// outside any runtime, so each request is spawned onto the runtime and
/// awaited from there.
#[derive(Debug)]
struct HttpOnRuntime {
    client: reqwest::Client,
    runtime: tokio::runtime::Handle,
}

/// A collector's reply is a small status message; more is not read.
const MAX_REPLY_BYTES: usize = 64 * 1024;

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for HttpOnRuntime {
    async fn send_bytes(
        &self,
        request: http::Request<bytes::Bytes>,
    ) -> Result<http::Response<bytes::Bytes>, opentelemetry_http::HttpError> {
        let (parts, body) = request.into_parts();
        let request = self
            .client
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body);
        let sent = self.runtime.spawn(async move {
            let mut response = request.send().await?;
            let mut reply = http::Response::builder().status(response.status());
            if let Some(headers) = reply.headers_mut() {
                *headers = std::mem::take(response.headers_mut());
            }
            let mut body = Vec::new();
            while let Some(chunk) = response.chunk().await? {
                let room = MAX_REPLY_BYTES.saturating_sub(body.len());
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if room <= chunk.len() {
                    break;
                }
            }
            Ok::<_, reqwest::Error>(reply.body(bytes::Bytes::from(body)))
        });
        Ok(sent.await???)
    }
}

/// Where finished turns' traces go when spans are exported: the store,
/// and the collector.
pub struct ExportedTraces {
    pub store: Arc<dyn Traces>,
    pub otlp: Arc<Otlp>,
}

#[async_trait::async_trait]
impl Traces for ExportedTraces {
    async fn save_trace(&self, trace: &TurnTrace) -> Result<(), StoreError> {
        self.otlp.turn(trace);
        self.store.save_trace(trace).await
    }

    async fn recent_traces(&self, limit: usize) -> Result<Vec<TurnTrace>, StoreError> {
        self.store.recent_traces(limit).await
    }

    async fn prune_traces(&self, before_unix_ms: i64) -> Result<usize, StoreError> {
        self.store.prune_traces(before_unix_ms).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_has_one_trace_in_every_process() {
        assert_eq!(trace_id("wamid.A"), trace_id("wamid.A"));
        assert_ne!(trace_id("wamid.A"), trace_id("wamid.B"));
        assert_ne!(trace_id("wamid.A"), TraceId::INVALID);
        assert_eq!(webhook_span_id("wamid.A"), webhook_span_id("wamid.A"));
        assert_ne!(webhook_span_id("wamid.A"), webhook_span_id("wamid.B"));
    }

    #[test]
    fn export_is_off_without_an_endpoint_and_a_bad_one_is_refused() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let _guard = rt.enter();
        assert!(Otlp::start(&TelemetryConfig::default(), "all")
            .unwrap()
            .is_none());
        for bad in ["not a url", "ftp://collector/v1/traces"] {
            let config = TelemetryConfig {
                otlp_endpoint: Some(bad.into()),
                ..TelemetryConfig::default()
            };
            let err = Otlp::start(&config, "all").unwrap_err().to_string();
            assert!(err.contains("otlp_endpoint"), "{err}");
        }
    }
}
