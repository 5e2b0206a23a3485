//! The local whisper.cpp provider (through whisper-rs).
//!
//! The model is loaded once; each concurrent transcription borrows a
//! whisper state (the per-call buffers and KV cache) from a pool, so workers
//! share the weights and never share a state.
//!
//! whisper.cpp encodes a padded 30 s window whatever the note's length. With
//! `fit_window` the encoder instead runs on `audio_ctx` frames fitted to the
//! speech plus a margin, which makes short notes several times cheaper. A
//! fitted window can send the decoder into a repetition loop, so every fitted
//! result passes [`super::guard::check`] and is redone on the full window when
//! it fails.

use std::ffi::c_void;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use whisper_rs::{
    FullParams, SamplingStrategy, WhisperContext, WhisperContextParameters, WhisperState,
};

use super::guard::{self, Limits};
use super::{Segment, SpeechToText, SttConfig, SttError, TranscribeOptions, Transcript, Window};
use crate::models;

const SAMPLE_RATE: usize = 16_000;
/// whisper.cpp skips input shorter than one second; shorter notes are padded.
const MIN_SAMPLES: usize = SAMPLE_RATE * 1200 / 1000;
/// One encoder frame covers 20 ms; the full window is 1500 frames.
const FRAME_MS: u32 = 20;

pub struct WhisperStt {
    name: String,
    ctx: WhisperContext,
    states: Mutex<Vec<WhisperState>>,
    config: SttConfig,
    multilingual: bool,
    full_ctx: u32,
}

/// One decoding pass's raw output.
struct Pass {
    language: String,
    text: String,
    segments: Vec<Segment>,
    tokens: Vec<i32>,
    log_prob_sum: f64,
    no_speech_probability: f32,
}

