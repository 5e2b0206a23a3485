//! Budgets reload while turns are in flight: the config file changes
//! (valid, then broken, then valid again) while 60 messages from 12
//! customers are being answered. Every message is answered exactly once,
//! the broken file is rejected with its reason and the budgets in force
//! stay, and the last valid file wins.

mod support;

use std::collections::HashMap;
use std::time::Duration;

use support::fake_graph::FakeGraph;
use support::*;
use voxline::pipeline::budget::BudgetStage;
use voxline::store::TurnState;

fn budgets_file(turn_ms: u64, stt_ms: u64) -> String {
    format!(
        "[budgets]\nturn = {{ ms = {turn_ms}, action = \"hold\" }}\nstt = {{ ms = {stt_ms}, action = \"ask_for_text\" }}\nack = {{ ms = 60000, action = \"reject\" }}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_change_under_load_and_no_turn_is_lost_or_doubled() {
    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config = config_for(&graph, dir.path());
    let file = dir.path().join("voxline.toml");
    std::fs::write(&file, budgets_file(60_000, 60_000)).unwrap();
    let service = start(&config, FixedStt::new("unused")).await;
    service.watch_budgets(file.clone());

    let client = client();
    let mut ids = Vec::new();
    for i in 0..60 {
        let from = format!("1555000{:04}", 8000 + i % 12);
        let id = format!("wamid.RELOAD{i}");
        let body = text(&id, &from, "hello");
        assert_eq!(deliver(&client, service.addr(), &body).await, 200);
        ids.push((id, from));
        match i {
            15 => std::fs::write(&file, budgets_file(50_000, 40_000)).unwrap(),
            // ms = 0 is out of range: rejected, the budgets above stay.
            30 => std::fs::write(&file, budgets_file(0, 40_000)).unwrap(),
            45 => std::fs::write(&file, budgets_file(45_000, 30_000)).unwrap(),
            _ => {}
        }
        // Spread over about 3 s, so the 1 s file checks land in between.
        tokio::time::sleep(Duration::from_millis(50)).await;
        if i == 31 {
            // Let the broken file be seen before it is replaced.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            let status = service.budgets().status();
            assert!(status.rejected >= 1, "{status:?}");
            assert!(
                status
                    .last_error
                    .as_deref()
                    .unwrap_or("")
                    .contains("out of range"),
                "{status:?}"
            );
            assert_eq!(
                service.budgets().snapshot().get(BudgetStage::Turn).ms,
                50_000,
                "the broken file left the budgets in force"
            );
        }
    }
    for (id, _) in &ids {
        let turn = wait_final(service.store(), id).await;
        assert_eq!(turn.state, TurnState::Replied, "{id}");
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let in_force = service.budgets().snapshot();
    let status = service.budgets().status();
    service.stop().await.unwrap();

    let mut per_customer: HashMap<String, usize> = HashMap::new();
    for s in graph.sent() {
        *per_customer.entry(s.to).or_default() += 1;
    }
    assert_eq!(per_customer.len(), 12);
    assert!(per_customer.values().all(|n| *n == 5), "{per_customer:?}");
    assert_eq!(in_force.get(BudgetStage::Turn).ms, 45_000);
    assert_eq!(in_force.get(BudgetStage::Stt).ms, 30_000);
    assert!(status.applied >= 2, "{status:?}");
}

/// `voxline serve` reloads its budgets on SIGHUP, also when the file's
/// size and modification time do not give the change away, and keeps
/// them when the file is broken.
#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_budgets_of_the_running_binary() {
    use std::process::{Command, Stdio};

    let graph = FakeGraph::start().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("voxline.toml");
    // Same length before and after: "hold" and "hold", 11111 and 22222.
    std::fs::write(
        &file,
        "[budgets]\nturn = { ms = 11111, action = \"hold\" }\n",
    )
    .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_voxline"));
    cmd.arg("--config")
        .arg(&file)
        .arg("serve")
        .env("VOXLINE_MODELS_DIR", crate_dir().join("models"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap());
    for (k, v) in env_for(&graph, &dir.path().join("data")) {
        cmd.env(k, v);
    }
    cmd.env("VOXLINE_ADDR", format!("127.0.0.1:{port}"));
    // The console needs the token on loopback too.
    cmd.env("VOXLINE_OPERATOR_TOKEN", "reload-test-token");
    let mut child = cmd.spawn().unwrap();
    let c = client();
    let turn_ms = || {
        let c = c.clone();
        async move {
            let v: serde_json::Value = c
                .get(format!("http://127.0.0.1:{port}/console/api/budgets"))
                .bearer_auth("reload-test-token")
                .send()
                .await
                .ok()?
                .json()
                .await
                .ok()?;
            let stages = v["stages"].as_array()?.clone();
            let turn = stages.iter().find(|s| s["stage"] == "turn")?;
            Some((turn["ms"].as_u64()?, v["reload"].clone()))
        }
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while turn_ms().await.is_none() {
        assert!(
            std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none(),
            "serve did not come up: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(turn_ms().await.unwrap().0, 11_111);

    // Rewrite with the same size and put the old modification time back:
    // only the signal can tell the service.
    let rewrite = |text: &str| {
        let before = std::fs::metadata(&file).unwrap().modified().unwrap();
        std::fs::write(&file, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(before)
            .unwrap();
    };
    let hup = || {
        assert!(Command::new("kill")
            .args(["-HUP", &child.id().to_string()])
            .status()
            .unwrap()
            .success());
    };
    rewrite("[budgets]\nturn = { ms = 22222, action = \"hold\" }\n");
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(
        turn_ms().await.unwrap().0,
        11_111,
        "changed without a signal"
    );
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while turn_ms().await.unwrap().0 != 22_222 {
        assert!(
            std::time::Instant::now() < deadline,
            "SIGHUP did not reload"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // A broken file: rejected with its reason, the budgets stay.
    rewrite("[budgets]\nturn = { ms = 33333, action = \"nope\" }\n");
    hup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let reload = loop {
        let (ms, reload) = turn_ms().await.unwrap();
        assert_eq!(ms, 22_222);
        if reload["rejected"].as_u64() == Some(1) {
            break reload;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no rejection: {reload}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        reload["last_error"].as_str().unwrap_or("").contains("nope"),
        "{reload}"
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "SIGHUP killed the service"
    );
    let _ = child.kill();
    let _ = child.wait();
}
