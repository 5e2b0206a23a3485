//! The knowledge base: the business's FAQ and policy files
//! (`data/kb/<lang>/*.md`), split into passages at `#` headings and
//! searched locally with BM25 over folded, prefix-stemmed words.
//!
//! A small index of our own: the corpus is a few dozen passages per
//! language, and folding plus 5-character prefixes handles the Romance
//! plurals and accents ("devoluciones" finds "devolución") without a
//! stemmer per language.

use std::collections::HashMap;
use std::path::Path;

use super::intent::text::{fold, words};

#[derive(Debug, Clone)]
pub struct Passage {
    pub language: String,
    pub title: String,
    pub text: String,
    terms: Vec<String>,
}

#[derive(Debug, Default)]
struct Index {
    passages: Vec<usize>,
    df: HashMap<String, usize>,
    avg_len: f32,
}

#[derive(Debug, Default)]
pub struct KnowledgeBase {
    passages: Vec<Passage>,
    indexes: HashMap<String, Index>,
}

const STOP: &[&str] = &[
    "the", "a", "an", "is", "are", "do", "you", "your", "what", "of", "to", "in", "on", "for",
    "and", "or", "el", "la", "los", "las", "de", "del", "que", "en", "y", "un", "una", "es", "su",
    "sus", "il", "lo", "gli", "le", "di", "che", "e", "per", "un", "una", "sono", "o", "os", "as",
    "da", "do", "dos", "das", "um", "uma", "e", "em", "no", "na", "voces",
];

fn terms(text: &str) -> Vec<String> {
    words(&fold(text))
        .filter(|w| !STOP.contains(w))
        .map(|w| w.chars().take(5).collect())
        .collect()
}

const K1: f32 = 1.2;
const B: f32 = 0.75;

impl KnowledgeBase {
    /// Reads `dir/<lang>/*.md`. A missing folder is an empty knowledge base.
    pub fn load(dir: &Path) -> std::io::Result<Self> {
        let mut kb = Self::default();
        let Ok(langs) = std::fs::read_dir(dir) else {
            return Ok(kb);
        };
        let mut files = Vec::new();
        for lang in langs.filter_map(Result::ok) {
            let Some(code) = lang.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !lang.path().is_dir() {
                continue;
            }
            for f in std::fs::read_dir(lang.path())?.filter_map(Result::ok) {
                if f.path().extension().is_some_and(|e| e == "md") {
                    files.push((code.clone(), f.path()));
                }
            }
        }
        files.sort();
        for (lang, path) in files {
            let text = std::fs::read_to_string(&path)?;
            kb.add(&lang, &text);
        }
        kb.reindex();
        Ok(kb)
    }

    fn add(&mut self, lang: &str, markdown: &str) {
        let mut title = String::new();
        let mut body = String::new();
        let flush = |title: &str, body: &mut String, passages: &mut Vec<Passage>| {
            let text = body.trim().to_string();
            if !text.is_empty() {
                passages.push(Passage {
                    language: lang.to_string(),
                    title: title.to_string(),
                    terms: terms(&format!("{title} {title} {text}")),
                    text,
                });
            }
            body.clear();
        };
        for line in markdown.lines() {
            if let Some(h) = line.strip_prefix('#') {
                flush(&title, &mut body, &mut self.passages);
                title = h.trim_start_matches('#').trim().to_string();
            } else {
                body.push_str(line);
                body.push('\n');
            }
        }
        flush(&title, &mut body, &mut self.passages);
    }

    fn reindex(&mut self) {
        self.indexes.clear();
        for (i, p) in self.passages.iter().enumerate() {
            let idx = self.indexes.entry(p.language.clone()).or_default();
            idx.passages.push(i);
            let mut seen: Vec<&String> = p.terms.iter().collect();
            seen.sort();
            seen.dedup();
            for t in seen {
                *idx.df.entry(t.clone()).or_default() += 1;
            }
        }
        for idx in self.indexes.values_mut() {
            let total: usize = idx
                .passages
                .iter()
                .map(|&i| self.passages[i].terms.len())
                .sum();
            idx.avg_len = total as f32 / idx.passages.len().max(1) as f32;
        }
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// The `k` best passages for `query` in `lang` (English when the
    /// language has none), best first, with their BM25 scores.
    pub fn search(&self, query: &str, lang: &str, k: usize) -> Vec<(&Passage, f32)> {
        let Some(idx) = self.indexes.get(lang).or_else(|| self.indexes.get("en")) else {
            return Vec::new();
        };
        let q = terms(query);
        let n = idx.passages.len() as f32;
        let mut scored: Vec<(&Passage, f32)> = idx
            .passages
            .iter()
            .map(|&i| {
                let p = &self.passages[i];
                let len = p.terms.len() as f32;
                let score = q
                    .iter()
                    .map(|t| {
                        let tf = p.terms.iter().filter(|x| *x == t).count() as f32;
                        if tf == 0.0 {
                            return 0.0;
                        }
                        let df = idx.df.get(t).copied().unwrap_or(0) as f32;
                        let idf = ((n - df + 0.5) / (df + 0.5) + 1.0).ln();
                        idf * tf * (K1 + 1.0)
                            / (tf + K1 * (1.0 - B + B * len / idx.avg_len.max(1.0)))
                    })
                    .sum();
                (p, score)
            })
            .filter(|(_, s)| *s > 0.0)
            .collect();
        scored.sort_by(|a, b| b.1.total_cmp(&a.1));
        scored.truncate(k);
        scored
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kb() -> KnowledgeBase {
        KnowledgeBase::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/kb")).unwrap()
    }

    #[test]
    fn finds_the_policy_in_each_language() {
        let kb = kb();
        for (q, lang, title) in [
            ("what is your returns policy", "en", "Returns policy"),
            (
                "cuál es la política de devoluciones",
                "es",
                "Política de devoluciones",
            ),
            ("quanto dura la garanzia", "it", "Garanzia"),
            (
                "qual é o horário de atendimento",
                "pt",
                "Horário de atendimento",
            ),
            ("do you accept paypal", "en", "Payment methods"),
        ] {
            let hits = kb.search(q, lang, 3);
            assert_eq!(
                hits.first().map(|h| h.0.title.as_str()),
                Some(title),
                "{q}: {hits:?}"
            );
        }
        assert!(kb.search("zzzz qqqq", "en", 3).is_empty());
    }
}
