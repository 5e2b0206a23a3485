//! Text to IPA phonemes with libespeak-ng, the way Piper voices were
//! trained: `espeak_TextToPhonemes` in IPA mode, clause by clause, with the
//! clause's punctuation put back after its phonemes, and sentences cut
//! after `.`, `?` and `!`.
//!
//! Kokoro takes the same IPA with espeak-ng's multi-letter phonemes tied,
//! so that its own single letters for them can be put in ([`sentences`]
//! with `ties`).
//!
//! libespeak-ng's state is global, so the calls run on the espeak
//! provider's thread ([`espeak::with_voice`]).

use std::ffi::{c_char, c_int, c_void, CStr, CString};

use crate::tts::espeak;
use crate::tts::TtsError;

mod ffi {
    use super::*;

    pub const CHARS_UTF8: c_int = 1;
    /// Bit 1 of `phonememode`: IPA as UTF-8, not espeak's ASCII names.
    pub const PHONEMES_IPA: c_int = 0x02;
    /// Bit 7: bits 8-23 hold a character that ties the letters of one
    /// multi-letter phoneme ("t^ʃ").
    pub const PHONEMES_TIE: c_int = 0x80;

    #[link(name = "espeak-ng")]
    extern "C" {
        /// Translates the clause at `*textptr` and advances it past the
        /// clause, or sets it to NULL at the end of the text. The result
        /// lives until the next call.
        pub fn espeak_TextToPhonemes(
            textptr: *mut *const c_void,
            textmode: c_int,
            phonememode: c_int,
        ) -> *const c_char;
    }
}

/// Longest sentence sent to the model at once, in phoneme characters; a
/// longer one is cut at a clause. Bounds one inference's time and memory.
const MAX_SENTENCE: usize = 400;

/// One clause as espeak-ng cut it.
#[derive(Debug, Clone, PartialEq)]
struct Clause {
    phonemes: String,
    /// The punctuation that ended it, if any.
    end: Option<char>,
}

/// The character that ties a multi-letter phoneme's letters with `ties`.
pub const TIE: char = '^';

/// The IPA phonemes of `text`, one string per sentence, in the espeak-ng
/// voice `voice`; with `ties`, the letters of each multi-letter phoneme are
/// joined by [`TIE`]. Blocking: call it from a blocking thread.
pub fn sentences(text: &str, voice: &str, ties: bool) -> Result<Vec<String>, TtsError> {
    // Interior NULs would end the text early; they are not speech anyway.
    let text = CString::new(text.replace('\0', " ")).map_err(|e| TtsError::Unavailable {
        provider: "espeak".into(),
        reason: e.to_string(),
    })?;
    let mode = if ties {
        ffi::PHONEMES_IPA | ffi::PHONEMES_TIE | ((TIE as c_int) << 8)
    } else {
        ffi::PHONEMES_IPA
    };
    let clauses = espeak::with_voice(voice, move || clauses(&text, mode))?;
    Ok(group(clauses))
}

/// Runs on the espeak thread.
fn clauses(text: &CStr, mode: c_int) -> Vec<Clause> {
    let bytes = text.to_bytes();
    let start = text.as_ptr() as usize;
    let mut at: *const c_void = text.as_ptr().cast();
    let mut clauses = Vec::new();
    while !at.is_null() {
        let before = at as usize;
        // SAFETY: espeak thread (see `espeak::with_voice`); `at` points
        // into `text`, NUL-terminated and alive for the whole loop.
        let out = unsafe { ffi::espeak_TextToPhonemes(&mut at, ffi::CHARS_UTF8, mode) };
        let phonemes = if out.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated string valid until the next call.
            unsafe { CStr::from_ptr(out) }
                .to_string_lossy()
                .into_owned()
        };
        let consumed = if at.is_null() {
            &bytes[(before - start).min(bytes.len())..]
        } else {
            let after = (at as usize).clamp(before, start + bytes.len());
            if after == before {
                break;
            }
            &bytes[before - start..after - start]
        };
        clauses.push(Clause {
            phonemes,
            end: clause_end(&String::from_utf8_lossy(consumed), at.is_null()),
        });
    }
    clauses
}

