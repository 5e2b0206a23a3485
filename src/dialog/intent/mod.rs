//! The fast intent path: rules and a small classifier, both read from the
//! operator's data files (`data/intents/*.toml`), answer what the customer
//! wants, in which language, with which slots and how sure we are, in about
//! a millisecond.
//!
//! Each intent file holds the intent's name, regular expressions over the
//! folded text (see [`text::fold`]) and example messages per language. At
//! start-up the examples train two [`classifier::Classifier`]s: one for the
//! intent, which also reads the multilingual [`encoder`]'s vector of the
//! message, and one for the language. A rule match makes its intent a
//! strong candidate; the classifier decides between candidates and covers
//! everything the rules miss.

pub mod classifier;
pub mod encoder;
pub mod eval;
pub mod slots;
pub mod text;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use regex::RegexSet;
use serde::{Deserialize, Serialize};

use classifier::{Classifier, Training};
use encoder::SentenceEncoder;
pub use slots::{DateRef, Lexicon, Slots};

/// The intent every message falls back to when nothing is sure enough.
pub const UNKNOWN: &str = "unknown";

/// How many training examples one operator's label counts as.
pub const LABEL_WEIGHT: usize = 3;

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
    /// Acted on only from [`Thresholds::write_from`], like a write, though
    /// it changes nothing by itself (checkout, a complaint that hands the
    /// conversation over). Writes are always careful.
    #[serde(default)]
    pub careful: bool,
    #[serde(default)]
    pub patterns: Vec<String>,
    /// Patterns under which this intent's rules do not count: the words of
    /// a rule used for something else ("stop" before the thanks of "STOP
    /// obrigado" is not a goodbye). The classifier alone decides then.
    #[serde(default)]
    pub not_when: Vec<String>,
    /// Patterns that make a careful intent a question to ask rather than an
    /// action, however sure the classifier is: a question about the policy
    /// or asked before buying ("can I get a refund if they don't fit? I
    /// haven't ordered yet") uses the request's words without making it.
    #[serde(default)]
    pub unsure_when: Vec<String>,
    /// Patterns under which the fast path does not answer this intent at
    /// all, careful or not: the LLM takes the message, with the intent as
    /// its hint. Another shop's order ("is my Zara order shipped") reads
    /// like one of ours, and neither a tracking answer nor a question
    /// about it fits. Lists several intents share live in [`DEFER_DIR`].
    #[serde(default)]
    pub defer_when: Vec<String>,
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
    #[error("no intent {0:?}; the intents are: {1}")]
    NoSuchIntent(String, String),
    #[error("message {0} has no text to learn from (not transcribed yet, or erased)")]
    NoText(String),
    #[error("{path}: {reason}")]
    File { path: PathBuf, reason: String },
    #[error("intent {0} is defined twice")]
    Duplicate(String),
    #[error("no intent files in {0}, or no `unknown` intent among them")]
    Missing(PathBuf),
    #[error("[dialog.thresholds] rule_odds must be a number of 1 or more, not {0}")]
    RuleOdds(f32),
}

/// Confidence thresholds of the fast path.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Thresholds {
    /// Below this the message is `unknown` (default 0.4).
    pub unknown_below: f32,
    /// From this confidence on, the fast path answers without the LLM
    /// (default 0.95: chosen by leaving each part of the corpus out of the
    /// training data in turn and scoring it, `benches/intent_cv.py`; see
    /// the README's "How well the fast path understands"). With the
    /// sentence encoder, on 10,665 messages: 0.9 acted on 9,098 with 49
    /// confident wrong, 0.92 on 8,995 with 39, 0.95 on 8,772 with 29 (the
    /// n-grams alone at 0.9: 8,739 and 68).
    pub fast_path_from: f32,
    /// A careful intent (a write, checkout, a complaint) is acted on only
    /// from this confidence (default 0.95, as `fast_path_from`, so that a
    /// write is never acted on more readily than an answer); between
    /// `unknown_below` and here the customer is asked whether that is what
    /// they want.
    pub write_from: f32,
    /// A careful intent whose runner-up is closer than this is asked about
    /// too, however sure it is (default 0.2).
    pub clarify_margin: f32,
    /// How much more likely a message is to mean an intent when one of the
    /// intent's rules matches it: the classifier's probability of each
    /// intent with a matching rule is multiplied by this before
    /// renormalising, so a rule decides when the classifier is unsure and
    /// the classifier overrules a rule it is sure is wrong; the result is
    /// still a probability. Default 2 (every part of the corpus left out
    /// in turn, 9,593 messages: confident wrong 85 at 8, 72 at 2, at the
    /// same accuracy; `benches/intent_cv.py --set rule_odds=N`).
    pub rule_odds: f32,
}

