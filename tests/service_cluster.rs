//! Several processes on one Redis: one `voxline serve --role webhook` and
//! two `--role worker`, each its own process on loopback, against the fake
//! Graph API. 300 texts from 30 customers, five writing at a time; one
//! worker is SIGKILLed mid-run and redis-server is killed and restarted
//! mid-run. Every acknowledged text
//! is answered, each customer's answers keep the order of their texts, a
//! reply goes out twice only for a turn the dead worker had in flight, and
//! the dead worker's customers are taken over within `claim_idle_ms` plus
//! the claim scan.

#[path = "support/redis_server.rs"]
mod redis_server;
mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use support::fake_graph::{FakeGraph, Faults};
use support::processes::Proc;
use support::*;

const CUSTOMERS: usize = 30;
const PER_CUSTOMER: usize = 10;
const CLAIM_IDLE_MS: u64 = 2_000;
/// Turns in flight at once per worker process (the default).
const WORKERS: usize = 16;
/// Customers writing at the same time: their texts come faster than one
/// customer's turns can run, so each has texts waiting behind its turn.
const AT_ONCE: usize = 5;

fn number(customer: usize) -> String {
    format!("3460{customer:07}")
}

fn body(customer: usize, seq: usize) -> String {
    format!("customer {customer} message {seq}")
}

/// The texts, in the order they are sent: customers in groups of
/// [`AT_ONCE`], each group's texts interleaved.
fn plan() -> Vec<(usize, usize)> {
    (0..CUSTOMERS)
        .step_by(AT_ONCE)
        .flat_map(|first| {
            (0..PER_CUSTOMER).flat_map(move |seq| (first..first + AT_ONCE).map(move |c| (c, seq)))
        })
        .collect()
}

