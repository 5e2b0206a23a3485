//! Rendered speech, kept so that a sentence said before is not synthesised
//! again.
//!
//! A reply is cut into speakable chunks (sentences, or a long first clause)
//! before it reaches a voice; [`CachedTts`] looks each chunk up by provider,
//! voice (model, voice name, speed), language and normalised text, sends a
//! hit's audio at once and synthesises only the misses, one chunk per call
//! to the voice, keeping what it heard. The in-process voices (Piper,
//! Kokoro, espeak-ng) are cached; remote providers are not, their audio is
//! theirs to reuse.
//!
//! [`SpeechCache`] holds the audio as 16-bit samples, bounded by bytes with
//! the least recently used sentence evicted first, and optionally persists
//! each sentence under the data directory (bounded too, oldest written
//! first out), so that a restart finds what the last run said. [`warm`]
//! renders the sentences of the reply templates without slots (greetings,
//! "anything else?", apologies, the repeat request, hand-off and opt-out
//! notices) in the background at start-up, only while no turn is running.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{
    AudioChunk, AudioClock, Language, SpeechReport, SpeechRequest, TextToSpeech, TtsError,
};

/// `[tts.cache]`: the rendered-speech cache.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CacheConfig {
    /// Audio kept in memory, in MiB; 0 turns the cache off. Default: 64,
    /// about 700 sentences of Kokoro's 24 kHz speech.
    pub memory_mb: u64,
    /// Keep each rendered sentence on disk too, under
    /// `<store.data_dir>/speech-cache/`. Default: true.
    pub persist: bool,
    /// Bound of the files on disk, in MiB. Default: 256.
    pub disk_mb: u64,
    /// Render the reply templates' sentences without slots at start-up, in
    /// the background, while no turn runs. Default: true.
    pub warm: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            memory_mb: 64,
            persist: true,
            disk_mb: 256,
            warm: true,
        }
    }
}

/// One sentence's audio.
#[derive(Debug, PartialEq, Eq)]
pub struct Rendered {
    pub sample_rate: u32,
    pub samples: Vec<i16>,
}

impl Rendered {
    fn from_chunks(chunks: &[AudioChunk]) -> Option<Self> {
        let sample_rate = chunks.first()?.sample_rate;
        if chunks.iter().any(|c| c.sample_rate != sample_rate) {
            return None;
        }
        let samples = chunks
            .iter()
            .flat_map(|c| c.samples.iter())
            .map(|&s| (s.clamp(-1.0, 1.0) * 32_767.0).round() as i16)
            .collect();
        Some(Self {
            sample_rate,
            samples,
        })
    }

    fn chunk(&self) -> AudioChunk {
        AudioChunk::from_i16(self.sample_rate, &self.samples)
    }

    /// What it holds in memory, with its key.
    fn cost(&self, key: &str) -> usize {
        self.samples.len() * 2 + key.len() + ENTRY_OVERHEAD
    }
}

/// The map slot, the order entry and the `Arc` of each sentence.
const ENTRY_OVERHEAD: usize = 128;

/// The key of a sentence: who says it, in what voice and language, and the
/// text with its whitespace normalised.
pub fn key(provider: &str, voice: &str, language: Language, text: &str) -> String {
    let text = text.split_whitespace().collect::<Vec<_>>().join(" ");
    format!(
        "{provider}\u{1f}{voice}\u{1f}{}\u{1f}{text}",
        language.code()
    )
}

#[derive(Default)]
struct Memory {
    entries: HashMap<String, (Arc<Rendered>, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, String>,
    bytes: usize,
    tick: u64,
}

impl Memory {
    fn get(&mut self, key: &str) -> Option<Arc<Rendered>> {
        self.tick += 1;
        let tick = self.tick;
        let (rendered, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.to_string());
        Some(Arc::clone(rendered))
    }

