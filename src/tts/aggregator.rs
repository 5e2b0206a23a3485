//! Tokens in, speakable chunks out: the dialog stage streams reply text a
//! few characters at a time, and speech can start as soon as the first
//! sentence (or, for a long one, its first clause) is complete.
//!
//! A boundary is a sentence end (`.`, `!`, `?`, `…`, a line break) followed
//! by white space. A full stop also needs the next word to start like a
//! sentence (a capital, a digit, `¿`, `¡`, a quote) and the word before it
//! not to be an abbreviation of the reply's language ("Dr.", "Sra.",
//! "etc."). Numbers, prices, times, URLs and e-mail addresses have no white
//! space after their inner `.`, `,` or `:`, so they are never split.

use serde::Deserialize;
use tokio::sync::mpsc;

use super::{speak, Language};

/// How eagerly text is cut into chunks.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AggregatorConfig {
    /// The first chunk may end at a comma, semicolon or colon once it has at
    /// least this many characters, so a long first sentence starts speaking
    /// early. Default: 40 (about two seconds of speech).
    pub first_clause_min_chars: usize,
    /// A chunk with no boundary is cut at the last space before this many
    /// characters. Default: 240.
    pub max_chunk_chars: usize,
}

impl Default for AggregatorConfig {
    fn default() -> Self {
        Self {
            first_clause_min_chars: 40,
            max_chunk_chars: 240,
        }
    }
}

/// Collects tokens and hands out speakable chunks.
#[derive(Debug, Clone)]
pub struct SentenceAggregator {
    language: Language,
    config: AggregatorConfig,
    pending: String,
    chunks_out: usize,
}

impl SentenceAggregator {
    pub fn new(language: Language, config: AggregatorConfig) -> Self {
        Self {
            language,
            config,
            pending: String::new(),
            chunks_out: 0,
        }
    }

    /// Adds a token and returns the chunks it completed.
    pub fn push(&mut self, token: &str) -> Vec<String> {
        self.pending.push_str(token);
        let mut chunks = Vec::new();
        while let Some(cut) = self.boundary() {
            let rest = self.pending.split_off(cut);
            let chunk = std::mem::replace(&mut self.pending, rest);
            let chunk = chunk.trim();
            if !chunk.is_empty() {
                chunks.push(chunk.to_string());
                self.chunks_out += 1;
            }
            let trimmed = self.pending.trim_start().len();
            self.pending.drain(..self.pending.len() - trimmed);
        }
        chunks
    }

    /// The end of the reply: whatever is left is the last chunk.
    pub fn finish(&mut self) -> Option<String> {
        let chunk = self.pending.trim().to_string();
        self.pending.clear();
        (!chunk.is_empty()).then(|| {
            self.chunks_out += 1;
            chunk
        })
    }

    /// Byte offset just past the first boundary in `pending`, if one is
    /// certain yet.
    fn boundary(&self) -> Option<usize> {
        let text = self.pending.as_str();
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        for (n, &(at, c)) in chars.iter().enumerate() {
            match c {
                '\n' if !text[..at].trim().is_empty() => return Some(at + 1),
                '.' | '!' | '?' | '…' => {
                    // Run of terminators and closing quotes: "?!", "...", ".)"
                    let mut end = n + 1;
                    while end < chars.len()
                        && matches!(
                            chars[end].1,
                            '.' | '!' | '?' | '…' | '"' | '\'' | '”' | '’' | '»' | ')'
                        )
                    {
                        end += 1;
                    }
                    let Some(&(space_at, space)) = chars.get(end) else {
                        return None; // the token may continue: "1." → "1.5"
                    };
                    if !space.is_whitespace() {
                        continue;
                    }
                    let next = chars[end..].iter().find(|(_, c)| !c.is_whitespace());
                    let Some(&(_, next)) = next else {
                        // "Hello! " is certain; "Dr. " waits for the next word.
                        if c == '.' {
                            return None;
                        }
                        return Some(space_at);
                    };
                    if c == '.' && !self.ends_sentence(&text[..at], next) {
                        continue;
                    }
                    return Some(space_at);
                }
                ',' | ';' | ':' if self.chunks_out == 0 => {
                    let long_enough =
                        text[..at].chars().count() >= self.config.first_clause_min_chars;
                    let spaced = chars.get(n + 1).is_some_and(|(_, c)| c.is_whitespace());
                    if long_enough && spaced {
                        return Some(at + 1);
                    }
                }
                _ => {}
            }
        }
        self.forced_cut()
    }

