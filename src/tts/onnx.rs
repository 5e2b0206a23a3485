//! What the in-process neural voices ([`super::piper`], [`super::kokoro`])
//! share: ONNX Runtime, loaded once per process from the shared library
//! that `models/fetch.sh` unpacks from its wheel, and paths resolved in the
//! models folder.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use ort::environment::Environment;

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
