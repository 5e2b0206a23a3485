//! The fact guard: an LLM sentence that states a price, a date or an order
//! status the commerce backend did not give in this turn is caught, and the
//! dialog stage answers with the template instead.

use std::collections::HashSet;
use std::sync::LazyLock;

use regex::Regex;

use super::calendar::Date;
use super::intent::text::{fold, words};
use super::templates::Templates;

/// What the backend said in this turn.
#[derive(Debug, Clone, Default)]
pub struct Facts {
    pub cents: HashSet<i64>,
    pub dates: Vec<Date>,
    /// Status keys (`shipped`, `paid`, …).
    pub statuses: HashSet<String>,
    /// Knowledge-base passages given to the LLM, folded: a price, day or
    /// status word they contain is backed too ("free from 50 euros",
    /// "Monday to Saturday").
    pub passages: Vec<String>,
}

impl Facts {
    fn in_passages(&self, folded_phrase: &str) -> bool {
        let needle = format!(" {folded_phrase} ");
        self.passages
            .iter()
            .any(|p| format!(" {p} ").contains(&needle))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Violation {
    Price(String),
    Date(String),
    Status(String),
    /// A sentence in another language or script than the conversation's.
    Language(String),
}

/// Whether a character belongs in speech of the five Latin-script
/// languages: letters of the Latin script, digits, punctuation, symbols.
fn latin(c: char) -> bool {
    !c.is_alphabetic()
        || c.is_ascii_alphabetic()
        || ('\u{00C0}'..='\u{024F}').contains(&c)
        || ('\u{1E00}'..='\u{1EFF}').contains(&c)
}

/// An LLM sentence as speech in the conversation's language `lang`:
/// words in another script ("遷移Model") are dropped; a sentence mostly in
/// another script, or that the language detector places in another of the
/// business's languages with confidence, is a [`Violation::Language`], and
/// the dialog answers with the template instead.
pub fn in_language(
    sentence: &str,
    lang: &str,
    intents: &super::intent::IntentModel,
) -> Result<String, Violation> {
    let words: Vec<&str> = sentence.split_whitespace().collect();
    let kept: Vec<&str> = words
        .iter()
        .copied()
        .filter(|w| w.chars().all(latin))
        .collect();
    if kept.len() * 2 < words.len() {
        return Err(Violation::Language(format!("another script: {sentence:?}")));
    }
    let text = kept.join(" ");
    let folded = fold(&text);
    // Short sentences ("OK.", "Perfecto!") say too little to judge.
    if folded.split(' ').count() >= 5 {
        let (best, p_best, p_lang) = intents.language_odds(&folded, lang);
        if best != lang && p_best >= 0.8 && p_lang <= 0.1 {
            return Err(Violation::Language(format!(
                "{best} (p {p_best:.2}) instead of {lang}: {sentence:?}"
            )));
        }
    }
    Ok(text)
}

static MONEY: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)(?:[€$£]|R\$|eur\b|usd\b)\s?(\d{1,6}(?:[.,]\d{1,2})?)|(\d{1,6}(?:[.,]\d{1,2})?)\s?(?:€|\beur(?:o|os)?\b|\bdollars?\b|\busd\b|\breais\b)",
    )
    .expect("money pattern")
});

static NUMERIC_DATE: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"\b(\d{4})-(\d{2})-(\d{2})\b|\b(\d{1,2})/(\d{1,2})(?:/\d{2,4})?\b")
        .expect("date pattern")
});

/// Words that state a status in the four languages, beyond the templates'
/// own wording, with the status they claim.
const STATUS_WORDS: &[(&str, &str)] = &[
    ("shipped", "shipped"),
    ("dispatched", "shipped"),
    ("in transit", "shipped"),
    ("on its way", "shipped"),
    ("out for delivery", "shipped"),
    ("enviado", "shipped"),
    ("en camino", "shipped"),
    ("spedito", "shipped"),
    ("a caminho", "shipped"),
    ("delivered", "delivered"),
    ("entregado", "delivered"),
    ("consegnato", "delivered"),
    ("entregue", "delivered"),
    ("cancelled", "cancelled"),
    ("canceled", "cancelled"),
    ("cancelado", "cancelled"),
    ("annullato", "cancelled"),
    ("refunded", "refunded"),
    ("reembolsado", "refunded"),
    ("rimborsato", "refunded"),
    ("expedie", "shipped"),
    ("expediee", "shipped"),
    ("en route", "shipped"),
    ("livre", "delivered"),
    ("livree", "delivered"),
    ("annule", "cancelled"),
    ("annulee", "cancelled"),
    ("rembourse", "refunded"),
    ("remboursee", "refunded"),
];

// "Today" is left out: "I can help you today" is common and claims nothing.
const RELATIVE_DAYS: &[(&str, i64)] = &[
    ("tomorrow", 1),
    ("manana", 1),
    ("domani", 1),
    ("amanha", 1),
    ("dopodomani", 2),
];

pub struct Guard {
    /// Folded status phrases with their status key.
    status_words: Vec<(String, String)>,
    /// Folded weekday names per weekday, month names per month.
    weekdays: Vec<(String, u8)>,
    months: Vec<(String, u32)>,
}

