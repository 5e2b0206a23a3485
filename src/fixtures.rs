//! The audio-fixture manifest (`audio-fixtures/manifest.json`) and the word
//! error rate used to score transcripts against its reference texts.
//!
//! The demo, the integration tests and the benchmarks all read fixtures
//! through this module, so a fixture added to the manifest is picked up
//! everywhere.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// Where a fixture's audio came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// MIT-licensed clips from the `pytest-audioeval` wheel.
    PytestAudioeval,
    /// Spanish, Italian and Portuguese commerce and support utterances
    /// synthesised by `make.sh` with espeak-ng.
    EspeakNg,
    /// English commerce and support utterances synthesised by `make.sh` with
    /// the Piper voice en_US-joe-medium.
    Piper,
    /// Spanish, Italian, Portuguese and French commerce and support
    /// utterances synthesised by `make_natural.sh` with Kokoro's native
    /// voices (`natural/`, `natural_noisy/`); the espeak-ng notes of the
    /// same texts are their robotic variant.
    Kokoro,
}

/// The container and codec a fixture is stored in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Form {
    OggOpus,
    OggVorbis,
    Mp3,
    M4a,
    Wav,
    Flac,
}

/// Recording condition of a fixture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    Clean,
    /// Street-like noise mixed in at about 10 dB SNR.
    Noisy,
    /// Longer than Whisper's 30 s window.
    Long,
}

/// One committed voice note with its reference transcript.
#[derive(Debug, Clone, Deserialize)]
pub struct Fixture {
    /// Path relative to the manifest's folder.
    pub file: String,
    /// ISO 639-1 language of the speech.
    pub language: String,
    /// Reference transcript.
    pub text: String,
    /// Expected dialog intent, where the utterance is a commerce request.
    #[serde(default)]
    pub intent: Option<String>,
    pub source: Source,
    pub form: Form,
    pub condition: Condition,
    /// Duration of the audio in milliseconds.
    pub duration_ms: u64,
}

/// The parsed manifest, with the folder its paths are relative to.
#[derive(Debug, Clone)]
pub struct Manifest {
    pub dir: PathBuf,
    pub fixtures: Vec<Fixture>,
}

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a valid manifest: {source}")]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
}

#[derive(Deserialize)]
struct ManifestFile {
    fixtures: Vec<Fixture>,
}

impl Manifest {
    /// Reads `manifest.json` from `dir`.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self, ManifestError> {
        let dir = dir.as_ref().to_path_buf();
        let path = dir.join("manifest.json");
        let raw = std::fs::read(&path).map_err(|source| ManifestError::Read {
            path: path.clone(),
            source,
        })?;
        let file: ManifestFile =
            serde_json::from_slice(&raw).map_err(|source| ManifestError::Parse { path, source })?;
        Ok(Self {
            dir,
            fixtures: file.fixtures,
        })
    }

    /// The manifest committed with the crate.
    pub fn committed() -> Result<Self, ManifestError> {
        Self::load(Path::new(env!("CARGO_MANIFEST_DIR")).join("audio-fixtures"))
    }

    pub fn path_of(&self, fixture: &Fixture) -> PathBuf {
        self.dir.join(&fixture.file)
    }
}

/// Number words from zero to twenty in the fixture languages, as digits:
/// Whisper writes "1, 2, 3" for spoken "one, two, three" as often as not.
const NUMBER_WORDS: &[(&str, &str)] = &[
    ("zero", "0"),
    ("one", "1"),
    ("two", "2"),
    ("three", "3"),
    ("four", "4"),
    ("five", "5"),
    ("six", "6"),
    ("seven", "7"),
    ("eight", "8"),
    ("nine", "9"),
    ("ten", "10"),
    ("eleven", "11"),
    ("twelve", "12"),
    ("twenty", "20"),
    ("cero", "0"),
    ("uno", "1"),
    ("dos", "2"),
    ("tres", "3"),
    ("cuatro", "4"),
    ("cinco", "5"),
    ("seis", "6"),
    ("siete", "7"),
    ("ocho", "8"),
    ("nueve", "9"),
    ("diez", "10"),
    ("due", "2"),
    ("tre", "3"),
    ("quattro", "4"),
    ("cinque", "5"),
    ("sette", "7"),
    ("otto", "8"),
    ("nove", "9"),
    ("dieci", "10"),
    ("um", "1"),
    ("dois", "2"),
    ("três", "3"),
    ("quatro", "4"),
    ("sete", "7"),
    ("oito", "8"),
    ("dez", "10"),
    ("un", "1"),
    ("deux", "2"),
    ("trois", "3"),
    ("quatre", "4"),
    ("cinq", "5"),
    ("sept", "7"),
    ("huit", "8"),
    ("neuf", "9"),
    ("dix", "10"),
];

/// Currency symbols and words, each to the one word both become.
const CURRENCIES: &[(&str, &str)] = &[
    ("$", "dollars"),
    ("dollar", "dollars"),
    ("€", "euros"),
    ("euro", "euros"),
    ("£", "pounds"),
    ("pound", "pounds"),
];

