//! Media stage speed on a 10 s WhatsApp-style voice note (Ogg/Opus, 16 kHz
//! input, 24 kbit/s, VOIP, 20 ms frames), cut from the long fixture with
//! ffmpeg when the bench starts.
//!
//! `cargo bench --bench media` reports, side by side:
//! - `decode+resample`: Ogg/Opus to 16 kHz mono (the target is under 10 ms),
//! - `decode` and `resample` alone,
//! - `load`: the whole path, trimming and normalising included,
//! - `ffmpeg`: `ffmpeg -v error -i FILE -ar 16000 -ac 1 -f f32le -` on the
//!   same file, process start-up included, for comparison.
//!
//! Divide a median by 10 for the cost per second of audio.

use std::path::Path;
use std::process::Command;

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use voxline::fixtures::Manifest;
use voxline::media::decode::StreamDecoder;
use voxline::media::resample::StreamResampler;
use voxline::media::{load, MediaConfig, Pcm};

const NOTE_SECONDS: &str = "10";

/// Encodes the first 10 s of the long fixture as a voice note.
fn voice_note(dir: &Path) -> std::path::PathBuf {
    let manifest = Manifest::committed().expect("audio-fixtures/manifest.json");
    let source = manifest.dir.join("long/en_missing_package.ogg");
    let note = dir.join("note-10s.ogg");
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-y", "-i"])
        .arg(&source)
        .args([
            "-t",
            NOTE_SECONDS,
            "-ac",
            "1",
            "-ar",
            "16000",
            "-c:a",
            "libopus",
        ])
        .args(["-b:a", "24k", "-vbr", "on", "-application", "voip"])
        .args(["-frame_duration", "20"])
        .arg(&note)
        .status()
        .expect("ffmpeg is needed to build the benchmark note");
    assert!(
        status.success(),
        "ffmpeg could not build the benchmark note"
    );
    note
}

fn decode(bytes: &[u8], config: &MediaConfig) -> Pcm {
    let mut decoder = StreamDecoder::new(config);
    decoder.push(bytes).unwrap();
    decoder.finish().unwrap()
}

fn resample(pcm: &Pcm) -> Vec<f32> {
    let mut resampler = StreamResampler::new(pcm.sample_rate, pcm.channels).unwrap();
    let mut out = resampler.process(&pcm.samples);
    out.extend(resampler.finish());
    out
}

fn media(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let path = voice_note(dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let config = MediaConfig::default();
    let pcm = decode(&bytes, &config);
    assert!(
        pcm.duration_ms() >= 9_900,
        "note is {} ms",
        pcm.duration_ms()
    );

    let mut group = c.benchmark_group("media/ogg_opus_10s");
    group.bench_function("decode+resample", |b| {
        b.iter(|| resample(&decode(black_box(&bytes), &config)))
    });
    group.bench_function("decode", |b| b.iter(|| decode(black_box(&bytes), &config)));
    group.bench_function("resample 48k to 16k", |b| {
        b.iter(|| resample(black_box(&pcm)))
    });
    group.bench_function("load", |b| {
        b.iter(|| load(black_box(&bytes), &config).unwrap())
    });
    group.sample_size(20);
    group.bench_function("ffmpeg to 16k mono", |b| {
        b.iter(|| {
            let out = Command::new("ffmpeg")
                .args(["-v", "error", "-i"])
                .arg(&path)
                .args(["-ar", "16000", "-ac", "1", "-f", "f32le", "-"])
                .output()
                .unwrap();
            assert!(out.status.success());
            out.stdout
        })
    });
    group.finish();
}

criterion_group!(benches, media);
criterion_main!(benches);
