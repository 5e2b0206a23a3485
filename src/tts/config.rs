//! Settings of the TTS stage: which providers, in which order, and each
//! provider's own settings, all with working defaults (espeak-ng in
//! process; the Piper voice is one line away).

use std::collections::HashMap;
use std::path::PathBuf;

use serde::Deserialize;

use super::Language;

/// The providers, tried in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    Piper,
    Kokoro,
    Espeak,
    Openai,
    Elevenlabs,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TtsConfig {
    /// Providers in fallback order. Default: `["piper", "kokoro",
    /// "espeak"]`: the natural Piper voice for English, Kokoro's native
    /// voices for Spanish, Italian, Portuguese and French, espeak-ng when
    /// they fail (then text). `["espeak"]` alone is the fastest (a fast-path
    /// turn under 600 ms on 2 cores) and robotic (README, "Figures").
    pub providers: Vec<ProviderKind>,
    pub fallback: FallbackConfig,
    pub piper: PiperConfig,
    pub kokoro: KokoroConfig,
    pub espeak: EspeakConfig,
    pub openai: OpenAiConfig,
    pub elevenlabs: ElevenLabsConfig,
    /// `[tts.cache]`: rendered sentences kept for reuse.
    pub cache: super::cache::CacheConfig,
}

impl Default for TtsConfig {
    fn default() -> Self {
        Self {
            providers: vec![
                ProviderKind::Piper,
                ProviderKind::Kokoro,
                ProviderKind::Espeak,
            ],
            fallback: FallbackConfig::default(),
            piper: PiperConfig::default(),
            kokoro: KokoroConfig::default(),
            espeak: EspeakConfig::default(),
            openai: OpenAiConfig::default(),
            elevenlabs: ElevenLabsConfig::default(),
            cache: super::cache::CacheConfig::default(),
        }
    }
}

/// Limits on each provider attempt in the chain.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct FallbackConfig {
    /// An attempt that has produced no audio this long after its first text
    /// chunk is abandoned for the next provider. Default: 4000 ms, above
    /// Kokoro's first sentence on 2 cores (p95 3.7 s) and a second below the
    /// `tts_first_audio` budget (5000 ms), so that espeak-ng still has time
    /// to speak when a natural voice is too slow; were they equal, the
    /// budget would send text at the instant the chain moved on.
    pub first_audio_timeout_ms: u64,
    /// Once audio flows, a gap this long between chunks abandons the
    /// provider as a failure would. Default: 3000 ms.
    pub stall_timeout_ms: u64,
    /// A provider that fails or stalls after its audio went out is replaced
    /// by the next, which speaks the whole reply again (the audio so far is
    /// thrown away); off, or when no provider is left, the caller sends
    /// the reply as text. Default: true.
    pub restart_mid_reply: bool,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            first_audio_timeout_ms: 4000,
            stall_timeout_ms: 3000,
            restart_mid_reply: true,
        }
    }
}

/// A Piper voice run in process by ONNX Runtime; English only.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PiperConfig {
    /// The voice's ONNX file, its JSON config beside it with `.json` added.
    /// A relative path is taken in the models folder unless it names an
    /// existing file. Default: `piper/en_US-joe-medium.onnx`.
    pub model: PathBuf,
    /// The ONNX Runtime shared library, resolved like `model`. Default:
    /// `onnxruntime/libonnxruntime.so`.
    pub onnxruntime: PathBuf,
    /// Folder holding the models. Default: `VOXLINE_MODELS_DIR`, else
    /// `models`.
    pub models_dir: Option<PathBuf>,
    /// CPU threads per synthesis. Default: 1, so a turn's synthesis leaves
    /// the other core of a small machine to transcription and encoding.
    pub threads: u16,
    /// Silence after each sentence, in ms. Default: 200, Piper's own.
    pub sentence_silence_ms: u32,
    /// `[tts.piper.onnx]`: ONNX Runtime's session settings.
    pub onnx: OnnxTuning,
}

impl Default for PiperConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("piper/en_US-joe-medium.onnx"),
            onnxruntime: PathBuf::from("onnxruntime/libonnxruntime.so"),
            models_dir: None,
            threads: 1,
            sentence_silence_ms: 200,
            onnx: OnnxTuning::default(),
        }
    }
}

