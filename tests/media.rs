//! The media stage against real files: every committed fixture decodes in
//! small chunks to what ffmpeg decodes, the resampler keeps tones and kills
//! aliases, and bad bytes give typed errors, never a panic.
//!
//! ffmpeg must be on the PATH: it is the reference decoder.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use voxline::fixtures::{Form, Manifest};
use voxline::media::decode::StreamDecoder;
use voxline::media::resample::StreamResampler;
use voxline::media::{detect, load, AudioFormat, MediaConfig, MediaError, Pcm, SpeechOutcome};

const CHUNK: usize = 997;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Decodes with ffmpeg to mono f32 at `rate`. Opus goes through ffmpeg's
/// libopus decoder: ffmpeg's own Opus decoder resamples SILK differently
/// from libopus (correlation about 0.99 at a lag of one or two samples on
/// these fixtures), which would hide mistakes in pre-skip or end trimming.
fn ffmpeg_decode(path: &Path, rate: u32, opus: bool) -> Vec<f32> {
    let mut command = Command::new("ffmpeg");
    command.args(["-v", "error"]);
    if opus {
        command.args(["-c:a", "libopus"]);
    }
    let out = command
        .arg("-i")
        .arg(path)
        .args(["-f", "f32le", "-ac", "1", "-ar", &rate.to_string(), "-"])
        .output()
        .expect("ffmpeg is needed for the media tests");
    assert!(out.status.success(), "ffmpeg failed on {}", path.display());
    out.stdout
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// Pushes `bytes` in `chunk`-sized pieces, draining PCM as it goes.
fn decode_in_chunks(bytes: &[u8], chunk: usize, config: &MediaConfig) -> Result<Pcm, MediaError> {
    let mut decoder = StreamDecoder::new(config);
    let mut parts: Vec<Pcm> = Vec::new();
    for piece in bytes.chunks(chunk) {
        decoder.push(piece)?;
        parts.extend(decoder.take_pcm());
    }
    parts.push(decoder.finish()?);
    let mut all = parts[0].clone();
    for part in &parts[1..] {
        assert_eq!(
            (part.sample_rate, part.channels),
            (all.sample_rate, all.channels)
        );
        all.samples.extend_from_slice(&part.samples);
    }
    Ok(all)
}

fn decode_whole(bytes: &[u8]) -> Result<Pcm, MediaError> {
    let mut decoder = StreamDecoder::new(&MediaConfig::default());
    decoder.push(bytes)?;
    decoder.finish()
}

fn mono(pcm: &Pcm) -> Vec<f32> {
    let channels = usize::from(pcm.channels);
    pcm.samples
        .chunks_exact(channels)
        .map(|frame| frame.iter().sum::<f32>() / channels as f32)
        .collect()
}

/// Normalised correlation of `a` against `b` shifted by `lag` samples,
/// visiting every `stride`-th sample.
fn correlation(a: &[f32], b: &[f32], lag: isize, stride: usize) -> f64 {
    let (mut ab, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    let mut i = lag.max(0) as usize;
    while i < a.len() {
        let j = i as isize - lag;
        if j as usize >= b.len() {
            break;
        }
        let (x, y) = (f64::from(a[i]), f64::from(b[j as usize]));
        ab += x * y;
        aa += x * x;
        bb += y * y;
        i += stride;
    }
    if aa == 0.0 || bb == 0.0 {
        return 0.0;
    }
    ab / (aa * bb).sqrt()
}

/// Best (lag, correlation) within ±`max_lag` samples: a coarse search over a
/// subsampled signal, then every lag near the coarse peak.
fn best_alignment(a: &[f32], b: &[f32], max_lag: isize) -> (isize, f64) {
    let coarse = (-max_lag..=max_lag)
        .step_by(4)
        .map(|lag| (lag, correlation(a, b, lag, 4)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap()
        .0;
    (coarse - 6..=coarse + 6)
        .map(|lag| (lag, correlation(a, b, lag, 1)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .unwrap()
}

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 56) as u8
        })
        .collect()
}

fn fixture_bytes(file: &str) -> Vec<u8> {
    let manifest = Manifest::committed().expect("audio-fixtures/manifest.json");
    std::fs::read(manifest.dir.join(file)).expect("fixture file")
}

fn first_fixture_of(extension: &str) -> (std::path::PathBuf, Vec<u8>) {
    let manifest = Manifest::committed().expect("audio-fixtures/manifest.json");
    let fixture = manifest
        .fixtures
        .iter()
        .find(|f| f.file.ends_with(extension))
        .unwrap_or_else(|| panic!("no .{extension} fixture"));
    let path = manifest.path_of(fixture);
    let bytes = std::fs::read(&path).unwrap();
    (path, bytes)
}

fn sine(rate: u32, hz: f32, amplitude: f32, seconds: f32) -> Vec<f32> {
    let n = (rate as f32 * seconds) as usize;
    (0..n)
        .map(|i| amplitude * (2.0 * std::f32::consts::PI * hz * i as f32 / rate as f32).sin())
        .collect()
}

fn rms(samples: &[f32]) -> f64 {
    (samples
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / samples.len() as f64)
        .sqrt()
}

/// A 16-bit PCM WAV file.
fn wav(rate: u32, samples: &[f32]) -> Vec<u8> {
    let data_len = samples.len() as u32 * 2;
    let mut b = Vec::new();
    b.extend_from_slice(b"RIFF");
    b.extend_from_slice(&(36 + data_len).to_le_bytes());
    b.extend_from_slice(b"WAVEfmt ");
    b.extend_from_slice(&16u32.to_le_bytes());
    b.extend_from_slice(&1u16.to_le_bytes()); // PCM
    b.extend_from_slice(&1u16.to_le_bytes()); // mono
    b.extend_from_slice(&rate.to_le_bytes());
    b.extend_from_slice(&(rate * 2).to_le_bytes());
    b.extend_from_slice(&2u16.to_le_bytes());
    b.extend_from_slice(&16u16.to_le_bytes());
    b.extend_from_slice(b"data");
    b.extend_from_slice(&data_len.to_le_bytes());
    for &s in samples {
        b.extend_from_slice(&((s.clamp(-1.0, 1.0) * 32767.0) as i16).to_le_bytes());
    }
    b
}

fn opus_head(channels: u8, pre_skip: u16) -> Vec<u8> {
    let mut head = b"OpusHead".to_vec();
    head.push(1);
    head.push(channels);
    head.extend_from_slice(&pre_skip.to_le_bytes());
    head.extend_from_slice(&16_000u32.to_le_bytes());
    head.extend_from_slice(&0i16.to_le_bytes());
    head.push(0);
    head
}

/// An Ogg/Opus file of 20 ms packets, built with the `ogg` crate's writer,
/// one page per packet with the given granule positions.
fn ogg_opus_with_granules(granules: &[u64]) -> Vec<u8> {
    let mut encoder =
        opus::Encoder::new(48_000, opus::Channels::Mono, opus::Application::Voip).unwrap();
    let tone = sine(48_000, 440.0, 0.3, 0.02);
    let mut writer = PacketWriter::new(Vec::new());
    let serial = 7;
    writer
        .write_packet(opus_head(1, 312), serial, PacketWriteEndInfo::EndPage, 0)
        .unwrap();
    writer
        .write_packet(
            b"OpusTags\0\0\0\0\0\0\0\0".to_vec(),
            serial,
            PacketWriteEndInfo::EndPage,
            0,
        )
        .unwrap();
    for (i, &granule) in granules.iter().enumerate() {
        let packet = encoder.encode_vec_float(&tone, 4000).unwrap();
        let end = if i + 1 == granules.len() {
            PacketWriteEndInfo::EndStream
        } else {
            PacketWriteEndInfo::EndPage
        };
        writer.write_packet(packet, serial, end, granule).unwrap();
    }
    writer.into_inner()
}

/// Runs `f` and asserts it neither panics nor takes long.
fn quickly<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    let result = f();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{what} took {:?}",
        started.elapsed()
    );
    result
}

