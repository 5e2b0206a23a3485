//! `voxline bench`: every fixture of a manifest through the whole service,
//! in process, as a customer's voice note goes through it in production:
//! a simulated customer of the [sandbox](crate::sandbox) posts a signed
//! webhook, the service fetches the note from the Graph API stand-in,
//! decodes, transcribes, answers with the embedded dialog (and, for the
//! questions the intents do not cover, a [fake streaming LLM](fake_llm)
//! with a set time to first token and token rate), speaks, encodes,
//! uploads and sends. Each turn's stored trace is the measurement.
//!
//! A warm-up turn first, then several rounds at a fixed concurrency. The
//! [`Report`] holds per-stage p50, p95 and max, the turn's, the STT
//! real-time factor, WER per language, intent accuracy, reply sizes and the
//! budget overruns; [`Report::regressions`] lists the thresholds crossed.

pub mod fake_llm;
pub mod report;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use serde::{Deserialize, Serialize};

use crate::config::Config;
use crate::dialog::llm::ProviderConfig;
use crate::fixtures::{normalise_words, word_edits, Fixture, Manifest};
use crate::pipeline::trace::{Stage, TurnEnd, TurnTrace};
use crate::sandbox::{Sandbox, SandboxConfig};
use crate::service::Service;
use crate::stt::SpeechToText;

/// `[bench]`: the thresholds `voxline bench` fails on. Each is off unless
/// set.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BenchConfig {
    pub max_turn_p50_ms: Option<f64>,
    pub max_turn_p95_ms: Option<f64>,
    /// Per language.
    pub max_wer: Option<f64>,
    pub min_intent_accuracy: Option<f64>,
    pub max_overruns: Option<u64>,
}

/// How a bench runs.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub dir: PathBuf,
    pub rounds: usize,
    pub warmup: usize,
    pub concurrency: usize,
    /// Only the first N of the selected fixtures.
    pub limit: Option<usize>,
    /// Only these languages; default: those the model can transcribe.
    pub languages: Option<Vec<String>>,
    /// Only notes at most this long.
    pub max_note_ms: Option<u64>,
    pub llm_first_token: Duration,
    pub llm_tokens_per_second: u32,
    /// How long one turn may take before the bench gives up on it.
    pub turn_timeout: Duration,
    /// Start the rounds at once, while the speech cache's start-up
    /// rendering is still under way (a service that has just started);
    /// by default the bench waits for it, as the customers of a service
    /// that has been up a few minutes, or restarted with its persisted
    /// cache, find it.
    pub cold: bool,
}

