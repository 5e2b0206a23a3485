//! Speech-to-text speed on the committed fixtures: short notes (1 to 5 s)
//! and a long one (over 30 s), tiny.en with f16 and Q8_0 weights, with the
//! fitted encoder window and with the full 30 s window.
//!
//! The prepared 16 kHz PCM of each clip is also written to
//! `target/bench-pcm/` so that `benches/compare.sh` can feed faster-whisper
//! exactly the same samples.

use std::path::PathBuf;

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode};
use voxline::fixtures::{Condition, Fixture, Form, Manifest};
use voxline::media::{self, MediaConfig};
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig, TranscribeOptions};

/// The clips every STT benchmark (and the faster-whisper comparison) uses.
fn clips(m: &Manifest) -> Vec<(String, Vec<f32>)> {
    let pick = |f: &&Fixture| {
        f.language == "en"
            && f.form == Form::OggOpus
            && f.condition != Condition::Noisy
            && (f.condition == Condition::Long || (1000..=5000).contains(&f.duration_ms))
    };
    let mut short: Vec<&Fixture> = m.fixtures.iter().filter(pick).collect();
    short.sort_by_key(|f| (f.condition == Condition::Long, f.file.clone()));
    let long = short.iter().position(|f| f.condition == Condition::Long);
    // five short notes spread over the range, and the long one
    let mut chosen: Vec<&Fixture> = short
        .iter()
        .take(long.unwrap_or(short.len()))
        .step_by(3)
        .take(5)
        .copied()
        .collect();
    if let Some(i) = long {
        chosen.push(short[i]);
    }
    let out = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/bench-pcm");
    std::fs::create_dir_all(&out).expect("target/bench-pcm");
    chosen
        .into_iter()
        .map(|f| {
            let bytes = std::fs::read(m.path_of(f)).expect("fixture");
            let note = media::load(&bytes, &MediaConfig::default()).expect("decodes");
            let name = f
                .file
                .replace('/', "_")
                .trim_end_matches(".ogg")
                .to_string();
            let raw: Vec<u8> = note.samples.iter().flat_map(|s| s.to_le_bytes()).collect();
            std::fs::write(out.join(format!("{name}.f32")), raw).expect("write pcm");
            let meta = serde_json::json!({ "file": m.path_of(f), "text": f.text });
            std::fs::write(out.join(format!("{name}.json")), meta.to_string()).expect("write meta");
            (name, note.samples)
        })
        .collect()
}

fn model(name: &str, fit_window: bool) -> WhisperStt {
    let config = SttConfig {
        model: name.into(),
        models_dir: Some(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models")),
        threads: 2,
        fit_window,
        ..SttConfig::default()
    };
    WhisperStt::load(&config).expect("model (run ./x setup)")
}

fn stt(c: &mut Criterion) {
    let m = Manifest::committed().expect("manifest");
    let clips = clips(&m);
    let variants = [
        ("f16-fitted", model("tiny.en", true)),
        ("q8_0-fitted", model("tiny.en-q8_0", true)),
        ("f16-full", model("tiny.en", false)),
    ];
    let mut group = c.benchmark_group("stt_tiny_en");
    // a transcription takes 0.1 to 2 s: ten equal samples of one call each
    group.sample_size(10);
    group.sampling_mode(SamplingMode::Flat);
    group.warm_up_time(Duration::from_secs(1));
    group.measurement_time(Duration::from_secs(3));
    for (name, samples) in &clips {
        for (variant, stt) in &variants {
            let long = samples.len() > 16_000 * 30;
            if long && *variant == "q8_0-fitted" {
                continue;
            }
            group.bench_with_input(BenchmarkId::new(*variant, name), samples, |b, s| {
                b.iter(|| {
                    stt.transcribe(s, &TranscribeOptions::default())
                        .expect("stt")
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, stt);
criterion_main!(benches);
