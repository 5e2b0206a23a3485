//! Text normalisation shared by the rules, the classifier and the slot
//! extractors: lower case, accents folded, punctuation turned into spaces.
//!
//! Transcripts and typed messages differ mostly in case, accents and
//! punctuation ("¿Dónde está?" against "donde esta"), so everything the fast
//! path matches on sees the same folded form.

/// Folds one lower-case character to its unaccented ASCII form where the
/// four supported languages use an accent; other characters pass through.
fn fold_char(c: char) -> char {
    match c {
        'á' | 'à' | 'â' | 'ã' | 'ä' | 'å' => 'a',
        'é' | 'è' | 'ê' | 'ë' => 'e',
        'í' | 'ì' | 'î' | 'ï' => 'i',
        'ó' | 'ò' | 'ô' | 'õ' | 'ö' => 'o',
        'ú' | 'ù' | 'û' | 'ü' => 'u',
        'ñ' => 'n',
        'ç' => 'c',
        _ => c,
    }
}

/// Lower case, accents folded, every run of characters that is neither a
/// letter nor a digit replaced by one space, trimmed. Apostrophes split
/// words ("dov'è" → "dov e", "what's" → "what s").
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut space = true;
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = fold_char(c);
        if c.is_alphanumeric() {
            out.push(c);
            space = false;
        } else if !space {
            out.push(' ');
            space = true;
        }
    }
    if out.ends_with(' ') {
        out.pop();
    }
    out
}

/// The words of folded text.
pub fn words(folded: &str) -> impl Iterator<Item = &str> {
    folded.split(' ').filter(|w| !w.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_accents_case_and_punctuation() {
        assert_eq!(
            fold("¿Dónde está mi PEDIDO 1842?"),
            "donde esta mi pedido 1842"
        );
        assert_eq!(fold("Dov'è il mio ordine"), "dov e il mio ordine");
        assert_eq!(fold("  Não, obrigação!! "), "nao obrigacao");
        assert_eq!(fold("Ça va — très bien"), "ca va tres bien");
        assert_eq!(fold(""), "");
        assert_eq!(fold("?!"), "");
    }
}