impl WhisperStt {
    /// Loads the configured model.
    pub fn load(config: &SttConfig) -> Result<Self, SttError> {
        let dir = config
            .models_dir
            .clone()
            .unwrap_or_else(models::default_dir);
        let path = models::resolve(&config.model, &dir)?;
        whisper_rs::install_logging_hooks();
        let mut params = WhisperContextParameters::default();
        params.use_gpu(config.gpu && cfg!(feature = "cuda"));
        let path_str = path.to_string_lossy().into_owned();
        let ctx =
            WhisperContext::new_with_params(&path_str, params).map_err(|e| SttError::Load {
                path: path_str.clone(),
                reason: e.to_string(),
            })?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().trim_start_matches("ggml-").to_string())
            .unwrap_or_else(|| config.model.clone());
        Ok(Self {
            name: format!("whisper:{name}"),
            multilingual: ctx.is_multilingual(),
            full_ctx: ctx.model_n_audio_ctx().max(1) as u32,
            ctx,
            states: Mutex::new(Vec::new()),
            config: config.clone(),
        })
    }

    fn language(&self, options: &TranscribeOptions) -> Result<String, SttError> {
        let wanted = options
            .language
            .clone()
            .unwrap_or_else(|| self.config.language.clone());
        if !self.multilingual {
            return match wanted.as_str() {
                "auto" | "en" => Ok("en".into()),
                _ => Err(SttError::EnglishOnly {
                    model: self.name.clone(),
                    language: wanted,
                }),
            };
        }
        if wanted != "auto" && whisper_rs::get_lang_id(&wanted).is_none() {
            return Err(SttError::Language(wanted));
        }
        Ok(wanted)
    }

    /// The fitted window for `samples`, or `None` when it would not be
    /// smaller than the full one.
    fn fitted_ctx(&self, samples: usize) -> Option<u32> {
        if !self.config.fit_window {
            return None;
        }
        let ms = (samples * 1000 / SAMPLE_RATE) as u32 + self.config.window_margin_ms;
        let frames = ms.div_ceil(FRAME_MS).max(self.config.min_audio_ctx);
        // whisper.cpp's kernels prefer multiples of 64 frames
        let frames = frames.div_ceil(64) * 64;
        (frames < self.full_ctx).then_some(frames)
    }

    /// The encoder window language detection runs on: the first
    /// `detect_window_ms` of the note (speech starts near the beginning of a
    /// trimmed note), never more than the fitted window.
    fn detection_ctx(&self, samples: usize) -> u32 {
        let ms = (samples * 1000 / SAMPLE_RATE) as u32;
        let wanted = ms.min(self.config.detect_window_ms).max(1000);
        let frames = wanted.div_ceil(FRAME_MS).div_ceil(64) * 64;
        let fitted = self.fitted_ctx(samples).unwrap_or(self.full_ctx);
        frames.min(fitted).min(self.full_ctx)
    }

    /// The per-segment token cap for `samples` of audio.
    fn max_tokens(&self, samples: usize) -> i32 {
        let seconds = samples as f32 / SAMPLE_RATE as f32;
        (seconds.max(1.0) * self.config.max_tokens_per_second).ceil() as i32 + 8
    }

    fn take_state(&self) -> Result<WhisperState, SttError> {
        let pooled = self.states.lock().map(|mut s| s.pop()).unwrap_or(None);
        match pooled {
            Some(s) => Ok(s),
            None => self
                .ctx
                .create_state()
                .map_err(|e| SttError::Whisper(e.to_string())),
        }
    }

    fn give_back(&self, state: WhisperState) {
        if let Ok(mut pool) = self.states.lock() {
            pool.push(state);
        }
    }

    fn run(
        &self,
        state: &mut WhisperState,
        speech: &[f32],
        language: &str,
        audio_ctx: u32,
        abort: Option<&AtomicBool>,
    ) -> Result<Pass, SttError> {
        if abort.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Err(SttError::Aborted);
        }
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(self.config.threads.max(1) as i32);
        params.set_language(Some(language));
        params.set_translate(false);
        params.set_no_context(true);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params.set_suppress_blank(true);
        params.set_suppress_nst(true);
        params.set_audio_ctx(audio_ctx as i32);
        if !self.config.temperature_fallback {
            params.set_temperature_inc(0.0);
        }
        params.set_max_tokens(self.max_tokens(speech.len()));
        if let Some(flag) = abort {
            // SAFETY: the callback reads `flag` through the pointer only
            // while `full` runs, and `flag` outlives this call.
            unsafe {
                params.set_abort_callback(Some(abort_requested));
                params.set_abort_callback_user_data(flag as *const AtomicBool as *mut c_void);
            }
        }
        let done = state.full(params, speech);
        if abort.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Err(SttError::Aborted);
        }
        done.map_err(|e| SttError::Whisper(e.to_string()))?;

        let eot = self.ctx.token_eot();
        let mut pass = Pass {
            language: whisper_rs::get_lang_str(state.full_lang_id_from_state())
                .unwrap_or(language)
                .to_string(),
            text: String::new(),
            segments: Vec::new(),
            tokens: Vec::new(),
            log_prob_sum: 0.0,
            no_speech_probability: 0.0,
        };
        for (i, seg) in state.as_iter().enumerate() {
            if i == 0 {
                pass.no_speech_probability = seg.no_speech_probability();
            }
            let text = seg
                .to_str_lossy()
                .map_err(|e| SttError::Whisper(e.to_string()))?
                .trim()
                .to_string();
            let (mut n, mut lp) = (0usize, 0f64);
            for t in 0..seg.n_tokens() {
                let Some(tok) = seg.get_token(t) else {
                    continue;
                };
                let id = tok.token_id();
                if id >= eot {
                    continue; // timestamps and other special tokens
                }
                let p = tok.token_probability().clamp(1e-6, 1.0) as f64;
                pass.tokens.push(id);
                lp += p.ln();
                n += 1;
            }
            pass.log_prob_sum += lp;
            if !pass.text.is_empty() && !text.is_empty() {
                pass.text.push(' ');
            }
            pass.text.push_str(&text);
            pass.segments.push(Segment {
                start_ms: seg.start_timestamp().max(0) as u64 * 10,
                end_ms: seg.end_timestamp().max(0) as u64 * 10,
                text,
                confidence: if n == 0 {
                    0.0
                } else {
                    (lp / n as f64).exp() as f32
                },
            });
        }
        Ok(pass)
    }
}

impl WhisperStt {
    /// Spoken-language probabilities of `input` (already padded), from one
    /// encoder pass over the fitted window and one decoder step, as
    /// whisper.cpp computes them; sorted, most likely first.
    fn detect(
        &self,
        state: &mut WhisperState,
        input: &[f32],
        abort: Option<&AtomicBool>,
    ) -> Result<Vec<(String, f32)>, SttError> {
        if abort.is_some_and(|a| a.load(Ordering::Relaxed)) {
            return Err(SttError::Aborted);
        }
        let threads = self.config.threads.max(1) as i32;
        // whisper.cpp's detection encodes with the window of the state's
        // last `full` call. A `full` call limited to 100 ms of audio computes
        // the whole note's spectrogram and sets the window, then stops
        // before it encodes anything: the detection below then encodes the
        // fitted window once instead of the full 30 s one.
        let mut params = FullParams::new(SamplingStrategy::Greedy { best_of: 1 });
        params.set_n_threads(threads);
        params.set_language(Some("en"));
        params.set_duration_ms(100);
        params.set_print_progress(false);
        params.set_print_realtime(false);
        params.set_print_special(false);
        params.set_print_timestamps(false);
        params.set_audio_ctx(self.detection_ctx(input.len()) as i32);
        state
            .full(params, input)
            .map_err(|e| SttError::Whisper(e.to_string()))?;
        let (_, probs) = state
            .lang_detect(0, threads as usize)
            .map_err(|e| SttError::Whisper(format!("language detection: {e}")))?;
        let mut ranked: Vec<(String, f32)> = probs
            .iter()
            .enumerate()
            .filter_map(|(id, &p)| {
                let code = whisper_rs::get_lang_str(id as i32)?;
                p.is_finite().then(|| (code.to_string(), p))
            })
            .collect();
        ranked.sort_by(|a, b| b.1.total_cmp(&a.1));
        Ok(ranked)
    }
}