/// Kokoro-82M run in process by ONNX Runtime: the natural-sounding local
/// voice for Spanish, Italian, Portuguese and French.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KokoroConfig {
    /// The ONNX model, resolved like [`PiperConfig::model`]. Default:
    /// `kokoro/kokoro-v1.0.int8.onnx`.
    pub model: PathBuf,
    /// The phoneme vocabulary (`{"vocab": {"a": 43, ...}}`). Default:
    /// `kokoro/vocab.json`.
    pub vocab: PathBuf,
    /// Folder of the voices' style vectors, one `<voice>.npy` each.
    /// Default: `kokoro/voices`.
    pub voices_dir: PathBuf,
    /// The voice per reply language, the name of a file in `voices_dir`
    /// without `.npy`; a language not named here is left to the next
    /// provider. Default: of Kokoro's native voices
    /// ([`crate::tts::kokoro::NATIVE_VOICES`]: `ef_dora` and `em_alex` (es),
    /// `if_sara` and `im_nicola` (it), `pf_dora` and `pm_alex` (pt,
    /// Brazilian), `ff_siwis` (fr)), the one that came back best through
    /// Whisper for each language (see
    /// [`crate::tts::kokoro::default_voices`]); the Japanese voices
    /// (`jf_nezumi`, `jf_gongitsune`, ...) are there too, e.g. `voices = {
    /// es = "jf_nezumi" }`. The map replaces the default whole.
    pub voices: HashMap<Language, String>,
    /// The ONNX Runtime shared library, as for Piper. Default:
    /// `onnxruntime/libonnxruntime.so`.
    pub onnxruntime: PathBuf,
    /// Folder holding the models. Default: `VOXLINE_MODELS_DIR`, else
    /// `models`.
    pub models_dir: Option<PathBuf>,
    /// Speaking speed, 0.5 to 2.0. Default: 1.0.
    pub speed: f32,
    /// CPU threads per synthesis. Default: 2: one sentence is synthesised
    /// at a time, and on 2 cores two threads take 0.30 s per second of
    /// speech where one takes 0.53 (README, "Figures").
    pub threads: u16,
    /// Silence after each sentence, in ms. Default: 150.
    pub sentence_silence_ms: u32,
    /// `[tts.kokoro.onnx]`: ONNX Runtime's session settings.
    pub onnx: OnnxTuning,
}

impl Default for KokoroConfig {
    fn default() -> Self {
        Self {
            model: PathBuf::from("kokoro/kokoro-v1.0.int8.onnx"),
            vocab: PathBuf::from("kokoro/vocab.json"),
            voices_dir: PathBuf::from("kokoro/voices"),
            voices: crate::tts::kokoro::default_voices(),
            onnxruntime: PathBuf::from("onnxruntime/libonnxruntime.so"),
            models_dir: None,
            speed: 1.0,
            threads: 2,
            sentence_silence_ms: 150,
            onnx: OnnxTuning::default(),
        }
    }
}

/// ONNX Runtime's settings for one voice model's session. The defaults are
/// ONNX Runtime's own, which measured best on this project's voices (README,
/// "Tuning ONNX Runtime").
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OnnxTuning {
    /// Graph optimisation: `all` (default), `extended`, `basic` or
    /// `disable`.
    pub optimization: GraphOptimization,
    /// ONNX Runtime's CPU memory arena, which keeps freed buffers for the
    /// next inference. Default: on.
    pub cpu_arena: bool,
    /// Memory patterns: buffers planned from the previous inference's
    /// shapes. Default: on.
    pub memory_pattern: bool,
    /// One short inference when the voice loads, on a background thread, so
    /// that the first customer would not pay ONNX Runtime's first-run
    /// set-up. Default: off: measured, a fresh session's first reply took
    /// as long as its second (README, "Tuning ONNX Runtime"), and the
    /// warm-up costs a core for a second or two at start-up.
    pub warm_up: bool,
}

impl Default for OnnxTuning {
    fn default() -> Self {
        Self {
            optimization: GraphOptimization::All,
            cpu_arena: true,
            memory_pattern: true,
            warm_up: false,
        }
    }
}

