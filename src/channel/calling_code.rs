//! The languages spoken where a WhatsApp number is from, by its country
//! calling code: `data/calling_codes.toml`, built into the binary. The
//! longest matching prefix wins, so "1787" (Puerto Rico) beats "1".

use std::collections::HashMap;
use std::sync::OnceLock;

use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    codes: HashMap<String, Vec<String>>,
}

/// The bundled table; an entry that does not parse is a build-time mistake
/// caught by the tests, and leaves the table empty rather than failing.
fn table() -> &'static HashMap<String, Vec<String>> {
    static TABLE: OnceLock<HashMap<String, Vec<String>>> = OnceLock::new();
    TABLE.get_or_init(|| {
        toml::from_str::<File>(include_str!("../../data/calling_codes.toml"))
            .map(|f| f.codes)
            .unwrap_or_else(|e| {
                tracing::error!(error = %e, "data/calling_codes.toml does not parse");
                HashMap::new()
            })
    })
}

/// The calling code of `number` (digits, with or without `+`) and the
/// languages spoken there, when the table knows it.
pub fn lookup(number: &str) -> Option<(&'static str, &'static [String])> {
    let digits: String = number.chars().filter(char::is_ascii_digit).collect();
    (1..=digits.len().min(4)).rev().find_map(|n| {
        table()
            .get_key_value(&digits[..n])
            .map(|(k, v)| (k.as_str(), v.as_slice()))
    })
}

/// The one configured language a number's calling code points to: `None`
/// when the code is unknown, or names none or several of `languages`.
pub fn language_of(number: &str, languages: &[String]) -> Option<String> {
    let (_, spoken) = lookup(number)?;
    let mut served = spoken.iter().filter(|l| languages.contains(l));
    match (served.next(), served.next()) {
        (Some(one), None) => Some(one.clone()),
        _ => None,
    }
}

/// The language to write to `number` in: `conversation`'s, else `heard`
/// (the language of the message just understood), else the one the
/// calling code points to; each only when it is one of `languages`.
pub fn language_to_write(
    number: &str,
    conversation: Option<&str>,
    heard: Option<&str>,
    languages: &[String],
) -> Option<String> {
    let served = |l: &&str| languages.iter().any(|c| c == l);
    conversation
        .filter(served)
        .or(heard.filter(served))
        .map(String::from)
        .or_else(|| language_of(number, languages))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn five() -> Vec<String> {
        ["en", "es", "it", "pt", "fr"].map(String::from).to_vec()
    }

    #[test]
    fn the_table_parses_and_knows_the_markets() {
        assert!(table().len() > 50);
        let l = five();
        for (number, want) in [
            ("34612345678", Some("es")),
            ("+39 333 123 4567", Some("it")),
            ("5511987654321", Some("pt")),
            ("351912345678", Some("pt")),
            ("33612345678", Some("fr")),
            ("447700900123", Some("en")),
            ("15550001842", Some("en")),
            // Puerto Rico speaks both: detection decides
            ("17875551234", None),
            ("18095551234", Some("es")),
            ("5215512345678", Some("es")),
            ("41791234567", None),
            ("4915112345678", None),
            ("", None),
        ] {
            assert_eq!(language_of(number, &l).as_deref(), want, "{number}");
        }
    }

    #[test]
    fn several_languages_point_to_one_when_the_business_serves_one() {
        let only_french = vec!["fr".to_string(), "en".to_string()];
        assert_eq!(
            language_of("32471123456", &only_french).as_deref(),
            Some("fr")
        );
        assert_eq!(language_of("237612345678", &only_french), None);
        assert_eq!(lookup("17875551234").map(|(c, _)| c), Some("1787"));
    }
}
