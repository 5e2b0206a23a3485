//! libespeak-ng in process: the embedded voice, no network, a voice per
//! reply language.
//!
//! libespeak-ng keeps global state and is not thread-safe, so one dedicated
//! thread owns it for the life of the process; requests reach it over a
//! channel, one text chunk at a time, so several turns share it chunk by
//! chunk. Synthesis runs in `AUDIO_OUTPUT_SYNCHRONOUS` mode: `espeak_Synth`
//! returns when the chunk is spoken, and the synth callback passes each
//! buffer of samples on as it is produced.

use std::cell::RefCell;
use std::ffi::{c_char, c_int, c_short, c_uint, c_void, CString};
use std::sync::{mpsc as std_mpsc, OnceLock};

use async_trait::async_trait;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use super::config::EspeakConfig;
use super::{
    AudioChunk, AudioClock, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError,
};

const PROVIDER: &str = "espeak";

/// The part of libespeak-ng's API used here (`espeak-ng/speak_lib.h`).
mod ffi {
    use super::*;

    pub const AUDIO_OUTPUT_SYNCHRONOUS: c_int = 2;
    /// Report a missing data directory as an error instead of exiting.
    pub const INITIALIZE_DONT_EXIT: c_int = 0x8000;
    pub const POS_CHARACTER: c_int = 1;
    pub const CHARS_UTF8: c_uint = 1;
    /// A sentence pause after the text, so chunks do not run together.
    pub const ENDPAUSE: c_uint = 0x1000;
    pub const RATE: c_int = 1;
    pub const WORDGAP: c_int = 7;
    pub const EE_OK: c_int = 0;

    /// Returns 0 to continue synthesis, 1 to abort it.
    pub type SynthCallback =
        unsafe extern "C" fn(wav: *mut c_short, samples: c_int, events: *mut c_void) -> c_int;

    #[link(name = "espeak-ng")]
    extern "C" {
        pub fn espeak_Initialize(
            output: c_int,
            buflength_ms: c_int,
            path: *const c_char,
            options: c_int,
        ) -> c_int;
        pub fn espeak_SetSynthCallback(callback: SynthCallback);
        pub fn espeak_SetVoiceByName(name: *const c_char) -> c_int;
        pub fn espeak_SetParameter(parameter: c_int, value: c_int, relative: c_int) -> c_int;
        pub fn espeak_Synth(
            text: *const c_void,
            size: usize,
            position: c_uint,
            position_type: c_int,
            end_position: c_uint,
            flags: c_uint,
            unique_identifier: *mut c_uint,
            user_data: *mut c_void,
        ) -> c_int;
    }
}

/// Buffers handed to the callback: short, so the first audio of a chunk
/// leaves early.
const BUFFER_MS: c_int = 60;

/// How a reply language is spoken: the voice and the parameters set with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Voice {
    /// An espeak-ng voice name, optionally with a variant ("es+m3").
    pub name: String,
    /// Words per minute, 80 to 450.
    pub rate_wpm: u32,
    /// Extra pause between words, in units of 10 ms at the default rate.
    pub word_gap: u32,
}

/// One chunk of text for the espeak thread.
struct Job {
    text: String,
    voice: Voice,
    audio: mpsc::Sender<AudioChunk>,
    cancel: CancellationToken,
    done: oneshot::Sender<Result<(), TtsError>>,
}

/// Work for the espeak thread.
enum Task {
    Speak(Job),
    /// Another use of the library (Piper's phonemizer), run on its thread
    /// with `voice` selected.
    Call {
        voice: String,
        call: Box<dyn FnOnce() + Send>,
    },
}

/// Where the synth callback sends the samples of the job being spoken.
struct Sink {
    sample_rate: u32,
    audio: mpsc::Sender<AudioChunk>,
    cancel: CancellationToken,
    /// The receiver went away: stop synthesising.
    closed: bool,
}

thread_local! {
    static SINK: RefCell<Option<Sink>> = const { RefCell::new(None) };
}

unsafe extern "C" fn on_samples(wav: *mut c_short, samples: c_int, _events: *mut c_void) -> c_int {
    SINK.with(|sink| {
        let mut sink = sink.borrow_mut();
        let Some(sink) = sink.as_mut() else {
            return 1;
        };
        if sink.cancel.is_cancelled() || sink.closed {
            return 1;
        }
        if wav.is_null() || samples <= 0 {
            return 0;
        }
        // SAFETY: espeak passes `samples` valid 16-bit samples at `wav`,
        // alive for the duration of this call.
        let pcm = unsafe { std::slice::from_raw_parts(wav, samples as usize) };
        let chunk = AudioChunk::from_i16(sink.sample_rate, pcm);
        if sink.audio.blocking_send(chunk).is_err() {
            sink.closed = true;
            return 1;
        }
        0
    })
}