impl Default for Thresholds {
    fn default() -> Self {
        Self {
            unknown_below: 0.4,
            fast_path_from: 0.95,
            write_from: 0.95,
            clarify_margin: 0.2,
            rule_odds: 2.0,
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
    /// A careful intent the message leans to without being sure enough to
    /// act: ask the customer whether they want it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub clarify: Option<String>,
    /// An operator labelled this very message's wording.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub learned: bool,
}

impl Classification {
    /// The message will be acted on (answered from the fast path, a write
    /// proposed, a conversation handed over) without asking first.
    pub fn acts(&self) -> bool {
        self.fast_path && self.intent != UNKNOWN
    }
}

/// Operators' labels, under the intents folder: one line per label,
/// `lang <TAB> text <TAB> intent <TAB> message id <TAB> unix time`.
pub const LABELS_FILE: &str = "learned/labels.tsv";

/// The folder, under the intents' folder, of labelled messages trained on
/// as examples: `lang <TAB> text <TAB> intent` per line, in `*.tsv` files
/// (former test sets whose misses were read, conversations labelled in
/// bulk).
pub const CORPUS_DIR: &str = "corpus";

/// The files ending in `.extension` in `folder`, sorted; none when the
/// folder does not exist.
fn files_in(folder: &Path, extension: &str) -> Result<Vec<PathBuf>, IntentError> {
    let entries = match std::fs::read_dir(folder) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(IntentError::Read {
                path: folder.to_path_buf(),
                source,
            })
        }
    };
    let mut paths: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == extension))
        .collect();
    paths.sort();
    Ok(paths)
}

/// Adds the messages of the `*.tsv` files in `dir`'s [`CORPUS_DIR`] to the
/// examples of their intents; returns how many. A missing folder adds none;
/// an unreadable line or an intent no file defines is an error naming the
/// file.
pub fn add_corpus(dir: &Path, specs: &mut [IntentSpec]) -> Result<usize, IntentError> {
    let mut added = 0;
    for path in files_in(&dir.join(CORPUS_DIR), "tsv")? {
        let samples = eval::read_samples(&path).map_err(|reason| IntentError::File {
            path: path.clone(),
            reason,
        })?;
        for sample in samples {
            let Some(spec) = specs.iter_mut().find(|s| s.intent == sample.intent) else {
                return Err(IntentError::File {
                    path,
                    reason: format!("no intent {:?} (message {:?})", sample.intent, sample.text),
                });
            };
            spec.examples
                .entry(sample.lang)
                .or_default()
                .push(sample.text);
            added += 1;
        }
    }
    Ok(added)
}

/// The folder, under the intents' folder, of `defer_when` patterns shared
/// by several intents (another shop's order reads like any of ours), one
/// list per `*.toml` file instead of a copy in every intent's file.
pub const DEFER_DIR: &str = "defer";

/// A file of [`DEFER_DIR`]: patterns added to the `defer_when` of each of
/// `intents`.
#[derive(Debug, Deserialize)]
struct SharedDefer {
    intents: Vec<String>,
    patterns: Vec<String>,
}

