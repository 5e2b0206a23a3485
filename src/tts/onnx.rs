//! What the in-process neural voices ([`super::piper`], [`super::kokoro`])
//! share: ONNX Runtime, loaded once per process from the shared library
//! that `models/fetch.sh` unpacks from its wheel, and paths resolved in the
//! models folder.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use ort::environment::Environment;
use ort::session::builder::GraphOptimizationLevel;
use ort::session::{RunOptions, Session};
use tokio_util::sync::CancellationToken;

use super::config::{GraphOptimization, OnnxTuning};
use super::TtsError;

/// A path from the config: as it is when it names a file or is absolute,
/// else in the models folder.
pub(crate) fn resolve(path: &Path, dir: &Path) -> PathBuf {
    if path.is_file() || path.is_absolute() {
        path.to_path_buf()
    } else {
        dir.join(path)
    }
}

/// The reason a file a voice needs is missing, with the command that
/// fetches it.
pub(crate) fn not_found(what: &str, path: &Path) -> String {
    format!(
        "{what} not found at {}; run `./x setup` (or models/fetch.sh) to fetch it",
        path.display()
    )
}

/// The process's ONNX Runtime, loaded once from the first library asked
/// for; ONNX Runtime allows one environment per process. A failed load is
/// not kept, so a corrected path can be tried again.
pub(crate) fn runtime(library: &Path) -> Result<Environment, String> {
    static RUNTIME: Mutex<Option<(PathBuf, Environment)>> = Mutex::new(None);
    let mut runtime = RUNTIME.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((loaded, environment)) = runtime.as_ref() {
        if loaded != library {
            return Err(format!(
                "ONNX Runtime is already loaded from {}; one library per process, not also {}",
                loaded.display(),
                library.display()
            ));
        }
        return Ok(environment.clone());
    }
    let environment = ort::init_from(library)
        .map_err(|e| format!("cannot load ONNX Runtime: {e}"))?
        .with_name("voxline")
        .build()
        .map_err(|e| format!("ONNX Runtime: {e}"))?;
    *runtime = Some((library.to_path_buf(), environment.clone()));
    Ok(environment)
}

/// A model's session on the runtime from `library`, with `threads` CPU
/// threads for one inference, refused unless it takes every input named in
/// `inputs` (`kind` names the model in that error). Returns the session
/// and the names of all its inputs.
pub(crate) fn session(
    library: &Path,
    model: &Path,
    threads: u16,
    tuning: &OnnxTuning,
    kind: &str,
    inputs: &[&str],
) -> Result<(Session, Vec<String>), String> {
    let environment = runtime(library)?;
    let load_err = |e: &dyn std::fmt::Display| format!("cannot load {}: {e}", model.display());
    let level = match tuning.optimization {
        GraphOptimization::Disable => GraphOptimizationLevel::Disable,
        GraphOptimization::Basic => GraphOptimizationLevel::Level1,
        GraphOptimization::Extended => GraphOptimizationLevel::Level2,
        GraphOptimization::All => GraphOptimizationLevel::All,
    };
    let cpu = ort::ep::CPU::default()
        .with_arena_allocator(tuning.cpu_arena)
        .build();
    let session = Session::builder(&environment)
        .map_err(|e| load_err(&e))?
        .with_intra_threads(usize::from(threads.max(1)))
        .map_err(|e| load_err(&e))?
        .with_inter_threads(1)
        .map_err(|e| load_err(&e))?
        .with_optimization_level(level)
        .map_err(|e| load_err(&e))?
        .with_memory_pattern(tuning.memory_pattern)
        .map_err(|e| load_err(&e))?
        .with_execution_providers([cpu])
        .map_err(|e| load_err(&e))?
        .commit_from_file(model)
        .map_err(|e| load_err(&e))?;
    let names: Vec<String> = session
        .inputs()
        .iter()
        .map(|i| i.name().to_string())
        .collect();
    for name in inputs {
        if !names.iter().any(|n| n == name) {
            return Err(load_err(&format!(
                "not a {kind} model: no input {name:?} (inputs: {names:?})"
            )));
        }
    }
    Ok((session, names))
}

/// The phonemes of a warm-up inference: "hello", short enough to take a
/// fraction of a second and long enough to run every node of the graph.
pub(crate) const WARM_UP_PHONEMES: &str = "həlˈoʊ";

/// Runs `infer` once on a thread of its own, so that ONNX Runtime's
/// first-run set-up (buffer allocation, kernel selection) is paid before a
/// customer's first sentence rather than during it. The inference holds the
/// voice's session like any other, so a sentence that comes meanwhile waits
/// for it; a failure is logged and changes nothing (the voice's first
/// sentence then pays the set-up).
pub(crate) fn warm_up(
    kind: &'static str,
    infer: impl FnOnce(&RunOptions) -> Result<(), String> + Send + 'static,
) {
    let spawned = std::thread::Builder::new()
        .name(format!("{kind}-warm-up"))
        .spawn(move || {
            let started = std::time::Instant::now();
            let done = RunOptions::new()
                .map_err(|e| e.to_string())
                .and_then(|run| infer(&run));
            match done {
                Ok(()) => tracing::info!(
                    voice = kind,
                    ms = started.elapsed().as_millis() as u64,
                    "voice warmed up"
                ),
                Err(reason) => tracing::warn!(voice = kind, %reason, "voice warm-up failed"),
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(voice = kind, error = %e, "cannot start the voice's warm-up");
    }
}

/// How a cancellable inference ended without audio.
#[derive(Debug)]
pub(crate) enum Stopped {
    Cancelled,
    Failed(String),
}

impl Stopped {
    /// As the error of `provider`.
    pub(crate) fn into_tts(self, provider: &str) -> TtsError {
        match self {
            Self::Cancelled => TtsError::Cancelled,
            Self::Failed(reason) => TtsError::Unavailable {
                provider: provider.into(),
                reason,
            },
        }
    }
}

/// Runs `infer` on a blocking thread with run options through which
/// cancelling terminates it. A cancel returns at once: ONNX Runtime checks
/// the terminate flag between graph nodes, so the run ends at its current
/// node's end (up to a second for Piper's largest on two loaded cores), and
/// the caller need not wait for that. The run's session stays locked until
/// then, so the voice's next sentence queues behind it; how each cancelled
/// run ended is counted in the `tts_cancelled_inferences` metric.
pub(crate) async fn infer_cancellable<T: Send + 'static>(
    cancel: &CancellationToken,
    infer: impl FnOnce(&RunOptions) -> Result<T, String> + Send + 'static,
) -> Result<T, Stopped> {
    let run = Arc::new(RunOptions::new().map_err(|e| Stopped::Failed(e.to_string()))?);
    let mut task = {
        let run = Arc::clone(&run);
        tokio::task::spawn_blocking(move || infer(&run))
    };
    tokio::select! {
        done = &mut task => done
            .map_err(|e| Stopped::Failed(format!("inference: {e}")))?
            .map_err(|e| Stopped::Failed(format!("inference: {e}"))),
        () = cancel.cancelled() => {
            let _ = run.terminate();
            tokio::spawn(async move {
                // A terminated run returns an error; one that finished
                // anyway was past its last node when the cancel came.
                let terminated = !matches!(task.await, Ok(Ok(_)));
                crate::metrics::global().cancelled_inference(terminated);
            });
            Err(Stopped::Cancelled)
        }
    }
}
