//! `voxline serve` processes a test starts, each on its own loopback port:
//! the webhook and worker processes of a deployment on a shared store.

use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use super::fake_graph::FakeGraph;
use super::{free_port, serve_command};

/// A `voxline serve --role webhook|worker` process, killed when dropped.
pub struct Proc {
    pub child: Child,
    pub port: u16,
    what: &'static str,
}

impl Proc {
    pub fn start(graph: &FakeGraph, config: &Path, dir: &Path, what: &'static str) -> Self {
        let port = free_port();
        let data = dir.join(what);
        std::fs::create_dir_all(&data).unwrap();
        let log = dir.join(format!("{what}.log"));
        let role = if what == "webhook" {
            "webhook"
        } else {
            "worker"
        };
        let child = serve_command(graph, &data, config, &log, port)
            .args(["--role", role])
            .spawn()
            .unwrap();
        Self { child, port, what }
    }

    pub async fn wait_ready(&mut self) {
        let client = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let url = format!("http://127.0.0.1:{}/readyz", self.port);
            if let Ok(r) = client.get(url).send().await {
                if r.status() == 200 {
                    return;
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("{} exited with {status} before it was ready", self.what);
            }
            assert!(Instant::now() < deadline, "{} not ready", self.what);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, as an operator's stop: the process drains and exits.
    /// Returns whether it exited cleanly within `within`.
    pub fn terminate(&mut self, within: Duration) -> bool {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}
