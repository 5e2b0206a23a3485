//! The knowledge base: the business's FAQ and policy files
//! (`data/kb/<lang>/*.md`), split into passages at `#` headings and
//! ranked with the `bm25` crate, one index per language, over folded,
//! prefix-stemmed words.
//!
//! Folding plus 5-character prefixes handles the Romance plurals and
//! accents ("devoluciones" finds "devolución") without a stemmer per
//! language, so the crate gets our tokenizer rather than its own.

use std::collections::HashMap;
use std::path::Path;

use bm25::{SearchEngine, SearchEngineBuilder, Tokenizer};

use super::intent::text::{fold, words};

#[derive(Debug, Clone)]
pub struct Passage {
    pub language: String,
    pub title: String,
    pub text: String,
}

impl Passage {
    /// The passage's first two sentences: the fast path's answer from it.
    pub fn short_answer(&self) -> String {
        crate::dialog::reply::sentences(&self.text)
            .into_iter()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// One language's passages, keyed by their position in
/// `KnowledgeBase::passages`; 64-bit term hashes keep collisions out of a
/// corpus this size.
type Index = SearchEngine<usize, u64, Terms>;

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

/// Folded words without stop words, cut to 5-character prefixes.
#[derive(Debug, Clone, Copy, Default)]
struct Terms;

impl Tokenizer for Terms {
    fn tokenize(&self, text: &str) -> Vec<String> {
        words(&fold(text))
            .filter(|w| !STOP.contains(w))
            .map(|w| w.chars().take(5).collect())
            .collect()
    }
}

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
        let mut by_lang: HashMap<&str, Vec<bm25::Document<usize>>> = HashMap::new();
        for (i, p) in self.passages.iter().enumerate() {
            // The title twice: a heading is the best summary of its passage.
            let indexed = format!("{t} {t} {}", p.text, t = p.title);
            by_lang
                .entry(&p.language)
                .or_default()
                .push(bm25::Document::new(i, indexed));
        }
        self.indexes = by_lang
            .into_iter()
            .map(|(lang, docs)| {
                let index = SearchEngineBuilder::with_tokenizer_and_documents(Terms, docs).build();
                (lang.to_string(), index)
            })
            .collect();
    }

    pub fn is_empty(&self) -> bool {
        self.passages.is_empty()
    }

    /// Every passage of `lang` as the fast path answers it
    /// ([`Passage::short_answer`]): fixed texts, rendered into the speech
    /// cache at start-up like the templates' fixed sentences.
    pub fn answers(&self, lang: &str) -> Vec<String> {
        self.passages
            .iter()
            .filter(|p| p.language == lang)
            .map(Passage::short_answer)
            .collect()
    }

    /// The `k` best passages for `query` in `lang` (English when the
    /// language has none), best first, with their BM25 scores.
    pub fn search(&self, query: &str, lang: &str, k: usize) -> Vec<(&Passage, f32)> {
        let Some(idx) = self.indexes.get(lang).or_else(|| self.indexes.get("en")) else {
            return Vec::new();
        };
        // All matches, then our own cut: the crate leaves the order of equal
        // scores open, and ties go to the passage that comes first in the files.
        let mut hits: Vec<(usize, f32)> = idx
            .search(query, None)
            .into_iter()
            .map(|r| (r.document.id, r.score))
            .filter(|(_, s)| *s > 0.0)
            .collect();
        hits.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
        hits.truncate(k);
        hits.into_iter()
            .map(|(i, s)| (&self.passages[i], s))
            .collect()
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
