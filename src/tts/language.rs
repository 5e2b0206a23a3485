//! The reply languages voxline speaks.

use std::fmt;

use serde::Deserialize;

/// A reply language, chosen from the transcript's language.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    #[default]
    En,
    Es,
    It,
    Pt,
    Fr,
}

impl Language {
    pub const ALL: [Language; 5] = [Self::En, Self::Es, Self::It, Self::Pt, Self::Fr];

    /// From an ISO 639-1 code or a locale ("es", "pt-BR", "fr_FR").
    pub fn from_code(code: &str) -> Option<Self> {
        let base = code.split(['-', '_']).next()?.to_ascii_lowercase();
        Some(match base.as_str() {
            "en" => Self::En,
            "es" => Self::Es,
            "it" => Self::It,
            "pt" => Self::Pt,
            "fr" => Self::Fr,
            _ => return None,
        })
    }

    /// The ISO 639-1 code.
    pub fn code(self) -> &'static str {
        match self {
            Self::En => "en",
            Self::Es => "es",
            Self::It => "it",
            Self::Pt => "pt",
            Self::Fr => "fr",
        }
    }
}

impl fmt::Display for Language {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}