/// The espeak thread: initialises the library once, then speaks jobs.
fn run(tasks: std_mpsc::Receiver<Task>, ready: std_mpsc::Sender<Result<u32, String>>) {
    // SAFETY: this thread is the only one that ever calls into libespeak-ng.
    let rate = unsafe {
        ffi::espeak_Initialize(
            ffi::AUDIO_OUTPUT_SYNCHRONOUS,
            BUFFER_MS,
            std::ptr::null(),
            ffi::INITIALIZE_DONT_EXIT,
        )
    };
    if rate <= 0 {
        let _ = ready.send(Err(
            "espeak_Initialize failed (is espeak-ng-data installed?)".into(),
        ));
        return;
    }
    // SAFETY: as above; the callback is a plain function.
    unsafe { ffi::espeak_SetSynthCallback(on_samples) };
    let sample_rate = rate as u32;
    let _ = ready.send(Ok(sample_rate));

    let mut current = Selected::default();
    for task in tasks {
        match task {
            Task::Speak(job) => {
                let result = speak_job(&job, sample_rate, &mut current);
                let _ = job.done.send(result);
            }
            // A voice that cannot be selected leaves `call` undone; the
            // caller sees its result channel close.
            Task::Call { voice, call } => {
                if current.select(&voice).is_ok() {
                    call();
                }
            }
        }
    }
}

/// What the library has selected, so that it is changed only when a job
/// needs something else.
#[derive(Default)]
struct Selected {
    name: String,
    /// Rate and word gap as last set; `None` after a voice change, since
    /// loading a voice may reset them.
    parameters: Option<(u32, u32)>,
}

impl Selected {
    fn select(&mut self, name: &str) -> Result<(), TtsError> {
        if self.name != name {
            let unavailable = |reason: String| TtsError::Unavailable {
                provider: PROVIDER.into(),
                reason,
            };
            let c_name = CString::new(name).map_err(|e| unavailable(e.to_string()))?;
            self.parameters = None;
            // SAFETY: espeak thread; `c_name` is a valid C string for the call.
            if unsafe { ffi::espeak_SetVoiceByName(c_name.as_ptr()) } != ffi::EE_OK {
                self.name.clear();
                return Err(unavailable(format!("no espeak-ng voice {name:?}")));
            }
            self.name = name.to_string();
        }
        Ok(())
    }

    fn apply(&mut self, voice: &Voice) -> Result<(), TtsError> {
        self.select(&voice.name)?;
        let wanted = (voice.rate_wpm, voice.word_gap);
        if self.parameters != Some(wanted) {
            // SAFETY: espeak thread.
            unsafe {
                ffi::espeak_SetParameter(ffi::RATE, voice.rate_wpm.clamp(80, 450) as c_int, 0);
                ffi::espeak_SetParameter(ffi::WORDGAP, voice.word_gap.min(100) as c_int, 0);
            }
            self.parameters = Some(wanted);
        }
        Ok(())
    }
}

fn speak_job(job: &Job, sample_rate: u32, current: &mut Selected) -> Result<(), TtsError> {
    let unavailable = |reason: String| TtsError::Unavailable {
        provider: PROVIDER.into(),
        reason,
    };
    current.apply(&job.voice)?;
    // Interior NULs would end the text early; they are not speech anyway.
    let text = CString::new(job.text.replace('\0', " ")).map_err(|e| unavailable(e.to_string()))?;
    SINK.with(|sink| {
        *sink.borrow_mut() = Some(Sink {
            sample_rate,
            audio: job.audio.clone(),
            cancel: job.cancel.clone(),
            closed: false,
        })
    });
    let bytes = text.as_bytes_with_nul();
    // SAFETY: espeak thread; `text` outlives the call, which is synchronous.
    let status = unsafe {
        ffi::espeak_Synth(
            bytes.as_ptr().cast(),
            bytes.len(),
            0,
            ffi::POS_CHARACTER,
            0,
            ffi::CHARS_UTF8 | ffi::ENDPAUSE,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
    };
    let closed = SINK.with(|sink| sink.borrow_mut().take().is_some_and(|s| s.closed));
    if job.cancel.is_cancelled() {
        return Err(TtsError::Cancelled);
    }
    if closed {
        return Err(TtsError::Transport {
            provider: PROVIDER.into(),
            reason: "audio receiver closed".into(),
        });
    }
    if status != ffi::EE_OK {
        return Err(unavailable(format!("espeak_Synth returned {status}")));
    }
    Ok(())
}

/// The process-wide espeak thread, started on first use.
struct Engine {
    jobs: std_mpsc::Sender<Task>,
}

fn engine() -> Result<&'static Engine, TtsError> {
    static ENGINE: OnceLock<Result<Engine, String>> = OnceLock::new();
    let engine = ENGINE.get_or_init(|| {
        let (jobs_tx, jobs_rx) = std_mpsc::channel();
        let (ready_tx, ready_rx) = std_mpsc::channel();
        std::thread::Builder::new()
            .name("espeak-ng".into())
            .spawn(move || run(jobs_rx, ready_tx))
            .map_err(|e| e.to_string())?;
        ready_rx.recv().map_err(|e| e.to_string())??;
        Ok(Engine { jobs: jobs_tx })
    });
    engine.as_ref().map_err(|reason| TtsError::Unavailable {
        provider: PROVIDER.into(),
        reason: reason.clone(),
    })
}

