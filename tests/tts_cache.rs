//! The rendered-speech cache in front of the in-process voices: a repeated
//! sentence is not synthesised again and comes back at once, equal to a
//! fresh synthesis; memory stays within its bound however many distinct
//! sentences pass; the start-up warm-up renders the templates' fixed
//! sentences.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use support::speech::say;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use voxline::tts::cache::{self, CacheConfig, CachedTts, SpeechCache, WarmUp};
use voxline::tts::{
    AudioChunk, Language, ProviderKind, SpeechReport, SpeechRequest, TextToSpeech, TtsConfig,
    TtsError,
};

/// A voice that says each chunk as a tone as long as its text, and counts
/// the chunks it was asked for.
struct CountingVoice {
    chunks: AtomicUsize,
}

#[async_trait]
impl TextToSpeech for CountingVoice {
    fn name(&self) -> &str {
        "counting"
    }

    async fn speak(
        &self,
        _request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        _cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        while let Some(chunk) = text.recv().await {
            self.chunks.fetch_add(1, Ordering::SeqCst);
            let samples = (0..chunk.len() * 100)
                .map(|i| (i as f32 * 0.05).sin() * 0.5)
                .collect();
            let _ = audio
                .send(AudioChunk {
                    sample_rate: 16_000,
                    samples,
                })
                .await;
        }
        Ok(SpeechReport {
            provider: "counting".into(),
            first_audio: None,
            audio: Duration::ZERO,
        })
    }
}

