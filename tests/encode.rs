//! Voice notes from the encoder, checked by other tools: opusinfo and
//! ffprobe must accept them without a warning, and the project's own decoder
//! must give back the speech that went in.

use std::process::Command;

use voxline::encode::{encode, EncodeConfig, VoiceNote, VoiceNoteEncoder};
use voxline::media::decode::StreamDecoder;
use voxline::media::{self, MediaConfig};

/// Centre pitch of the test voice. The VOIP application high-passes its
/// input (below about 100 Hz), which shifts the phase of a low fundamental:
/// inaudible, but it lowers waveform correlation, so the test voice is a
/// higher one.
const F0: f32 = 260.0;

/// Speech-like test signal: a voiced source with a gliding pitch, shaped by
/// a syllable-rate envelope.
fn speechlike(rate: u32, ms: u64) -> Vec<f32> {
    let n = (u64::from(rate) * ms / 1000) as usize;
    let mut phase = 0.0f32;
    (0..n)
        .map(|i| {
            let t = i as f32 / rate as f32;
            let f0 = F0 + 40.0 * (t * 1.3 * std::f32::consts::TAU).sin();
            phase += f0 / rate as f32;
            let voiced: f32 = (1..=12)
                .map(|h| {
                    let h = h as f32;
                    (phase * h * std::f32::consts::TAU).sin() / h
                })
                .sum();
            let envelope = 0.55 + 0.45 * (t * 4.0 * std::f32::consts::TAU).sin();
            0.25 * voiced * envelope
        })
        .collect()
}

fn encode_streaming(samples: &[f32], rate: u32) -> VoiceNote {
    let mut encoder = VoiceNoteEncoder::new(rate, &EncodeConfig::default()).unwrap();
    let mut bytes = Vec::new();
    // Chunks of 30 ms, the size a TTS provider typically streams.
    for chunk in samples.chunks(rate as usize * 3 / 100) {
        bytes.extend(encoder.push(chunk).unwrap());
    }
    let (tail, info) = encoder.finish().unwrap();
    bytes.extend(tail);
    VoiceNote { bytes, info }
}

fn write_temp(note: &VoiceNote) -> tempfile::NamedTempFile {
    let file = tempfile::Builder::new().suffix(".ogg").tempfile().unwrap();
    std::fs::write(file.path(), &note.bytes).unwrap();
    file
}

/// Pearson correlation of the best alignment within ±`max_lag` samples.
fn best_correlation(a: &[f32], b: &[f32], max_lag: usize) -> (f64, isize) {
    let mut best = (f64::MIN, 0);
    for lag in -(max_lag as isize)..=max_lag as isize {
        let (x, y) = if lag >= 0 {
            (&a[lag as usize..], b)
        } else {
            (a, &b[(-lag) as usize..])
        };
        let n = x.len().min(y.len());
        let (x, y) = (&x[..n], &y[..n]);
        let mean = |v: &[f32]| v.iter().map(|&s| f64::from(s)).sum::<f64>() / n as f64;
        let (mx, my) = (mean(x), mean(y));
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (&p, &q) in x.iter().zip(y) {
            let (p, q) = (f64::from(p) - mx, f64::from(q) - my);
            sxy += p * q;
            sxx += p * p;
            syy += q * q;
        }
        let r = sxy / (sxx * syy).sqrt();
        if r > best.0 {
            best = (r, lag);
        }
    }
    best
}

#[test]
fn opusinfo_accepts_the_note_without_warnings() {
    for rate in [16_000, 24_000, 48_000, 22_050] {
        let note = encode_streaming(&speechlike(rate, 3_210), rate);
        let file = write_temp(&note);
        let out = Command::new("opusinfo").arg(file.path()).output().unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{rate} Hz: {text}");
        let lower = text.to_lowercase();
        assert!(
            !lower.contains("warning") && !lower.contains("error"),
            "{rate} Hz: {text}"
        );
        assert!(text.contains("Pre-skip: 312"), "{text}");
        // opusinfo rounds 3.210 s down to 3.209 s.
        assert!(
            text.contains("Playback length: 0m:03.2"),
            "{rate} Hz: {text}"
        );
    }
}

#[test]
fn ffprobe_accepts_the_note_without_warnings() {
    let note = encode_streaming(&speechlike(24_000, 2_500), 24_000);
    let file = write_temp(&note);
    let out = Command::new("ffprobe")
        .args(["-v", "warning", "-show_entries"])
        .arg("stream=codec_name,channels,sample_rate,duration:format=format_name")
        .args(["-of", "default=noprint_wrappers=1"])
        .arg(file.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.trim().is_empty(), "ffprobe complained: {stderr}");
    assert!(stdout.contains("codec_name=opus"), "{stdout}");
    assert!(stdout.contains("channels=1"), "{stdout}");
    assert!(stdout.contains("format_name=ogg"), "{stdout}");
    assert!(stdout.contains("duration=2.5"), "{stdout}");

    // A full decode must be clean too, not just the headers.
    let out = Command::new("ffmpeg")
        .args(["-v", "warning", "-nostdin", "-i"])
        .arg(file.path())
        .args(["-f", "null", "-"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && stderr.trim().is_empty(), "{stderr}");
}

#[test]
fn round_trips_through_the_projects_decoder() {
    let rate = 16_000;
    let input = speechlike(rate, 4_000);
    let note = encode_streaming(&input, rate);
    assert_eq!(note.info.duration_ms, 4_000);
    assert!(!note.info.truncated);

    // Sample-exact length: the decoder trims pre-skip and the padding.
    let mut decoder = StreamDecoder::new(&MediaConfig::default());
    decoder.push(&note.bytes).unwrap();
    let pcm = decoder.finish().unwrap();
    assert_eq!(pcm.sample_rate, 48_000);
    assert_eq!(pcm.channels, 1);
    assert_eq!(pcm.samples.len(), input.len() * 3);

    // The whole media path: 16 kHz, level-normalised, the same speech.
    let prepared = media::load(&note.bytes, &MediaConfig::default()).unwrap();
    assert_eq!(prepared.format, media::AudioFormat::OggOpus);
    let (r, lag) = best_correlation(&prepared.samples, &input, 40);
    assert!(r > 0.9, "correlation {r:.3} at lag {lag}");
    assert!(lag.abs() <= 2, "decoded audio is shifted by {lag} samples");
}

#[test]
fn last_granule_is_pre_skip_plus_samples_at_48_khz() {
    for (rate, ms) in [(16_000u32, 1_337u64), (24_000, 2_020), (48_000, 999)] {
        let input = speechlike(rate, ms);
        let note = encode(&input, rate, &EncodeConfig::default()).unwrap();
        // The last page's header: granule position at bytes 6..14.
        let last = note.bytes.windows(4).rposition(|w| w == b"OggS").unwrap();
        let header = &note.bytes[last..];
        assert_eq!(header[5] & 0x04, 0x04, "end-of-stream flag");
        let granule = u64::from_le_bytes(header[6..14].try_into().unwrap());
        let samples_48k = input.len() as u64 * u64::from(48_000 / rate);
        assert_eq!(granule, u64::from(note.info.pre_skip) + samples_48k);
    }
}

#[test]
fn a_minute_of_speech_is_far_under_whatsapps_512_kb() {
    let note = encode(
        &speechlike(24_000, 60_000),
        24_000,
        &EncodeConfig::default(),
    )
    .unwrap();
    // 24 kbit/s is 180 KB a minute; Ogg adds under 2 %.
    assert!(note.bytes.len() < 190 * 1024, "{} bytes", note.bytes.len());
}