/// The punctuation that ended a clause, from the text espeak-ng consumed
/// for it. Except at the end of the text, espeak-ng has also read the first
/// character of the next clause, which is not part of this one.
fn clause_end(consumed: &str, last: bool) -> Option<char> {
    let mut text = consumed;
    if !last {
        if let Some((i, _)) = text.char_indices().next_back() {
            text = &text[..i];
        }
    }
    text.trim_end()
        .chars()
        .next_back()
        .filter(|c| matches!(c, '.' | ',' | ';' | ':' | '?' | '!'))
}

/// Joins clauses into sentences: a clause's punctuation follows its
/// phonemes, a space separates clauses, and `.`, `?`, `!` end a sentence.
fn group(clauses: Vec<Clause>) -> Vec<String> {
    let mut sentences = Vec::new();
    let mut sentence = String::new();
    for clause in clauses {
        let phonemes = clause.phonemes.trim();
        if phonemes.is_empty() && sentence.is_empty() {
            continue;
        }
        if !sentence.is_empty() {
            sentence.push(' ');
        }
        sentence.push_str(phonemes);
        if let Some(end) = clause.end {
            sentence.push(end);
        }
        let ends = matches!(clause.end, Some('.' | '?' | '!'));
        if ends || sentence.chars().count() >= MAX_SENTENCE {
            sentences.push(std::mem::take(&mut sentence));
        }
    }
    if !sentence.trim().is_empty() {
        sentences.push(sentence);
    }
    sentences
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clause(phonemes: &str, end: Option<char>) -> Clause {
        Clause {
            phonemes: phonemes.into(),
            end,
        }
    }

    #[test]
    fn the_clause_end_skips_the_next_clauses_first_character() {
        assert_eq!(clause_end("Hello, w", false), Some(','));
        assert_eq!(clause_end("dollars... é", false), Some('.'));
        assert_eq!(clause_end("Is that OK? T", false), Some('?'));
        assert_eq!(clause_end("Reply yes to confirm.", true), Some('.'));
        assert_eq!(clause_end("Thanks", true), None);
        assert_eq!(clause_end("", false), None);
    }

    #[test]
    fn clauses_join_into_sentences_with_their_punctuation() {
        let sentences = group(vec![
            clause("həlˈoʊ", Some(',')),
            clause("wˈɜːld", Some('.')),
            clause("ɪz ðæt ˌoʊkˈeɪ", Some('?')),
            clause("", None),
            clause("θˈæŋks", None),
        ]);
        assert_eq!(sentences, ["həlˈoʊ, wˈɜːld.", "ɪz ðæt ˌoʊkˈeɪ?", "θˈæŋks"]);
    }

    #[test]
    fn long_sentences_are_cut_at_a_clause() {
        let long = "ə".repeat(MAX_SENTENCE);
        let sentences = group(vec![clause(&long, Some(',')), clause("wˈɜːld", Some('.'))]);
        assert_eq!(sentences.len(), 2);
        assert_eq!(sentences[1], "wˈɜːld.");
    }

    #[test]
    fn english_text_becomes_ipa_sentences() {
        let sentences = sentences(
            "Hello, world. Your order is on its way; is that OK? Thanks",
            "en-us",
            false,
        )
        .unwrap();
        assert_eq!(sentences.len(), 3, "{sentences:?}");
        assert!(sentences[0].starts_with("həlˈoʊ, wˈɜːld."), "{sentences:?}");
        assert!(sentences[1].contains("wˈeɪ; ɪz"), "{sentences:?}");
        assert!(sentences[1].ends_with('?'), "{sentences:?}");
    }

    #[test]
    fn ties_join_the_letters_of_one_phoneme() {
        let tied = sentences("Ciao, arriverà venerdì.", "it", true).unwrap();
        assert!(tied[0].starts_with("t^ʃ"), "{tied:?}");
        let plain = sentences("Ciao, arriverà venerdì.", "it", false).unwrap();
        assert!(plain[0].starts_with("tʃ"), "{plain:?}");
    }
}
