//! The service's configuration: one section per stage, read from
//! `voxline.toml`. Every key has a documented default, so an empty file (or
//! none) is a working configuration.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::media::MediaConfig;
use crate::stt::SttConfig;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[media]`: decoding, resampling and note preparation.
    pub media: MediaConfig,
    /// `[stt]`: the speech-to-text model and its decoding.
    pub stt: SttConfig,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
}

impl Config {
    /// Reads a TOML file; a missing key takes its default, an unknown key is
    /// an error naming it.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_are_named() {
        let err = toml::from_str::<Config>("[stt]\nmodle = \"base\"\n").unwrap_err();
        assert!(err.to_string().contains("modle"), "{err}");
        let ok: Config = toml::from_str("[stt]\nmodel = \"base\"\n").unwrap();
        assert_eq!(ok.stt.model, "base");
    }
}
