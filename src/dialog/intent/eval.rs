//! Measuring the fast path on labelled messages: accuracy, macro-F1 and the
//! confident-wrong rate per language.
//!
//! A message counts as *confident wrong* when the fast path would act on it
//! ([`Classification::acts`]: answer from a template, propose a write, hand
//! over) and the intent is not the labelled one. A wrong guess that goes to
//! a clarifying question or to the LLM is wrong but not confident.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::Serialize;

use super::{Classification, IntentModel};

/// One labelled message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sample {
    pub lang: String,
    pub text: String,
    pub intent: String,
}

/// Reads `lang <TAB> text <TAB> intent [<TAB> …]` lines; `#` comments and a
/// `lang` header are skipped. A line with fewer columns is an error naming
/// it.
pub fn read_samples(path: &Path) -> Result<Vec<Sample>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut samples = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.starts_with('#') || line.starts_with("lang\t") || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        let [lang, text, intent, ..] = cols.as_slice() else {
            return Err(format!(
                "{}:{}: want lang, text and intent separated by tabs",
                path.display(),
                n + 1
            ));
        };
        samples.push(Sample {
            lang: lang.trim().to_string(),
            text: text.to_string(),
            intent: intent.trim().to_string(),
        });
    }
    Ok(samples)
}

/// Figures for one language (or all of them).
#[derive(Debug, Clone, Default, Serialize)]
pub struct Figures {
    pub messages: usize,
    pub correct: usize,
    pub accuracy: f64,
    /// The mean over intents (labelled or predicted) of F1.
    pub macro_f1: f64,
    /// Messages the fast path would act on without asking.
    pub acted: usize,
    /// Of those, the ones with the wrong intent.
    pub confident_wrong: usize,
    pub confident_wrong_rate: f64,
    /// Messages answered with a clarifying question.
    pub clarified: usize,
}

/// A miss, for reading (on a development set only).
#[derive(Debug, Clone, Serialize)]
pub struct Miss {
    pub lang: String,
    pub text: String,
    pub want: String,
    pub got: String,
    pub confidence: f32,
    pub acted: bool,
}

impl std::fmt::Display for Miss {
    /// `en "text": got (0.83, acted), want intent`
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {:?}: {} ({:.2}{}), want {}",
            self.lang,
            self.text,
            self.got,
            self.confidence,
            if self.acted { ", acted" } else { "" },
            self.want
        )
    }
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Report {
    /// Per language, and `all`.
    pub figures: BTreeMap<String, Figures>,
    pub misses: Vec<Miss>,
}

/// Classifies every sample in its labelled language and scores the result.
pub fn evaluate(model: &IntentModel, samples: &[Sample]) -> Report {
    let mut by_lang: BTreeMap<String, Vec<(&Sample, Classification)>> = BTreeMap::new();
    for s in samples {
        let c = model.classify(&s.text, Some(&s.lang));
        by_lang.entry(s.lang.clone()).or_default().push((s, c));
    }
    let mut report = Report::default();
    let all: Vec<(&Sample, Classification)> = by_lang.values().flatten().cloned().collect();
    for (lang, results) in by_lang.iter().chain([(&"all".to_string(), &all)]) {
        report.figures.insert(lang.clone(), figures(results));
    }
    for (s, c) in &all {
        if c.intent != s.intent {
            report.misses.push(Miss {
                lang: s.lang.clone(),
                text: s.text.clone(),
                want: s.intent.clone(),
                got: c.intent.clone(),
                confidence: c.confidence,
                acted: c.acts(),
            });
        }
    }
    report
}

fn figures(results: &[(&Sample, Classification)]) -> Figures {
    let n = results.len();
    let correct = results.iter().filter(|(s, c)| c.intent == s.intent).count();
    let acted = results.iter().filter(|(_, c)| c.acts()).count();
    let confident_wrong = results
        .iter()
        .filter(|(s, c)| c.acts() && c.intent != s.intent)
        .count();
    let intents: BTreeSet<&str> = results
        .iter()
        .flat_map(|(s, c)| [s.intent.as_str(), c.intent.as_str()])
        .collect();
    let f1s: Vec<f64> = intents
        .iter()
        .map(|&i| {
            let tp = results
                .iter()
                .filter(|(s, c)| s.intent == i && c.intent == i)
                .count() as f64;
            let predicted = results.iter().filter(|(_, c)| c.intent == i).count() as f64;
            let actual = results.iter().filter(|(s, _)| s.intent == i).count() as f64;
            if predicted + actual == 0.0 {
                0.0
            } else {
                2.0 * tp / (predicted + actual)
            }
        })
        .collect();
    let ratio = |a: usize| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    Figures {
        messages: n,
        correct,
        accuracy: ratio(correct),
        macro_f1: if f1s.is_empty() {
            0.0
        } else {
            f1s.iter().sum::<f64>() / f1s.len() as f64
        },
        acted,
        confident_wrong,
        confident_wrong_rate: ratio(confident_wrong),
        clarified: results.iter().filter(|(_, c)| c.clarify.is_some()).count(),
    }
}

/// The figures as a table, one line per language.
pub fn table(report: &Report) -> String {
    let mut out =
        String::from("lang  messages  accuracy  macro-F1  acted  confident-wrong  clarified\n");
    for (lang, f) in &report.figures {
        out.push_str(&format!(
            "{lang:<5} {:>8}  {:>8.3}  {:>8.3}  {:>5}  {:>6} ({:>5.1}%)  {:>9}\n",
            f.messages,
            f.accuracy,
            f.macro_f1,
            f.acted,
            f.confident_wrong,
            f.confident_wrong_rate * 100.0,
            f.clarified
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macro_f1_and_confident_wrong_on_a_toy_model() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("data/intents");
        let model =
            IntentModel::load(&dir, Default::default(), Default::default(), None).expect("intents");
        let samples = vec![
            Sample {
                lang: "en".into(),
                text: "STOP".into(),
                intent: "opt_out".into(),
            },
            Sample {
                lang: "en".into(),
                text: "STOP".into(),
                intent: "greeting".into(),
            },
        ];
        let report = evaluate(&model, &samples);
        let f = &report.figures["en"];
        assert_eq!(
            (f.messages, f.correct, f.acted, f.confident_wrong),
            (2, 1, 2, 1)
        );
        // opt_out: tp 1, predicted 2, actual 1 → 2/3; greeting: 0.
        assert!(
            (f.macro_f1 - (2.0 / 3.0) / 2.0).abs() < 1e-9,
            "{}",
            f.macro_f1
        );
        assert_eq!(report.misses.len(), 1);
        assert!(table(&report).contains("all"));
    }
}
