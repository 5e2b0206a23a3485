//! Whisper's vocabulary, from CTranslate2's `vocabulary.txt` to the raw byte
//! strings whisper.cpp expects.
//!
//! The tokenizer is GPT-2's byte-level BPE: every byte is written as one
//! printable character (printable Latin-1 bytes as themselves, the other 68
//! bytes as U+0100 onwards, in byte order), so a token such as `Ġhello` is the
//! bytes of " hello". whisper.cpp wants the regular tokens only, those before
//! `<|endoftext|>`; it numbers the special and timestamp tokens itself.

#[derive(Debug, thiserror::Error)]
pub enum VocabError {
    #[error("vocabulary has no <|endoftext|> token")]
    NoEndOfText,
    #[error("token {index} ({token:?}) has a character outside byte-level BPE's alphabet")]
    Alphabet { index: usize, token: String },
}

fn is_printable_byte(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// Maps each byte-level BPE character back to the byte it stands for.
fn char_to_byte(c: char) -> Option<u8> {
    let code = c as u32;
    if code < 256 && is_printable_byte(code as u8) {
        return Some(code as u8);
    }
    let offset = code.checked_sub(256)? as usize;
    (0u8..=255).filter(|&b| !is_printable_byte(b)).nth(offset)
}

/// Decodes one byte-level BPE token into its bytes.
pub fn token_bytes(token: &str) -> Option<Vec<u8>> {
    token.chars().map(char_to_byte).collect()
}

/// The regular tokens of `vocabulary.txt` (one token per line, index = id), as
/// bytes, stopping before `<|endoftext|>`.
pub fn regular_tokens(vocabulary: &str) -> Result<Vec<Vec<u8>>, VocabError> {
    let mut out = Vec::new();
    for (index, token) in vocabulary.lines().enumerate() {
        if token == "<|endoftext|>" {
            return Ok(out);
        }
        out.push(token_bytes(token).ok_or_else(|| VocabError::Alphabet {
            index,
            token: token.to_string(),
        })?);
    }
    Err(VocabError::NoEndOfText)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_spaces_newlines_and_multibyte_text() {
        assert_eq!(token_bytes("Ġhello").unwrap(), b" hello");
        assert_eq!(token_bytes("Ċ").unwrap(), b"\n");
        // "é" is 0xC3 0xA9 in UTF-8; both bytes are printable Latin-1
        assert_eq!(token_bytes("Ã©").unwrap(), "é".as_bytes());
        assert_eq!(token_bytes("\u{0100}").unwrap(), vec![0u8]);
        assert!(token_bytes("\u{4e2d}").is_none());
    }

    #[test]
    fn stops_at_end_of_text() {
        let v = "!\nĠthe\n<|endoftext|>\n<|startoftranscript|>\n";
        let t = regular_tokens(v).unwrap();
        assert_eq!(t, vec![b"!".to_vec(), b" the".to_vec()]);
        assert!(matches!(
            regular_tokens("a\nb\n"),
            Err(VocabError::NoEndOfText)
        ));
    }
}