    /// Whether a full stop after `before` ends the sentence, given the first
    /// character of the next word.
    fn ends_sentence(&self, before: &str, next: char) -> bool {
        let starts_sentence = next.is_uppercase()
            || next.is_ascii_digit()
            || matches!(next, '¿' | '¡' | '"' | '“' | '«' | '(');
        if !starts_sentence {
            return false;
        }
        let word = before
            .rsplit(|c: char| c.is_whitespace() || c == '(')
            .next()
            .unwrap_or("")
            .trim_end_matches('.');
        if word.is_empty() {
            return true;
        }
        // An initial: "J. Smith".
        if word.chars().count() == 1 && word.chars().all(char::is_alphabetic) {
            return false;
        }
        // "No. 5", "nº. 12", "n. 3" before a number.
        let lower = word.to_lowercase();
        if next.is_ascii_digit() && NUMBER_ABBREVIATIONS.contains(&lower.as_str()) {
            return false;
        }
        !abbreviations(self.language).contains(&lower.as_str())
            && !COMMON_ABBREVIATIONS.contains(&lower.as_str())
    }

    /// A cut for text that has gone on too long without a boundary: at the
    /// last clause mark, else the last space, before the limit.
    fn forced_cut(&self) -> Option<usize> {
        let text = self.pending.as_str();
        let max_chars = self.config.max_chunk_chars.max(1);
        if text.chars().count() <= max_chars {
            return None;
        }
        let limit = text
            .char_indices()
            .nth(max_chars)
            .map_or(text.len(), |(at, _)| at);
        let head = &text[..limit];
        let clause = head
            .match_indices([',', ';', ':'])
            .rfind(|(at, _)| head[at + 1..].starts_with(char::is_whitespace))
            .map(|(at, _)| at + 1);
        clause
            .or_else(|| head.rfind(char::is_whitespace))
            .or(Some(limit))
    }
}

/// Runs an aggregator over a token stream: reads tokens until the channel
/// closes and sends each chunk, made speakable by [`speak::speakable`], as
/// soon as it is complete. Stops early if the receiver goes away.
pub async fn speakable_chunks(
    mut tokens: mpsc::Receiver<String>,
    chunks: mpsc::Sender<String>,
    language: Language,
    config: AggregatorConfig,
) {
    let mut aggregator = SentenceAggregator::new(language, config);
    while let Some(token) = tokens.recv().await {
        for chunk in aggregator.push(&token) {
            if chunks
                .send(speak::speakable(&chunk, language))
                .await
                .is_err()
            {
                return;
            }
        }
    }
    if let Some(chunk) = aggregator.finish() {
        let _ = chunks.send(speak::speakable(&chunk, language)).await;
    }
}

/// Abbreviations that never end a sentence, in every language.
const COMMON_ABBREVIATIONS: &[&str] =
    &["dr", "dra", "etc", "e.g", "i.e", "prof", "sr", "sra", "st"];

/// Words that abbreviate "number" before a digit.
const NUMBER_ABBREVIATIONS: &[&str] = &["no", "nº", "n", "nr", "núm", "num", "nro", "n°"];