/// ONNX Runtime's graph optimisation levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GraphOptimization {
    Disable,
    Basic,
    Extended,
    All,
}

/// libespeak-ng in process.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EspeakConfig {
    /// Speaking rate in words per minute (80 to 450) for every language
    /// that `rates` does not name. Default: unset, each language's built-in
    /// rate (see [`crate::tts::espeak::EspeakTts::voice`]).
    pub rate_wpm: Option<u32>,
    /// Speaking rate per reply language, overriding `rate_wpm`.
    pub rates: HashMap<Language, u32>,
    /// espeak-ng voice per reply language, with an optional variant
    /// (`"es+m3"`), overriding the built-in choice.
    pub voices: HashMap<Language, String>,
    /// Extra pause between words per reply language, in 10 ms units,
    /// overriding the built-in gap.
    pub word_gaps: HashMap<Language, u32>,
}

/// Audio format asked of an OpenAI-compatible server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpenAiFormat {
    /// Raw signed 16-bit little-endian mono at 24 kHz.
    Pcm,
    /// Ogg/Opus, decoded by [`crate::media`].
    Opus,
}

/// `POST {base_url}/v1/audio/speech`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct OpenAiConfig {
    /// Default: `https://api.openai.com`; any server with the same API.
    pub base_url: String,
    /// Sent as a bearer token when set.
    pub api_key: Option<String>,
    /// Default: `gpt-4o-mini-tts`.
    pub model: String,
    /// Default: `alloy`.
    pub voice: String,
    /// Default: `pcm`.
    pub format: OpenAiFormat,
    /// Default: 2000 ms.
    pub connect_timeout_ms: u64,
    /// Longest wait for the response head or the next body chunk. Default:
    /// 2000 ms.
    pub read_timeout_ms: u64,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com".into(),
            api_key: None,
            model: "gpt-4o-mini-tts".into(),
            voice: "alloy".into(),
            format: OpenAiFormat::Pcm,
            connect_timeout_ms: 2000,
            read_timeout_ms: 2000,
        }
    }
}

/// The ElevenLabs `stream-input` WebSocket.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ElevenLabsConfig {
    /// Default: `wss://api.elevenlabs.io`.
    pub base_url: String,
    /// Sent as `xi_api_key` in the first message.
    pub api_key: Option<String>,
    /// Default: `21m00Tcm4TlvDq8ikWAM`, a stock voice.
    pub voice_id: String,
    /// Default: `eleven_flash_v2_5`, the low-latency multilingual model.
    pub model_id: String,
    /// 16000 or 24000: PCM output as `pcm_16000` or `pcm_24000`. Default:
    /// 16000, what the encoder and Whisper use.
    pub sample_rate: u32,
    /// Default: 0.5.
    pub stability: f32,
    /// Default: 0.8.
    pub similarity_boost: f32,
    /// Default: 2000 ms.
    pub connect_timeout_ms: u64,
    /// With nothing received for this long while audio is awaited, the
    /// socket is pinged. Default: 700 ms.
    pub read_timeout_ms: u64,
    /// A socket that sends nothing, not even a pong, for this long after a
    /// ping is dead. Default: 500 ms.
    pub ping_timeout_ms: u64,
    /// Seconds the server keeps an idle socket (its `inactivity_timeout`);
    /// a spare socket older than this is not reused. Default: 60.
    pub inactivity_timeout_s: u64,
}

