//! The `voxline` command line.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde::Serialize;

use voxline::config::Config;
use voxline::fixtures::{self, Manifest};
use voxline::models::{self, WeightType};
use voxline::pipeline::trace::Stage;
use voxline::pipeline::{self, NoteResult};
use voxline::stt::whisper::WhisperStt;
use voxline::stt::{SpeechToText, SttConfig, TranscribeOptions};

#[derive(Parser)]
#[command(
    name = "voxline",
    version,
    about = "Answers WhatsApp voice notes with voice notes"
)]
struct Cli {
    /// Configuration file (TOML); every key has a default.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the WhatsApp service: webhook in, replies out (see `[whatsapp]`,
    /// `[service]` and `[store]` in the config, and the WHATSAPP_* and
    /// VOXLINE_* environment variables).
    Serve {
        /// Run against a local WhatsApp sandbox instead of Meta: a Graph API
        /// stand-in with its own credentials, and a chat page at /sandbox
        /// from which to send voice notes and texts through the signed
        /// webhook. Data goes to var/sandbox unless [store] says otherwise.
        #[arg(long)]
        sandbox: bool,
        /// What this process does: all (default), webhook (acknowledge
        /// only) or worker (run turns only); the last two need [store]
        /// backend = "redis". Overrides [service] role.
        #[arg(long, value_enum)]
        role: Option<voxline::service::Role>,
    },
    /// Transcribe audio files (Ogg/Opus, MP3, M4A, WAV, FLAC, Ogg Vorbis).
    Transcribe {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Model name (tiny.en, base, base-q8_0, …) or path to a GGML file.
        #[arg(long)]
        model: Option<String>,
        /// Language (ISO 639-1) or `auto`.
        #[arg(long)]
        lang: Option<String>,
        /// One JSON object per file instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Answer the English fixture voice notes through the service, as
    /// customers' notes arrive (signed webhooks, the sandbox's Graph API
    /// stand-in), and print one row per turn with its stages.
    Demo {
        /// Folder with manifest.json.
        #[arg(long, default_value = "audio-fixtures")]
        fixtures: PathBuf,
        /// Only the first N English fixtures.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Transcribe the audio fixtures and print a table with WER per note.
    Transcripts {
        /// Folder with manifest.json.
        #[arg(long, default_value = "audio-fixtures")]
        fixtures: PathBuf,
        /// Model for the other languages' notes (skipped when absent).
        #[arg(long, default_value = "base")]
        multilingual_model: String,
    },
    /// Run every fixture through the whole service in process, several
    /// rounds, and print per-stage percentiles, WER, intent accuracy and
    /// budget overruns; exit non-zero past a `[bench]` threshold.
    Bench(BenchArgs),
    /// Model files.
    Models {
        #[command(subcommand)]
        command: ModelsCommand,
    },
    /// Print what the fast intent path makes of each text; `intent eval`
    /// and `intent label` below.
    #[command(args_conflicts_with_subcommands = true)]
    Intent {
        #[command(subcommand)]
        command: Option<IntentCommand>,
        texts: Vec<String>,
        /// Language (en, es, it, pt); detected when absent.
        #[arg(long)]
        lang: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// An interactive text session against the dialog stage and its store.
    Chat {
        /// The customer's WhatsApp number.
        #[arg(long)]
        from: String,
    },
    /// One turn of the whole pipeline on a local audio file, offline: decode,
    /// resample, STT, dialog, TTS, encode. Writes the reply voice note.
    Reply {
        file: PathBuf,
        /// The customer's WhatsApp number (sessions and orders are per number).
        #[arg(long, default_value = "15550001842")]
        from: String,
        #[arg(long, default_value = "reply.ogg")]
        out: PathBuf,
        #[arg(long)]
        json: bool,
    },
    /// Speak a text with the configured voices into an Ogg/Opus voice note,
    /// exactly as a reply is spoken (for listening to a voice, and for
    /// making fixtures).
    Say {
        text: String,
        /// Reply language (en, es, it, pt, fr).
        #[arg(long, default_value = "en")]
        lang: String,
        /// Speak with this provider alone (piper, kokoro, espeak) instead of
        /// the configured chain.
        #[arg(long)]
        provider: Option<String>,
        /// The Kokoro voice for this language (e.g. ef_dora).
        #[arg(long)]
        voice: Option<String>,
        /// Speaking speed of the local voices (0.5 to 2.0).
        #[arg(long)]
        speed: Option<f32>,
        #[arg(long, default_value = "say.ogg")]
        out: PathBuf,
    },
    /// Conversations handed to a person.
    Handoff {
        #[command(subcommand)]
        command: HandoffCommand,
    },
    /// Erase everything kept about one customer (the right to erasure):
    /// messages, transcripts, replies, delivery reports, traces, session.
    Forget { number: String },
    /// Turns waiting to be tried again: replies not delivered, notes not
    /// fetched (the Graph API down, the access token rejected).
    Outbox {
        #[command(subcommand)]
        command: OutboxCommand,
    },
}

#[derive(Subcommand)]
enum IntentCommand {
    /// Accuracy, macro-F1 and confident-wrong rate per language on labelled
    /// messages (`lang <TAB> text <TAB> intent` lines).
    Eval {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Also list the misses (only for a development set: reading a test
        /// set's misses makes it training data).
        #[arg(long)]
        misses: bool,
        #[arg(long)]
        json: bool,
    },
    /// Record the right intent of a customer's message (its WhatsApp id):
    /// appended to the intents' `learned/labels.tsv`; the running service
    /// retrains within a second or two.
    Label { message_id: String, intent: String },
}

#[derive(Subcommand)]
enum OutboxCommand {
    /// What waits, why, and when it is tried next.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Try a waiting turn now (the running service picks it up within a second).
    Retry { id: String },
    /// Give a waiting turn up: it ends failed, nothing is sent.
    Drop { id: String },
}

#[derive(clap::Args)]
struct BenchArgs {
    /// Folder with manifest.json.
    #[arg(default_value = "audio-fixtures")]
    dir: PathBuf,
    /// Print the report as one JSON object.
    #[arg(long)]
    json: bool,
    /// Also write an HTML page with the charts.
    #[arg(long)]
    report: Option<PathBuf>,
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Turns run first and not counted.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Voice notes in flight at once.
    #[arg(long, default_value_t = 1)]
    concurrency: usize,
    /// Only the first N fixtures.
    #[arg(long)]
    limit: Option<usize>,
    /// Only these languages (default: those the model transcribes).
    #[arg(long, value_delimiter = ',')]
    lang: Option<Vec<String>>,
    /// Only notes at most this long, in ms.
    #[arg(long)]
    max_note_ms: Option<u64>,
    /// Speech model (default: `[stt] model`).
    #[arg(long)]
    model: Option<String>,
    /// The fake LLM's time to first token.
    #[arg(long, default_value_t = 300)]
    llm_first_token_ms: u64,
    #[arg(long, default_value_t = 50)]
    llm_tokens_per_second: u32,
    /// Start at once, without waiting for the speech cache's start-up
    /// rendering (a service that has just started).
    #[arg(long)]
    cold: bool,
    #[arg(long)]
    max_turn_p50_ms: Option<f64>,
    #[arg(long)]
    max_turn_p95_ms: Option<f64>,
    /// Highest WER allowed in any language.
    #[arg(long)]
    max_wer: Option<f64>,
    #[arg(long)]
    min_intent_accuracy: Option<f64>,
    #[arg(long)]
    max_overruns: Option<u64>,
}

#[derive(Subcommand)]
enum HandoffCommand {
    /// List the conversations waiting for a person, with their history.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Give a number back to the bot.
    Release { number: String },
}

#[derive(Subcommand)]
enum ModelsCommand {
    /// Convert a CTranslate2 Whisper directory to a whisper.cpp GGML file.
    Convert {
        /// Directory with model.bin and vocabulary.txt.
        dir: PathBuf,
        #[arg(long)]
        out: PathBuf,
        #[arg(long, value_enum, default_value = "f16")]
        weights: Weights,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Weights {
    F16,
    #[value(name = "q8_0")]
    Q8_0,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| {
                match cli.command {
                    Command::Serve { .. } => "info,whisper_rs=error".into(),
                    // The table is the output; a loop the STT guard caught
                    // shows in the turn's time.
                    Command::Demo { .. } | Command::Bench(_) => "error,whisper_rs=error".into(),
                    _ => "warn,whisper_rs=error".into(),
                }
            }),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The dialog stage keeps its sessions and demo shop in the service's store
/// file, beside the inbox.
fn dialog_config(config: &Config) -> Result<voxline::dialog::DialogConfig> {
    let mut config = config.clone();
    config.apply_env(|name| std::env::var(name).ok())?;
    Ok(config.dialog())
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = match &cli.config {
        Some(path) => Config::from_file(path)?,
        None => Config::default(),
    };
    match cli.command {
        Command::Serve {
            sandbox: false,
            role,
        } => serve(cli.config.as_deref(), role),
        Command::Serve { sandbox: true, .. } => serve_sandbox(config),
        Command::Intent {
            command: Some(command),
            ..
        } => intent_command(config, command),
        Command::Intent {
            command: None,
            texts,
            lang,
            json,
        } => {
            anyhow::ensure!(!texts.is_empty(), "give at least one text to classify");
            let dialog = dialog_config(&config)?;
            voxline::dialog::cli::intent(
                &dialog,
                &texts,
                lang.as_deref(),
                json,
                &mut std::io::stdout(),
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Chat { from } => {
            let (dialog, mut stdin) = (dialog_config(&config)?, std::io::stdin().lock());
            voxline::dialog::cli::chat(&dialog, &from, &mut stdin, &mut std::io::stdout())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Handoff { command } => {
            let (dialog, mut out) = (dialog_config(&config)?, std::io::stdout());
            let released = match command {
                HandoffCommand::List { json } => {
                    voxline::dialog::cli::handoff_list(&dialog, json, &mut out).map(|_| true)?
                }
                HandoffCommand::Release { number } => {
                    voxline::dialog::cli::handoff_release(&dialog, &number, &mut out)?
                }
            };
            Ok(if released {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Outbox { command } => outbox(config, command),
        Command::Forget { number } => forget(config, &number),
        Command::Reply {
            file,
            from,
            out,
            json,
        } => reply(&config, &file, &from, &out, json),
        Command::Say {
            text,
            lang,
            provider,
            voice,
            speed,
            out,
        } => say(config, &text, &lang, provider, voice, speed, &out),
        Command::Transcribe {
            files,
            model,
            lang,
            json,
        } => transcribe(&config, &files, model, lang, json),
        Command::Demo { fixtures, limit } => demo(config, &fixtures, limit),
        Command::Transcripts {
            fixtures,
            multilingual_model,
        } => transcripts(&config, &fixtures, &multilingual_model),
        Command::Bench(args) => bench(config, args),
        Command::Models {
            command: ModelsCommand::Convert { dir, out, weights },
        } => {
            let weights = match weights {
                Weights::F16 => WeightType::F16,
                Weights::Q8_0 => WeightType::Q8_0,
            };
            let c = models::convert(&dir, &out, weights)?;
            println!(
                "wrote {} ({:.1} MB): {} tensors, {} tokens, {} encoder / {} decoder layers, {}",
                c.path.display(),
                c.bytes as f64 / 1e6,
                c.tensors,
                c.vocab,
                c.hparams.n_audio_layer,
                c.hparams.n_text_layer,
                if c.hparams.is_multilingual() {
                    "multilingual"
                } else {
                    "English-only"
                },
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

#[derive(Serialize)]
struct TranscribeJson<'a> {
    file: String,
    language: Option<&'a str>,
    text: &'a str,
    confidence: f32,
    no_speech_probability: f32,
    /// How the language was chosen, when the router chose it.
    #[serde(skip_serializing_if = "Option::is_none")]
    routing: Option<&'a voxline::stt::Routing>,
    /// Why the service would not act on this transcript, if it would not.
    #[serde(skip_serializing_if = "Option::is_none")]
    not_heard: Option<String>,
    audio_ms: u64,
    timings_ms: Timings,
}

#[derive(Serialize)]
struct Timings {
    decode: f64,
    resample: f64,
    stt: f64,
}

impl Timings {
    fn of(r: &NoteResult) -> Self {
        Self {
            decode: round2(r.trace.stage_ms(Stage::Decode)),
            resample: round2(r.trace.stage_ms(Stage::Resample)),
            stt: round2(r.trace.stage_ms(Stage::Stt)),
        }
    }
}

fn forget(mut config: Config, number: &str) -> Result<ExitCode> {
    config.apply_env(|name| std::env::var(name).ok())?;
    let number = number.trim().trim_start_matches('+');
    anyhow::ensure!(
        !number.is_empty() && number.chars().all(|c| c.is_ascii_digit()),
        "{number:?} is not a phone number (digits, as WhatsApp's wa_id)"
    );
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let erased = runtime.block_on(async {
        let store = voxline::store::open(&config.store).await?.store;
        store.erase_customer(number).await
    })?;
    let sessions =
        voxline::dialog::session::SessionStore::for_config(&config.dialog())?.forget(number)?;
    println!(
        "{}: {} messages erased (their ids kept {} days against replays), {} delivery reports, {} traces, {} session rows",
        voxline::channel::mask_number(number),
        erased.messages,
        config.store.id_retention_days,
        erased.statuses,
        erased.traces,
        sessions
    );
    Ok(ExitCode::SUCCESS)
}

fn intent_command(mut config: Config, command: IntentCommand) -> Result<ExitCode> {
    use voxline::dialog::intent::{self, eval};
    config.apply_env(|name| std::env::var(name).ok())?;
    let dialog = config.dialog();
    match command {
        IntentCommand::Eval {
            files,
            misses,
            json,
        } => {
            let model = voxline::dialog::cli::intent_model(&dialog)?;
            let mut samples = Vec::new();
            for file in &files {
                samples.extend(eval::read_samples(file).map_err(|e| anyhow::anyhow!(e))?);
            }
            let mut report = eval::evaluate(&model, &samples);
            if !misses {
                report.misses.clear();
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", eval::table(&report));
                for m in &report.misses {
                    println!("miss {m}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        IntentCommand::Label { message_id, intent } => {
            let model = voxline::dialog::cli::intent_model(&dialog)?;
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let turn = runtime.block_on(async {
                let store = voxline::store::open(&config.store).await?.store;
                store.turn(&message_id).await
            })?;
            let dir = dialog.data_dir.join("intents");
            let text = turn.said().unwrap_or_default();
            let label = intent::record_label(&model, &dir, &message_id, text, &intent)?;
            println!(
                "{}: {:?} ({}) labelled {}; in {}",
                label.message_id,
                label.text,
                label.lang,
                label.intent,
                dir.join(intent::LABELS_FILE).display()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn outbox(mut config: Config, command: OutboxCommand) -> Result<ExitCode> {
    use voxline::pipeline::outbox;
    config.apply_env(|name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let store = voxline::store::open(&config.store).await?.store;
        let store = store.as_ref();
        let done = match command {
            OutboxCommand::List { json } => {
                outbox::list(store, json, &mut std::io::stdout())
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                true
            }
            OutboxCommand::Retry { id } => {
                let due = outbox::retry(store, &id).await?;
                println!(
                    "{id}: {}",
                    if due {
                        "due now"
                    } else {
                        "not waiting in the outbox"
                    }
                );
                due
            }
            OutboxCommand::Drop { id } => {
                let dropped = outbox::drop_turn(store, &id).await?;
                println!(
                    "{id}: {}",
                    if dropped {
                        "dropped"
                    } else {
                        "not waiting in the outbox"
                    }
                );
                dropped
            }
        };
        Ok(if done {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// The speech-to-text stage: `model` alone when one is named, else the
/// configured models behind the language router, for the configured
/// languages.
fn load_stt(config: &Config, model: Option<String>) -> Result<Arc<dyn SpeechToText>> {
    match model {
        Some(model) => {
            let config = SttConfig {
                model,
                ..config.stt.clone()
            };
            let stt = WhisperStt::load(&config).context("loading the speech-to-text model")?;
            Ok(Arc::new(stt))
        }
        None => voxline::stt::load(&config.stt, &config.service.languages)
            .context("loading the speech-to-text models"),
    }
}

fn transcribe(
    config: &Config,
    files: &[PathBuf],
    model: Option<String>,
    lang: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let stt = load_stt(config, model)?;
    let options = TranscribeOptions {
        language: lang,
        ..TranscribeOptions::default()
    };
    let mut failed = false;
    if !json {
        println!(
            "{:<36} {:<6} {:>5} {:>8} {:>8} {:>8} {:>8}  transcript",
            "file", "lang", "conf", "audio_ms", "decode", "resample", "stt"
        );
    }
    for file in files {
        let outcome = std::fs::read(file)
            .with_context(|| format!("reading {}", file.display()))
            .and_then(|bytes| {
                pipeline::transcribe_note(&bytes, &config.media, stt.as_ref(), &options)
                    .map_err(anyhow::Error::from)
            });
        match outcome {
            Ok(r) => {
                let (lang, text, conf) = match &r.transcript {
                    Some(t) => (Some(t.language.as_str()), t.text.as_str(), t.confidence),
                    None => (None, "", 0.0),
                };
                let timings = Timings::of(&r);
                if json {
                    let line = TranscribeJson {
                        file: file.display().to_string(),
                        language: lang,
                        text,
                        confidence: conf,
                        no_speech_probability: r
                            .transcript
                            .as_ref()
                            .map_or(1.0, |t| t.no_speech_probability),
                        routing: r.transcript.as_ref().and_then(|t| t.routing.as_deref()),
                        not_heard: r.transcript.as_ref().and_then(|t| {
                            voxline::stt::heard::judge(t, &config.stt.hearing)
                                .err()
                                .map(|e| e.to_string())
                        }),
                        audio_ms: r.audio_ms,
                        timings_ms: timings,
                    };
                    println!("{}", serde_json::to_string(&line)?);
                } else {
                    let shown = if r.transcript.is_none() {
                        "(no speech)"
                    } else {
                        text
                    };
                    println!(
                        "{:<36} {:<6} {:>5.2} {:>8} {:>8.1} {:>8.1} {:>8.1}  {}",
                        short(file),
                        lang.unwrap_or("-"),
                        conf,
                        r.audio_ms,
                        timings.decode,
                        timings.resample,
                        timings.stt,
                        shown
                    );
                }
            }
            Err(e) => {
                failed = true;
                if json {
                    let line = serde_json::json!({"file": file.display().to_string(), "error": format!("{e:#}")});
                    println!("{line}");
                } else {
                    println!("{:<36} error: {e:#}", short(file));
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn short(path: &Path) -> String {
    let s = path.display().to_string();
    let n = s.chars().count();
    if n <= 36 {
        s
    } else {
        format!("…{}", s.chars().skip(n - 35).collect::<String>())
    }
}

fn transcripts(config: &Config, dir: &Path, multilingual: &str) -> Result<ExitCode> {
    let manifest = Manifest::load(dir)?;
    let english_model = config
        .stt
        .english_model
        .clone()
        .unwrap_or_else(|| config.stt.model.clone());
    let english = load_stt(config, Some(english_model))?;
    let other = load_stt(config, Some(multilingual.to_string()))
        .map_err(|e| eprintln!("note: non-English fixtures skipped: {e:#}"))
        .ok();
    println!(
        "{:<40} {:<4} {:>5} {:>6} {:>7} {:>8} {:>7} {:>5}  transcript",
        "fixture", "lang", "conf", "audio", "decode", "resample", "stt", "WER"
    );
    let mut wer_sum: std::collections::BTreeMap<String, (f64, usize)> = Default::default();
    for f in &manifest.fixtures {
        let stt: &dyn SpeechToText = if f.language == "en" {
            english.as_ref()
        } else {
            match &other {
                Some(s) => s.as_ref(),
                None => continue,
            }
        };
        let bytes = std::fs::read(manifest.path_of(f))?;
        let options = TranscribeOptions {
            language: Some(f.language.clone()),
            ..TranscribeOptions::default()
        };
        match pipeline::transcribe_note(&bytes, &config.media, stt, &options) {
            Ok(r) => {
                let text = r.transcript.as_ref().map_or("", |t| t.text.as_str());
                let wer = fixtures::word_error_rate(&f.text, text);
                let e = wer_sum.entry(f.language.clone()).or_default();
                e.0 += wer;
                e.1 += 1;
                let t = Timings::of(&r);
                println!(
                    "{:<40} {:<4} {:>5.2} {:>6} {:>7.1} {:>8.1} {:>7.0} {:>5.2}  {}",
                    f.file,
                    r.transcript.as_ref().map_or("-", |t| t.language.as_str()),
                    r.transcript.as_ref().map_or(0.0, |t| t.confidence),
                    r.audio_ms,
                    t.decode,
                    t.resample,
                    t.stt,
                    wer,
                    text
                );
            }
            Err(e) => println!("{:<40} error: {e:#}", f.file),
        }
    }
    println!();
    for (lang, (sum, n)) in wer_sum {
        println!("mean WER {lang}: {:.3} over {n} notes", sum / n as f64);
    }
    Ok(ExitCode::SUCCESS)
}

/// `voxline bench`: the fixtures through the whole service, in process.
fn bench(mut config: Config, args: BenchArgs) -> Result<ExitCode> {
    use voxline::bench::{self, report, BenchOptions};

    let t = &mut config.bench;
    t.max_turn_p50_ms = args.max_turn_p50_ms.or(t.max_turn_p50_ms);
    t.max_turn_p95_ms = args.max_turn_p95_ms.or(t.max_turn_p95_ms);
    t.max_wer = args.max_wer.or(t.max_wer);
    t.min_intent_accuracy = args.min_intent_accuracy.or(t.min_intent_accuracy);
    t.max_overruns = args.max_overruns.or(t.max_overruns);
    let options = BenchOptions {
        dir: args.dir,
        rounds: args.rounds,
        warmup: args.warmup,
        concurrency: args.concurrency,
        limit: args.limit,
        languages: args.lang,
        max_note_ms: args.max_note_ms,
        llm_first_token: std::time::Duration::from_millis(args.llm_first_token_ms),
        llm_tokens_per_second: args.llm_tokens_per_second,
        cold: args.cold,
        ..BenchOptions::default()
    };
    let stt = load_stt(&config, args.model)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let quiet = args.json;
    let result = runtime.block_on(bench::run(config, stt, &options, |row| {
        if !quiet {
            eprintln!(
                "round {} {:<44} {:>6.0} ms  {}",
                row.round,
                row.file,
                row.trace.turn_ms,
                row.trace.end.name()
            );
        }
    }))?;
    if let Some(path) = &args.report {
        std::fs::write(path, report::html(&result))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    let regressions = result.regressions();
    if args.json {
        let mut value = serde_json::to_value(&result)?;
        value["regressions"] = serde_json::json!(regressions);
        println!("{value}");
    } else {
        print!("{}", report::table(&result));
        if let Some(path) = &args.report {
            println!("report: {}", path.display());
        }
    }
    if regressions.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        for r in &regressions {
            eprintln!("regression: {r}");
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `voxline demo`: the English fixture voice notes answered through the
/// real service path (the sandbox's Graph API stand-in, signed webhooks),
/// one table row per turn.
fn demo(config: Config, dir: &Path, limit: Option<usize>) -> Result<ExitCode> {
    use voxline::bench::{self, BenchOptions};

    let options = BenchOptions {
        dir: dir.to_path_buf(),
        rounds: 1,
        warmup: 1,
        limit,
        languages: Some(vec!["en".into()]),
        ..BenchOptions::default()
    };
    let stt = load_stt(&config, None)?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    println!(
        "Each fixture is a customer's voice note: a signed webhook to the service, the note fetched from a Graph API stand-in,\ntranscribed, answered, spoken and sent back. Times in ms from the webhook's arrival.\n"
    );
    println!(
        "{:<42} {:>5} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}  {:<5} {:<22} heard",
        "fixture",
        "fetch",
        "decode",
        "stt",
        "dialog",
        "tts",
        "encode",
        "send",
        "turn",
        "reply",
        "intent"
    );
    let report = runtime.block_on(bench::run(config, stt, &options, |row| {
        let t = &row.trace;
        let ms = |stage| t.span(stage).map_or(0.0, |s| s.duration_ms());
        use voxline::pipeline::trace::Stage;
        println!(
            "{:<42} {:>5.0} {:>6.1} {:>6.0} {:>6.0} {:>6.0} {:>6.0} {:>6.0} {:>6.0}  {:<5} {:<22} {}",
            row.file,
            ms(Stage::Fetch),
            ms(Stage::Decode) + ms(Stage::Resample),
            ms(Stage::Stt),
            ms(Stage::Dialog),
            ms(Stage::Tts),
            ms(Stage::Encode),
            ms(Stage::Send),
            t.turn_ms,
            t.end.name(),
            t.intent.as_deref().unwrap_or("-"),
            t.transcript.as_deref().unwrap_or("")
        );
    }))?;
    println!(
        "\nturn p50 {:.0} ms, p95 {:.0} ms over {} turns (fast path p50 {:.0} ms); intent accuracy {}",
        report.turn.p50,
        report.turn.p95,
        report.turns,
        report.turn_fast_path.p50,
        report
            .intent_accuracy
            .map_or_else(|| "-".into(), |a| format!("{:.1}%", a * 100.0))
    );
    println!("\nNext:");
    println!("  target/release/voxline serve --sandbox     then open http://127.0.0.1:8080/sandbox to talk to it");
    println!("                                             and http://127.0.0.1:8080/console to watch the turns");
    println!("  target/release/voxline bench --report target/bench.html   the same turns, 3 rounds, with percentiles");
    Ok(ExitCode::SUCCESS)
}

fn serve(config_file: Option<&Path>, role: Option<voxline::service::Role>) -> Result<ExitCode> {
    let mut config = Config::for_serve(config_file)?;
    if let Some(role) = role {
        config.service.role = role;
    }
    let stt_config = config.stt.clone();
    let languages = config.service.languages.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    let file = config_file.map(Path::to_path_buf);
    // A webhook-only process runs no turns: no model to load.
    let webhook_only = config.service.role == voxline::service::Role::Webhook;
    runtime.block_on(voxline::service::serve(config, file, move || {
        if webhook_only {
            return Ok(Arc::new(voxline::stt::NotLoaded) as Arc<dyn voxline::stt::SpeechToText>);
        }
        voxline::stt::load(&stt_config, &languages)
    }))?;
    Ok(ExitCode::SUCCESS)
}

/// `voxline serve --sandbox`: the Graph API stand-in first (its URL and
/// credentials go into the service's config), then the service with the
/// sandbox's page on its listener, then Meta's subscription check against
/// the webhook; runs until SIGTERM or Ctrl-C.
fn serve_sandbox(mut config: Config) -> Result<ExitCode> {
    use voxline::sandbox::{Sandbox, SandboxConfig};
    use voxline::service::{shutdown_signal, Service};

    config.apply_env(|name| std::env::var(name).ok())?;
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let sandbox = Sandbox::start(SandboxConfig::default()).await?;
        let config = sandbox.service_config(config);
        if !config.service.addr.ip().is_loopback() {
            tracing::warn!(
                addr = %config.service.addr,
                "the sandbox page has no authentication; keep it on a loopback address"
            );
        }
        let stt_config = config.stt.clone();
        let languages = config.service.languages.clone();
        let stt = tokio::task::spawn_blocking(move || voxline::stt::load(&stt_config, &languages))
            .await
            .context("loading the speech-to-text models")?
            .context("loading the speech-to-text models")?;
        let service = Service::start_with_routes(&config, stt, sandbox.routes()).await?;
        let base = format!("http://{}", service.addr());
        sandbox.set_webhook_url(format!("{base}/webhook"));
        sandbox
            .verify_webhook()
            .await
            .context("the service's webhook")?;
        println!("voxline sandbox");
        println!("  chat      {base}/sandbox");
        println!("  console   {base}/console");
        println!("  graph api {} (stand-in)", sandbox.graph_url());
        println!("  data      {}", config.store.data_dir.display());
        println!("Ctrl-C to stop.");
        shutdown_signal().await;
        tracing::info!("shutdown requested");
        sandbox.close();
        service.stop().await?;
        anyhow::Ok(())
    })?;
    Ok(ExitCode::SUCCESS)
}

#[derive(Serialize)]
struct ReplyJson {
    transcript: String,
    language: String,
    intent: String,
    reply_text: String,
    reply_audio: Option<String>,
    reply_bytes: usize,
    timings_ms: ReplyTimings,
    turn_ms: f64,
}

#[derive(Serialize)]
struct ReplyTimings {
    decode: f64,
    resample: f64,
    stt: f64,
    dialog: f64,
    /// From the text reaching the speech provider to its first audio.
    tts_first_audio: f64,
    /// From the text reaching the speech provider to its last audio.
    tts: f64,
    /// Ogg/Opus packing after the last audio (the rest overlaps speech).
    encode: f64,
}

fn ms_since(t: std::time::Instant) -> f64 {
    round2(t.elapsed().as_secs_f64() * 1000.0)
}

/// `voxline say`: one text spoken into a voice note by the reply path's
/// voice stage.
fn say(
    mut config: Config,
    text: &str,
    lang: &str,
    provider: Option<String>,
    voice: Option<String>,
    speed: Option<f32>,
    out: &Path,
) -> Result<ExitCode> {
    use voxline::tts::{self, Language, ProviderKind};

    let language = Language::from_code(lang)
        .with_context(|| format!("{lang:?} is not a reply language (en, es, it, pt, fr)"))?;
    if let Some(p) = provider {
        let kind: ProviderKind =
            serde_json::from_value(serde_json::json!(p)).with_context(|| {
                format!("{p:?} is not a provider (piper, kokoro, espeak, openai, elevenlabs)")
            })?;
        config.tts.providers = vec![kind];
    }
    if let Some(v) = voice {
        config.tts.kokoro.voices.insert(language, v);
    }
    if let Some(s) = speed {
        config.tts.kokoro.speed = s;
        config.tts.espeak.rate_wpm = Some((175.0 * s.clamp(0.5, 2.0)) as u32);
    }
    // A fixture generator must not lose a voice to a busy machine.
    let mut budgets = config.budgets.clone();
    for stage in [
        voxline::pipeline::budget::BudgetStage::TtsFirstAudio,
        voxline::pipeline::budget::BudgetStage::TtsTotal,
        voxline::pipeline::budget::BudgetStage::Encode,
    ] {
        let b = budgets.get(stage);
        budgets
            .set(
                stage,
                voxline::pipeline::budget::Budget::fixed(600_000, b.action),
            )
            .map_err(anyhow::Error::msg)?;
    }
    let tts = Arc::new(tts::from_config(&config.tts)?);
    let runtime = tokio::runtime::Runtime::new()?;
    let run = runtime.block_on(async {
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        let _ = tx.send(text.to_string()).await;
        drop(tx);
        voxline::pipeline::voice::speak(
            tts,
            rx,
            language,
            &config.encode,
            &budgets,
            tokio_util::sync::CancellationToken::new(),
        )
        .await
    });
    match run.note {
        Ok(note) => {
            std::fs::write(out, &note.bytes)
                .with_context(|| format!("writing {}", out.display()))?;
            println!("{} ({} bytes)", out.display(), note.bytes.len());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => anyhow::bail!("no voice note: {}", e.reason),
    }
}

/// `voxline reply`: one offline turn, stage by stage, with its timings.
fn reply(config: &Config, file: &Path, from: &str, out: &Path, json: bool) -> Result<ExitCode> {
    use voxline::dialog::{Delivery, DialogStage, Message};
    use voxline::tts::{self, Language};

    let stt = load_stt(config, None)?;
    let dialog_config = dialog_config(config)?;
    let bytes = std::fs::read(file).with_context(|| format!("reading {}", file.display()))?;
    let turn = std::time::Instant::now();
    // The number's calling code is the note's prior, as in the service.
    let prior = voxline::channel::calling_code::language_of(from, &config.service.languages).map(
        |language| voxline::stt::Prior {
            language,
            source: voxline::stt::PriorSource::CallingCode,
        },
    );
    let options = TranscribeOptions {
        prior,
        ..TranscribeOptions::default()
    };
    let note = pipeline::transcribe_note(&bytes, &config.media, stt.as_ref(), &options)?;
    let Some(transcript) = note.transcript.clone() else {
        anyhow::bail!("{} holds no speech", file.display());
    };
    if let Some(r) = &transcript.routing {
        eprintln!("routing: {} by {}: {}", r.language, r.model, r.reason);
    }
    if let Err(why) = voxline::stt::heard::judge(&transcript, &config.stt.hearing) {
        eprintln!(
            "not heard ({why}): the service asks the customer to say it again or type it; heard {:?}",
            transcript.text
        );
        return Ok(ExitCode::FAILURE);
    }
    let timings = Timings::of(&note);
    let runtime = tokio::runtime::Runtime::new()?;
    let (reply_text, outcome, dialog_ms, spoken) = runtime.block_on(async {
        let stage = DialogStage::open(dialog_config).await?;
        let started = std::time::Instant::now();
        let id = format!("offline.{}", std::process::id());
        let message = Message::voice(
            &id,
            from,
            &transcript.text,
            &transcript.language,
            transcript.confidence,
        );
        let (text, outcome) = stage.answer(message).await;
        let dialog_ms = ms_since(started);
        let spoken = match (outcome.delivery, Language::from_code(&transcript.language)) {
            (Delivery::Voice, Some(language)) => {
                let tts = std::sync::Arc::new(tts::from_config(&config.tts)?);
                let (tx, rx) = tokio::sync::mpsc::channel(1);
                tx.send(text.clone()).await?;
                drop(tx);
                let run = voxline::pipeline::voice::speak(
                    tts,
                    rx,
                    language,
                    &config.encode,
                    &config.budgets,
                    tokio_util::sync::CancellationToken::new(),
                )
                .await;
                Some(run)
            }
            _ => None,
        };
        anyhow::Ok((text, outcome, dialog_ms, spoken))
    })?;
    // The voice stage's own spans, as a service turn records them.
    let zero = spoken.as_ref().and_then(|r| r.first_text);
    let mut voice_trace =
        voxline::pipeline::trace::Trace::starting_at(zero.unwrap_or_else(std::time::Instant::now));
    if let Some(run) = &spoken {
        run.record(&mut voice_trace);
    }
    let tts_span = voice_trace.span(Stage::Tts);
    let tts_first_audio = round2(tts_span.and_then(|s| s.first_output_ms()).unwrap_or(0.0));
    let tts_ms = round2(tts_span.map_or(0.0, |s| s.duration_ms()));
    // Packing after the last audio: the rest overlapped speech.
    let encode_ms = round2(
        voice_trace
            .span(Stage::Encode)
            .zip(tts_span)
            .map_or(0.0, |(e, t)| (e.end_ms - t.end_ms).max(0.0)),
    );
    let spoken = match spoken.map(|r| r.note) {
        Some(Ok(note)) => Some(note),
        Some(Err(e)) => {
            eprintln!(
                "no voice note: {}; the reply would go out as text",
                e.reason
            );
            None
        }
        None => None,
    };
    let reply_bytes = spoken.as_ref().map_or(0, |n| n.bytes.len());
    if let Some(n) = &spoken {
        std::fs::write(out, &n.bytes).with_context(|| format!("writing {}", out.display()))?;
    }
    let line = ReplyJson {
        transcript: transcript.text,
        language: transcript.language,
        intent: outcome.intent,
        reply_text,
        reply_audio: spoken.as_ref().map(|_| out.display().to_string()),
        reply_bytes,
        timings_ms: ReplyTimings {
            decode: timings.decode,
            resample: timings.resample,
            stt: timings.stt,
            dialog: dialog_ms,
            tts_first_audio,
            tts: tts_ms,
            encode: encode_ms,
        },
        turn_ms: ms_since(turn),
    };
    if json {
        println!("{}", serde_json::to_string(&line)?);
    } else {
        println!("heard     ({}) {}", line.language, line.transcript);
        println!("intent    {}", line.intent);
        println!("reply     {}", line.reply_text);
        match &line.reply_audio {
            Some(path) => println!("voice     {path} ({} bytes)", line.reply_bytes),
            None => println!("voice     none: the reply goes out as text"),
        }
        let t = &line.timings_ms;
        println!(
            "ms        decode {:.1}, resample {:.1}, stt {:.0}, dialog {:.1}, tts {:.0} (first audio {:.0}), encode {:.1} after the last audio; turn {:.0}",
            t.decode, t.resample, t.stt, t.dialog, t.tts, t.tts_first_audio, t.encode, line.turn_ms
        );
    }
    Ok(ExitCode::SUCCESS)
}