fn abbreviations(language: Language) -> &'static [&'static str] {
    match language {
        Language::En => &[
            "mr", "mrs", "ms", "jr", "vs", "approx", "dept", "inc", "ltd", "co", "ave",
        ],
        Language::Es => &[
            "srta", "ud", "uds", "aprox", "pág", "avda", "av", "cía", "dña", "d", "lic", "ing",
        ],
        Language::It => &[
            "sig", "sigg", "dott", "ecc", "pag", "spett", "avv", "ing", "geom", "rag",
        ],
        Language::Pt => &[
            "srª", "srs", "exa", "aprox", "pág", "av", "dª", "eng", "lda", "ltda",
        ],
        Language::Fr => &["m", "mme", "mlle", "mm", "pr", "cf", "env", "av", "bd", "p"],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` a few characters at a time, as an LLM streams it.
    fn chunks(language: Language, text: &str) -> Vec<String> {
        let mut aggregator = SentenceAggregator::new(language, AggregatorConfig::default());
        let mut out = Vec::new();
        let chars: Vec<char> = text.chars().collect();
        for token in chars.chunks(3) {
            out.extend(aggregator.push(&token.iter().collect::<String>()));
        }
        out.extend(aggregator.finish());
        out
    }

    #[test]
    fn english_sentences_and_hard_cases() {
        assert_eq!(
            chunks(
                Language::En,
                "Your order 1842 costs $3.99. Dr. Smith ships it at 14:30! Need more? See shop.example.com/faq or mail help@example.com. Thanks"
            ),
            [
                "Your order 1842 costs $3.99.",
                "Dr. Smith ships it at 14:30!",
                "Need more?",
                "See shop.example.com/faq or mail help@example.com.",
                "Thanks"
            ]
        );
        assert_eq!(
            chunks(
                Language::En,
                "Version 1.5 is out. Mr. J. Doe paid €12.50, etc. Done."
            ),
            ["Version 1.5 is out.", "Mr. J. Doe paid €12.50, etc. Done."]
        );
        assert_eq!(
            chunks(
                Language::En,
                "It is order No. 77. Visit https://example.com/a.b?x=1. Bye."
            ),
            [
                "It is order No. 77.",
                "Visit https://example.com/a.b?x=1.",
                "Bye."
            ]
        );
    }

    #[test]
    fn spanish() {
        assert_eq!(
            chunks(
                Language::Es,
                "¡Hola! La Sra. García pagó 12,50 €. ¿Algo más? El pedido n. 1842 llega el 24/11 a las 14:30."
            ),
            [
                "¡Hola!",
                "La Sra. García pagó 12,50 €.",
                "¿Algo más?",
                "El pedido n. 1842 llega el 24/11 a las 14:30."
            ]
        );
    }

    #[test]
    fn italian() {
        assert_eq!(
            chunks(
                Language::It,
                "Il Dott. Rossi conferma. Costa 1.250,00 euro, ecc. Grazie!"
            ),
            [
                "Il Dott. Rossi conferma.",
                "Costa 1.250,00 euro, ecc. Grazie!"
            ]
        );
    }

    #[test]
    fn portuguese() {
        assert_eq!(
            chunks(
                Language::Pt,
                "Olá, Sr. Silva. O total é R$ 3,99. Até amanhã!"
            ),
            ["Olá, Sr. Silva.", "O total é R$ 3,99.", "Até amanhã!"]
        );
    }

    #[test]
    fn french() {
        assert_eq!(
            chunks(
                Language::Fr,
                "Bonjour M. Dupont ! Votre commande arrive à 9h30. Merci ?"
            ),
            [
                "Bonjour M. Dupont !",
                "Votre commande arrive à 9h30.",
                "Merci ?"
            ]
        );
    }

    #[test]
    fn a_long_first_sentence_starts_with_a_clause() {
        let out = chunks(
            Language::En,
            "I checked your order and the courier's tracking page, and it should arrive on Friday morning. Later clauses, like this, stay whole.",
        );
        assert_eq!(
            out,
            [
                "I checked your order and the courier's tracking page,",
                "and it should arrive on Friday morning.",
                "Later clauses, like this, stay whole."
            ]
        );
        // A short first clause is not cut; decimal commas never are.
        assert_eq!(chunks(Language::Es, "Sí, 1,5 kilos."), ["Sí, 1,5 kilos."]);
    }

    #[test]
    fn a_chunk_is_emitted_as_soon_as_it_is_certain() {
        let mut aggregator = SentenceAggregator::new(Language::En, AggregatorConfig::default());
        assert!(aggregator.push("Hello there!").is_empty());
        assert_eq!(aggregator.push(" "), ["Hello there!"]);
        assert!(aggregator.push("It costs 1.").is_empty());
        assert!(aggregator.push("5 euros. ").is_empty());
        assert_eq!(aggregator.push("Ok"), ["It costs 1.5 euros."]);
        assert_eq!(aggregator.finish().as_deref(), Some("Ok"));
        assert_eq!(aggregator.finish(), None);
    }

    #[test]
    fn text_without_boundaries_is_cut_at_the_limit() {
        let config = AggregatorConfig {
            first_clause_min_chars: 1000,
            max_chunk_chars: 30,
        };
        let mut aggregator = SentenceAggregator::new(Language::En, config);
        let out = aggregator.push("one two three four five six seven eight nine ten eleven");
        assert!(!out.is_empty());
        assert!(out.iter().all(|c| c.chars().count() <= 30), "{out:?}");
        let line = "a line\nanother";
        let mut aggregator = SentenceAggregator::new(Language::En, AggregatorConfig::default());
        assert_eq!(aggregator.push(line), ["a line"]);
    }
}