// ---------------------------------------------------------------------------
// Fixtures against ffmpeg
// ---------------------------------------------------------------------------

#[test]
fn every_fixture_decodes_like_ffmpeg() {
    let manifest = Manifest::committed().expect("audio-fixtures/manifest.json");
    assert!(!manifest.fixtures.is_empty());
    let config = MediaConfig::default();
    let mut failures = Vec::new();
    // Per form: lowest correlation, largest lag, largest length difference.
    let mut worst: Vec<(String, f64, isize, f64)> = Vec::new();
    for fixture in &manifest.fixtures {
        let path = manifest.path_of(fixture);
        let bytes = std::fs::read(&path).unwrap();
        let pcm = match decode_in_chunks(&bytes, CHUNK, &config) {
            Ok(pcm) => pcm,
            Err(e) => {
                failures.push(format!("{}: {e}", fixture.file));
                continue;
            }
        };
        let ours = mono(&pcm);
        let opus = fixture.form == Form::OggOpus;
        let reference = ffmpeg_decode(&path, pcm.sample_rate, opus);
        let max_lag = pcm.sample_rate as isize / 100; // 10 ms
        let (lag, corr) = best_alignment(&ours, &reference, max_lag);
        let length_ratio = ours.len() as f64 / reference.len() as f64;
        // Same decoder library: pre-skip and granule trimming must match to
        // the sample.
        if opus && (lag != 0 || ours.len() != reference.len()) {
            failures.push(format!(
                "{}: lag {lag}, {} samples vs ffmpeg's {}",
                fixture.file,
                ours.len(),
                reference.len()
            ));
        }
        let form = format!("{:?}", fixture.form);
        let entry = match worst.iter_mut().find(|w| w.0 == form) {
            Some(entry) => entry,
            None => {
                worst.push((form, 1.0, 0, 0.0));
                worst.last_mut().unwrap()
            }
        };
        entry.1 = entry.1.min(corr);
        entry.2 = entry.2.max(lag.abs());
        entry.3 = entry.3.max((length_ratio - 1.0).abs());
        if corr < 0.99 || (length_ratio - 1.0).abs() > 0.01 {
            failures.push(format!(
                "{}: correlation {corr:.4} at lag {lag}, {} samples vs ffmpeg's {}",
                fixture.file,
                ours.len(),
                reference.len()
            ));
        }
    }
    for (form, corr, lag, length) in &worst {
        eprintln!(
            "{form}: correlation >= {corr:.5}, |lag| <= {lag}, length within {:.3}%",
            length * 100.0
        );
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Containers and codec settings no fixture uses, made from the long note.
#[test]
fn other_encodings_decode_like_ffmpeg() {
    let five_seconds = ["-t", "5"];
    let cases: [(&str, &str, AudioFormat, &[&str]); 6] = [
        (
            "ADTS AAC",
            "aac",
            AudioFormat::Aac,
            &["-c:a", "aac", "-f", "adts"],
        ),
        (
            "Ogg FLAC",
            "oga",
            AudioFormat::OggFlac,
            &["-c:a", "flac", "-f", "ogg"],
        ),
        (
            "stereo Opus",
            "opus",
            AudioFormat::OggOpus,
            &["-ac", "2", "-c:a", "libopus"],
        ),
        (
            "Opus, mapping family 1",
            "opus",
            AudioFormat::OggOpus,
            &["-ac", "2", "-c:a", "libopus", "-mapping_family", "1"],
        ),
        (
            "MP3 with an ID3v2 tag",
            "mp3",
            AudioFormat::Mp3,
            &[
                "-c:a",
                "libmp3lame",
                "-metadata",
                "title=Voice note",
                "-id3v2_version",
                "3",
            ],
        ),
        (
            "M4A with the index first",
            "m4a",
            AudioFormat::Mp4,
            &["-c:a", "aac", "-movflags", "+faststart"],
        ),
    ];
    let source = Manifest::committed()
        .unwrap()
        .dir
        .join("long/en_missing_package.ogg");
    let dir = tempfile::tempdir().unwrap();
    for (name, extension, format, args) in cases {
        let path = dir.path().join(format!("note.{extension}"));
        let status = Command::new("ffmpeg")
            .args(["-v", "error", "-y", "-i"])
            .arg(&source)
            .args(five_seconds)
            .args(args)
            .arg(&path)
            .status()
            .expect("ffmpeg is needed for the media tests");
        assert!(status.success(), "{name}: ffmpeg failed");
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(detect(&bytes), Ok(format), "{name}");
        let pcm = decode_in_chunks(&bytes, CHUNK, &MediaConfig::default())
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        let ours = mono(&pcm);
        let reference = ffmpeg_decode(&path, pcm.sample_rate, format == AudioFormat::OggOpus);
        let (lag, corr) = best_alignment(&ours, &reference, pcm.sample_rate as isize / 100);
        let length_ratio = ours.len() as f64 / reference.len() as f64;
        assert!(
            corr >= 0.99 && (length_ratio - 1.0).abs() <= 0.01,
            "{name}: correlation {corr:.4} at lag {lag}, {} samples vs ffmpeg's {}",
            ours.len(),
            reference.len()
        );
    }
}

#[test]
fn whole_and_chunked_decodes_are_identical() {
    let manifest = Manifest::committed().expect("audio-fixtures/manifest.json");
    let config = MediaConfig::default();
    // One fixture of every form, plus the long note.
    let mut seen = Vec::new();
    for fixture in &manifest.fixtures {
        if seen.contains(&fixture.form) && !fixture.file.starts_with("long/") {
            continue;
        }
        seen.push(fixture.form);
        let bytes = std::fs::read(manifest.path_of(fixture)).unwrap();
        let whole = decode_whole(&bytes).unwrap();
        for chunk in [1, 997, 4096] {
            if chunk == 1 && bytes.len() > 200_000 {
                continue;
            }
            let chunked = decode_in_chunks(&bytes, chunk, &config).unwrap();
            assert!(
                whole == chunked,
                "{} differs when pushed in {chunk}-byte chunks",
                fixture.file
            );
        }
    }
    assert!(seen.len() >= 6, "fixtures of every form expected");
}

/// The long fixture converted by ffmpeg to another container.
fn long_note_as(extension: &str, codec_args: &[&str]) -> Vec<u8> {
    let source = Manifest::committed()
        .unwrap()
        .dir
        .join("long/en_missing_package.ogg");
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join(format!("note.{extension}"));
    let status = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(&source)
        .args(codec_args)
        .arg(&out)
        .status()
        .expect("ffmpeg is needed for the media tests");
    assert!(status.success());
    std::fs::read(out).unwrap()
}

#[test]
fn pcm_is_available_before_the_download_ends() {
    let inputs = [
        ("Ogg/Opus", fixture_bytes("long/en_missing_package.ogg")),
        (
            "MP3",
            long_note_as("mp3", &["-c:a", "libmp3lame", "-b:a", "32k"]),
        ),
        ("WAV", long_note_as("wav", &[])),
        ("FLAC", long_note_as("flac", &[])),
        ("Ogg/Vorbis", long_note_as("ogg", &["-c:a", "libvorbis"])),
    ];
    for (name, bytes) in inputs {
        let mut decoder = StreamDecoder::new(&MediaConfig::default());
        let half = bytes.len() / 2;
        for chunk in bytes[..half].chunks(CHUNK) {
            decoder.push(chunk).unwrap();
        }
        // symphonia decodes on a worker thread: give it a moment to catch
        // up with the half that has arrived.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut early_ms = 0;
        while early_ms < 15_000 {
            assert!(
                Instant::now() < deadline,
                "{name}: only {early_ms} ms of PCM from the first half"
            );
            match decoder.take_pcm() {
                Some(pcm) => early_ms += pcm.duration_ms(),
                None => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        decoder.push(&bytes[half..]).unwrap();
        let rest = decoder.finish().unwrap();
        assert!(rest.duration_ms() > 1_000);
    }
}

#[test]
fn load_prepares_a_voice_note() {
    let manifest = Manifest::committed().expect("audio-fixtures/manifest.json");
    let fixture = manifest
        .fixtures
        .iter()
        .find(|f| f.file.starts_with("commerce/en/"))
        .expect("an English commerce fixture");
    let bytes = std::fs::read(manifest.path_of(fixture)).unwrap();
    let note = load(&bytes, &MediaConfig::default()).unwrap();
    assert_eq!(note.format, AudioFormat::OggOpus);
    assert_eq!(note.outcome, SpeechOutcome::Speech);
    assert!(note.source_ms.abs_diff(fixture.duration_ms) < 30);
    assert!(note.speech_ms <= note.source_ms && note.speech_ms > 300);
    assert_eq!(note.samples.len() as u64 / 16, note.speech_ms);
    assert!(note.timings.decode > Duration::ZERO);
}

#[test]
fn a_long_note_stops_decoding_at_the_cap() {
    let bytes = fixture_bytes("long/en_missing_package.ogg");
    let config = MediaConfig {
        max_note_ms: 10_000,
        ..MediaConfig::default()
    };
    let note = load(&bytes, &config).unwrap();
    assert_eq!(note.outcome, SpeechOutcome::Truncated { cap_ms: 10_000 });
    assert!(note.speech_ms <= 10_000);
    assert!(note.source_ms <= 11_000, "decoded {} ms", note.source_ms);
}

// ---------------------------------------------------------------------------
// Resampler
// ---------------------------------------------------------------------------

fn resample(rate: u32, input: &[f32], chunks: &[usize]) -> Vec<f32> {
    let mut resampler = StreamResampler::new(rate, 1).unwrap();
    let mut out = Vec::new();
    let mut rest = input;
    for &size in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (now, later) = rest.split_at(size.min(rest.len()));
        out.extend(resampler.process(now));
        rest = later;
    }
    out.extend(resampler.finish());
    out
}

/// Magnitude of the DFT of `x` at `hz`.
fn dft_magnitude(x: &[f32], rate: u32, hz: f32) -> f64 {
    let w = 2.0 * std::f64::consts::PI * f64::from(hz) / f64::from(rate);
    let (mut re, mut im) = (0.0, 0.0);
    for (n, &s) in x.iter().enumerate() {
        re += f64::from(s) * (w * n as f64).cos();
        im -= f64::from(s) * (w * n as f64).sin();
    }
    (re * re + im * im).sqrt() / x.len() as f64
}

#[test]
fn a_1khz_tone_keeps_its_frequency_and_level() {
    for rate in [44_100, 48_000, 22_050, 8_000] {
        let input = sine(rate, 1000.0, 0.5, 2.0);
        let out = resample(rate, &input, &[4096]);
        let expected_len = (input.len() as u64 * 16_000).div_ceil(u64::from(rate));
        assert!(out.len() as u64 + 1 >= expected_len && out.len() as u64 <= expected_len);
        // Skip the edges, where the filter sees the tone start and stop.
        let middle = &out[1600..out.len() - 1600];
        let level_db = 20.0 * (rms(middle) / rms(&input)).log10();
        assert!(
            level_db.abs() < 0.1,
            "{rate} Hz: level changed by {level_db} dB"
        );
        let at = dft_magnitude(middle, 16_000, 1000.0);
        for off in [900.0, 950.0, 1050.0, 1100.0] {
            assert!(
                dft_magnitude(middle, 16_000, off) < at / 10.0,
                "{rate} Hz: peak moved"
            );
        }
        let crossings = middle
            .windows(2)
            .filter(|w| (w[0] < 0.0) != (w[1] < 0.0))
            .count() as f64;
        let expected = 2.0 * 1000.0 * middle.len() as f64 / 16_000.0;
        assert!(
            (crossings - expected).abs() <= 2.0,
            "{rate} Hz: {crossings} crossings"
        );
    }
}

#[test]
fn a_tone_above_8khz_is_removed_not_aliased() {
    let input = sine(44_100, 10_000.0, 0.5, 1.0);
    let out = resample(44_100, &input, &[1000]);
    let attenuation = 20.0 * (rms(&out) / rms(&input)).log10();
    assert!(attenuation < -40.0, "10 kHz only {attenuation:.1} dB down");
    // Its alias would land at 16 - 10 = 6 kHz.
    assert!(dft_magnitude(&out, 16_000, 6_000.0) < 0.005 * 0.5);
}

#[test]
fn chunked_and_one_shot_resampling_agree() {
    let input: Vec<f32> = random_bytes(3, 48_000 * 3)
        .into_iter()
        .map(|b| f32::from(b) / 128.0 - 1.0)
        .collect();
    let one_shot = resample(48_000, &input, &[input.len()]);
    let chunked = resample(48_000, &input, &[1, 7, 480, 1031, 333, 4096]);
    assert_eq!(one_shot.len(), 48_000);
    assert_eq!(one_shot, chunked);
}

#[test]
fn stereo_is_averaged_to_mono() {
    let left = sine(48_000, 1000.0, 0.5, 1.0);
    let interleaved: Vec<f32> = left.iter().flat_map(|&s| [s + 0.25, s - 0.25]).collect();
    let mut resampler = StreamResampler::new(48_000, 2).unwrap();
    let mut out = resampler.process(&interleaved);
    out.extend(resampler.finish());
    let mono = resample(48_000, &left, &[48_000]);
    assert_eq!(out.len(), mono.len());
    let worst = out
        .iter()
        .zip(&mono)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(worst < 1e-5, "{worst}");
}

// ---------------------------------------------------------------------------
// Prepare, through load
// ---------------------------------------------------------------------------

#[test]
fn a_silent_note_is_no_speech() {
    let note = load(&wav(16_000, &vec![0.0; 32_000]), &MediaConfig::default()).unwrap();
    assert_eq!(note.outcome, SpeechOutcome::NoSpeech);
    assert!(note.samples.is_empty());
    assert_eq!(note.source_ms, 2000);
}

#[test]
fn silence_around_speech_is_trimmed_and_the_level_set() {
    let config = MediaConfig::default();
    let audio = [
        vec![0.0; 16_000],
        sine(16_000, 300.0, 0.05, 1.5),
        vec![0.0; 24_000],
    ]
    .concat();
    let note = load(&wav(16_000, &audio), &config).unwrap();
    assert_eq!(note.outcome, SpeechOutcome::Speech);
    assert_eq!(note.source_ms, 4000);
    assert_eq!(note.speech_ms, 1500 + 2 * config.trim_margin_ms);
    let speech = &note.samples[16 * 150 + 320..note.samples.len() - 16 * 150 - 320];
    let level = 20.0 * rms(speech).log10();
    assert!(
        (level - f64::from(config.target_rms_dbfs)).abs() < 0.5,
        "{level} dBFS"
    );
}

#[test]
fn a_note_over_the_cap_is_truncated() {
    let config = MediaConfig {
        max_note_ms: 1000,
        ..MediaConfig::default()
    };
    let note = load(&wav(16_000, &sine(16_000, 300.0, 0.3, 3.0)), &config).unwrap();
    assert_eq!(note.outcome, SpeechOutcome::Truncated { cap_ms: 1000 });
    assert_eq!(note.samples.len(), 16_000);
}

// ---------------------------------------------------------------------------
// Bad input
// ---------------------------------------------------------------------------

#[test]
fn no_bytes_is_empty() {
    assert_eq!(
        load(&[], &MediaConfig::default()).unwrap_err(),
        MediaError::Empty
    );
    let decoder = StreamDecoder::new(&MediaConfig::default());
    assert_eq!(decoder.finish().unwrap_err(), MediaError::Empty);
}

#[test]
fn random_bytes_are_unrecognised() {
    let bytes = random_bytes(42, 1 << 20);
    let err = quickly("random bytes", || load(&bytes, &MediaConfig::default())).unwrap_err();
    assert_eq!(err, MediaError::Unrecognised);
    let err = decode_in_chunks(&bytes, CHUNK, &MediaConfig::default()).unwrap_err();
    assert_eq!(err, MediaError::Unrecognised);
}

#[test]
fn random_bytes_after_an_ogg_magic_are_malformed() {
    let mut bytes = b"OggS".to_vec();
    bytes.extend(random_bytes(7, 100_000));
    let err = quickly("OggS + noise", || load(&bytes, &MediaConfig::default())).unwrap_err();
    assert!(
        matches!(err, MediaError::Malformed { format: "Ogg", .. }),
        "{err:?}"
    );
}

#[test]
fn a_cut_ogg_opus_download_is_truncated() {
    let bytes = fixture_bytes("long/en_missing_package.ogg");
    let cut = &bytes[..bytes.len() * 6 / 10];
    let err = load(cut, &MediaConfig::default()).unwrap_err();
    assert_eq!(err, MediaError::Truncated { format: "Ogg/Opus" });
    let err = decode_in_chunks(cut, CHUNK, &MediaConfig::default()).unwrap_err();
    assert_eq!(err, MediaError::Truncated { format: "Ogg/Opus" });
}

#[test]
fn cut_downloads_of_other_formats_are_truncated() {
    for extension in ["wav", "flac", "mp3", "m4a", "ogg"] {
        let manifest = Manifest::committed().unwrap();
        let fixture = manifest
            .fixtures
            .iter()
            .find(|f| f.file.starts_with("variants/") && f.file.ends_with(extension))
            .unwrap();
        let bytes = std::fs::read(manifest.path_of(fixture)).unwrap();
        let cut = &bytes[..bytes.len() * 6 / 10];
        let err = load(cut, &MediaConfig::default()).unwrap_err();
        assert!(
            matches!(err, MediaError::Truncated { .. }),
            "{}: {err:?}",
            fixture.file
        );
    }
}

#[test]
fn an_ogg_packet_spanning_many_pages_is_refused_early() {
    let mut writer = PacketWriter::new(Vec::new());
    writer
        .write_packet(opus_head(1, 312), 1, PacketWriteEndInfo::EndPage, 0)
        .unwrap();
    writer
        .write_packet(
            b"OpusTags\0\0\0\0\0\0\0\0".to_vec(),
            1,
            PacketWriteEndInfo::EndPage,
            0,
        )
        .unwrap();
    // A 12 MB "audio packet": the writer spreads it over ~190 full pages.
    writer
        .write_packet(vec![0x55; 12 << 20], 1, PacketWriteEndInfo::EndStream, 960)
        .unwrap();
    let bytes = writer.into_inner();
    let err = quickly("huge packet", || load(&bytes, &MediaConfig::default())).unwrap_err();
    assert!(
        matches!(&err, MediaError::Malformed { format: "Ogg/Opus", reason } if reason.contains("longer than")),
        "{err:?}"
    );
}

#[test]
fn a_page_header_claiming_more_than_arrived_is_truncated() {
    let mut writer = PacketWriter::new(Vec::new());
    writer
        .write_packet(opus_head(1, 312), 1, PacketWriteEndInfo::EndPage, 0)
        .unwrap();
    let mut bytes = writer.into_inner();
    // A second page: 255 segments of 255 bytes announced, 10 bytes sent.
    bytes.extend_from_slice(b"OggS\0\0\0\0\0\0\0\0\0\0\x01\0\0\0\x01\0\0\0\0\0\0\0\xff");
    bytes.extend_from_slice(&[255; 255]);
    bytes.extend_from_slice(&[0; 10]);
    let err = load(&bytes, &MediaConfig::default()).unwrap_err();
    assert_eq!(err, MediaError::Truncated { format: "Ogg/Opus" });
}

#[test]
fn granule_positions_are_checked() {
    // 960 samples per packet after a 312-sample pre-skip.
    let good = ogg_opus_with_granules(&[960, 1920, 2880 - 500]);
    let pcm = decode_whole(&good).unwrap();
    assert_eq!(
        pcm.samples.len(),
        2880 - 500 - 312,
        "end trimmed to the granule"
    );

    let backwards = ogg_opus_with_granules(&[960, 1920, 1000]);
    let err = decode_whole(&backwards).unwrap_err();
    assert!(
        matches!(&err, MediaError::Malformed { reason, .. } if reason.contains("backwards")),
        "{err:?}"
    );

    let inside_pre_skip = ogg_opus_with_granules(&[100]);
    assert!(matches!(
        decode_whole(&inside_pre_skip).unwrap_err(),
        MediaError::Malformed { .. }
    ));

    let negative = ogg_opus_with_granules(&[960, u64::MAX - 5]);
    assert!(matches!(
        decode_whole(&negative).unwrap_err(),
        MediaError::Malformed { .. }
    ));
}

#[test]
fn a_wav_claiming_four_billion_samples_is_refused_without_allocating_them() {
    let mut bytes = wav(16_000, &sine(16_000, 300.0, 0.3, 0.5));
    bytes[40..44].copy_from_slice(&u32::MAX.to_le_bytes()); // data size
    let err = quickly("huge WAV", || load(&bytes, &MediaConfig::default())).unwrap_err();
    assert!(
        matches!(err, MediaError::Malformed { format: "WAV", .. }),
        "{err:?}"
    );

    // Streaming recorders write 0xFFFFFFFF for both sizes: no length known.
    bytes[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    let note = load(&bytes, &MediaConfig::default()).unwrap();
    assert_eq!(note.source_ms, 500);
}

#[test]
fn the_bytes_decide_the_format_not_the_name() {
    let (path, bytes) = first_fixture_of("mp3");
    let renamed = tempfile::Builder::new().suffix(".ogg").tempfile().unwrap();
    std::fs::copy(&path, renamed.path()).unwrap();
    let bytes_again = std::fs::read(renamed.path()).unwrap();
    assert_eq!(bytes, bytes_again);
    assert_eq!(detect(&bytes_again), Ok(AudioFormat::Mp3));
    assert_eq!(
        load(&bytes_again, &MediaConfig::default()).unwrap().format,
        AudioFormat::Mp3
    );
}

#[test]
fn amr_is_refused_by_name() {
    let mut bytes = b"#!AMR\n".to_vec();
    for _ in 0..50 {
        bytes.push(0x3C); // 12.2 kbit/s frame header
        bytes.extend_from_slice(&[0; 31]);
    }
    let err = load(&bytes, &MediaConfig::default()).unwrap_err();
    assert_eq!(err, MediaError::UnsupportedFormat { format: "AMR" });
    assert_eq!(err.to_string(), "unsupported format: AMR");

    let committed =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("audio-fixtures/unsupported/note.amr");
    if let Ok(bytes) = std::fs::read(committed) {
        assert_eq!(
            load(&bytes, &MediaConfig::default())
                .unwrap_err()
                .to_string(),
            "unsupported format: AMR"
        );
    }
}

#[test]
fn too_many_bytes_are_refused_as_they_arrive() {
    let config = MediaConfig {
        max_input_bytes: 10_000,
        ..MediaConfig::default()
    };
    let bytes = fixture_bytes("long/en_missing_package.ogg");
    let mut decoder = StreamDecoder::new(&config);
    let err = bytes
        .chunks(CHUNK)
        .map(|chunk| decoder.push(chunk))
        .find_map(Result::err)
        .unwrap();
    assert_eq!(err, MediaError::TooLarge { limit: 10_000 });
    assert_eq!(decoder.finish().unwrap_err(), err);
}

#[test]
fn damaged_files_never_panic() {
    let manifest = Manifest::committed().unwrap();
    let mut forms_seen = Vec::new();
    let mut seed = 1;
    for fixture in &manifest.fixtures {
        if forms_seen.contains(&fixture.form) {
            continue;
        }
        forms_seen.push(fixture.form);
        let original = std::fs::read(manifest.path_of(fixture)).unwrap();
        for _ in 0..40 {
            seed += 1;
            let noise = random_bytes(seed, 64);
            let mut bytes = original.clone();
            // Overwrite a few bytes somewhere, then maybe cut the end.
            for k in 0..8 {
                let at = (usize::from(noise[k * 2]) << 8 | usize::from(noise[k * 2 + 1]))
                    * bytes.len()
                    / 65_536;
                bytes[at] = noise[32 + k];
            }
            if noise[60] & 1 == 1 {
                bytes.truncate(bytes.len() * usize::from(noise[61]) / 256);
            }
            let result = quickly(&fixture.file, || {
                std::panic::catch_unwind(|| load(&bytes, &MediaConfig::default()))
            });
            assert!(result.is_ok(), "{} panicked (seed {seed})", fixture.file);
        }
    }
}

/// The fuzzers' findings (`fuzz/README.md`): float WAVs with NaN or huge
/// samples panicked the resampler; MP4 tables, an MP4 sample size and a FLAC
/// comment declared gigabytes that symphonia tried to allocate, which aborts
/// the process. Each is now an error, whole and in small chunks; none
/// panics. (An abort would end this test binary, so reaching the asserts is
/// itself part of the check.)
#[test]
fn the_fuzzers_findings_are_errors_or_notes() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/artifacts/decode");
    let mut checked = 0;
    for entry in std::fs::read_dir(&dir).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let bytes = std::fs::read(entry.path()).unwrap();
        let config = MediaConfig::default();
        let whole = std::panic::catch_unwind(|| load(&bytes, &config));
        let chunked = std::panic::catch_unwind(|| decode_in_chunks(&bytes, 7, &config));
        assert!(whole.is_ok() && chunked.is_ok(), "{name} panicked");
        if name.ends_with(".m4a") || name.ends_with(".flac") {
            let error = whole.unwrap().unwrap_err();
            assert!(
                matches!(error, MediaError::Malformed { .. }),
                "{name}: {error:?}"
            );
            assert!(chunked.unwrap().is_err(), "{name} decoded in chunks");
        } else if let Ok(note) = whole.unwrap() {
            // The float WAVs: whatever they hold comes out finite.
            assert!(note.samples.iter().all(|s| s.is_finite()), "{name}");
        }
        checked += 1;
    }
    assert_eq!(checked, 7, "reproducers in {}", dir.display());
}