/// Lower-cases, strips punctuation and splits into words, so that "Order
/// #1,842." and "order 1842" compare equal. Digit groups separated by commas,
/// dots or colons are joined ("1,842" → "1842", "10:30" and "10.30" →
/// "1030"), number words up to ten (and a few more in English) become digits
/// ("one-two" → "1 2"), and a currency symbol before a number is read after
/// it as its word ("$25" and "25 dollars" → "25 dollars"; "euro" and
/// "euros" → "euros"), as a listener would say them.
pub fn normalise_words(text: &str) -> Vec<String> {
    let mut cleaned = String::with_capacity(text.len());
    let chars: Vec<char> = text.chars().collect();
    // A currency symbol waiting for the end of the number it precedes.
    let mut currency: Option<&str> = None;
    for (i, &c) in chars.iter().enumerate() {
        let between_digits = i > 0
            && i + 1 < chars.len()
            && chars[i - 1].is_ascii_digit()
            && chars[i + 1].is_ascii_digit();
        if matches!(c, ',' | '.' | ':') && between_digits {
            // thousands separator, decimal point or a time's colon inside a
            // number: keep the number in one word
            continue;
        }
        if !c.is_ascii_digit() {
            if let Some(word) = currency.take() {
                // the number the symbol preceded ends here
                cleaned.push(' ');
                cleaned.push_str(word);
            }
        }
        let symbol = CURRENCIES
            .iter()
            .find(|(s, _)| s.chars().eq(std::iter::once(c)))
            .map(|(_, word)| *word);
        if c.is_alphanumeric() || c == '\'' {
            cleaned.extend(c.to_lowercase());
        } else if let Some(word) = symbol {
            if chars.get(i + 1).is_some_and(char::is_ascii_digit) {
                currency = Some(word);
            } else {
                cleaned.push(' ');
                cleaned.push_str(word);
            }
            cleaned.push(' ');
        } else {
            cleaned.push(' ');
        }
    }
    if let Some(word) = currency {
        cleaned.push(' ');
        cleaned.push_str(word);
    }
    cleaned
        .split_whitespace()
        .map(|w| w.trim_matches('\''))
        .filter(|w| !w.is_empty())
        .map(|w| {
            NUMBER_WORDS
                .iter()
                .chain(CURRENCIES)
                .find(|(word, _)| *word == w)
                .map_or(w, |(_, digits)| digits)
                .to_string()
        })
        .collect()
}

/// Word error rate of `hypothesis` against `reference` after
/// [`normalise_words`]: (substitutions + deletions + insertions) / reference
/// words. An empty reference scores 0 against an empty hypothesis and 1
/// otherwise.
pub fn word_error_rate(reference: &str, hypothesis: &str) -> f64 {
    let r = normalise_words(reference);
    let h = normalise_words(hypothesis);
    if r.is_empty() {
        return if h.is_empty() { 0.0 } else { 1.0 };
    }
    word_edits(&r, &h) as f64 / r.len() as f64
}

/// Levenshtein distance over words, in O(len(h)) memory.
pub fn word_edits(r: &[String], h: &[String]) -> usize {
    let mut prev: Vec<usize> = (0..=h.len()).collect();
    let mut cur = vec![0; h.len() + 1];
    for (i, rw) in r.iter().enumerate() {
        cur[0] = i + 1;
        for (j, hw) in h.iter().enumerate() {
            let sub = prev[j] + usize::from(rw != hw);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    prev[h.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_ignores_case_punctuation_and_number_grouping() {
        assert_eq!(
            normalise_words("Where is my order #1,842?"),
            vec!["where", "is", "my", "order", "1842"]
        );
        assert_eq!(normalise_words("¿Dónde está?"), vec!["dónde", "está"]);
        assert_eq!(
            normalise_words("One two, three. 1-2-3"),
            vec!["1", "2", "3", "1", "2", "3"]
        );
    }

    #[test]
    fn currency_symbols_and_times_read_as_they_are_said() {
        assert_eq!(
            normalise_words("a refund of $25 today"),
            normalise_words("a refund of 25 dollars today")
        );
        assert_eq!(normalise_words("$59.99."), ["5999", "dollars"]);
        assert_eq!(
            normalise_words("12,50 € o 12 euro"),
            ["1250", "euros", "o", "12", "euros"]
        );
        assert_eq!(
            normalise_words("£3, or 4 pound"),
            ["3", "pounds", "or", "4", "pounds"]
        );
        assert_eq!(normalise_words("at 10:30"), normalise_words("at 10.30"));
        // a symbol alone is its word
        assert_eq!(normalise_words("in $ please"), ["in", "dollars", "please"]);
    }

    #[test]
    fn wer_counts_substitutions_insertions_and_deletions() {
        assert_eq!(word_error_rate("a b c d", "a b c d"), 0.0);
        assert_eq!(word_error_rate("a b c d", "a x c d"), 0.25);
        assert_eq!(word_error_rate("a b c d", "a b c"), 0.25);
        assert_eq!(word_error_rate("a b c d", "a b c d e"), 0.25);
        assert_eq!(word_error_rate("", ""), 0.0);
        assert_eq!(word_error_rate("", "x"), 1.0);
    }
}
