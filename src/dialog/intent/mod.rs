//! The fast intent path: rules and a small classifier, both read from the
//! operator's data files (`data/intents/*.toml`), answer what the customer
//! wants, in which language, with which slots and how sure we are, in well
//! under a millisecond.
//!
//! Each intent file holds the intent's name, regular expressions over the
//! folded text (see [`text::fold`]) and example messages per language. At
//! start-up the examples train two [`classifier::Classifier`]s: one for the
//! intent, one for the language. A rule match makes its intent a strong
//! candidate; the classifier decides between candidates and covers
//! everything the rules miss.

pub mod classifier;
pub mod slots;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use regex::RegexSet;
use serde::{Deserialize, Serialize};

use classifier::{Classifier, Training};
pub use slots::{DateRef, Lexicon, Slots};

/// The intent every message falls back to when nothing is sure enough.
pub const UNKNOWN: &str = "unknown";

/// One intent file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntentSpec {
    pub intent: String,
    #[serde(default)]
    pub description: String,
    /// A write the customer must confirm before it is committed.
    #[serde(default)]
    pub write: bool,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Example messages per language code.
    pub examples: BTreeMap<String, Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
pub enum IntentError {
    #[error("cannot read intent data {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("intent file {path} is invalid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("intent {intent}: pattern {pattern:?} is not a valid regular expression: {source}")]
    Pattern {
        intent: String,
        pattern: String,
        source: regex::Error,
    },
    #[error("intent {0} is defined twice")]
    Duplicate(String),
    #[error("no intent files in {0}, or no `unknown` intent among them")]
    Missing(PathBuf),
}

/// Confidence thresholds of the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Below this the message is `unknown` (default 0.4).
    pub unknown_below: f32,
    /// From this confidence on, the fast path answers without the LLM
    /// (default 0.6).
    pub fast_path_from: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            unknown_below: 0.4,
            fast_path_from: 0.6,
        }
    }
}

/// What the fast path made of one message.
#[derive(Debug, Clone, Serialize)]
pub struct Classification {
    pub intent: String,
    pub confidence: f32,
    pub language: String,
    pub slots: Slots,
    /// The fast path answers this message without the LLM.
    pub fast_path: bool,
    /// A rule of the chosen intent matched.
    pub rule: bool,
}

/// Intents, rules and the trained classifiers.
pub struct IntentModel {
    specs: Vec<IntentSpec>,
    rules: RegexSet,
    rule_owner: Vec<usize>,
    intents: Classifier,
    languages: Vec<String>,
    /// Indices of `languages` that detection may answer.
    detectable: Vec<usize>,
    language: Classifier,
    lexicon: Lexicon,
    thresholds: Thresholds,
    unknown: usize,
}