impl Guard {
    pub fn new(templates: &Templates) -> Self {
        let mut status_words: Vec<(String, String)> = STATUS_WORDS
            .iter()
            .map(|(w, s)| (fold(w), s.to_string()))
            .collect();
        status_words.extend(
            templates
                .all_status_words()
                .into_iter()
                .map(|(k, v)| (fold(&v), k)),
        );
        status_words.retain(|(w, _)| !w.is_empty());
        let mut weekdays = Vec::new();
        let mut months = Vec::new();
        for (lang_weekdays, lang_months) in templates.calendars() {
            for (i, w) in lang_weekdays.iter().enumerate() {
                weekdays.push((fold(w), i as u8));
                // "segunda-feira" is said "segunda".
                if let Some((head, _)) = fold(w).split_once(' ') {
                    weekdays.push((head.to_string(), i as u8));
                }
            }
            for (i, m) in lang_months.iter().enumerate() {
                // "may" is also a verb, and French "mai" is Italian "never".
                if !matches!(fold(m).as_str(), "may" | "mai") {
                    months.push((fold(m), i as u32 + 1));
                }
            }
        }
        Self {
            status_words,
            weekdays,
            months,
        }
    }

    /// The first fact in `sentence` that `facts` do not back, if any.
    pub fn check(&self, sentence: &str, facts: &Facts, today: Date) -> Option<Violation> {
        for c in MONEY.captures_iter(sentence) {
            let amount = c.get(1).or_else(|| c.get(2)).map_or("", |m| m.as_str());
            let cents = parse_cents(amount);
            if !cents.is_some_and(|v| facts.cents.contains(&v)) && !facts.in_passages(&fold(amount))
            {
                return Some(Violation::Price(c[0].to_string()));
            }
        }
        for c in NUMERIC_DATE.captures_iter(sentence) {
            let ok = if let (Some(y), Some(m), Some(d)) = (c.get(1), c.get(2), c.get(3)) {
                Date::parse(&format!("{}-{}-{}", y.as_str(), m.as_str(), d.as_str()))
                    .is_some_and(|date| facts.dates.contains(&date))
            } else {
                let a: u32 = c[4].parse().unwrap_or(0);
                let b: u32 = c[5].parse().unwrap_or(0);
                facts.dates.iter().any(|d| {
                    let (_, m, day) = d.ymd();
                    (a == day && b == m) || (a == m && b == day)
                })
            };
            if !ok {
                return Some(Violation::Date(c[0].to_string()));
            }
        }
        let folded = fold(sentence);
        let ws: Vec<&str> = words(&folded).collect();
        let padded = format!(" {folded} ");
        for (name, weekday) in &self.weekdays {
            if ws.contains(&name.as_str())
                && !facts.dates.iter().any(|d| d.weekday() == *weekday)
                && !facts.in_passages(name)
            {
                return Some(Violation::Date(name.clone()));
            }
        }
        for (name, month) in &self.months {
            if ws.contains(&name.as_str())
                && !facts.dates.iter().any(|d| d.ymd().1 == *month)
                && !facts.in_passages(name)
            {
                return Some(Violation::Date(name.clone()));
            }
        }
        for (word, days) in RELATIVE_DAYS {
            if ws.contains(word) && !facts.dates.contains(&today.plus_days(*days)) {
                return Some(Violation::Date(word.to_string()));
            }
        }
        for (phrase, status) in &self.status_words {
            if padded.contains(&format!(" {phrase} "))
                && !facts.statuses.contains(status)
                && !facts.in_passages(phrase)
            {
                return Some(Violation::Status(phrase.clone()));
            }
        }
        None
    }
}

fn parse_cents(amount: &str) -> Option<i64> {
    let (units, frac) = match amount.rfind(['.', ',']) {
        Some(i) => (&amount[..i], &amount[i + 1..]),
        None => (amount, ""),
    };
    let units: i64 = units.parse().ok()?;
    let frac: i64 = match frac.len() {
        0 => 0,
        1 => frac.parse::<i64>().ok()? * 10,
        _ => frac.parse().ok()?,
    };
    Some(units * 100 + frac)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn guard() -> Guard {
        let t =
            Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/templates")).unwrap();
        Guard::new(&t)
    }

    fn facts() -> Facts {
        Facts {
            cents: [3990].into(),
            dates: vec![Date::from_ymd(2026, 11, 27).unwrap()],
            statuses: ["shipped".to_string()].into(),
            passages: vec![fold(
                "We answer Monday to Saturday. Shipping is free from 50 euros.",
            )],
        }
    }

    #[test]
    fn backed_facts_pass() {
        let g = guard();
        let today = Date::from_ymd(2026, 11, 24).unwrap();
        for s in [
            "The blue backpack costs €39.90 and it is on its way.",
            "La mochila cuesta 39,90 € y llega el viernes 27 de noviembre.",
            "Your order should arrive on Friday.",
            "Happy to help with anything else!",
            "We answer on Monday, and shipping is free from 50 euros.",
        ] {
            assert_eq!(g.check(s, &facts(), today), None, "{s}");
        }
    }

    #[test]
    fn invented_prices_dates_and_statuses_are_caught() {
        let g = guard();
        let today = Date::from_ymd(2026, 11, 24).unwrap();
        let mut f = facts();
        f.passages.clear();
        assert!(matches!(
            g.check("It costs €29.99.", &f, today),
            Some(Violation::Price(_))
        ));
        assert!(matches!(
            g.check("Son 45 euros.", &f, today),
            Some(Violation::Price(_))
        ));
        assert!(matches!(
            g.check("It arrives on Monday.", &f, today),
            Some(Violation::Date(_))
        ));
        assert!(matches!(
            g.check("It arrives tomorrow.", &f, today),
            Some(Violation::Date(_))
        ));
        assert!(matches!(
            g.check("Arriva il 3/12.", &f, today),
            Some(Violation::Date(_))
        ));
        assert!(matches!(
            g.check("Your order was delivered.", &f, today),
            Some(Violation::Status(_))
        ));
        assert!(matches!(
            g.check("O pedido foi entregue.", &f, today),
            Some(Violation::Status(_))
        ));
    }
}
