//! Several processes on Redis, measured: the figures of the README's
//! "Running on several machines".
//!
//! 1. **Webhook acknowledgement under load.** One `voxline serve --role
//!    webhook` on a redis-server started here, signed text webhooks sent at
//!    `RATE` a second for `SECONDS`, each on its own schedule (an open
//!    loop: a slow answer does not slow the sending); the acknowledgement
//!    time of each, with `appendfsync always` and then `everysec`.
//! 2. **Turn throughput, one worker process against two.** `NOTES` voice
//!    notes from as many customers are acknowledged first; then one `--role
//!    worker` pinned to core 0 (`taskset`), or two pinned to cores 0 and 1,
//!    transcribe and answer them (`[stt] threads = 1`); notes per second
//!    from the first answer to the last, and the ratio.
//!
//! `cargo bench --bench cluster`; `RATE` (500), `SECONDS` (10), `NOTES`
//! (40), `WORKERS` (turns in flight per worker process in part 2, 16 as the
//! service's default),
//! `PART` (`ack`, `throughput` or both).

#[path = "../tests/support/mod.rs"]
mod support;

#[path = "../tests/support/redis_server.rs"]
mod redis_server;

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use redis_server::RedisServer;
use support::fake_graph::FakeGraph;
use support::*;

fn var<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `voxline serve --role ROLE` on its own port, pinned to `core` when
/// given; returns once `/readyz` answers.
async fn serve(
    graph: &FakeGraph,
    dir: &Path,
    config: &Path,
    role: &str,
    name: &str,
    core: Option<usize>,
) -> (Proc, u16) {
    let port = free_port();
    let data = dir.join(name);
    std::fs::create_dir_all(&data).unwrap();
    let log = dir.join(format!("{name}.log"));
    let command = serve_command(graph, &data, config, &log, port);
    let mut command = match core {
        Some(core) => {
            let mut pinned = std::process::Command::new("taskset");
            pinned
                .arg("-c")
                .arg(core.to_string())
                .arg(command.get_program());
            pinned.args(command.get_args());
            for (k, v) in command.get_envs() {
                if let Some(v) = v {
                    pinned.env(k, v);
                }
            }
            pinned
                .stdin(std::process::Stdio::null())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(&log).unwrap());
            pinned
        }
        None => command,
    };
    let child = Proc(command.args(["--role", role]).spawn().unwrap());
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let url = format!("http://127.0.0.1:{port}/readyz");
        if let Ok(r) = client.get(url).send().await {
            if r.status() == 200 {
                return (child, port);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name} not ready; see {}",
            log.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `service` goes into `[service]`, `extra` after the store's sections.
fn write_config(path: &Path, redis: &RedisServer, service: &str, extra: &str) {
    std::fs::write(
        path,
        format!(
            "[service]\nreply = \"echo\"\nstt_concurrency = 1\n{service}\n\
             [store]\nbackend = \"redis\"\n\n\
             [store.redis]\nurl = \"{}\"\n\n{extra}",
            redis.url()
        ),
    )
    .unwrap();
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn acknowledgements(fsync: &'static str, rate: usize, seconds: usize) {
    let redis = RedisServer::start_with_fsync(fsync);
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxline.toml");
    write_config(&config, &redis, "", "");
    let (_webhook, port) = serve(&graph, dir.path(), &config, "webhook", "webhook", None).await;
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()
        .unwrap();
    let total = rate * seconds;
    let started = Instant::now();
    let mut sends = Vec::with_capacity(total);
    for i in 0..total {
        let at = started + Duration::from_secs_f64(i as f64 / rate as f64);
        let client = client.clone();
        let payload = text(
            &format!("wamid.L{i}"),
            &format!("3460{:07}", i % 500),
            "is my order on its way?",
        );
        sends.push(tokio::spawn(async move {
            tokio::time::sleep_until(at.into()).await;
            let sent = Instant::now();
            let status = deliver(&client, addr, &payload).await;
            (status, sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut times = Vec::with_capacity(total);
    let mut failed = 0;
    for send in sends {
        let (status, ms) = send.await.unwrap();
        if status == 200 {
            times.push(ms);
        } else {
            failed += 1;
        }
    }
    let took = started.elapsed().as_secs_f64();
    times.sort_by(f64::total_cmp);
    println!(
        "ack, appendfsync {fsync}: {total} webhooks in {took:.1} s ({:.0}/s), not acknowledged {failed}; \
         p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        total as f64 / took,
        percentile(&times, 0.5),
        percentile(&times, 0.99),
        times.last().copied().unwrap_or(0.0)
    );
}

/// Notes per second answered by `cores.len()` worker processes, pinned.
async fn throughput(notes: usize, cores: &[usize]) -> f64 {
    let redis = RedisServer::start();
    let graph = FakeGraph::start().await;
    let fixtures = [
        "commerce/en/greeting_hello.ogg",
        "commerce/en/cart_view.ogg",
        "commerce/en/faq_opening_hours.ogg",
        "commerce/en/order_status_1842.ogg",
    ];
    for (i, name) in fixtures.iter().enumerate() {
        graph.add_media(&format!("media-{i}"), fixture(name), "audio/ogg");
    }
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("voxline.toml");
    // Turns in flight per process (`[service] workers`): each holds its
    // customer's lease while it waits for the one transcription slot.
    let workers = var("WORKERS", 16);
    write_config(
        &config,
        &redis,
        &format!("workers = {workers}\n"),
        "[stt]\nthreads = 1\n",
    );
    // Acknowledged first, by a webhook process that then goes.
    {
        let (_webhook, port) = serve(&graph, dir.path(), &config, "webhook", "webhook", None).await;
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let client = client();
        for i in 0..notes {
            let payload = voice_note(
                &format!("wamid.T{i}"),
                &format!("3460{i:07}"),
                &format!("media-{}", i % fixtures.len()),
            );
            assert_eq!(deliver(&client, addr, &payload).await, 200);
        }
    }
    let names: Vec<String> = (0..cores.len()).map(|n| format!("worker-{n}")).collect();
    let workers = cores
        .iter()
        .zip(&names)
        .map(|(&core, name)| serve(&graph, dir.path(), &config, "worker", name, Some(core)));
    let _workers = futures::future::join_all(workers).await;
    let deadline = Instant::now() + Duration::from_secs(900);
    let mut first = None;
    loop {
        let sent = graph.sent().len();
        if sent > 0 && first.is_none() {
            first = Some((Instant::now(), sent));
        }
        if sent >= notes {
            break;
        }
        assert!(Instant::now() < deadline, "{sent} of {notes} answered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (first_at, first_count) = first.unwrap();
    let span = first_at.elapsed().as_secs_f64();
    let rate = (notes - first_count) as f64 / span;
    println!(
        "throughput, {} worker process(es) on core(s) {cores:?}: {notes} notes, {:.2} notes/s \
         ({} answered over {span:.1} s after the first)",
        cores.len(),
        rate,
        notes - first_count
    );
    rate
}

fn main() {
    let part: String = var("PART", String::new());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        if part.is_empty() || part == "ack" {
            let (rate, seconds) = (var("RATE", 500), var("SECONDS", 10));
            acknowledgements("always", rate, seconds).await;
            acknowledgements("everysec", rate, seconds).await;
        }
        if part.is_empty() || part == "throughput" {
            let notes = var("NOTES", 40);
            let one = throughput(notes, &[0]).await;
            let two = throughput(notes, &[0, 1]).await;
            println!("throughput, two processes / one: {:.2}x", two / one);
        }
    });
}
