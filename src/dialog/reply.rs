//! Shaping reply text: sentences, and the length cap of voice replies.

use serde::Deserialize;

/// `[dialog.voice]`: how long a spoken reply may be.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, serde::Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct VoiceReplyConfig {
    /// Sentences in a voice reply (default 2).
    pub max_sentences: usize,
    /// Characters in a voice reply (default 280, about 15 s of speech).
    pub max_chars: usize,
}

impl Default for VoiceReplyConfig {
    fn default() -> Self {
        Self {
            max_sentences: 2,
            max_chars: 280,
        }
    }
}

/// Byte offset just past the first complete sentence in `text`, if any: a
/// `.`, `!`, `?` or `…` followed by whitespace. "1.5" and "€39.90" do not
/// end a sentence because no space follows the dot.
pub fn sentence_end(text: &str) -> Option<usize> {
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if matches!(c, '.' | '!' | '?' | '…') {
            match chars.peek() {
                Some((_, n)) if n.is_whitespace() => return Some(i + c.len_utf8()),
                _ => {}
            }
        }
    }
    None
}

/// Splits text into trimmed sentences.
pub fn sentences(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text.trim();
    while let Some(end) = sentence_end(rest) {
        out.push(rest[..end].trim().to_string());
        rest = rest[end..].trim_start();
    }
    if !rest.is_empty() {
        out.push(rest.to_string());
    }
    out
}

/// The first `max_sentences` sentences, cut at a word boundary within
/// `max_chars`.
pub fn cap_voice(text: &str, config: &VoiceReplyConfig) -> String {
    let kept = sentences(text)
        .into_iter()
        .take(config.max_sentences.max(1))
        .collect::<Vec<_>>()
        .join(" ");
    if kept.chars().count() <= config.max_chars {
        return kept;
    }
    let cut: String = kept.chars().take(config.max_chars).collect();
    match cut.rfind(' ') {
        Some(i) => format!("{}…", cut[..i].trim_end_matches([',', ';', ':'])),
        None => cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_sentences_but_not_numbers() {
        assert_eq!(
            sentences("The backpack costs €39.90. It ships today! Anything else?"),
            [
                "The backpack costs €39.90.",
                "It ships today!",
                "Anything else?"
            ]
        );
        assert_eq!(sentences("no end"), ["no end"]);
        assert_eq!(sentence_end("1.5 kg"), None);
    }

    #[test]
    fn voice_replies_keep_two_sentences_within_the_cap() {
        let c = VoiceReplyConfig::default();
        assert_eq!(cap_voice("One. Two. Three.", &c), "One. Two.");
        let long = "word ".repeat(100);
        let capped = cap_voice(
            &long,
            &VoiceReplyConfig {
                max_sentences: 2,
                max_chars: 50,
            },
        );
        assert!(capped.chars().count() <= 51, "{capped}");
        assert!(capped.ends_with('…'));
    }
}