impl IntentModel {
    /// Reads every `*.toml` in `dir` and trains the classifiers.
    pub fn load(dir: &Path, lexicon: Lexicon, thresholds: Thresholds) -> Result<Self, IntentError> {
        let read_err = |source| IntentError::Read {
            path: dir.to_path_buf(),
            source,
        };
        let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(read_err)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        let mut specs = Vec::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(|source| IntentError::Read {
                path: path.clone(),
                source,
            })?;
            let spec: IntentSpec =
                toml::from_str(&text).map_err(|source| IntentError::Parse { path, source })?;
            specs.push(spec);
        }
        if specs.is_empty() || !specs.iter().any(|s| s.intent == UNKNOWN) {
            return Err(IntentError::Missing(dir.to_path_buf()));
        }
        Self::from_specs(specs, lexicon, thresholds)
    }

    pub fn from_specs(
        specs: Vec<IntentSpec>,
        lexicon: Lexicon,
        thresholds: Thresholds,
    ) -> Result<Self, IntentError> {
        let mut patterns = Vec::new();
        let mut rule_owner = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.intent == spec.intent) {
                return Err(IntentError::Duplicate(spec.intent.clone()));
            }
            for p in &spec.patterns {
                // Checked one by one so that the error names the culprit.
                regex::Regex::new(p).map_err(|source| IntentError::Pattern {
                    intent: spec.intent.clone(),
                    pattern: p.clone(),
                    source,
                })?;
                patterns.push(p.clone());
                rule_owner.push(i);
            }
        }
        let rules = RegexSet::new(&patterns).map_err(|source| IntentError::Pattern {
            intent: "(all)".into(),
            pattern: String::new(),
            source,
        })?;
        let mut languages: Vec<String> = specs
            .iter()
            .flat_map(|s| s.examples.keys().cloned())
            .collect();
        languages.sort();
        languages.dedup();
        let mut intent_docs = Vec::new();
        let mut language_docs = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            for (lang, examples) in &spec.examples {
                let l = languages.iter().position(|x| x == lang).unwrap_or(0);
                for e in examples {
                    let folded = text::fold(e);
                    intent_docs.push((folded.clone(), i));
                    language_docs.push((folded, l));
                }
            }
        }
        let intents = Classifier::train(&intent_docs, specs.len(), Training::default());
        let language = Classifier::train(&language_docs, languages.len(), Training::default());
        let unknown = specs.iter().position(|s| s.intent == UNKNOWN).unwrap_or(0);
        let model = Self {
            specs,
            rules,
            rule_owner,
            intents,
            detectable: (0..languages.len()).collect(),
            languages,
            language,
            lexicon,
            thresholds,
            unknown,
        };
        // The regular expressions build their matching automata lazily: pay
        // that at start-up, not in the first customer's turn.
        model.classify(
            "where is order 1842, change the address to 5 Elm Road on Friday",
            None,
        );
        Ok(model)
    }

    pub fn specs(&self) -> &[IntentSpec] {
        &self.specs
    }

    pub fn spec(&self, intent: &str) -> Option<&IntentSpec> {
        self.specs.iter().find(|s| s.intent == intent)
    }

    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    pub fn thresholds(&self) -> Thresholds {
        self.thresholds
    }

    /// Limits language detection to `languages` (those of them the
    /// examples cover); an empty list or one with none of them changes
    /// nothing.
    pub fn detect_among(&mut self, languages: &[String]) {
        let allowed: Vec<usize> = (0..self.languages.len())
            .filter(|&i| languages.contains(&self.languages[i]))
            .collect();
        if !allowed.is_empty() {
            self.detectable = allowed;
        }
    }

    /// The language of a message, among those the examples cover (and
    /// [`Self::detect_among`] allows).
    pub fn detect_language(&self, folded: &str) -> &str {
        let p = self.language.probabilities(folded);
        &self.languages[self.most_likely(&p)]
    }

    /// The index of the most likely detectable language in `p`.
    fn most_likely(&self, p: &[f32]) -> usize {
        self.detectable
            .iter()
            .copied()
            .max_by(|&a, &b| p[a].total_cmp(&p[b]))
            .unwrap_or_else(|| argmax(p))
    }

    /// The most likely language of `folded` among those detection may
    /// answer, its probability, and the probability of `expected`.
    pub fn language_odds(&self, folded: &str, expected: &str) -> (&str, f32, f32) {
        let p = self.language.probabilities(folded);
        let best = self.most_likely(&p);
        let expected = self
            .languages
            .iter()
            .position(|l| l == expected)
            .map_or(0.0, |i| p[i]);
        (&self.languages[best], p[best], expected)
    }

    /// Classifies one message. `language` is the transcript's language, when
    /// known; otherwise it is detected from the text.
    pub fn classify(&self, message: &str, language: Option<&str>) -> Classification {
        let folded = text::fold(message);
        let language = match language.map(|l| l.to_ascii_lowercase()) {
            Some(l) if self.languages.contains(&l) => l,
            _ => self.detect_language(&folded).to_string(),
        };
        let slots = slots::extract(message, &folded, &self.lexicon);
        if folded.is_empty() {
            return Classification {
                intent: UNKNOWN.into(),
                confidence: 1.0,
                language,
                slots,
                fast_path: false,
                rule: false,
            };
        }
        let p = self.intents.probabilities(&folded);
        let mut matched: Vec<usize> = self
            .rules
            .matches(&folded)
            .iter()
            .map(|r| self.rule_owner[r])
            .collect();
        matched.sort_unstable();
        matched.dedup();
        // A matching rule adds a fixed bonus, so that it decides whenever
        // the classifier is unsure, and the classifier decides between
        // several matching rules or overrules one it is sure is wrong.
        const RULE_BONUS: f32 = 0.8;
        let score = |i: usize| {
            p[i] + if matched.contains(&i) {
                RULE_BONUS
            } else {
                0.0
            }
        };
        let best = (0..p.len())
            .max_by(|&a, &b| score(a).total_cmp(&score(b)))
            .unwrap_or(self.unknown);
        let rule = matched.contains(&best);
        let confidence = if rule {
            p[best].max(if matched.len() == 1 { 0.9 } else { 0.75 })
        } else {
            p[best]
        };
        let intent = if confidence < self.thresholds.unknown_below {
            self.unknown
        } else {
            best
        };
        let fast_path = intent != self.unknown && confidence >= self.thresholds.fast_path_from;
        Classification {
            intent: self.specs[intent].intent.clone(),
            confidence,
            language,
            slots,
            fast_path,
            rule,
        }
    }

    /// Features the intent classifier learned (for `voxline intent --json`
    /// and the start-up log).
    pub fn vocabulary(&self) -> usize {
        self.intents.vocabulary()
    }
}