/// Delivers until acknowledged: a 5xx (the store down) is what Meta
/// retries.
async fn deliver_until_acknowledged(client: &reqwest::Client, port: u16, payload: &str) {
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if deliver(client, addr, payload).await == 200 {
            return;
        }
        assert!(Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_and_two_workers_survive_a_dead_worker_and_a_redis_restart() {
    let mut redis = RedisServer::start();
    let graph = FakeGraph::start().await;
    // A send takes a while, so that a customer's texts queue up behind
    // their turn in flight and are waiting when things die.
    graph.set_faults(Faults {
        send_delay: Some(Duration::from_millis(300)),
        ..Faults::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxline.toml");
    std::fs::write(
        &config,
        format!(
            "[service]\nreply = \"echo\"\nworkers = {WORKERS}\n\n\
             [store]\nbackend = \"redis\"\n\n\
             [store.redis]\nurl = \"{}\"\nclaim_idle_ms = {CLAIM_IDLE_MS}\n",
            redis.url()
        ),
    )
    .unwrap();
    let mut webhook = Proc::start(&graph, &config, dir.path(), "webhook");
    let mut one = Proc::start(&graph, &config, dir.path(), "worker-1");
    let mut two = Proc::start(&graph, &config, dir.path(), "worker-2");
    webhook.wait_ready().await;
    one.wait_ready().await;
    two.wait_ready().await;
    // The webhook process runs no turns, so it loads no speech model.
    let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", webhook.port))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ready.contains("model none"), "{ready}");

    let client = client();
    let plan = plan();
    let mut killed_at = None;
    let mut takeover = None;
    let mut in_flight_at_kill = 0;
    for (i, &(customer, seq)) in plan.iter().enumerate() {
        let wamid = format!("wamid.C{customer}S{seq}");
        let payload = text(&wamid, &number(customer), &body(customer, seq));
        deliver_until_acknowledged(&client, webhook.port, &payload).await;
        if i == 100 {
            // The customers whose turns the first worker is running now,
            // and their texts acknowledged so far.
            let held = leases_of(&redis.url(), one.child.id()).await;
            assert!(
                !held.is_empty(),
                "the first worker runs no customer's turns"
            );
            one.kill();
            killed_at = Some(Instant::now());
            in_flight_at_kill = held.len();
            // Per customer, the second text not yet answered: the first
            // may have been in flight (its reply may still land, or be
            // sent again); the second waited behind it, so only another
            // worker can answer it.
            let answered: Vec<String> = graph.sent().into_iter().filter_map(|s| s.text).collect();
            let targets: Vec<String> = held
                .iter()
                .filter_map(|customer| {
                    plan[..=i]
                        .iter()
                        .filter(|&&(c, _)| &number(c) == customer)
                        .map(|&(c, seq)| format!("You wrote: \u{201c}{}\u{201d}", body(c, seq)))
                        .filter(|t| !answered.contains(t))
                        .nth(1)
                })
                .collect();
            assert!(
                !targets.is_empty(),
                "none of the {} customers the worker held had texts waiting",
                held.len()
            );
            takeover = Some(tokio::spawn(taken_over(graph.clone(), targets)));
        }
        if i == 200 {
            // Measured before redis-server goes down, so that the figure is
            // the lease's alone.
            let waited = takeover.take().unwrap().await.unwrap();
            // The lease expires, the claim scan (every half lease) finds
            // the customer, the turn in flight runs again, then the text.
            let limit = CLAIM_IDLE_MS + CLAIM_IDLE_MS / 2 + 2_000;
            eprintln!(
                "cluster: the dead worker's customers' texts all answered {} ms after the kill",
                waited.as_millis()
            );
            assert!(
                waited <= Duration::from_millis(limit),
                "taken over after {waited:?}, over claim_idle_ms + the claim scan + a turn ({limit} ms)"
            );
            redis.kill_and_restart();
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let killed_at = killed_at.unwrap();

    let total = plan.len();
    let deadline = Instant::now() + Duration::from_secs(60);
    let answered = loop {
        let sent = graph.sent();
        let mut first: HashMap<String, usize> = HashMap::new();
        for (i, s) in sent.iter().enumerate() {
            first.entry(s.text.clone().unwrap_or_default()).or_insert(i);
        }
        if first.len() >= total || Instant::now() > deadline {
            break sent;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let finished = Instant::now();

    // Every text answered, in order per customer.
    let mut replies: HashMap<String, Vec<String>> = HashMap::new();
    for s in &answered {
        replies
            .entry(s.to.clone())
            .or_default()
            .push(s.text.clone().unwrap_or_default());
    }
    let mut duplicates = 0;
    for customer in 0..CUSTOMERS {
        let got = replies.remove(&number(customer)).unwrap_or_default();
        let mut unique: Vec<String> = Vec::new();
        for reply in got {
            if unique.contains(&reply) {
                duplicates += 1;
            } else {
                unique.push(reply);
            }
        }
        let expected: Vec<String> = (0..PER_CUSTOMER)
            .map(|seq| format!("You wrote: \u{201c}{}\u{201d}", body(customer, seq)))
            .collect();
        assert_eq!(
            unique, expected,
            "customer {customer}: each answered, in order"
        );
    }
    assert!(replies.is_empty(), "replies to no customer: {replies:?}");
    // A reply is sent twice only when the worker died between Meta
    // accepting it and the store recording it: at most its turns in flight,
    // one per customer it held.
    assert!(
        duplicates <= in_flight_at_kill,
        "{duplicates} duplicate replies, more than the dead worker's {in_flight_at_kill} turns in flight"
    );
    let after_kill = finished.duration_since(killed_at);
    eprintln!(
        "cluster: {total} texts answered, {duplicates} sent twice, last answer {} ms after the kill",
        after_kill.as_millis()
    );
    two.kill();
    webhook.kill();
}

/// The customers whose lease the process `pid` holds.
async fn leases_of(url: &str, pid: u32) -> Vec<String> {
    let client = redis::Client::open(url).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("{voxline}:lease:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    let mut held = Vec::new();
    for key in keys {
        let holder: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if holder.is_some_and(|h| h.contains(&format!("-{pid}-"))) {
            held.push(key.rsplit(':').next().unwrap().to_string());
        }
    }
    held
}

/// How long until every reply in `owed` has been sent, whoever sent it.
async fn taken_over(graph: FakeGraph, owed: Vec<String>) -> Duration {
    eprintln!(
        "cluster: waiting for {} customers to be taken over",
        owed.len()
    );
    let started = Instant::now();
    loop {
        let sent: Vec<String> = graph.sent().into_iter().filter_map(|s| s.text).collect();
        if owed.iter().all(|t| sent.contains(t)) {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "the dead worker's customers' texts were never all answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