/// Adds the patterns of `dir`'s [`DEFER_DIR`] files to the `defer_when` of
/// the intents they name. A missing folder adds none; an intent no file
/// defines is an error naming the file.
fn add_shared_defers(dir: &Path, specs: &mut [IntentSpec]) -> Result<(), IntentError> {
    for path in files_in(&dir.join(DEFER_DIR), "toml")? {
        let text = std::fs::read_to_string(&path).map_err(|source| IntentError::Read {
            path: path.clone(),
            source,
        })?;
        let shared: SharedDefer = toml::from_str(&text).map_err(|source| IntentError::Parse {
            path: path.clone(),
            source,
        })?;
        for intent in &shared.intents {
            let Some(spec) = specs.iter_mut().find(|s| &s.intent == intent) else {
                return Err(IntentError::File {
                    path,
                    reason: format!("no intent {intent:?}"),
                });
            };
            spec.defer_when.extend(shared.patterns.iter().cloned());
        }
    }
    Ok(())
}

/// A message an operator labelled with its right intent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Label {
    pub lang: String,
    pub text: String,
    pub intent: String,
    pub message_id: String,
    pub at: i64,
}

/// Reads the labels under `dir` (the intents folder); none when the file
/// does not exist. A line that does not parse is skipped with a warning,
/// so one bad edit does not stop the service.
pub fn read_labels(dir: &Path) -> Result<Vec<Label>, IntentError> {
    let path = dir.join(LABELS_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => return Err(IntentError::Read { path, source }),
    };
    let mut labels = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        match cols.as_slice() {
            [lang, text, intent, id, at] if !text.trim().is_empty() => labels.push(Label {
                lang: lang.to_string(),
                text: text.to_string(),
                intent: intent.to_string(),
                message_id: id.to_string(),
                at: at.parse().unwrap_or(0),
            }),
            _ => {
                tracing::warn!(file = %path.display(), line = n + 1, "label line skipped: want five tab-separated columns")
            }
        }
    }
    Ok(labels)
}

/// Appends `label` to the labels under `dir`, creating the file. Tabs and
/// line breaks in the text become spaces.
pub fn append_label(dir: &Path, label: &Label) -> Result<(), IntentError> {
    use std::io::Write;
    let path = dir.join(LABELS_FILE);
    let write = || -> std::io::Result<()> {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        let new = !path.exists();
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)?;
        if new {
            writeln!(
                file,
                "# Intents labelled by operators (voxline intent label, the console).\n# lang\ttext\tintent\tmessage id\tunix time"
            )?;
        }
        let clean = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        writeln!(
            file,
            "{}\t{}\t{}\t{}\t{}",
            clean(&label.lang),
            clean(&label.text),
            clean(&label.intent),
            clean(&label.message_id),
            label.at
        )?;
        file.sync_all()
    };
    write().map_err(|source| IntentError::Read { path, source })
}

/// Labels message `message_id`, whose text is `text`, with `intent`, and
/// appends the label under `dir` (the intents folder); the label's language
/// is the one `model` detects. The intent must be one of `model`'s.
pub fn record_label(
    model: &IntentModel,
    dir: &Path,
    message_id: &str,
    text: &str,
    intent: &str,
) -> Result<Label, IntentError> {
    if model.spec(intent).is_none() {
        let names: Vec<&str> = model.specs.iter().map(|s| s.intent.as_str()).collect();
        return Err(IntentError::NoSuchIntent(intent.into(), names.join(", ")));
    }
    let folded = text::fold(text);
    if folded.is_empty() {
        return Err(IntentError::NoText(message_id.into()));
    }
    let label = Label {
        lang: model.detect_language(&folded).to_string(),
        text: text.trim().to_string(),
        intent: intent.into(),
        message_id: message_id.into(),
        at: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64),
    };
    append_label(dir, &label)?;
    Ok(label)
}