impl Default for ElevenLabsConfig {
    fn default() -> Self {
        Self {
            base_url: "wss://api.elevenlabs.io".into(),
            api_key: None,
            voice_id: "21m00Tcm4TlvDq8ikWAM".into(),
            model_id: "eleven_flash_v2_5".into(),
            sample_rate: 16_000,
            stability: 0.5,
            similarity_boost: 0.8,
            connect_timeout_ms: 2000,
            read_timeout_ms: 700,
            ping_timeout_ms: 500,
            inactivity_timeout_s: 60,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_toml_section_overrides_the_defaults() {
        let config: TtsConfig = toml::from_str(
            r#"
            providers = ["elevenlabs", "openai", "espeak"]
            [fallback]
            first_audio_timeout_ms = 800
            [espeak]
            voices = { pt = "pt", es = "es-419" }
            rates = { es = 130 }
            [openai]
            base_url = "http://127.0.0.1:8000"
            format = "opus"
            [elevenlabs]
            sample_rate = 24000
            "#,
        )
        .unwrap();
        assert_eq!(
            config.providers,
            [
                ProviderKind::Elevenlabs,
                ProviderKind::Openai,
                ProviderKind::Espeak
            ]
        );
        assert_eq!(config.fallback.first_audio_timeout_ms, 800);
        assert_eq!(config.fallback.stall_timeout_ms, 3000);
        assert_eq!(config.espeak.voices[&Language::Es], "es-419");
        assert_eq!(config.espeak.rates[&Language::Es], 130);
        assert_eq!(config.espeak.rate_wpm, None);
        assert_eq!(config.openai.format, OpenAiFormat::Opus);
        assert_eq!(config.openai.model, "gpt-4o-mini-tts");
        assert_eq!(config.elevenlabs.sample_rate, 24_000);
        assert!(toml::from_str::<TtsConfig>("providers = [\"festival\"]").is_err());
        assert!(toml::from_str::<TtsConfig>("[espeak]\nspeed = 3").is_err());
    }

    #[test]
    fn the_default_chain_is_natural_and_espeak_alone_is_one_line_away() {
        let chain = crate::tts::from_config(&TtsConfig::default())
            .expect("run ./x setup to fetch the local voices");
        assert_eq!(
            chain.providers().collect::<Vec<_>>(),
            ["piper", "kokoro", "espeak"]
        );
        let robotic: TtsConfig = toml::from_str("providers = [\"espeak\"]").unwrap();
        let chain = crate::tts::from_config(&robotic).unwrap();
        assert_eq!(chain.providers().collect::<Vec<_>>(), ["espeak"]);
    }

    #[test]
    fn kokoro_voices_and_speed_come_from_the_file() {
        let config: TtsConfig =
            toml::from_str("[kokoro]\nspeed = 1.1\nthreads = 1\nvoices = { it = \"jf_nezumi\" }")
                .unwrap();
        assert_eq!(config.kokoro.speed, 1.1);
        assert_eq!(config.kokoro.threads, 1);
        assert_eq!(
            config.kokoro.voices.len(),
            1,
            "the file's map replaces the default"
        );
        assert_eq!(config.kokoro.voices[&Language::It], "jf_nezumi");
        assert!(toml::from_str::<TtsConfig>("[kokoro]\nvoices = { de = \"x\" }").is_err());
    }

    #[test]
    fn onnx_settings_come_from_the_file_per_voice() {
        let config: TtsConfig = toml::from_str(
            "[kokoro.onnx]\noptimization = \"basic\"\ncpu_arena = false\nwarm_up = true\n\
             [piper.onnx]\nmemory_pattern = false",
        )
        .unwrap();
        assert_eq!(config.kokoro.onnx.optimization, GraphOptimization::Basic);
        assert!(!config.kokoro.onnx.cpu_arena && config.kokoro.onnx.warm_up);
        assert!(config.kokoro.onnx.memory_pattern);
        assert!(!config.piper.onnx.memory_pattern);
        assert_eq!(config.piper.onnx.optimization, GraphOptimization::All);
        assert!(!TtsConfig::default().piper.onnx.warm_up);
        let err = toml::from_str::<TtsConfig>("[piper.onnx]\noptimization = \"max\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max"), "{err}");
    }

    #[test]
    fn kokoro_native_voices_are_named_per_language() {
        let config: TtsConfig = toml::from_str(
            "[kokoro]\nvoices = { es = \"em_alex\", it = \"im_nicola\", pt = \"pm_alex\", fr = \"ff_siwis\" }",
        )
        .unwrap();
        assert_eq!(config.kokoro.voices[&Language::Es], "em_alex");
        assert_eq!(config.kokoro.voices[&Language::Fr], "ff_siwis");
        for (language, voices) in crate::tts::kokoro::NATIVE_VOICES {
            assert!(voices.contains(&config.kokoro.voices[&language].as_str()));
        }
    }
}