/// `speech`, padded with silence to the length whisper.cpp accepts.
fn padded(speech: &[f32]) -> std::borrow::Cow<'_, [f32]> {
    if speech.len() < MIN_SAMPLES {
        let mut p = speech.to_vec();
        p.resize(MIN_SAMPLES, 0.0);
        std::borrow::Cow::Owned(p)
    } else {
        std::borrow::Cow::Borrowed(speech)
    }
}

/// whisper.cpp's abort callback: whether the flag behind `user_data` is set.
unsafe extern "C" fn abort_requested(user_data: *mut c_void) -> bool {
    // SAFETY: `run` passes a pointer to an AtomicBool that outlives `full`.
    let flag = unsafe { &*(user_data as *const AtomicBool) };
    flag.load(Ordering::Relaxed)
}

impl WhisperStt {
    /// Decodes on the fitted window when there is one, checks the result and
    /// falls back to the full window when the check fails.
    fn decode_guarded(
        &self,
        state: &mut WhisperState,
        input: &[f32],
        language: &str,
        audio_ms: u64,
        abort: Option<&AtomicBool>,
    ) -> Result<(Pass, Window), SttError> {
        let Some(ctx) = self.fitted_ctx(input.len()) else {
            return Ok((self.run(state, input, language, 0, abort)?, Window::Full));
        };
        let pass = self.run(state, input, language, ctx, abort)?;
        let limits = Limits {
            max_compression_ratio: self.config.max_compression_ratio,
            max_tokens_per_second: self.config.max_tokens_per_second,
        };
        match guard::check(&pass.text, &pass.tokens, audio_ms, limits) {
            Ok(()) => Ok((pass, Window::Fitted { audio_ctx: ctx })),
            Err(rejection) => {
                tracing::warn!(audio_ctx = ctx, %rejection, "fitted window rejected, redoing on the full window");
                let full = self.run(state, input, language, 0, abort)?;
                Ok((
                    full,
                    Window::FullAfterRejection {
                        audio_ctx: ctx,
                        reason: rejection.to_string(),
                    },
                ))
            }
        }
    }
}

impl SpeechToText for WhisperStt {
    fn transcribe(
        &self,
        speech: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, SttError> {
        if speech.is_empty() {
            return Err(SttError::Empty);
        }
        let language = self.language(options)?;
        let audio_ms = (speech.len() * 1000 / SAMPLE_RATE) as u64;
        let input = padded(speech);

        let mut state = self.take_state()?;
        let abort = options.abort.as_deref();
        let result = self.decode_guarded(&mut state, &input, &language, audio_ms, abort);
        self.give_back(state);
        let (pass, window) = result?;

        let mean_lp = if pass.tokens.is_empty() {
            f64::NEG_INFINITY
        } else {
            pass.log_prob_sum / pass.tokens.len() as f64
        };
        let confidence =
            (mean_lp.exp() as f32 * (1.0 - pass.no_speech_probability)).clamp(0.0, 1.0);
        Ok(Transcript {
            language: pass.language,
            text: pass.text,
            segments: pass.segments,
            confidence,
            no_speech_probability: pass.no_speech_probability,
            window,
            routing: None,
        })
    }

    fn detect_language(
        &self,
        speech: &[f32],
        abort: Option<&AtomicBool>,
    ) -> Result<Vec<(String, f32)>, SttError> {
        if !self.multilingual {
            return Err(SttError::NoDetection(self.name.clone()));
        }
        if speech.is_empty() {
            return Err(SttError::Empty);
        }
        let input = padded(speech);
        let mut state = self.take_state()?;
        let result = self.detect(&mut state, &input, abort);
        self.give_back(state);
        result
    }

    fn is_multilingual(&self) -> bool {
        self.multilingual
    }

    fn name(&self) -> &str {
        &self.name
    }
}
