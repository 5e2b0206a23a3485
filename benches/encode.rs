//! Ogg/Opus encoding speed on one core: 10 s of speech-like audio per
//! iteration, at the rates the TTS providers produce. Target: at least 200x
//! real time.
//!
//! `cargo bench --bench encode` runs criterion (wall clock) and then prints
//! the speed-up over real time measured in CPU time of the encoding thread,
//! which other processes on a shared machine do not inflate, for each rate
//! and for each libopus complexity.

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use voxline::encode::{encode, EncodeConfig};

const SECONDS: u32 = 10;

fn speechlike(rate: u32) -> Vec<f32> {
    let n = (rate * SECONDS) as usize;
    let mut phase = 0.0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let f0 = 160.0 + 50.0 * (t * 1.3 * std::f32::consts::TAU).sin();
            phase += f0 / rate as f32;
            let voiced: f32 = (1..=12)
                .map(|h| (phase * h as f32 * std::f32::consts::TAU).sin() / h as f32)
                .sum();
            0.25 * voiced * (0.55 + 0.45 * (t * 4.0 * std::f32::consts::TAU).sin())
        })
        .collect()
}

/// CPU time of the calling thread (user + system), from procfs, in clock
/// ticks of 10 ms; callers measure runs of a second or more.
fn thread_cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // Fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: u64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<u64>().ok())
        .sum();
    Duration::from_millis(ticks * 10)
}

/// Real-time factor in CPU time: seconds of audio per second of CPU.
fn speed_up(pcm: &[f32], rate: u32, config: &EncodeConfig) -> f64 {
    let rounds = 10;
    let started = thread_cpu_time();
    for _ in 0..rounds {
        std::hint::black_box(encode(pcm, rate, config).unwrap());
    }
    let cpu = (thread_cpu_time() - started).as_secs_f64().max(0.01);
    f64::from(SECONDS * rounds) / cpu
}

fn bench_encode(c: &mut Criterion) {
    let config = EncodeConfig::default();
    let mut group = c.benchmark_group("encode_10s");
    group.sample_size(20);
    group.throughput(Throughput::Elements(u64::from(SECONDS)));
    let rates = [16_000, 24_000, 48_000, 22_050];
    for rate in rates {
        let pcm = speechlike(rate);
        group.bench_with_input(BenchmarkId::from_parameter(rate), &pcm, |b, pcm| {
            b.iter(|| encode(pcm, rate, &config).unwrap())
        });
    }
    group.finish();

    for rate in rates {
        let x = speed_up(&speechlike(rate), rate, &config);
        println!("encode {rate} Hz, default settings: {x:.0}x real time (CPU time)");
    }
    let pcm = speechlike(24_000);
    for max_bandwidth_hz in [8_000, 12_000, 20_000] {
        let config = EncodeConfig {
            max_bandwidth_hz,
            ..EncodeConfig::default()
        };
        let x = speed_up(&pcm, 24_000, &config);
        println!("encode 24000 Hz, bandwidth {max_bandwidth_hz} Hz: {x:.0}x real time (CPU time)");
    }
    for complexity in [0, 3, 5, 7, 9, 10] {
        let config = EncodeConfig {
            complexity,
            ..EncodeConfig::default()
        };
        let x = speed_up(&pcm, 24_000, &config);
        println!("encode 24000 Hz, complexity {complexity}: {x:.0}x real time (CPU time)");
    }
}

criterion_group!(benches, bench_encode);
criterion_main!(benches);