impl Default for BenchOptions {
    fn default() -> Self {
        Self {
            dir: PathBuf::from("audio-fixtures"),
            rounds: 3,
            warmup: 1,
            concurrency: 1,
            limit: None,
            languages: None,
            max_note_ms: None,
            llm_first_token: Duration::from_millis(300),
            llm_tokens_per_second: 50,
            turn_timeout: Duration::from_secs(60),
            cold: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Manifest(#[from] crate::fixtures::ManifestError),
    #[error("no fixture in {dir} matches (languages {languages})")]
    NoFixtures { dir: String, languages: String },
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("starting the fake LLM: {0}")]
    FakeLlm(std::io::Error),
    #[error(transparent)]
    Sandbox(#[from] crate::sandbox::SandboxError),
    #[error(transparent)]
    Serve(#[from] crate::service::ServeError),
    #[error("no turn finished for {file} within {timeout:?}")]
    TurnTimeout { file: String, timeout: Duration },
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
}

/// One measured turn.
#[derive(Debug, Clone, Serialize)]
pub struct TurnRow {
    pub file: String,
    pub language: String,
    pub round: usize,
    /// What the fixture says and, when it has one, its intent.
    pub expected_text: String,
    pub expected_intent: Option<String>,
    pub trace: TurnTrace,
}

/// The fixtures a bench runs: the manifest's, those in `languages` or else
/// those the speech model can transcribe (an English-only model takes
/// English; the default router, whose name also holds `tiny.en`, takes
/// every language).
pub fn select(
    manifest: &Manifest,
    stt: &dyn SpeechToText,
    options: &BenchOptions,
) -> Result<Vec<Fixture>, BenchError> {
    let model = stt.name();
    let english_only = !stt.is_multilingual();
    let wanted = |f: &Fixture| match &options.languages {
        Some(langs) => langs.iter().any(|l| l == &f.language || l == "all"),
        None => !english_only || f.language == "en",
    };
    let mut chosen: Vec<Fixture> = manifest
        .fixtures
        .iter()
        .filter(|f| wanted(f))
        .filter(|f| options.max_note_ms.is_none_or(|max| f.duration_ms <= max))
        .cloned()
        .collect();
    if let Some(n) = options.limit {
        chosen.truncate(n);
    }
    if chosen.is_empty() {
        return Err(BenchError::NoFixtures {
            dir: manifest.dir.display().to_string(),
            languages: options
                .languages
                .as_ref()
                .map_or_else(|| format!("those {model} takes"), |l| l.join(",")),
        });
    }
    Ok(chosen)
}

fn mime_of(file: &str) -> &'static str {
    match file.rsplit('.').next().unwrap_or("") {
        "mp3" => "audio/mpeg",
        "m4a" | "aac" => "audio/mp4",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        "amr" => "audio/amr",
        _ => "audio/ogg; codecs=opus",
    }
}

/// Runs the bench: starts the sandbox, the fake LLM and the service (with
/// `base`'s settings and `stt`), sends the fixtures and collects their
/// traces. `progress` hears of each finished turn.
pub async fn run(
    base: Config,
    stt: Arc<dyn SpeechToText>,
    options: &BenchOptions,
    progress: impl Fn(&TurnRow) + Send + Sync,
) -> Result<Report, BenchError> {
    let manifest = Manifest::load(&options.dir)?;
    let fixtures = select(&manifest, stt.as_ref(), options)?;
    let mut notes = Vec::with_capacity(fixtures.len());
    for f in &fixtures {
        let path = manifest.path_of(f);
        let bytes = std::fs::read(&path).map_err(|source| BenchError::Read {
            path: path.display().to_string(),
            source,
        })?;
        notes.push(Bytes::from(bytes));
    }

    let llm = fake_llm::FakeLlm::start(fake_llm::REPLY)
        .await
        .map_err(BenchError::FakeLlm)?;
    let sandbox = Sandbox::start(SandboxConfig::default()).await?;
    let data = tempfile_dir()?;
    let mut config = sandbox.service_config(base);
    config.store.data_dir = data.clone();
    config.service.addr = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.dialog.llm.providers = vec![ProviderConfig {
        name: "fake".into(),
        base_url: llm.base_url(options.llm_first_token, options.llm_tokens_per_second),
        model: "fake".into(),
        api_key_env: None,
        first_token_timeout_ms: 10_000,
        total_timeout_ms: 30_000,
    }];
    let model = stt.name().to_string();
    let service = Service::start(&config, stt).await?;
    sandbox.set_webhook_url(format!("http://{}/webhook", service.addr()));
    let warm_up = if options.cold {
        None
    } else {
        wait_for_warm_up(&service).await
    };

    let started = Instant::now();
    let result = drive(&sandbox, &service, &fixtures, &notes, options, &progress).await;
    let wall = started.elapsed();
    let _ = service.stop().await;
    let _ = std::fs::remove_dir_all(&data);
    let (rows, speech_cache) = result?;
    let mut report = Report::new(rows, &model, options, &config, wall);
    report.speech_cache = speech_cache;
    report.warm_up = warm_up;
    Ok(report)
}

/// The longest the bench waits for the speech cache's start-up rendering
/// (every fixed sentence of five languages takes about five minutes with
/// the natural voices on 2 cores).
const WARM_UP_LIMIT: Duration = Duration::from_secs(900);

/// Waits for the service's start-up rendering to finish, up to
/// [`WARM_UP_LIMIT`]; `None` when the service renders nothing ahead.
async fn wait_for_warm_up(service: &Service) -> Option<WarmUpWait> {
    let progress = service.warm_up()?;
    let started = Instant::now();
    while !progress.finished() && started.elapsed() < WARM_UP_LIMIT {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Some(WarmUpWait {
        ms: started.elapsed().as_secs_f64() * 1000.0,
        sentences: progress.rendered(),
        finished: progress.finished(),
    })
}

/// How long the bench waited for the speech cache's start-up rendering
/// before the first turn.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct WarmUpWait {
    pub ms: f64,
    pub sentences: usize,
    /// `false` when [`WARM_UP_LIMIT`] passed first.
    pub finished: bool,
}

/// A fresh data folder for the bench's store, so runs don't mix.
fn tempfile_dir() -> Result<PathBuf, BenchError> {
    let since_epoch = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let dir = std::env::temp_dir().join(format!(
        "voxline-bench-{}-{}",
        std::process::id(),
        since_epoch.as_millis()
    ));
    std::fs::create_dir_all(&dir).map_err(|source| BenchError::Read {
        path: dir.display().to_string(),
        source,
    })?;
    Ok(dir)
}

async fn drive(
    sandbox: &Sandbox,
    service: &Service,
    fixtures: &[Fixture],
    notes: &[Bytes],
    options: &BenchOptions,
    progress: &(impl Fn(&TurnRow) + Send + Sync),
) -> Result<(Vec<TurnRow>, Vec<CacheRound>), BenchError> {
    // Warm-up turns: the first fixture, not counted.
    for w in 0..options.warmup {
        let from = format!("1555900{w:04}");
        one(sandbox, service, &fixtures[0], &notes[0], &from, 0, options).await?;
    }
    let mut rows = Vec::new();
    let mut cache = Vec::new();
    let metrics = crate::metrics::global();
    let lookups = || {
        (
            metrics.speech_cache_lookups(true),
            metrics.speech_cache_lookups(false),
        )
    };
    for round in 1..=options.rounds.max(1) {
        let before = lookups();
        let jobs = fixtures
            .iter()
            .zip(notes)
            .enumerate()
            .map(|(i, (f, note))| {
                // A customer per fixture and round: no turn waits behind
                // another's conversation.
                let from = format!("1555{round:02}{i:05}");
                async move { one(sandbox, service, f, note, &from, round, options).await }
            });
        let mut done = futures::stream::iter(jobs).buffer_unordered(options.concurrency.max(1));
        while let Some(row) = done.next().await {
            let row = row?;
            progress(&row);
            rows.push(row);
        }
        let after = lookups();
        cache.push(CacheRound {
            round,
            hits: after.0 - before.0,
            misses: after.1 - before.1,
        });
    }
    Ok((rows, cache))
}

/// The speech cache's lookups in one round: the sentences spoken from it
/// and those synthesised.
#[derive(Debug, Clone, Serialize)]
pub struct CacheRound {
    pub round: usize,
    pub hits: u64,
    pub misses: u64,
}

async fn one(
    sandbox: &Sandbox,
    service: &Service,
    fixture: &Fixture,
    note: &Bytes,
    from: &str,
    round: usize,
    options: &BenchOptions,
) -> Result<TurnRow, BenchError> {
    let wamid = sandbox
        .send_voice(from, note.clone(), mime_of(&fixture.file))
        .await?;
    let deadline = Instant::now() + options.turn_timeout;
    loop {
        if let Some(trace) = find_trace(service, &wamid).await? {
            return Ok(TurnRow {
                file: fixture.file.clone(),
                language: fixture.language.clone(),
                round,
                expected_text: fixture.text.clone(),
                expected_intent: fixture.intent.clone(),
                trace,
            });
        }
        if Instant::now() > deadline {
            return Err(BenchError::TurnTimeout {
                file: fixture.file.clone(),
                timeout: options.turn_timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn find_trace(service: &Service, wamid: &str) -> Result<Option<TurnTrace>, BenchError> {
    // The newest few: the turn that just finished is among them.
    let recent = service.store().recent_traces(64).await?;
    Ok(recent.into_iter().find(|t| t.message_id == wamid))
}

/// p50, p95 and max of a set of values, by nearest rank as the console
/// computes them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Spread {
    pub count: usize,
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(values: &[f64]) -> Self {
        let p = crate::console::stats::percentiles(values);
        Self {
            count: p.count,
            p50: p.p50.unwrap_or(0.0),
            p95: p.p95.unwrap_or(0.0),
            max: p.max.unwrap_or(0.0),
        }
    }
}

/// One language's answered turns. From the second round on a fixture's
/// reply has been spoken before, so its sentences are in the speech cache
/// whether or not they have slots; the first round's figures are those a
/// new customer meets (the templates' fixed sentences warmed, the rest
/// spoken for them unless an earlier note had the same reply).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LanguageTurns {
    pub fast_path: Spread,
    pub llm: Spread,
    pub fast_path_first_round: Spread,
    pub llm_first_round: Spread,
}

/// The figures of a bench run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub model: String,
    pub fixtures: usize,
    pub rounds: usize,
    pub concurrency: usize,
    pub llm_first_token_ms: u64,
    pub llm_tokens_per_second: u32,
    pub turns: usize,
    pub wall_ms: f64,
    /// Per stage: span durations, plus the time to first output of the
    /// stages that stream (`dialog_first_token`, `tts_first_audio`).
    pub stages: BTreeMap<String, Spread>,
    /// From the webhook's arrival to the reply's send call.
    pub turn: Spread,
    pub turn_fast_path: Spread,
    pub turn_llm: Spread,
    /// The answered turns per fixture language.
    pub by_language: BTreeMap<String, LanguageTurns>,
    /// What the turn would take if its stages ran one after another.
    pub sequential: Spread,
    pub stt_real_time_factor: Spread,
    /// Word error rate per language (edits over reference words).
    pub wer: BTreeMap<String, f64>,
    pub intent_accuracy: Option<f64>,
    pub intent_checked: usize,
    pub fast_path_share: Option<f64>,
    pub reply_bytes: Spread,
    pub voice_replies: usize,
    pub text_replies: usize,
    pub silent: usize,
    pub failed: usize,
    /// "stage/action" → count.
    pub overruns: BTreeMap<String, u64>,
    /// The speech cache per round (later rounds repeat the same replies,
    /// so their slotted sentences hit too).
    pub speech_cache: Vec<CacheRound>,
    /// The wait for the speech cache's start-up rendering (`None` with
    /// `--cold`, or when nothing is rendered ahead).
    pub warm_up: Option<WarmUpWait>,
    /// The budgets the turns ran by, stage → ms.
    pub budgets_ms: BTreeMap<String, u64>,
    pub thresholds: BenchConfig,
    pub rows: Vec<TurnRow>,
}

impl Report {
    fn new(
        rows: Vec<TurnRow>,
        model: &str,
        options: &BenchOptions,
        config: &Config,
        wall: Duration,
    ) -> Self {
        let mut stages: BTreeMap<String, Vec<f64>> = BTreeMap::new();
        for r in &rows {
            for s in &r.trace.spans {
                stages
                    .entry(s.stage.name().to_string())
                    .or_default()
                    .push(s.duration_ms());
                let first = match s.stage {
                    Stage::Dialog => Some("dialog_first_token"),
                    Stage::Tts => Some("tts_first_audio"),
                    _ => None,
                };
                if let (Some(name), Some(ms)) = (first, s.first_output_ms()) {
                    stages.entry(name.to_string()).or_default().push(ms);
                }
            }
        }
        let turn_of = |keep: &dyn Fn(&TurnRow) -> bool| {
            let v: Vec<f64> = rows
                .iter()
                .filter(|r| keep(r))
                .map(|r| r.trace.turn_ms)
                .collect();
            Spread::of(&v)
        };
        let answered = |r: &TurnRow| matches!(r.trace.end, TurnEnd::Voice | TurnEnd::Text);
        let languages: std::collections::BTreeSet<&str> =
            rows.iter().map(|r| r.language.as_str()).collect();
        let by_language = languages
            .into_iter()
            .map(|language| {
                let of = |fast: bool, first_round: bool| {
                    turn_of(&|r| {
                        r.language == language
                            && answered(r)
                            && r.trace.fast_path == Some(fast)
                            && (!first_round || r.round == 1)
                    })
                };
                let turns = LanguageTurns {
                    fast_path: of(true, false),
                    llm: of(false, false),
                    fast_path_first_round: of(true, true),
                    llm_first_round: of(false, true),
                };
                (language.to_string(), turns)
            })
            .collect();
        let mut edits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
        for r in &rows {
            let reference = normalise_words(&r.expected_text);
            let heard = normalise_words(r.trace.transcript.as_deref().unwrap_or(""));
            let e = edits.entry(r.language.clone()).or_default();
            e.0 += word_edits(&reference, &heard);
            e.1 += reference.len();
        }
        let wer = edits
            .into_iter()
            .filter(|(_, (_, words))| *words > 0)
            .map(|(lang, (e, w))| (lang, e as f64 / w as f64))
            .collect();
        let checked: Vec<bool> = rows
            .iter()
            .filter_map(|r| {
                let want = r.expected_intent.as_deref()?;
                Some(r.trace.intent.as_deref() == Some(want))
            })
            .collect();
        let paths: Vec<bool> = rows.iter().filter_map(|r| r.trace.fast_path).collect();
        let mut overruns: BTreeMap<String, u64> = BTreeMap::new();
        for r in &rows {
            for s in &r.trace.spans {
                if let crate::pipeline::trace::SpanOutcome::Overrun { budget, action } = s.outcome {
                    *overruns
                        .entry(format!("{}/{}", budget.name(), action.name()))
                        .or_default() += 1;
                }
            }
        }
        let share = |v: &[bool]| {
            (!v.is_empty()).then(|| v.iter().filter(|b| **b).count() as f64 / v.len() as f64)
        };
        Self {
            model: model.to_string(),
            fixtures: rows.iter().filter(|r| r.round == 1).count(),
            rounds: options.rounds,
            concurrency: options.concurrency,
            llm_first_token_ms: options.llm_first_token.as_millis() as u64,
            llm_tokens_per_second: options.llm_tokens_per_second,
            turns: rows.len(),
            wall_ms: wall.as_secs_f64() * 1000.0,
            stages: stages
                .into_iter()
                .map(|(k, v)| (k, Spread::of(&v)))
                .collect(),
            turn: turn_of(&answered),
            turn_fast_path: turn_of(&|r| answered(r) && r.trace.fast_path == Some(true)),
            turn_llm: turn_of(&|r| answered(r) && r.trace.fast_path == Some(false)),
            by_language,
            sequential: Spread::of(
                &rows
                    .iter()
                    .map(|r| r.trace.sequential_ms)
                    .collect::<Vec<_>>(),
            ),
            stt_real_time_factor: Spread::of(
                &rows
                    .iter()
                    .filter_map(|r| r.trace.stt_real_time_factor())
                    .collect::<Vec<_>>(),
            ),
            wer,
            intent_accuracy: share(&checked),
            intent_checked: checked.len(),
            fast_path_share: share(&paths),
            reply_bytes: Spread::of(
                &rows
                    .iter()
                    .filter_map(|r| r.trace.reply_bytes.map(|b| b as f64))
                    .collect::<Vec<_>>(),
            ),
            voice_replies: rows
                .iter()
                .filter(|r| r.trace.end == TurnEnd::Voice)
                .count(),
            text_replies: rows.iter().filter(|r| r.trace.end == TurnEnd::Text).count(),
            silent: rows
                .iter()
                .filter(|r| r.trace.end == TurnEnd::Silent)
                .count(),
            failed: rows
                .iter()
                .filter(|r| r.trace.end == TurnEnd::Failed)
                .count(),
            overruns,
            speech_cache: Vec::new(),
            warm_up: None,
            budgets_ms: config
                .budgets
                .iter()
                .map(|(s, b)| (s.name().to_string(), b.ms))
                .collect(),
            thresholds: config.bench.clone(),
            rows,
        }
    }

    /// The thresholds this run crossed, each as a sentence.
    pub fn regressions(&self) -> Vec<String> {
        let t = &self.thresholds;
        let mut out = Vec::new();
        if let Some(max) = t.max_turn_p50_ms {
            if self.turn.p50 > max {
                out.push(format!(
                    "turn p50 {:.0} ms is over {max:.0} ms",
                    self.turn.p50
                ));
            }
        }
        if let Some(max) = t.max_turn_p95_ms {
            if self.turn.p95 > max {
                out.push(format!(
                    "turn p95 {:.0} ms is over {max:.0} ms",
                    self.turn.p95
                ));
            }
        }
        if let Some(max) = t.max_wer {
            for (lang, wer) in &self.wer {
                if *wer > max {
                    out.push(format!("{lang} WER {wer:.3} is over {max:.3}"));
                }
            }
        }
        if let (Some(min), Some(acc)) = (t.min_intent_accuracy, self.intent_accuracy) {
            if acc < min {
                out.push(format!("intent accuracy {acc:.3} is under {min:.3}"));
            }
        }
        if let Some(max) = t.max_overruns {
            let n: u64 = self.overruns.values().sum();
            if n > max {
                out.push(format!("{n} budget overruns, more than {max}"));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s = Spread::of(&[5.0, 1.0, 4.0, 2.0, 3.0]);
        assert_eq!((s.count, s.p50, s.p95, s.max), (5, 3.0, 5.0, 5.0));
        let s = Spread::of(&(1..=100).map(f64::from).collect::<Vec<_>>());
        assert_eq!((s.p50, s.p95), (50.0, 95.0));
        assert_eq!(Spread::of(&[]), Spread::default());
    }

    /// A speech model that only names itself.
    struct Named(&'static str, bool);

    impl SpeechToText for Named {
        fn transcribe(
            &self,
            _: &[f32],
            _: &crate::stt::TranscribeOptions,
        ) -> Result<crate::stt::Transcript, crate::stt::SttError> {
            Err(crate::stt::SttError::Aborted)
        }
        fn is_multilingual(&self) -> bool {
            self.1
        }
        fn name(&self) -> &str {
            self.0
        }
    }

    #[test]
    fn the_default_router_benches_every_language_and_tiny_en_english() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("audio-fixtures");
        let manifest = Manifest::load(&dir).unwrap();
        let options = BenchOptions::default();
        let languages = |stt: &Named| -> std::collections::BTreeSet<String> {
            select(&manifest, stt, &options)
                .unwrap()
                .into_iter()
                .map(|f| f.language)
                .collect()
        };
        // The router's name holds "tiny.en", but it hears every language.
        let router = Named("whisper:base-q8_0+whisper:tiny.en-q8_0", true);
        for l in ["en", "es", "fr", "it", "pt"] {
            assert!(languages(&router).contains(l), "{l}");
        }
        let english = Named("whisper:tiny.en", false);
        assert_eq!(languages(&english).into_iter().collect::<Vec<_>>(), ["en"]);
    }
}