/// Intents, rules and the trained classifiers.
pub struct IntentModel {
    specs: Vec<IntentSpec>,
    rules: RegexSet,
    /// The same patterns one by one, for the spans of those that matched.
    rule_regexes: Vec<regex::Regex>,
    rule_owner: Vec<usize>,
    /// Per intent, its `not_when`, `unsure_when` and `defer_when` patterns.
    not_when: Vec<Vec<regex::Regex>>,
    unsure_when: Vec<Vec<regex::Regex>>,
    defer_when: Vec<Vec<regex::Regex>>,
    intents: Classifier,
    /// The sentence encoder the intent classifier reads beside its n-grams.
    encoder: Option<Arc<SentenceEncoder>>,
    languages: Vec<String>,
    /// Indices of `languages` that detection may answer.
    detectable: Vec<usize>,
    language: Classifier,
    lexicon: Lexicon,
    thresholds: Thresholds,
    unknown: usize,
    /// Folded wordings operators labelled, and their intent.
    learned: std::collections::HashMap<String, usize>,
}

impl IntentModel {
    /// Reads every `*.toml` in `dir` and trains the classifiers; the intent
    /// classifier reads the `encoder`'s vectors too, when there is one.
    pub fn load(
        dir: &Path,
        lexicon: Lexicon,
        thresholds: Thresholds,
        encoder: Option<Arc<SentenceEncoder>>,
    ) -> Result<Self, IntentError> {
        // Below 1 a matching rule would count against its intent.
        if !(thresholds.rule_odds.is_finite() && thresholds.rule_odds >= 1.0) {
            return Err(IntentError::RuleOdds(thresholds.rule_odds));
        }
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
        add_shared_defers(dir, &mut specs)?;
        add_corpus(dir, &mut specs)?;
        let labels = read_labels(dir)?;
        Self::with_labels(specs, &labels, lexicon, thresholds, encoder)
    }

    pub fn from_specs(
        specs: Vec<IntentSpec>,
        lexicon: Lexicon,
        thresholds: Thresholds,
    ) -> Result<Self, IntentError> {
        Self::with_labels(specs, &[], lexicon, thresholds, None)
    }