/// Runs `call` on the espeak thread with `voice` selected, and waits for it:
/// the way for other code to use libespeak-ng, whose state is global.
/// Blocking; call it from a blocking thread.
pub(crate) fn with_voice<R: Send + 'static>(
    voice: &str,
    call: impl FnOnce() -> R + Send + 'static,
) -> Result<R, TtsError> {
    let engine = engine()?;
    let (result_tx, result_rx) = std_mpsc::channel();
    let task = Task::Call {
        voice: voice.to_string(),
        call: Box::new(move || {
            let _ = result_tx.send(call());
        }),
    };
    let stopped = || TtsError::Unavailable {
        provider: PROVIDER.into(),
        reason: format!("the espeak thread has stopped, or has no voice {voice:?}"),
    };
    engine.jobs.send(task).map_err(|_| stopped())?;
    result_rx.recv().map_err(|_| stopped())
}

/// The espeak-ng provider.
#[derive(Debug, Clone)]
pub struct EspeakTts {
    config: EspeakConfig,
}

impl EspeakTts {
    /// Starts the espeak thread if it is not running and checks that the
    /// library initialised.
    pub fn start(config: &EspeakConfig) -> Result<Self, TtsError> {
        engine()?;
        Ok(Self {
            config: config.clone(),
        })
    }

    /// The espeak-ng voice for a reply language: the configured name, rate
    /// and word gap where set, else the built-in ones.
    pub fn voice(&self, language: Language) -> Voice {
        // Measured with tests/tts_roundtrip.rs (espeak-ng → Ogg/Opus →
        // Whisper base, told the language; corpus WER): at 165 wpm with no
        // gap espeak runs its words together and Whisper hears "pedido" as
        // "venimos". At 145 wpm with a pause between words Spanish goes from
        // 46% to 16-19%, Italian from 54% to 38-42%, Portuguese from 68% to
        // 44-53% (a gap of 8 did best); French gains little either way (78%
        // to 68-77%, best without a gap). The variants +m3, +f3 and +klatt4,
        // es-419 and pt (Portugal) did no better.
        let (name, rate_wpm, word_gap) = match language {
            Language::En => ("en-us", 165, 0),
            Language::Es => ("es", 145, 16),
            Language::It => ("it", 145, 16),
            Language::Pt => ("pt-br", 145, 8),
            Language::Fr => ("fr", 145, 0),
        };
        let config = &self.config;
        Voice {
            name: config
                .voices
                .get(&language)
                .cloned()
                .unwrap_or_else(|| name.to_string()),
            rate_wpm: config
                .rates
                .get(&language)
                .copied()
                .or(config.rate_wpm)
                .unwrap_or(rate_wpm),
            word_gap: config.word_gaps.get(&language).copied().unwrap_or(word_gap),
        }
    }
}

#[async_trait]
impl TextToSpeech for EspeakTts {
    fn name(&self) -> &str {
        PROVIDER
    }

