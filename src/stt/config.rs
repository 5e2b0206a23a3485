//! Configuration of the speech-to-text stage.

use serde::Deserialize;

/// `[stt]` in `voxline.toml`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct SttConfig {
    /// Model name (resolved to `ggml-<name>.bin` in the models folder) or a
    /// path to any whisper.cpp GGML file. Default `base-q8_0`, the
    /// multilingual model that hears every configured language (Q8_0: no
    /// worse than f16 on the fixtures, and faster; see the README). An
    /// English-only model here serves English alone.
    pub model: String,
    /// The model for notes routed to English, when `[service] languages`
    /// has English and `model` is multilingual. Default `tiny.en-q8_0`:
    /// faster than `base` at equal English word error rate. `"none"` hears
    /// English with `model` too.
    pub english_model: Option<String>,
    /// How much of the note, in ms from its start, language detection
    /// listens to. Default 3000: detection is an extra encoder pass before
    /// the transcription, and its cost grows with the window (see the
    /// README for the measured trade-off).
    pub detect_window_ms: u32,
    /// `[stt.routing]`: how each note's language is chosen.
    pub routing: super::route::RoutingConfig,
    /// `[stt.hearing]`: when a transcript is too unsure to act on.
    pub hearing: super::heard::HearingConfig,
    /// Folder holding the converted models. Default: `VOXLINE_MODELS_DIR`, else
    /// `models`.
    pub models_dir: Option<std::path::PathBuf>,
    /// CPU threads per transcription. Default 2.
    pub threads: u16,
    /// Fixed language (ISO 639-1), or `auto` to detect. Default `auto`, which
    /// on an English-only model means `en`.
    pub language: String,
    /// Run on the GPU when built with the `cuda` feature. Default true.
    pub gpu: bool,
    /// Fit the encoder window to the speech instead of always encoding 30 s.
    /// Default true.
    pub fit_window: bool,
    /// Extra audio, in ms, the fitted window covers past the end of the
    /// speech. Default 1000.
    pub window_margin_ms: u32,
    /// Smallest fitted window in 20 ms encoder frames. Default 384 (7.68 s):
    /// below 256 tiny models were measured to loop on short clips, and at
    /// 256 `base` lost words on short non-English notes that 384 keeps
    /// (README, "The fitted encoder window").
    pub min_audio_ctx: u32,
    /// Compression ratio (text length over its deflated length) above which
    /// a fitted-window transcript counts as a repetition loop. Default 2.4,
    /// Whisper's own threshold.
    pub max_compression_ratio: f32,
    /// Most text tokens per second of audio a fitted-window transcript may
    /// have before it counts as runaway. Default 12 (fast speech is about 5).
    /// The decoder is also stopped at this many tokens per segment, so a
    /// loop costs a bounded number of decoder steps.
    pub max_tokens_per_second: f32,
    /// Let whisper.cpp re-decode at rising temperatures (0.2 steps) when a
    /// segment's entropy or log-probability looks wrong. Default false:
    /// decoding is greedy, and a looping pass was measured to cost six
    /// decodes of up to 224 tokens each (over a minute for a 3 s note on 2
    /// cores); loops are caught by the checks above instead.
    pub temperature_fallback: bool,
    /// A faster model for the `faster_model` action of the `stt` budget: a
    /// note whose transcription runs over budget is redone with it. Default
    /// none (the action then asks the customer to type). `tiny.en-q8_0`
    /// suits a service whose main model is `base`.
    pub fallback_model: Option<String>,
}

impl Default for SttConfig {
    fn default() -> Self {
        Self {
            model: "base-q8_0".into(),
            english_model: Some("tiny.en-q8_0".into()),
            detect_window_ms: 3000,
            routing: Default::default(),
            hearing: Default::default(),
            models_dir: None,
            threads: 2,
            language: "auto".into(),
            gpu: true,
            fit_window: true,
            window_margin_ms: 1000,
            min_audio_ctx: 384,
            max_compression_ratio: 2.4,
            max_tokens_per_second: 12.0,
            temperature_fallback: false,
            fallback_model: None,
        }
    }
}