    /// Trains on the specs' examples and the operators' labels. A label
    /// counts as [`LABEL_WEIGHT`] examples, and its exact wording (folded)
    /// is answered with its intent from then on; the latest label of a
    /// wording wins. Labels of intents that no longer exist are skipped.
    pub fn with_labels(
        mut specs: Vec<IntentSpec>,
        labels: &[Label],
        lexicon: Lexicon,
        thresholds: Thresholds,
        encoder: Option<Arc<SentenceEncoder>>,
    ) -> Result<Self, IntentError> {
        let mut learned = std::collections::HashMap::new();
        for label in labels {
            let Some(i) = specs.iter().position(|s| s.intent == label.intent) else {
                tracing::warn!(intent = %label.intent, "label of an unknown intent skipped");
                continue;
            };
            let folded = text::fold(&label.text);
            if folded.is_empty() {
                continue;
            }
            learned.insert(folded, i);
            let examples = specs[i].examples.entry(label.lang.clone()).or_default();
            examples.extend(std::iter::repeat_n(label.text.clone(), LABEL_WEIGHT));
        }
        // Checked one by one so that the error names the culprit.
        let compile = |spec: &IntentSpec, list: &[String]| {
            list.iter()
                .map(|p| {
                    regex::Regex::new(p).map_err(|source| IntentError::Pattern {
                        intent: spec.intent.clone(),
                        pattern: p.clone(),
                        source,
                    })
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let mut patterns = Vec::new();
        let mut rule_regexes = Vec::new();
        let mut rule_owner = Vec::new();
        let mut not_when = Vec::new();
        let mut unsure_when = Vec::new();
        let mut defer_when = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            if specs[..i].iter().any(|s| s.intent == spec.intent) {
                return Err(IntentError::Duplicate(spec.intent.clone()));
            }
            rule_regexes.extend(compile(spec, &spec.patterns)?);
            patterns.extend(spec.patterns.iter().cloned());
            rule_owner.extend(std::iter::repeat_n(i, spec.patterns.len()));
            not_when.push(compile(spec, &spec.not_when)?);
            unsure_when.push(compile(spec, &spec.unsure_when)?);
            defer_when.push(compile(spec, &spec.defer_when)?);
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
        let mut raw = Vec::new();
        for (i, spec) in specs.iter().enumerate() {
            for (lang, examples) in &spec.examples {
                let l = languages.iter().position(|x| x == lang).unwrap_or(0);
                for e in examples {
                    let folded = text::fold(e);
                    intent_docs.push((folded.clone(), i, None));
                    language_docs.push((folded, l, None));
                    raw.push(e.as_str());
                }
            }
        }
        if let Some(encoder) = &encoder {
            for (doc, v) in intent_docs.iter_mut().zip(encoder.encode_all(&raw)) {
                doc.2 = Some(v);
            }
        }
        let intents = Classifier::train(&intent_docs, specs.len(), Training::default());
        let language = Classifier::train(&language_docs, languages.len(), Training::default());
        let unknown = specs.iter().position(|s| s.intent == UNKNOWN).unwrap_or(0);
        let model = Self {
            specs,
            rules,
            rule_regexes,
            rule_owner,
            not_when,
            unsure_when,
            defer_when,
            intents,
            encoder,
            detectable: (0..languages.len()).collect(),
            languages,
            language,
            lexicon,
            thresholds,
            unknown,
            learned,
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
        let p = self.language.probabilities(folded, None);
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

    /// The most likely language of `folded` among every language the
    /// examples cover (not only those detection may answer: a business
    /// that serves Italian alone must still see that a sentence is
    /// English), its probability, and the probability of `expected`.
    pub fn language_odds(&self, folded: &str, expected: &str) -> (&str, f32, f32) {
        let p = self.language.probabilities(folded, None);
        let best = argmax(&p);
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
                clarify: None,
                learned: false,
            };
        }
        if let Some(&i) = self.learned.get(&folded) {
            return Classification {
                intent: self.specs[i].intent.clone(),
                confidence: 1.0,
                language,
                slots,
                fast_path: i != self.unknown,
                rule: false,
                clarify: None,
                learned: true,
            };
        }
        let vector = self.encoder.as_ref().map(|e| e.encode(message));
        let mut p = self.intents.probabilities(&folded, vector.as_deref());
        let matched = self.matched_intents(&folded);
        for &i in &matched {
            p[i] *= self.thresholds.rule_odds;
        }
        let sum: f32 = p.iter().sum();
        if sum > 0.0 {
            for v in &mut p {
                *v /= sum;
            }
        }
        let best = argmax(&p);
        let runner_up = (0..p.len())
            .filter(|&i| i != best)
            .map(|i| p[i])
            .fold(0.0f32, f32::max);
        let confidence = p[best];
        let intent = if confidence < self.thresholds.unknown_below {
            self.unknown
        } else {
            best
        };
        let spec = &self.specs[intent];
        let careful = spec.write || spec.careful;
        let hedged = self.unsure_when[intent].iter().any(|r| r.is_match(&folded));
        let unsure = careful
            && (confidence < self.thresholds.write_from
                || confidence - runner_up < self.thresholds.clarify_margin
                || hedged);
        let deferred = self.defer_when[intent].iter().any(|r| r.is_match(&folded));
        let fast_path = intent != self.unknown
            && confidence >= self.thresholds.fast_path_from
            && !unsure
            && !deferred;
        let clarify = (intent != self.unknown && unsure && !deferred).then(|| spec.intent.clone());
        Classification {
            intent: spec.intent.clone(),
            confidence,
            language,
            slots,
            fast_path,
            rule: matched.contains(&intent),
            clarify,
            learned: false,
        }
    }

    /// Distinct wordings operators labelled.
    pub fn learned(&self) -> usize {
        self.learned.len()
    }

    /// The intents whose rules match `folded`, each once, except where a
    /// rule's match lies inside another intent's longer match: the longer
    /// one is the more specific reading ("cancelar" inside "cancelar suscripcion" is not a
    /// cancelled order; "grazie" inside "stop grazie" is not a goodbye).
    fn matched_intents(&self, folded: &str) -> Vec<usize> {
        let spans: Vec<(usize, std::ops::Range<usize>)> = self
            .rules
            .matches(folded)
            .iter()
            .flat_map(|r| {
                self.rule_regexes[r]
                    .find_iter(folded)
                    .map(move |m| (self.rule_owner[r], m.range()))
            })
            .collect();
        let inside_another = |owner: usize, span: &std::ops::Range<usize>| {
            spans.iter().any(|(o, s)| {
                *o != owner && s.start <= span.start && span.end <= s.end && s.len() > span.len()
            })
        };
        let mut matched: Vec<usize> = spans
            .iter()
            .filter(|(owner, span)| !inside_another(*owner, span))
            .map(|(owner, _)| *owner)
            .collect();
        matched.sort_unstable();
        matched.dedup();
        matched.retain(|&i| !self.not_when[i].iter().any(|r| r.is_match(folded)));
        matched
    }

    /// Features the intent classifier learned (for `voxline intent --json`
    /// and the start-up log).
    pub fn vocabulary(&self) -> usize {
        self.intents.vocabulary()
    }

    /// The sentence encoder the intent classifier reads, if any.
    pub fn encoder(&self) -> Option<Arc<SentenceEncoder>> {
        self.encoder.clone()
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
        IntentModel::load(&dir, Lexicon::default(), Thresholds::default(), None).unwrap()
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
            careful: false,
            patterns: vec!["(".into()],
            not_when: Vec::new(),
            unsure_when: Vec::new(),
            defer_when: Vec::new(),
            examples: BTreeMap::new(),
        };
        let err = IntentModel::from_specs(vec![spec], Lexicon::default(), Thresholds::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("greeting"), "{err}");
    }

    fn spec(intent: &str, examples: &[&str]) -> IntentSpec {
        IntentSpec {
            intent: intent.into(),
            description: String::new(),
            write: false,
            careful: false,
            patterns: Vec::new(),
            not_when: Vec::new(),
            unsure_when: Vec::new(),
            defer_when: Vec::new(),
            examples: BTreeMap::from([(
                "en".to_string(),
                examples.iter().map(|e| e.to_string()).collect(),
            )]),
        }
    }

    #[test]
    fn a_rule_match_inside_another_intents_longer_match_does_not_count() {
        let mut cancel = spec("cancel_order", &["cancel my order", "cancel it"]);
        cancel.patterns = vec![r"\bcancel\b".into()];
        let mut opt_out = spec("opt_out", &["stop", "unsubscribe"]);
        opt_out.patterns = vec![r"\bcancel (my )?subscription\b".into()];
        let mut bye = spec("thanks_bye", &["thanks bye", "thank you"]);
        bye.patterns = vec![r"\bthanks\b".into()];
        let m = IntentModel::from_specs(
            vec![cancel, opt_out, bye],
            Lexicon::default(),
            Thresholds::default(),
        )
        .unwrap();
        let names = |text: &str| -> Vec<String> {
            m.matched_intents(&text::fold(text))
                .into_iter()
                .map(|i| m.specs[i].intent.clone())
                .collect()
        };
        assert_eq!(names("cancel my subscription"), ["opt_out"]);
        // side by side, both count
        assert_eq!(names("cancel it, thanks"), ["cancel_order", "thanks_bye"]);
        assert_eq!(names("cancel order 2210"), ["cancel_order"]);
    }

    #[test]
    fn a_not_when_pattern_takes_an_intents_rules_out() {
        let mut opt_out = spec("opt_out", &["stop", "unsubscribe"]);
        opt_out.patterns = vec![r"^stop( thanks)?$".into()];
        let mut bye = spec("thanks_bye", &["thanks bye", "thank you"]);
        bye.patterns = vec![r"^([a-z]+ )?thanks$".into()];
        let names = |m: &IntentModel, text: &str| -> Vec<String> {
            m.matched_intents(&text::fold(text))
                .into_iter()
                .map(|i| m.specs[i].intent.clone())
                .collect()
        };
        let both = IntentModel::from_specs(
            vec![opt_out.clone(), bye.clone()],
            Lexicon::default(),
            Thresholds::default(),
        )
        .unwrap();
        assert_eq!(names(&both, "STOP thanks"), ["opt_out", "thanks_bye"]);
        bye.not_when = vec![r"^stop\b".into()];
        let m = IntentModel::from_specs(
            vec![opt_out, bye],
            Lexicon::default(),
            Thresholds::default(),
        )
        .unwrap();
        assert_eq!(names(&m, "STOP thanks"), ["opt_out"]);
        assert_eq!(names(&m, "great thanks"), ["thanks_bye"]);
    }

    #[test]
    fn an_unsure_when_pattern_asks_about_a_write_instead_of_acting() {
        let mut refund = spec(
            "refund_request",
            &[
                "refund my order",
                "i want a refund",
                "refund please",
                "give me a refund",
            ],
        );
        refund.write = true;
        refund.patterns = vec![r"\brefund\b".into()];
        let other = spec("greeting", &["hello", "hi there"]);
        let unknown = spec(UNKNOWN, &["what is the weather", "tell me a joke"]);
        let sure = IntentModel::from_specs(
            vec![refund.clone(), other.clone(), unknown.clone()],
            Lexicon::default(),
            Thresholds::default(),
        )
        .unwrap();
        let asked = "do you refund if i change my mind before i order";
        let c = sure.classify(asked, Some("en"));
        assert_eq!(c.intent, "refund_request");
        assert!(c.acts(), "{c:?}");
        refund.unsure_when = vec![r"\bbefore i (order|buy)\b".into()];
        let m = IntentModel::from_specs(
            vec![refund, other, unknown],
            Lexicon::default(),
            Thresholds::default(),
        )
        .unwrap();
        let c = m.classify(asked, Some("en"));
        assert!(!c.acts(), "{c:?}");
        assert_eq!(c.clarify.as_deref(), Some("refund_request"));
        // the request itself still acts
        assert!(m.classify("refund my order please", Some("en")).acts());
        // a bad pattern names its intent
        let mut bad = spec("greeting", &["hello"]);
        bad.unsure_when = vec!["(".into()];
        let err = IntentModel::from_specs(vec![bad], Lexicon::default(), Thresholds::default())
            .err()
            .unwrap();
        assert!(err.to_string().contains("greeting"), "{err}");
    }

    #[test]
    fn a_defer_when_pattern_leaves_the_message_to_the_llm() {
        let mut status = spec(
            "order_status",
            &[
                "where is my order",
                "is my order shipped",
                "has my order shipped yet",
                "when does my order arrive",
            ],
        );
        status.patterns = vec![r"\bmy order\b".into()];
        let other = spec("greeting", &["hello", "hi there"]);
        let unknown = spec(UNKNOWN, &["what is the weather", "tell me a joke"]);
        let text = "is my zara order shipped";
        let plain = IntentModel::from_specs(
            vec![status.clone(), other.clone(), unknown.clone()],
            Lexicon::default(),
            Thresholds::default(),
        )
        .unwrap();
        assert!(plain.classify(text, Some("en")).acts());
        status.defer_when = vec![r"\bzara\b".into()];
        let m = IntentModel::from_specs(
            vec![status, other, unknown],
            Lexicon::default(),
            Thresholds::default(),
        )
        .unwrap();
        let c = m.classify(text, Some("en"));
        assert_eq!(c.intent, "order_status");
        assert!(!c.acts(), "{c:?}");
        // no question either: the LLM takes it
        assert_eq!(c.clarify, None);
        // our own orders still take the fast path
        assert!(m.classify("is my order shipped", Some("en")).acts());
    }

    #[test]
    fn corpus_lines_become_examples_of_their_intents() {
        let dir = tempfile::tempdir().unwrap();
        let mut specs = vec![
            spec("greeting", &["hello", "hi there"]),
            spec(UNKNOWN, &["what is the weather"]),
        ];
        // No corpus folder: nothing added.
        assert_eq!(add_corpus(dir.path(), &mut specs).unwrap(), 0);
        std::fs::create_dir(dir.path().join(CORPUS_DIR)).unwrap();
        std::fs::write(
            dir.path().join(CORPUS_DIR).join("a.tsv"),
            "# comment\nlang\ttext\tintent\nen\tgood morning folks\tgreeting\nes\thola buenas\tgreeting\n",
        )
        .unwrap();
        assert_eq!(add_corpus(dir.path(), &mut specs).unwrap(), 2);
        assert!(specs[0].examples["en"]
            .iter()
            .any(|e| e == "good morning folks"));
        assert_eq!(specs[0].examples["es"], ["hola buenas"]);
        assert_eq!(specs[1].examples["en"].len(), 1);
    }

    #[test]
    fn a_shared_defer_list_joins_the_intents_it_names() {
        let dir = tempfile::tempdir().unwrap();
        let mut specs = vec![
            spec("order_status", &["where is my order"]),
            spec("greeting", &["hello"]),
        ];
        // No folder: nothing added.
        add_shared_defers(dir.path(), &mut specs).unwrap();
        assert!(specs[0].defer_when.is_empty());
        let folder = dir.path().join(DEFER_DIR);
        std::fs::create_dir(&folder).unwrap();
        std::fs::write(
            folder.join("shops.toml"),
            "intents = [\"order_status\"]\npatterns = ['\\bzara\\b']\n",
        )
        .unwrap();
        add_shared_defers(dir.path(), &mut specs).unwrap();
        assert_eq!(specs[0].defer_when, [r"\bzara\b"]);
        assert!(specs[1].defer_when.is_empty());
        std::fs::write(
            folder.join("typo.toml"),
            "intents = [\"order_stats\"]\npatterns = ['x']\n",
        )
        .unwrap();
        let err = add_shared_defers(dir.path(), &mut specs)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("typo.toml") && err.contains("order_stats"),
            "{err}"
        );
    }

    #[test]
    fn rule_odds_below_one_are_refused() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/intents");
        for odds in [0.5, f32::NAN] {
            let thresholds = Thresholds {
                rule_odds: odds,
                ..Thresholds::default()
            };
            let err = IntentModel::load(&dir, Lexicon::default(), thresholds, None)
                .err()
                .expect("refused")
                .to_string();
            assert!(err.contains("rule_odds"), "{err}");
        }
    }

    #[test]
    fn a_corpus_line_of_no_intent_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join(CORPUS_DIR)).unwrap();
        std::fs::write(
            dir.path().join(CORPUS_DIR).join("bad.tsv"),
            "en\tplease do the thing\tdo_thing\n",
        )
        .unwrap();
        let mut specs = vec![spec(UNKNOWN, &["what"])];
        let err = add_corpus(dir.path(), &mut specs).unwrap_err().to_string();
        assert!(err.contains("bad.tsv") && err.contains("do_thing"), "{err}");
        std::fs::write(
            dir.path().join(CORPUS_DIR).join("bad.tsv"),
            "en only two\tcolumns\n",
        )
        .unwrap();
        let err = add_corpus(dir.path(), &mut specs).unwrap_err().to_string();
        assert!(err.contains("bad.tsv:1"), "{err}");
    }
}