fn memory_only(memory_mb: u64) -> CacheConfig {
    CacheConfig {
        memory_mb,
        persist: false,
        ..CacheConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_within_its_bound_after_ten_thousand_distinct_sentences() {
    let voice = Arc::new(CountingVoice {
        chunks: AtomicUsize::new(0),
    });
    let cache = Arc::new(SpeechCache::new(&memory_only(1), None));
    let voices = HashMap::from([(Language::En, "tone".to_string())]);
    let cached = CachedTts::new(voice.clone(), voices, Arc::clone(&cache));
    let mut peak = 0;
    for i in 0..10_000 {
        let sentence = format!("Sentence number {i} of many.");
        let (chunks, report) = say(&cached, &[sentence.as_str()], Language::En).await;
        report.unwrap();
        assert_eq!(chunks.len(), 1);
        peak = peak.max(cache.memory_bytes());
    }
    assert_eq!(voice.chunks.load(Ordering::SeqCst), 10_000);
    assert!(peak <= 1 << 20, "peak {peak} bytes over 1 MiB");
    assert!(cache.len() > 50, "the cache still holds the recent ones");
    // The latest is a hit, the first long gone.
    let (_, report) = say(&cached, &["Sentence number 9999 of many."], Language::En).await;
    report.unwrap();
    assert_eq!(voice.chunks.load(Ordering::SeqCst), 10_000);
    let (_, report) = say(&cached, &["Sentence number 0 of many."], Language::En).await;
    report.unwrap();
    assert_eq!(voice.chunks.load(Ordering::SeqCst), 10_001);
}

fn espeak_only() -> TtsConfig {
    TtsConfig {
        providers: vec![ProviderKind::Espeak],
        ..TtsConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_sentence_comes_from_the_cache_equal_to_a_fresh_synthesis() {
    let cache = Arc::new(SpeechCache::new(&memory_only(8), None));
    let chain = voxline::tts::chain(&espeak_only(), Some(Arc::clone(&cache))).unwrap();
    let fresh = voxline::tts::from_config(&espeak_only()).unwrap();
    let sentence = "Is there anything else I can help you with?";

    let (first, report) = say(&chain, &[sentence], Language::En).await;
    report.unwrap();
    assert_eq!(cache.lookups(), (0, 1));
    // A hit's cost: the quickest of five, so that a busy machine's
    // scheduling hiccup is not counted as the cache's.
    let mut quickest = Duration::MAX;
    let mut again = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let (audio, report) = say(&chain, &[sentence], Language::En).await;
        quickest = quickest.min(started.elapsed());
        report.unwrap();
        again = audio;
    }
    assert_eq!(cache.lookups(), (5, 1), "five hits, no synthesis");
    assert!(
        quickest < Duration::from_millis(5),
        "a hit took {quickest:?}"
    );

    // Stored as 16-bit samples: equal to what was heard within one step.
    let (uncached, report) = say(&fresh, &[sentence], Language::En).await;
    report.unwrap();
    let join = |chunks: &[AudioChunk]| -> Vec<f32> {
        chunks.iter().flat_map(|c| c.samples.clone()).collect()
    };
    let first_rate = first[0].sample_rate;
    let (first, again, uncached) = (join(&first), join(&again), join(&uncached));
    let worst = |a: &[f32], b: &[f32]| {
        a.iter()
            .zip(b)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max)
    };
    // What the cache gives back is what was heard, within one 16-bit step.
    assert_eq!(again.len(), first.len());
    let step = 1.0 / 32_767.0 + 1e-6;
    assert!(worst(&again, &first) <= step, "{}", worst(&again, &first));
    // A fresh synthesis of the same sentence is not sample for sample the
    // same: espeak-ng's noise sources (fricatives, breath) vary from run to
    // run, and so does its length by a few samples (54 774 to 54 787 in
    // four runs). The tolerance is on what is heard: the same length within
    // 0.1% and the same loudness contour, frame by frame (20 ms), within 5%
    // of the mean level.
    assert!(again.len().abs_diff(uncached.len()) <= again.len() / 1000);
    let rate = first_rate as usize;
    let contour = |s: &[f32]| -> Vec<f32> {
        s.chunks(rate / 50)
            .map(|f| (f.iter().map(|x| x * x).sum::<f32>() / f.len() as f32).sqrt())
            .collect()
    };
    let (a, b) = (contour(&again), contour(&uncached));
    let mean = a.iter().sum::<f32>() / a.len() as f32;
    let gap = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).sum::<f32>() / a.len() as f32;
    println!(
        "loudness contours differ by {:.1}% of the mean level",
        gap / mean * 100.0
    );
    assert!(gap <= 0.05 * mean, "{:.1}%", gap / mean * 100.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_up_renders_the_fixed_template_sentences_and_persists_them() {
    let dir = tempfile::tempdir().unwrap();
    let config = CacheConfig {
        memory_mb: 16,
        persist: true,
        ..CacheConfig::default()
    };
    let templates = voxline::dialog::templates::Templates::load(
        &PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("data/templates"),
    )
    .unwrap();
    let texts: Vec<(Language, String)> = [Language::En, Language::Es]
        .into_iter()
        .flat_map(|l| {
            let texts = templates.fixed_texts(l.code());
            texts.into_iter().map(move |t| (l, t))
        })
        .collect();
    let sentences = cache::fixed_sentences(&texts);
    assert!(sentences.len() >= 20, "{sentences:?}");
    assert!(sentences.iter().all(|(_, s)| !s.contains('{')));

    let speech = Arc::new(SpeechCache::new(&config, Some(dir.path())));
    let chain: Arc<dyn TextToSpeech> =
        Arc::new(voxline::tts::chain(&espeak_only(), Some(Arc::clone(&speech))).unwrap());
    let progress = Arc::new(WarmUp::default());
    cache::warm(
        chain,
        sentences.clone(),
        || false,
        Arc::clone(&progress),
        CancellationToken::new(),
    )
    .await;
    assert!(progress.finished(), "{}", progress.describe());
    assert_eq!(
        progress.describe(),
        format!("speech cache warm: {} sentences", sentences.len())
    );
    assert_eq!(speech.len(), sentences.len());

    // A restart finds them on disk: every one a hit, none synthesised.
    let speech = Arc::new(SpeechCache::new(&config, Some(dir.path())));
    let chain = voxline::tts::chain(&espeak_only(), Some(Arc::clone(&speech))).unwrap();
    let english: Vec<&str> = sentences
        .iter()
        .filter(|(l, _)| *l == Language::En)
        .map(|(_, s)| s.as_str())
        .collect();
    for sentence in &english {
        let (audio, report) = say(&chain, &[sentence], Language::En).await;
        report.unwrap();
        assert!(!audio.is_empty(), "{sentence}");
    }
    assert_eq!(speech.lookups(), (english.len() as u64, 0));
}

/// A voice that takes `per_chunk` for each chunk unless cancelled, and
/// counts the chunks it finished and the ones it was cancelled in.
struct SlowVoice {
    per_chunk: Duration,
    finished: AtomicUsize,
    cancelled: AtomicUsize,
}

#[async_trait]
impl TextToSpeech for SlowVoice {
    fn name(&self) -> &str {
        "slow"
    }

    async fn speak(
        &self,
        _request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        while let Some(_chunk) = text.recv().await {
            tokio::select! {
                () = cancel.cancelled() => {
                    self.cancelled.fetch_add(1, Ordering::SeqCst);
                    return Err(TtsError::Cancelled);
                }
                () = tokio::time::sleep(self.per_chunk) => {}
            }
            self.finished.fetch_add(1, Ordering::SeqCst);
            let _ = audio
                .send(AudioChunk {
                    sample_rate: 16_000,
                    samples: vec![0.1; 1600],
                })
                .await;
        }
        Ok(SpeechReport {
            provider: "slow".into(),
            first_audio: None,
            audio: Duration::ZERO,
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_warm_up_gives_way_to_turns_and_finishes_after_them() {
    let voice = Arc::new(SlowVoice {
        per_chunk: Duration::from_millis(400),
        finished: AtomicUsize::new(0),
        cancelled: AtomicUsize::new(0),
    });
    let cache = Arc::new(SpeechCache::new(&memory_only(4), None));
    let voices = HashMap::from([(Language::En, "slow".to_string())]);
    let cached: Arc<dyn TextToSpeech> =
        Arc::new(CachedTts::new(voice.clone(), voices, Arc::clone(&cache)));
    let sentences: Vec<(Language, String)> = ["Hello.", "Anything else?", "Goodbye."]
        .iter()
        .map(|s| (Language::En, s.to_string()))
        .collect();
    let busy = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let progress = Arc::new(WarmUp::default());
    let warming = tokio::spawn(cache::warm(
        cached,
        sentences,
        {
            let busy = Arc::clone(&busy);
            move || busy.load(Ordering::SeqCst)
        },
        Arc::clone(&progress),
        CancellationToken::new(),
    ));
    // It waits a second of quiet, then renders the first sentence; a turn
    // arrives in the middle of it.
    while voice.finished.load(Ordering::SeqCst) + voice.cancelled.load(Ordering::SeqCst) == 0
        && !busy.load(Ordering::SeqCst)
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
        if cache.lookups().1 > 0 {
            busy.store(true, Ordering::SeqCst);
        }
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        voice.cancelled.load(Ordering::SeqCst),
        1,
        "the sentence gave way"
    );
    assert_eq!(
        voice.finished.load(Ordering::SeqCst),
        0,
        "nothing renders during a turn"
    );
    assert!(progress.describe().starts_with("speech cache warming: 0/3"));
    busy.store(false, Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(20), warming)
        .await
        .expect("the warm-up finishes once the turn is over")
        .unwrap();
    assert_eq!(progress.describe(), "speech cache warm: 3 sentences");
    assert_eq!(voice.finished.load(Ordering::SeqCst), 3);
    assert_eq!(cache.len(), 3);
}
