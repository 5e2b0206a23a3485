//! What the fuzz targets share: the panic policy, the invariants of a
//! prepared note, and how one input is cut into download chunks.
//!
//! The targets themselves are in `fuzz_targets/`; `README.md` says how to
//! run them and what they found.

use std::collections::HashSet;
use std::panic::PanicHookInfo;
use std::sync::Mutex;

use voxline::media::decode::DECODE_MARGIN_MS;
use voxline::media::resample::TARGET_RATE;
use voxline::media::{MediaConfig, PreparedNote, SpeechOutcome};

/// Set to `1` to let every panic end the run, symphonia's included.
pub const STRICT_ENV: &str = "VOXLINE_FUZZ_STRICT";

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
