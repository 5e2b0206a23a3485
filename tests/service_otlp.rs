//! Distributed traces: a `voxline serve --role webhook` process and a
//! `--role worker` process on one Redis export their spans over OTLP/HTTP
//! to a receiver on loopback that decodes them as a collector would. Each
//! message is one trace across the two processes: the webhook process's
//! `webhook` span is the parent of the worker's `turn` span, whose children
//! are the turn's stages. Spans are exported at the processes' stop
//! (SIGTERM), as an operator's restart would.

#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

use redis_server::RedisServer;
use support::fake_graph::FakeGraph;
use support::processes::Proc;
use support::*;

/// A span as received, with its process's resource attributes.
#[derive(Debug, Clone)]
struct Received {
    span: Span,
    resource: HashMap<String, String>,
}

impl Received {
    fn attr(&self, key: &str) -> Option<String> {
        attributes(&self.span.attributes).remove(key)
    }
}

fn attributes(kvs: &[KeyValue]) -> HashMap<String, String> {
    kvs.iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(Value::BoolValue(b)) => b.to_string(),
                Some(Value::IntValue(i)) => i.to_string(),
                Some(Value::DoubleValue(d)) => d.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// An OTLP/HTTP traces receiver: protobuf in, spans kept.
async fn start_receiver() -> (String, Arc<Mutex<Vec<Received>>>) {
    let spans: Arc<Mutex<Vec<Received>>> = Arc::default();
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |headers: HeaderMap, body: Bytes| {
            let kept = kept.clone();
            async move {
                let protobuf = headers
                    .get("content-type")
                    .is_some_and(|v| v.as_bytes() == b"application/x-protobuf");
                if !protobuf {
                    return (StatusCode::UNSUPPORTED_MEDIA_TYPE, Vec::new());
                }
                let Ok(request) = ExportTraceServiceRequest::decode(body) else {
                    return (StatusCode::BAD_REQUEST, Vec::new());
                };
                let mut kept = kept.lock().unwrap();
                for resource_spans in request.resource_spans {
                    let resource = resource_spans
                        .resource
                        .map(|r| attributes(&r.attributes))
                        .unwrap_or_default();
                    for scope in resource_spans.scope_spans {
                        for span in scope.spans {
                            kept.push(Received {
                                span,
                                resource: resource.clone(),
                            });
                        }
                    }
                }
                (
                    StatusCode::OK,
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}/v1/traces"), spans)
}

const CUSTOMERS: usize = 2;
const PER_CUSTOMER: usize = 3;

fn number(customer: usize) -> String {
    format!("4477009{customer:05}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_per_message_across_the_webhook_and_the_worker() {
    let redis = RedisServer::start();
    let graph = FakeGraph::start().await;
    let (endpoint, received) = start_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxline.toml");
    // Queued spans go out at the stop, not on a timer.
    std::fs::write(
        &config,
        format!(
            "[service]\nreply = \"echo\"\n\n\
             [store]\nbackend = \"redis\"\n\n\
             [store.redis]\nurl = \"{}\"\n\n\
             [telemetry]\notlp_endpoint = \"{endpoint}\"\nexport_interval_ms = 600000\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut webhook = Proc::start(&graph, &config, dir.path(), "webhook");
    let mut worker = Proc::start(&graph, &config, dir.path(), "worker");
    webhook.wait_ready().await;
    worker.wait_ready().await;

    let client = client();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{}", webhook.port).parse().unwrap();
    let mut wamids = Vec::new();
    for seq in 0..PER_CUSTOMER {
        for customer in 0..CUSTOMERS {
            let wamid = format!("wamid.OT{customer}S{seq}");
            let payload = text(&wamid, &number(customer), &format!("message {seq}"));
            assert_eq!(deliver(&client, addr, &payload).await, 200);
            wamids.push(wamid);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while graph.sent().len() < wamids.len() {
        assert!(Instant::now() < deadline, "not all texts answered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        received.lock().unwrap().is_empty(),
        "spans went out before the stop"
    );
    assert!(worker.terminate(Duration::from_secs(20)), "worker stop");
    assert!(webhook.terminate(Duration::from_secs(20)), "webhook stop");

    let spans = received.lock().unwrap().clone();
    let instance = |r: &Received| r.resource.get("service.instance.id").cloned();
    let mut traces = Vec::new();
    for wamid in &wamids {
        let of_message: Vec<&Received> = spans
            .iter()
            .filter(|r| r.attr("messaging.message.id").as_deref() == Some(wamid))
            .collect();
        let acks: Vec<_> = of_message
            .iter()
            .filter(|r| r.span.name == "webhook")
            .collect();
        assert_eq!(acks.len(), 1, "{wamid}: one webhook span");
        let ack = acks[0];
        assert_eq!(
            ack.resource.get("voxline.role").map(String::as_str),
            Some("webhook")
        );
        assert_eq!(
            ack.resource.get("service.name").map(String::as_str),
            Some("voxline")
        );
        assert!(
            ack.span.parent_span_id.is_empty(),
            "{wamid}: the webhook span is the root"
        );
        assert!(ack.span.end_time_unix_nano >= ack.span.start_time_unix_nano);

        let turns: Vec<_> = of_message
            .iter()
            .filter(|r| r.span.name == "turn")
            .collect();
        assert_eq!(turns.len(), 1, "{wamid}: one turn span");
        let turn = turns[0];
        assert_eq!(
            turn.resource.get("voxline.role").map(String::as_str),
            Some("worker")
        );
        assert_ne!(instance(turn), instance(ack), "{wamid}: two processes");
        assert_eq!(turn.span.trace_id, ack.span.trace_id, "{wamid}: one trace");
        assert_eq!(
            turn.span.parent_span_id, ack.span.span_id,
            "{wamid}: turn under webhook"
        );
        assert_eq!(turn.attr("voxline.end").as_deref(), Some("text"));
        // The customer's number is masked in what leaves the machine.
        let customer = turn.attr("voxline.customer").unwrap();
        assert!(customer.contains('*'), "{customer}");

        let stages: Vec<&Received> = spans
            .iter()
            .filter(|r| r.span.parent_span_id == turn.span.span_id)
            .collect();
        let names: Vec<&str> = stages.iter().map(|r| r.span.name.as_str()).collect();
        assert!(names.contains(&"send"), "{wamid}: stages {names:?}");
        for stage in &stages {
            assert_eq!(stage.span.trace_id, turn.span.trace_id);
            assert!(
                stage.span.start_time_unix_nano >= turn.span.start_time_unix_nano
                    && stage.span.end_time_unix_nano <= turn.span.end_time_unix_nano,
                "{wamid}: {} outside its turn",
                stage.span.name
            );
        }
        // The turn ran after the webhook was acknowledged.
        assert!(turn.span.start_time_unix_nano >= ack.span.start_time_unix_nano);
        traces.push(ack.span.trace_id.clone());
    }
    traces.sort();
    traces.dedup();
    assert_eq!(traces.len(), wamids.len(), "one trace per message");
    for customer in 0..CUSTOMERS {
        let full = number(customer);
        assert!(
            spans
                .iter()
                .all(|r| !format!("{:?}", r.span).contains(&full)),
            "a customer's number left the machine"
        );
    }
}

/// A collector that is away costs the customers nothing: turns are
/// answered as usual, and the stop does not hang on the spans it could not
/// send.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_is_away_delays_nothing() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let mut config = echo_config_for(&graph, dir.path());
    config.telemetry.otlp_endpoint = Some(format!("http://127.0.0.1:{}/v1/traces", free_port()));
    config.telemetry.export_interval_ms = 50;
    config.telemetry.timeout_ms = 500;
    let service = start(&config, FixedStt::new("unused")).await;
    let client = client();
    for seq in 0..3 {
        let wamid = format!("wamid.AWAY{seq}");
        let payload = text(&wamid, "447700900123", &format!("message {seq}"));
        assert_eq!(deliver(&client, service.addr(), &payload).await, 200);
        let turn = wait_final(service.store(), &wamid).await;
        assert_eq!(turn.state, voxline::store::TurnState::Replied, "{wamid}");
    }
    assert_eq!(graph.sent().len(), 3);
    tokio::time::timeout(Duration::from_secs(15), service.stop())
        .await
        .expect("the stop waited on the collector")
        .unwrap();
}
