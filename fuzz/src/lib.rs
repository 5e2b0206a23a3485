//! What the fuzz targets share: the panic policy, the invariants of a
//! prepared note, and how one input is cut into download chunks.
//!
//! The targets themselves are in `fuzz_targets/`; `README.md` says how to
//! run them and what they found.

use std::collections::HashSet;
use std::panic::PanicHookInfo;
use std::sync::{Mutex, OnceLock};

use voxline::media::decode::DECODE_MARGIN_MS;
use voxline::media::resample::TARGET_RATE;
use voxline::media::{AudioFormat, MediaConfig, PreparedNote, SpeechOutcome};

/// Set to `1` to let every panic end the run, symphonia's included.
pub const STRICT_ENV: &str = "VOXLINE_FUZZ_STRICT";

/// Set to `1` to skip, in the media targets, the inputs that reach a bug
/// already reported (see [`known_bug`] and `README.md`, "Findings"), so a
/// run can look for others.
pub const SKIP_KNOWN_ENV: &str = "VOXLINE_FUZZ_SKIP_KNOWN";

/// Installs the panic policy; call once from each target's `init`.
///
/// libfuzzer-sys aborts on every panic, before any `catch_unwind` can see
/// it. voxline runs every call into symphonia under `catch_unwind` and turns
/// a panic there into `MediaError::Malformed` (`src/media/decode/symphonia.rs`),
/// so a panic raised inside symphonia is an error value at voxline's
/// boundary, not a crash of the service. Those panics are printed once per
/// source location and left to unwind into voxline's handler; any other
/// panic (voxline, the `ogg` crate, rubato, serde, ...) aborts and is a
/// finding. With `VOXLINE_FUZZ_STRICT=1` every panic aborts.
pub fn init() {
    if std::env::var(STRICT_ENV).is_ok_and(|v| v == "1") {
        return;
    }
    let abort = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        if let Some(place) = raised_in_symphonia(info) {
            report_handled_once(place, info);
            return;
        }
        abort(info);
    }));
}

/// Where the panic was raised, if that is symphonia's code.
fn raised_in_symphonia(info: &PanicHookInfo<'_>) -> Option<String> {
    let location = info.location()?;
    let file = location.file();
    let place = format!("{}:{}", file, location.line());
    if file.contains("/symphonia-") {
        return Some(place);
    }
    // Panics raised by the standard library (a capacity overflow, say) name
    // a file of the standard library; the first frame outside it says whose
    // call it was.
    let in_std = file.starts_with("/rustc/") || file.contains("/library/");
    if !in_std {
        return None;
    }
    let trace = std::backtrace::Backtrace::force_capture().to_string();
    let caller = trace
        .lines()
        .filter_map(frame_symbol)
        .find(|symbol| !is_runtime_frame(symbol))?;
    caller
        .contains("symphonia")
        .then(|| format!("{place} (called from {caller})"))
}

/// The symbol of a backtrace line such as `  12: symphonia_core::io::...`.
fn frame_symbol(line: &str) -> Option<&str> {
    let (index, symbol) = line.trim_start().split_once(": ")?;
    index.chars().all(|c| c.is_ascii_digit()).then_some(symbol)
}

fn is_runtime_frame(symbol: &str) -> bool {
    const RUNTIME: [&str; 10] = [
        "std::",
        "core::",
        "alloc::",
        "<std::",
        "<core::",
        "<alloc::",
        "rust_begin_unwind",
        "__rust",
        "voxline_fuzz::",
        "<voxline_fuzz::",
    ];
    RUNTIME.iter().any(|p| symbol.starts_with(p)) || symbol.starts_with("<unknown>")
}

fn report_handled_once(place: String, info: &PanicHookInfo<'_>) {
    static SEEN: Mutex<Option<HashSet<String>>> = Mutex::new(None);
    let Ok(mut seen) = SEEN.lock() else {
        return;
    };
    if seen.get_or_insert_with(HashSet::new).insert(place.clone()) {
        let message = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_default();
        eprintln!("voxline-fuzz: symphonia panicked at {place}: {message} (caught by voxline; not a crash)");
    }
}

/// A bug already reported in `README.md` ("Findings") that an input
/// reaches, as far as cheap tests of its bytes can tell; they err on the
/// side of naming one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KnownBug {
    /// Finding 1: a float WAV. Resampling samples that are not finite, or
    /// so large that the FFT overflows, panics inside rubato. Any WAV with
    /// a `fmt ` chunk declaring IEEE float (3) or the extensible format
    /// (0xFFFE). Reached only by the paths that resample.
    FloatWav,
    /// Finding 2: symphonia allocates a length the file declares before
    /// reading it, and an allocation failure aborts the process: MP4 sample
    /// tables (`stts`, `stsc`, `stsz`, `stco`, `co64`) declaring more
    /// entries than their box holds (up to 64 GiB), an MP4 sample larger
    /// than the file (up to 4 GiB), a FLAC or Ogg Vorbis comment longer
    /// than the file (up to 4 GiB).
    DeclaredLength,
}