    fn put(&mut self, key: String, rendered: Arc<Rendered>, limit: usize) {
        let cost = rendered.cost(&key);
        if cost > limit {
            return;
        }
        if let Some((old, used)) = self.entries.remove(&key) {
            self.order.remove(&used);
            self.bytes -= old.cost(&key);
        }
        while self.bytes + cost > limit {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            if let Some((old, _)) = self.entries.remove(&oldest) {
                self.bytes -= old.cost(&oldest);
            }
        }
        self.tick += 1;
        self.order.insert(self.tick, key.clone());
        self.entries.insert(key, (rendered, self.tick));
        self.bytes += cost;
    }
}

/// The files on disk, oldest written first.
#[derive(Default)]
struct Disk {
    files: VecDeque<(PathBuf, u64)>,
    bytes: u64,
}

/// Rendered sentences in memory (LRU, bounded by bytes) and optionally on
/// disk.
pub struct SpeechCache {
    memory: Mutex<Memory>,
    memory_limit: usize,
    dir: Option<PathBuf>,
    disk: Mutex<Disk>,
    disk_limit: u64,
    hits: AtomicU64,
    misses: AtomicU64,
}

/// The first bytes of a persisted sentence.
const MAGIC: &[u8; 8] = b"VXSPCH1\n";

/// The longest sentence read back from disk: a minute at 48 kHz.
const MAX_PERSISTED_SAMPLES: usize = 48_000 * 60;

impl SpeechCache {
    /// A cache per `config`; `dir` is where sentences persist when
    /// `config.persist` (created if missing; an unusable folder is a
    /// warning and the cache stays in memory).
    pub fn new(config: &CacheConfig, dir: Option<&Path>) -> Self {
        let dir = dir
            .filter(|_| config.persist)
            .and_then(|dir| match std::fs::create_dir_all(dir) {
                Ok(()) => Some(dir.to_path_buf()),
                Err(e) => {
                    tracing::warn!(dir = %dir.display(), error = %e, "speech cache stays in memory: cannot create its folder");
                    None
                }
            });
        let mut disk = Disk::default();
        if let Some(dir) = &dir {
            let mut files: Vec<(std::time::SystemTime, PathBuf, u64)> = std::fs::read_dir(dir)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let meta = e.metadata().ok()?;
                    let path = e.path();
                    let cached = meta.is_file() && path.extension().is_some_and(|x| x == "pcm");
                    cached.then_some((meta.modified().ok()?, path, meta.len()))
                })
                .collect();
            files.sort();
            for (_, path, len) in files {
                disk.bytes += len;
                disk.files.push_back((path, len));
            }
        }
        let cache = Self {
            memory: Mutex::new(Memory::default()),
            memory_limit: usize::try_from(config.memory_mb << 20).unwrap_or(usize::MAX),
            dir,
            disk: Mutex::new(disk),
            disk_limit: config.disk_mb << 20,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        };
        cache.trim_disk();
        cache
    }

    pub fn enabled(&self) -> bool {
        self.memory_limit > 0
    }

    /// Audio held in memory, in bytes (within `memory_mb`).
    pub fn memory_bytes(&self) -> usize {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }

    /// Lookups of this cache that hit and that missed.
    pub fn lookups(&self) -> (u64, u64) {
        (
            self.hits.load(Ordering::Relaxed),
            self.misses.load(Ordering::Relaxed),
        )
    }

    /// Sentences held in memory.
    pub fn len(&self) -> usize {
        self.memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entries
            .len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The sentence under `key`, from memory or else from disk; counted as
    /// a hit or a miss in the metrics.
    pub fn get(&self, key: &str) -> Option<Arc<Rendered>> {
        let found = self.peek(key);
        let counter = if found.is_some() {
            &self.hits
        } else {
            &self.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        crate::metrics::global().speech_cache_lookup(found.is_some());
        found
    }

    fn peek(&self, key: &str) -> Option<Arc<Rendered>> {
        if !self.enabled() {
            return None;
        }
        let memory = self
            .memory
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(key);
        if memory.is_some() {
            return memory;
        }
        let rendered = Arc::new(self.read(key)?);
        self.remember(key.to_string(), Arc::clone(&rendered));
        Some(rendered)
    }

    /// Keeps a sentence, in memory and on disk.
    pub fn put(&self, key: String, rendered: Rendered) {
        if !self.enabled() {
            return;
        }
        let rendered = Arc::new(rendered);
        self.write(&key, &rendered);
        self.remember(key, rendered);
    }

    fn remember(&self, key: String, rendered: Arc<Rendered>) {
        let bytes = {
            let mut memory = self.memory.lock().unwrap_or_else(PoisonError::into_inner);
            memory.put(key, rendered, self.memory_limit);
            memory.bytes
        };
        crate::metrics::global().set_speech_cache_bytes(bytes);
    }

    fn path(&self, key: &str) -> Option<PathBuf> {
        let digest = Sha256::digest(key.as_bytes());
        Some(
            self.dir
                .as_ref()?
                .join(format!("{}.pcm", hex::encode(&digest[..16]))),
        )
    }

    /// A persisted sentence; a file that is not one (cut short, another
    /// key under the same name) is a miss, removed with a warning.
    fn read(&self, key: &str) -> Option<Rendered> {
        let path = self.path(key)?;
        let file = std::fs::File::open(&path).ok()?;
        match Self::parse(file, key) {
            Ok(rendered) => Some(rendered),
            Err(reason) => {
                tracing::warn!(file = %path.display(), %reason, "speech cache file dropped");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    fn parse(file: std::fs::File, key: &str) -> Result<Rendered, String> {
        let mut reader = std::io::BufReader::new(file);
        let u32_at = |reader: &mut std::io::BufReader<std::fs::File>| {
            let mut b = [0u8; 4];
            reader
                .read_exact(&mut b)
                .map(|()| u32::from_le_bytes(b))
                .map_err(|e| e.to_string())
        };
        let mut magic = [0u8; 8];
        reader.read_exact(&mut magic).map_err(|e| e.to_string())?;
        if &magic != MAGIC {
            return Err("not a speech cache file".into());
        }
        let key_len = u32_at(&mut reader)? as usize;
        if key_len != key.len() {
            return Err("another sentence's file".into());
        }
        let mut stored = vec![0u8; key_len];
        reader.read_exact(&mut stored).map_err(|e| e.to_string())?;
        if stored != key.as_bytes() {
            return Err("another sentence's file".into());
        }
        let sample_rate = u32_at(&mut reader)?;
        let count = u32_at(&mut reader)? as usize;
        if count > MAX_PERSISTED_SAMPLES || !(8_000..=48_000).contains(&sample_rate) {
            return Err(format!("{count} samples at {sample_rate} Hz"));
        }
        let mut bytes = vec![0u8; count * 2];
        reader.read_exact(&mut bytes).map_err(|e| e.to_string())?;
        let samples = bytes
            .chunks_exact(2)
            .map(|b| i16::from_le_bytes([b[0], b[1]]))
            .collect();
        Ok(Rendered {
            sample_rate,
            samples,
        })
    }

    /// Persists a sentence (written aside, then renamed into place); a
    /// failed write is a warning.
    fn write(&self, key: &str, rendered: &Rendered) {
        let Some(path) = self.path(key) else {
            return;
        };
        let mut bytes = Vec::with_capacity(24 + key.len() + rendered.samples.len() * 2);
        bytes.extend_from_slice(MAGIC);
        bytes.extend((key.len() as u32).to_le_bytes());
        bytes.extend_from_slice(key.as_bytes());
        bytes.extend(rendered.sample_rate.to_le_bytes());
        bytes.extend((rendered.samples.len() as u32).to_le_bytes());
        for s in &rendered.samples {
            bytes.extend(s.to_le_bytes());
        }
        let aside = path.with_extension("part");
        let written = std::fs::write(&aside, &bytes).and_then(|()| std::fs::rename(&aside, &path));
        if let Err(e) = written {
            tracing::warn!(file = %path.display(), error = %e, "speech cache: cannot persist a sentence");
            let _ = std::fs::remove_file(&aside);
            return;
        }
        {
            let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
            disk.bytes += bytes.len() as u64;
            disk.files.push_back((path, bytes.len() as u64));
        }
        self.trim_disk();
    }

    fn trim_disk(&self) {
        let mut disk = self.disk.lock().unwrap_or_else(PoisonError::into_inner);
        while disk.bytes > self.disk_limit {
            let Some((path, len)) = disk.files.pop_front() else {
                break;
            };
            disk.bytes -= len;
            let _ = std::fs::remove_file(path);
        }
    }

    /// Bytes of the persisted sentences (within `disk_mb`).
    pub fn disk_bytes(&self) -> u64 {
        self.disk
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
    }
}

/// A voice with the speech cache in front of it: `voice` names, per
/// language, what the voice's audio depends on besides the text (model,
/// voice, speed); a language it has no name for goes to the voice
/// uncached.
pub struct CachedTts {
    inner: Arc<dyn TextToSpeech>,
    voice: HashMap<Language, String>,
    cache: Arc<SpeechCache>,
}

impl CachedTts {
    pub fn new(
        inner: Arc<dyn TextToSpeech>,
        voice: HashMap<Language, String>,
        cache: Arc<SpeechCache>,
    ) -> Self {
        Self {
            inner,
            voice,
            cache,
        }
    }
}

#[async_trait]
impl TextToSpeech for CachedTts {
    fn name(&self) -> &str {
        self.inner.name()
    }

    fn speaks(&self, language: Language) -> bool {
        self.inner.speaks(language)
    }

    async fn speak(
        &self,
        request: &SpeechRequest,
        mut text: mpsc::Receiver<String>,
        audio: mpsc::Sender<AudioChunk>,
        cancel: CancellationToken,
    ) -> Result<SpeechReport, TtsError> {
        let voice = match self.voice.get(&request.language) {
            Some(voice) if self.cache.enabled() => voice,
            _ => return self.inner.speak(request, text, audio, cancel).await,
        };
        let mut clock = AudioClock::new();
        loop {
            let chunk = tokio::select! {
                () = cancel.cancelled() => return Err(TtsError::Cancelled),
                chunk = text.recv() => chunk,
            };
            let Some(chunk) = chunk else { break };
            if chunk.trim().is_empty() {
                continue;
            }
            clock.text();
            let key = key(self.inner.name(), voice, request.language, &chunk);
            if let Some(rendered) = self.cache.get(&key) {
                let chunk = rendered.chunk();
                clock.audio(&chunk);
                if audio.send(chunk).await.is_err() {
                    return Err(TtsError::Cancelled);
                }
                continue;
            }
            tracing::debug!(language = request.language.code(), text = %chunk, "speech cache: miss");
            let heard = self.render(request, chunk, &audio, &cancel).await?;
            for chunk in &heard {
                clock.audio(chunk);
            }
            if let Some(rendered) = Rendered::from_chunks(&heard) {
                self.cache.put(key, rendered);
            }
        }
        Ok(clock.report(self.inner.name()))
    }
}

impl CachedTts {
    /// One chunk through the voice: its audio is passed on as it comes and
    /// returned for the cache.
    async fn render(
        &self,
        request: &SpeechRequest,
        chunk: String,
        audio: &mpsc::Sender<AudioChunk>,
        cancel: &CancellationToken,
    ) -> Result<Vec<AudioChunk>, TtsError> {
        let (text_tx, text_rx) = mpsc::channel(1);
        // The channel has room for the one chunk.
        let _ = text_tx.try_send(chunk);
        drop(text_tx);
        let (audio_tx, mut audio_rx) = mpsc::channel::<AudioChunk>(32);
        let stop = cancel.child_token();
        let speaking = self.inner.speak(request, text_rx, audio_tx, stop.clone());
        let forwarding = async {
            let mut heard = Vec::new();
            while let Some(chunk) = audio_rx.recv().await {
                if audio.send(chunk.clone()).await.is_err() {
                    // Nobody listens any more: the voice stops too.
                    stop.cancel();
                    return None;
                }
                heard.push(chunk);
            }
            Some(heard)
        };
        let (spoken, heard) = tokio::join!(speaking, forwarding);
        spoken?;
        let heard = heard.ok_or(TtsError::Cancelled)?;
        Ok(heard)
    }
}

/// How long the service must be idle before the warm-up renders.
const IDLE_BEFORE_WARMING: Duration = Duration::from_secs(1);

/// How often the warm-up checks for turns.
const BUSY_POLL: Duration = Duration::from_millis(50);

/// Waits until `busy` has said no for [`IDLE_BEFORE_WARMING`]; false when
/// `stop` comes first.
async fn idle_for(busy: &impl Fn() -> bool, stop: &CancellationToken) -> bool {
    let mut idle_since: Option<Instant> = None;
    loop {
        if busy() {
            idle_since = None;
        } else if idle_since.get_or_insert_with(Instant::now).elapsed() >= IDLE_BEFORE_WARMING {
            return true;
        }
        tokio::select! {
            () = stop.cancelled() => return false,
            () = tokio::time::sleep(BUSY_POLL) => {}
        }
    }
}

/// How far the start-up rendering has come, for `/readyz`.
#[derive(Debug, Default)]
pub struct WarmUp {
    total: AtomicUsize,
    done: AtomicUsize,
    failed: AtomicUsize,
    finished: AtomicBool,
}

impl WarmUp {
    /// "warming 12/40" or "warm: 40 sentences" (and how many failed).
    pub fn describe(&self) -> String {
        let total = self.total.load(Ordering::Relaxed);
        let done = self.done.load(Ordering::Relaxed);
        let failed = self.failed.load(Ordering::Relaxed);
        let failed = if failed > 0 {
            format!(", {failed} failed")
        } else {
            String::new()
        };
        if self.finished.load(Ordering::Relaxed) {
            format!("speech cache warm: {done} sentences{failed}")
        } else {
            format!("speech cache warming: {done}/{total}{failed}")
        }
    }

    pub fn finished(&self) -> bool {
        self.finished.load(Ordering::Relaxed)
    }

    /// Sentences rendered so far.
    pub fn rendered(&self) -> usize {
        self.done.load(Ordering::Relaxed)
    }
}

/// The sentences of `texts` (reply templates) that have no slot left, as
/// the aggregator cuts them and made speakable, without repeats, taking
/// the languages in turn: the first few sentences rendered run each voice
/// once, which is also its warm-up inference (ONNX Runtime's first run
/// pays for its memory arena and kernel choice).
pub fn fixed_sentences(texts: &[(Language, String)]) -> Vec<(Language, String)> {
    let mut seen = std::collections::HashSet::new();
    let mut by_language: BTreeMap<&str, VecDeque<(Language, String)>> = BTreeMap::new();
    // A reply's first sentence, when long, goes out a clause first; the
    // same sentence later in a reply (after another template's) goes whole.
    // Both forms are rendered.
    let whole = super::AggregatorConfig {
        first_clause_min_chars: usize::MAX,
        ..super::AggregatorConfig::default()
    };
    for (language, text) in texts {
        let mut chunks = Vec::new();
        for config in [super::AggregatorConfig::default(), whole.clone()] {
            let mut aggregator = super::SentenceAggregator::new(*language, config);
            chunks.extend(aggregator.push(text));
            chunks.extend(aggregator.finish());
        }
        for chunk in chunks {
            if chunk.contains(['{', '}']) {
                continue;
            }
            let spoken = super::speak::speakable(&chunk, *language);
            if seen.insert((*language, spoken.clone())) {
                by_language
                    .entry(language.code())
                    .or_default()
                    .push_back((*language, spoken));
            }
        }
    }
    let mut out = Vec::new();
    while by_language.values().any(|queue| !queue.is_empty()) {
        for queue in by_language.values_mut() {
            out.extend(queue.pop_front());
        }
    }
    out
}

/// Renders `sentences` through `tts` (whose cached voices keep them), one
/// at a time and only while `busy` says no turn is running, until done or
/// `stop`: a sentence under way when a turn arrives is cancelled and
/// rendered again once the service has been idle for a second. Progress
/// goes to `progress`.
pub async fn warm(
    tts: Arc<dyn TextToSpeech>,
    sentences: Vec<(Language, String)>,
    busy: impl Fn() -> bool,
    progress: Arc<WarmUp>,
    stop: CancellationToken,
) {
    progress.total.store(sentences.len(), Ordering::Relaxed);
    let started = Instant::now();
    let mut first = true;
    let mut queue: VecDeque<(Language, String)> = sentences.into();
    while let Some((language, sentence)) = queue.pop_front() {
        if busy() || first {
            first = false;
            if !idle_for(&busy, &stop).await {
                return;
            }
        }
        let (text_tx, text_rx) = mpsc::channel(1);
        let _ = text_tx.try_send(sentence.clone());
        drop(text_tx);
        let (audio_tx, mut audio_rx) = mpsc::channel(32);
        let request = SpeechRequest { language };
        let attempt = stop.child_token();
        let draining = async { while audio_rx.recv().await.is_some() {} };
        // A turn that arrives meanwhile gets the cores: the sentence stops
        // and waits its turn again.
        let yielding = async {
            loop {
                tokio::time::sleep(BUSY_POLL).await;
                if busy() {
                    attempt.cancel();
                    return;
                }
            }
        };
        let speaking = async {
            let (spoken, ()) = tokio::join!(
                tts.speak(&request, text_rx, audio_tx, attempt.clone()),
                draining
            );
            spoken
        };
        tokio::pin!(speaking);
        // Cancelled, the voice stops its own work (an inference is
        // terminated) and returns; it is not dropped mid-way.
        let spoken = tokio::select! {
            spoken = &mut speaking => spoken,
            () = yielding => speaking.await,
        };
        match spoken {
            Ok(_) => {
                progress.done.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) if stop.is_cancelled() => return,
            Err(TtsError::Cancelled) => queue.push_front((language, sentence)),
            Err(error) => {
                tracing::warn!(%error, "speech cache: a template sentence did not render");
                progress.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    progress.finished.store(true, Ordering::Relaxed);
    tracing::info!(
        rendered = progress.done.load(Ordering::Relaxed),
        failed = progress.failed.load(Ordering::Relaxed),
        seconds = started.elapsed().as_secs_f64(),
        "speech cache warm"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rendered(n: usize) -> Rendered {
        Rendered {
            sample_rate: 16_000,
            samples: (0..n).map(|i| (i % 1000) as i16).collect(),
        }
    }

    fn config(memory_mb: u64, persist: bool) -> CacheConfig {
        CacheConfig {
            memory_mb,
            persist,
            ..CacheConfig::default()
        }
    }

    #[test]
    fn the_least_recently_used_goes_first_and_memory_stays_bounded() {
        let cache = SpeechCache::new(&config(1, false), None);
        // 1 MiB holds three sentences of 160 000 samples (320 kB each).
        for k in ["a", "b", "c"] {
            cache.put(k.into(), rendered(160_000));
        }
        assert!(cache.peek("a").is_some());
        cache.put("d".into(), rendered(160_000));
        assert!(cache.peek("b").is_none(), "b was the least recently used");
        assert!(cache.peek("a").is_some() && cache.peek("c").is_some());
        assert!(cache.memory_bytes() <= 1 << 20);
        // A sentence larger than the whole cache is not kept.
        cache.put("huge".into(), rendered(600_000));
        assert!(cache.peek("huge").is_none());
        assert!(cache.memory_bytes() <= 1 << 20);
    }

    #[test]
    fn persisted_sentences_survive_a_restart_and_bad_files_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SpeechCache::new(&config(4, true), Some(dir.path()));
        let k = key("piper", "joe", Language::En, "  Anything   else? ");
        assert_eq!(k, key("piper", "joe", Language::En, "Anything else?"));
        cache.put(k.clone(), rendered(1234));
        drop(cache);
        let cache = SpeechCache::new(&config(4, true), Some(dir.path()));
        assert_eq!(cache.len(), 0);
        assert_eq!(*cache.peek(&k).unwrap(), rendered(1234));
        assert_eq!(cache.len(), 1);

        // A file cut short is dropped, not believed.
        let path = cache.path(&k).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 10]).unwrap();
        let cache = SpeechCache::new(&config(4, true), Some(dir.path()));
        assert!(cache.peek(&k).is_none());
        assert!(!path.exists());
    }

    #[test]
    fn the_disk_stays_within_its_bound() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SpeechCache::new(
            &CacheConfig {
                memory_mb: 4,
                persist: true,
                disk_mb: 1,
                warm: false,
            },
            Some(dir.path()),
        );
        for i in 0..20 {
            cache.put(format!("sentence {i}"), rendered(100_000));
        }
        assert!(cache.disk_bytes() <= 1 << 20);
        let on_disk: u64 = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        assert_eq!(on_disk, cache.disk_bytes());
        assert!(cache.peek("sentence 19").is_some());
    }

    #[test]
    fn template_sentences_without_slots_are_found() {
        let texts = [
            (
                Language::En,
                "Order {order} is {status}. Anything else I can help with?".to_string(),
            ),
            (
                Language::En,
                "Sorry, I didn't catch that. Could you say it again?".to_string(),
            ),
            (Language::Es, "¿Algo más?".to_string()),
            (Language::En, "Anything else I can help with?".to_string()),
        ];
        let sentences = fixed_sentences(&texts);
        let english: Vec<&str> = sentences
            .iter()
            .filter(|(l, _)| *l == Language::En)
            .map(|(_, s)| s.as_str())
            .collect();
        assert!(
            english.contains(&"Anything else I can help with?"),
            "{english:?}"
        );
        assert!(english.iter().all(|s| !s.contains('{')), "{english:?}");
        assert_eq!(
            english.iter().filter(|s| s.starts_with("Anything")).count(),
            1,
            "repeats are rendered once"
        );
        assert!(sentences.contains(&(Language::Es, "¿Algo más?".to_string())));
    }
}