    async fn speak(
        &self,
        request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        let engine = engine()?;
        let voice = self.voice(request.language);
        let mut clock = AudioClock::new();
        loop {
            let chunk = tokio::select! {
                chunk = text.recv() => chunk,
                () = cancel.cancelled() => return Err(TtsError::Cancelled),
            };
            let Some(chunk) = chunk else { break };
            if chunk.trim().is_empty() {
                continue;
            }
            clock.text();
            // The job's audio passes through here to feed the clock.
            let (job_audio, mut job_rx) = mpsc::channel(16);
            let (done_tx, done_rx) = oneshot::channel();
            let job_cancel = cancel.child_token();
            let job = Job {
                text: chunk,
                voice: voice.clone(),
                audio: job_audio,
                cancel: job_cancel.clone(),
                done: done_tx,
            };
            if engine.jobs.send(Task::Speak(job)).is_err() {
                return Err(TtsError::Unavailable {
                    provider: PROVIDER.into(),
                    reason: "the espeak thread has stopped".into(),
                });
            }
            while let Some(samples) = job_rx.recv().await {
                clock.audio(&samples);
                if audio.send(samples).await.is_err() {
                    job_cancel.cancel();
                    return Err(TtsError::Cancelled);
                }
            }
            match done_rx.await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(TtsError::Unavailable {
                        provider: PROVIDER.into(),
                        reason: "the espeak thread has stopped".into(),
                    })
                }
            }
        }
        Ok(clock.report(PROVIDER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn say(text: &str, language: Language) -> (Vec<AudioChunk>, SpeechReport) {
        let tts = EspeakTts::start(&EspeakConfig::default()).unwrap();
        let (text_tx, text_rx) = mpsc::channel(4);
        let (audio_tx, mut audio_rx) = mpsc::channel(64);
        text_tx.send(text.to_string()).await.unwrap();
        drop(text_tx);
        let request = SpeechRequest { language };
        let collect = async {
            let mut chunks = Vec::new();
            while let Some(chunk) = audio_rx.recv().await {
                chunks.push(chunk);
            }
            chunks
        };
        let (report, chunks) = tokio::join!(
            tts.speak(&request, text_rx, audio_tx, CancellationToken::new()),
            collect
        );
        (chunks, report.unwrap())
    }

    #[test]
    fn configured_voices_rates_and_gaps_override_the_built_in_ones() {
        let built_in = EspeakTts::start(&EspeakConfig::default()).unwrap();
        assert_eq!(
            built_in.voice(Language::Es),
            Voice {
                name: "es".into(),
                rate_wpm: 145,
                word_gap: 16
            }
        );
        assert_eq!(built_in.voice(Language::En).rate_wpm, 165);
        let config = EspeakConfig {
            rate_wpm: Some(180),
            rates: [(Language::It, 130)].into(),
            voices: [(Language::Es, "es-419+m3".to_string())].into(),
            word_gaps: [(Language::Es, 4)].into(),
        };
        let tts = EspeakTts::start(&config).unwrap();
        assert_eq!(
            tts.voice(Language::Es),
            Voice {
                name: "es-419+m3".into(),
                rate_wpm: 180,
                word_gap: 4
            }
        );
        assert_eq!(tts.voice(Language::It).rate_wpm, 130);
        assert_eq!(tts.voice(Language::It).word_gap, 16);
    }

    #[tokio::test]
    async fn speaks_every_language_in_chunks() {
        for language in Language::ALL {
            let (chunks, report) = say("Hello, one two three.", language).await;
            assert!(chunks.len() > 3, "{language}: streamed in buffers");
            assert!(chunks.iter().all(|c| c.sample_rate == 22_050));
            let seconds: f32 = chunks
                .iter()
                .map(|c| c.samples.len() as f32 / 22_050.0)
                .sum();
            assert!(seconds > 0.8 && seconds < 5.0, "{language}: {seconds} s");
            let peak = chunks
                .iter()
                .flat_map(|c| c.samples.iter())
                .fold(0.0f32, |m, &s| m.max(s.abs()));
            assert!(peak > 0.05, "{language}: not silence");
            assert!(report.first_audio.is_some());
        }
    }

    #[tokio::test]
    async fn cancel_stops_quickly() {
        let tts = EspeakTts::start(&EspeakConfig::default()).unwrap();
        let (text_tx, text_rx) = mpsc::channel(4);
        let (audio_tx, mut audio_rx) = mpsc::channel(1);
        text_tx
            .send(
                "This is a long sentence that would take several seconds to speak aloud. "
                    .repeat(20),
            )
            .await
            .unwrap();
        let cancel = CancellationToken::new();
        let request = SpeechRequest {
            language: Language::En,
        };
        let speaking = tts.speak(&request, text_rx, audio_tx, cancel.clone());
        let stopper = async {
            audio_rx.recv().await.unwrap();
            cancel.cancel();
            // Keep draining so the espeak thread is never blocked.
            while audio_rx.recv().await.is_some() {}
        };
        let started = std::time::Instant::now();
        let (result, ()) = tokio::join!(speaking, stopper);
        assert!(matches!(result, Err(TtsError::Cancelled)), "{result:?}");
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // The engine is still usable afterwards.
        let (chunks, _) = say("Still here.", Language::En).await;
        assert!(!chunks.is_empty());
    }
}