/// The known bug `note` reaches, if [`SKIP_KNOWN_ENV`] is `1`; the targets
/// skip such inputs so that a run can look for other bugs.
pub fn known_bug(note: &[u8]) -> Option<KnownBug> {
    static SKIP: OnceLock<bool> = OnceLock::new();
    if !*SKIP.get_or_init(|| std::env::var(SKIP_KNOWN_ENV).is_ok_and(|v| v == "1")) {
        return None;
    }
    let found = match voxline::media::detect(note) {
        Ok(AudioFormat::Wav) => {
            return note
                .windows(10)
                .filter(|w| w.starts_with(b"fmt "))
                .any(|w| matches!(u16::from_le_bytes([w[8], w[9]]), 3 | 0xFFFE))
                .then_some(KnownBug::FloatWav)
        }
        Ok(AudioFormat::Mp4) => oversized_sample_table(note),
        Ok(AudioFormat::Flac) => oversized_flac_comment(note),
        Ok(AudioFormat::OggVorbis) => note
            .windows(7)
            .enumerate()
            .filter(|(_, w)| *w == b"\x03vorbis")
            .any(|(at, _)| oversized_comment(note, at + 7)),
        _ => false,
    };
    found.then_some(KnownBug::DeclaredLength)
}

/// A Vorbis comment (vendor string, then counted comments, each with a
/// little-endian 32-bit length) at `at` with a length past the end of the
/// file, or cut before its lengths end.
fn oversized_comment(file: &[u8], mut at: usize) -> bool {
    let le32 = |at: usize| -> Option<usize> {
        let b = file.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let Some(vendor) = le32(at) else {
        return false;
    };
    at = at.saturating_add(4).saturating_add(vendor);
    let Some(count) = le32(at) else {
        return false;
    };
    at += 4;
    for _ in 0..count {
        let Some(len) = le32(at) else {
            return false;
        };
        if len > file.len() {
            return true;
        }
        at = at.saturating_add(4).saturating_add(len);
    }
    false
}

/// The Vorbis comment block of a native FLAC file (RFC 9639 §8.1, §8.6),
/// checked with [`oversized_comment`].
fn oversized_flac_comment(file: &[u8]) -> bool {
    let mut at = 4; // "fLaC"
    while let Some(header) = file.get(at..at + 4) {
        let len =
            usize::from(header[1]) << 16 | usize::from(header[2]) << 8 | usize::from(header[3]);
        if header[0] & 0x7F == 4 && oversized_comment(file, at + 4) {
            return true;
        }
        if header[0] & 0x80 != 0 {
            break;
        }
        at += 4 + len;
    }
    false
}

/// Any box named like a sample table whose declared entries do not fit in
/// the box's declared size (ISO/IEC 14496-12 §8.6.1.2, §8.7.3 to §8.7.5).
fn oversized_sample_table(file: &[u8]) -> bool {
    let be32 = |at: usize| -> Option<u64> {
        let b = file.get(at..at + 4)?;
        Some(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
    };
    (4..file.len().saturating_sub(4)).any(|at| {
        // (count offset after the type, bytes per entry); `stsz` has a
        // table only when its constant sample size is 0.
        let (count_at, entry) = match &file[at..at + 4] {
            b"stts" => (8, 8),
            b"stsc" => (8, 12),
            b"stco" => (8, 4),
            b"co64" => (8, 8),
            b"stsz" if be32(at + 8) == Some(0) => (12, 4),
            b"stsz" => return be32(at + 8).is_some_and(|len| len > file.len() as u64),
            _ => return false,
        };
        let (Some(size), Some(count)) = (be32(at - 4), be32(at + count_at)) else {
            return true;
        };
        let bigger_than_file = |len: u64| len > file.len() as u64;
        if &file[at..at + 4] == b"stsz" {
            let mut sizes = (0..count.min(size / 4)).map(|i| be32(at + 16 + 4 * i as usize));
            if sizes.any(|len| len.is_some_and(bigger_than_file)) {
                return true;
            }
        }
        // Box size and type, then everything up to the end of the count.
        let header = 4 + count_at as u64 + 4;
        size < header || count * entry > size - header
    })
}

/// The media stage's configuration under fuzzing: the service's defaults.
pub fn media_config() -> MediaConfig {
    MediaConfig::default()
}

/// Checks what `PreparedNote` promises for any input that decodes.
pub fn check_note(note: &PreparedNote, config: &MediaConfig) {
    let cap_samples = config.max_note_ms * u64::from(TARGET_RATE) / 1000;
    assert!(
        note.samples.len() as u64 <= cap_samples,
        "{} samples, more than the {} ms cap",
        note.samples.len(),
        config.max_note_ms
    );
    assert!(
        note.samples.iter().all(|s| s.is_finite()),
        "a prepared {} note holds a non-finite sample",
        note.format
    );
    assert!(note.speech_ms <= config.max_note_ms);
    assert_eq!(
        note.speech_ms,
        note.samples.len() as u64 * 1000 / u64::from(TARGET_RATE)
    );
    assert!(
        note.source_ms <= config.max_note_ms + DECODE_MARGIN_MS,
        "source_ms {} beyond the decode cap",
        note.source_ms
    );
    if note.outcome == SpeechOutcome::NoSpeech {
        assert!(note.samples.is_empty());
    }
}

/// Cuts `note` into download chunks whose sizes alternate between
/// `1 + small` bytes (1 to 256) and `1 + 257 * large` bytes (1 to 65 536),
/// so one input can be delivered byte by byte, page by page or in large
/// blocks.
pub fn chunks(small: u8, large: u8, note: &[u8]) -> Vec<&[u8]> {
    let sizes = [1 + usize::from(small), 1 + 257 * usize::from(large)];
    let mut out = Vec::new();
    let mut rest = note;
    let mut i = 0;
    while !rest.is_empty() {
        let n = sizes[i % 2].min(rest.len());
        let (chunk, tail) = rest.split_at(n);
        out.push(chunk);
        rest = tail;
        i += 1;
    }
    out
}