fn argmax(p: &[f32]) -> usize {
    (0..p.len())
        .max_by(|&a, &b| p[a].total_cmp(&p[b]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model() -> IntentModel {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/intents");
        IntentModel::load(&dir, Lexicon::default(), Thresholds::default()).unwrap()
    }

    #[test]
    fn data_files_load_with_twenty_intents_in_five_languages() {
        let m = model();
        assert!(m.specs().len() >= 20, "{}", m.specs().len());
        assert_eq!(m.languages(), ["en", "es", "fr", "it", "pt"]);
        for s in m.specs() {
            for l in m.languages() {
                assert!(
                    s.examples.get(l).is_some_and(|e| e.len() >= 5),
                    "{} has too few {l} examples",
                    s.intent
                );
            }
        }
    }

    #[test]
    fn rules_and_classifier_agree_on_plain_requests() {
        let m = model();
        for (text, intent) in [
            ("STOP", "opt_out"),
            ("where is my order 1842", "order_status"),
            ("quanto costa lo zaino", "price_inquiry"),
            ("quero falar com uma pessoa", "human_handoff"),
        ] {
            let c = m.classify(text, None);
            assert_eq!(c.intent, intent, "{text}: {c:?}");
            assert!(c.fast_path, "{text}: {c:?}");
        }
    }

    #[test]
    fn detects_the_language() {
        let m = model();
        assert_eq!(m.classify("¿dónde está mi pedido?", None).language, "es");
        assert_eq!(m.classify("dov'è il mio ordine", None).language, "it");
        assert_eq!(m.classify("onde está o meu pedido", None).language, "pt");
        assert_eq!(m.classify("where is my parcel", None).language, "en");
        assert_eq!(m.classify("where is my parcel", Some("ES")).language, "es");
    }

    #[test]
    fn empty_and_noise_are_unknown_and_not_fast() {
        let m = model();
        let c = m.classify("  ?? ", None);
        assert_eq!(c.intent, UNKNOWN);
        assert!(!c.fast_path);
    }

    #[test]
    fn odd_input_never_panics() {
        let m = model();
        let long = "order ".repeat(5000);
        for text in [
            "",
            "🙂🙂🙂",
            "ß ǅ İstanbul",
            "12345678901234567890123456789 hundred hundred thousand",
            "ninety ninety ninety hundred hundred 99999 e e y",
            "the 99th of the 0th 31/02 2026-13-45",
            long.as_str(),
        ] {
            let c = m.classify(text, Some("zz"));
            assert!(c.confidence.is_finite(), "{text}");
        }
    }

    #[test]
    fn a_bad_pattern_is_an_error_naming_the_intent() {
        let spec = IntentSpec {
            intent: "greeting".into(),
            description: String::new(),
            write: false,
            patterns: vec!["(".into()],
            examples: BTreeMap::new(),
        };
        let err = IntentModel::from_specs(vec![spec], Lexicon::default(), Thresholds::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("greeting"), "{err}");
    }
}
