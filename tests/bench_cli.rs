//! `voxline bench audio-fixtures --json` on a subset, as CI runs it: the
//! binary answers the fixtures through the service in process and prints
//! one JSON object with every field the report promises.

mod support;

use std::path::PathBuf;
use std::process::Command;

use serde_json::Value;

/// A config whose budgets no turn trips on a loaded machine (CI runs other
/// tests beside this one), so every field has values to show.
fn generous_config(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("voxline.toml");
    std::fs::write(
        &path,
        support::generous_budgets_toml() + support::QUICK_VOICE_TOML,
    )
    .unwrap();
    path
}

#[test]
fn bench_json_has_every_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .current_dir(support::crate_dir())
        .env("VOXLINE_MODELS_DIR", support::crate_dir().join("models"))
        .arg("--config")
        .arg(generous_config(dir.path()))
        .args([
            "bench",
            "audio-fixtures",
            "--json",
            "--cold",
            "--rounds",
            "2",
            "--warmup",
            "1",
            "--limit",
            "4",
            // the default router takes every language; English notes only
            "--lang",
            "en",
            "--max-turn-p95-ms",
            "60000",
        ])
        .output()
        .expect("voxline bench runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {}: {stderr}", out.status);
    let report: Value = serde_json::from_str(stdout.trim()).unwrap_or_else(|e| {
        panic!("not one JSON object ({e}): {stdout}");
    });

    assert_eq!(report["fixtures"], 4);
    assert_eq!(report["rounds"], 2);
    assert_eq!(report["turns"], 8);
    assert!(report["model"].as_str().unwrap().contains("tiny.en"));
    for stage in ["ack", "queue", "fetch", "decode", "stt", "dialog", "send"] {
        let s = &report["stages"][stage];
        assert_eq!(s["count"], 8, "{stage}: {s}");
        let (p50, p95, max) = (
            s["p50"].as_f64().unwrap(),
            s["p95"].as_f64().unwrap(),
            s["max"].as_f64().unwrap(),
        );
        assert!(0.0 <= p50 && p50 <= p95 && p95 <= max, "{stage}: {s}");
    }
    for spread in [
        "turn",
        "turn_fast_path",
        "turn_llm",
        "sequential",
        "stt_real_time_factor",
        "reply_bytes",
    ] {
        for field in ["count", "p50", "p95", "max"] {
            assert!(
                report[spread][field].is_number(),
                "{spread}.{field}: {report}"
            );
        }
    }
    let english = &report["by_language"]["en"];
    for spread in [
        "fast_path",
        "llm",
        "fast_path_first_round",
        "llm_first_round",
    ] {
        assert!(english[spread]["count"].is_u64(), "{spread}: {english}");
    }
    let counted =
        english["fast_path"]["count"].as_u64().unwrap() + english["llm"]["count"].as_u64().unwrap();
    assert_eq!(
        counted,
        report["turn"]["count"].as_u64().unwrap(),
        "every answered English turn is a fast-path or an LLM one: {english}"
    );
    assert!(
        english["fast_path_first_round"]["count"].as_u64().unwrap()
            <= english["fast_path"]["count"].as_u64().unwrap()
    );
    let turn = &report["turn"];
    assert!(turn["p50"].as_f64().unwrap() > 0.0, "{turn}");
    let rtf = report["stt_real_time_factor"]["p50"].as_f64().unwrap();
    assert!(rtf > 0.0 && rtf < 5.0, "rtf {rtf}");
    let wer = report["wer"]["en"].as_f64().expect("English WER");
    assert!((0.0..=1.0).contains(&wer), "wer {wer}");
    let acc = &report["intent_accuracy"];
    assert!(acc.is_null() || (0.0..=1.0).contains(&acc.as_f64().unwrap()));
    assert!(report["intent_checked"].is_u64());
    assert!(report["fast_path_share"].as_f64().is_some());
    let replies =
        ["voice_replies", "text_replies", "silent", "failed"].map(|k| report[k].as_u64().unwrap());
    assert_eq!(replies.iter().sum::<u64>(), 8, "{replies:?}");
    assert_eq!(report["overruns"], serde_json::json!({}), "{report}");
    // The speech cache per round: the second round says the same replies
    // again, so every sentence spoken in it is a hit.
    let cache = report["speech_cache"].as_array().expect("speech_cache");
    assert_eq!(cache.len(), 2, "{cache:?}");
    let voiced = report["voice_replies"].as_u64().unwrap();
    if voiced > 0 {
        assert!(cache[1]["hits"].as_u64().unwrap() > 0, "{cache:?}");
        assert_eq!(cache[1]["misses"], 0, "{cache:?}");
    }
    assert_eq!(report["budgets_ms"]["turn"], 60000);
    assert_eq!(report["thresholds"]["max_turn_p95_ms"], 60000.0);
    assert_eq!(report["regressions"], Value::Array(Vec::new()));
    let rows = report["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 8);
    for row in rows {
        assert!(row["file"].as_str().unwrap().ends_with(".ogg"), "{row}");
        assert!(
            row["trace"]["spans"].as_array().unwrap().len() >= 5,
            "{row}"
        );
    }
}

#[test]
fn a_crossed_threshold_fails_the_run() {
    let out = Command::new(env!("CARGO_BIN_EXE_voxline"))
        .current_dir(support::crate_dir())
        .env("VOXLINE_MODELS_DIR", support::crate_dir().join("models"))
        .args([
            "bench",
            "--json",
            "--cold",
            "--rounds",
            "1",
            "--warmup",
            "0",
            "--limit",
            "1",
            "--max-turn-p50-ms",
            "1",
        ])
        .output()
        .expect("voxline bench runs");
    assert!(!out.status.success());
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let regressions = report["regressions"].as_array().unwrap();
    assert_eq!(regressions.len(), 1, "{regressions:?}");
    assert!(
        regressions[0].as_str().unwrap().starts_with("turn p50"),
        "{regressions:?}"
    );
}
