//! Slot extraction: order number, product, quantity, date and address, in
//! the four supported languages, from typed text and from transcripts where
//! numbers arrive spelled out ("eighteen forty two", "uno ocho cuatro dos").

use std::sync::LazyLock;

use regex::Regex;
use serde::{Deserialize, Serialize};

use super::text::{fold, words};

/// A day the customer named, resolved to a calendar date by the dialog
/// stage against its clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DateRef {
    /// Monday is 0.
    Weekday(u8),
    /// Today is 0, tomorrow 1.
    InDays(u8),
    /// A day of the current or next month ("the 14th", "el 14").
    DayOfMonth(u8),
}

/// What the customer's message says about the request.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Slots {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub order: Option<String>,
    /// Catalogue id of the product named.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub product: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub quantity: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub date: Option<DateRef>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
}

impl Slots {
    pub fn is_empty(&self) -> bool {
        *self == Slots::default()
    }

    /// Fills the slots this message left empty from `earlier`'s.
    pub fn fill_from(&mut self, earlier: Slots) {
        self.order = self.order.take().or(earlier.order);
        self.product = self.product.take().or(earlier.product);
        self.quantity = self.quantity.or(earlier.quantity);
        self.date = self.date.or(earlier.date);
        self.address = self.address.take().or(earlier.address);
    }
}

/// Product names and synonyms in every language, folded, mapped to the
/// catalogue id. Longer phrases win ("blue backpack" over "backpack").
#[derive(Debug, Clone, Default)]
pub struct Lexicon {
    phrases: Vec<(Vec<String>, String)>,
}

impl Lexicon {
    /// The product ids and categories its phrases name, each once.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.phrases.iter().map(|(_, key)| key.clone()).collect();
        keys.sort();
        keys.dedup();
        keys
    }

    pub fn new(entries: impl IntoIterator<Item = (String, String)>) -> Self {
        let mut phrases: Vec<(Vec<String>, String)> = entries
            .into_iter()
            .map(|(phrase, id)| (words(&fold(&phrase)).map(str::to_string).collect(), id))
            .filter(|(w, _): &(Vec<String>, String)| !w.is_empty())
            .collect();
        phrases.sort_by_key(|p| std::cmp::Reverse(p.0.len()));
        Self { phrases }
    }

    fn find(&self, words: &[&str]) -> Option<String> {
        self.phrases.iter().find_map(|(phrase, id)| {
            words
                .windows(phrase.len())
                .any(|w| w.iter().zip(phrase).all(|(a, b)| a == b || plural_of(a, b)))
                .then(|| id.clone())
        })
    }
}

/// "bottles" matches "bottle", "mochilas" matches "mochila".
fn plural_of(word: &str, singular: &str) -> bool {
    word.len() > singular.len()
        && word.starts_with(singular)
        && matches!(&word[singular.len()..], "s" | "es")
}

enum NumberWord {
    Unit(u64),
    Teen(u64),
    Tens(u64),
    Compound(u64),
    Hundred,
}

fn number_word(w: &str) -> Option<NumberWord> {
    use NumberWord::*;
    let unit = |v| Some(Unit(v));
    match w {
        "zero" | "cero" => unit(0),
        "one" | "uno" | "una" | "um" | "uma" => unit(1),
        "two" | "dos" | "due" | "dois" | "duas" => unit(2),
        "three" | "tres" | "tre" => unit(3),
        "four" | "cuatro" | "quattro" | "quatro" => unit(4),
        "five" | "cinco" | "cinque" => unit(5),
        "six" | "seis" | "sei" => unit(6),
        "seven" | "siete" | "sette" | "sete" => unit(7),
        "eight" | "ocho" | "otto" | "oito" => unit(8),
        "nine" | "nueve" | "nove" => unit(9),
        "ten" | "diez" | "dieci" | "dez" => Some(Teen(10)),
        "eleven" | "once" | "undici" | "onze" => Some(Teen(11)),
        "twelve" | "doce" | "dodici" | "doze" => Some(Teen(12)),
        "thirteen" | "trece" | "tredici" | "treze" => Some(Teen(13)),
        "fourteen" | "catorce" | "quattordici" | "catorze" | "quatorze" => Some(Teen(14)),
        "fifteen" | "quince" | "quindici" | "quinze" => Some(Teen(15)),
        "sixteen" | "dieciseis" | "sedici" | "dezesseis" | "dezasseis" => Some(Teen(16)),
        "seventeen" | "diecisiete" | "diciassette" | "dezessete" | "dezassete" => Some(Teen(17)),
        "eighteen" | "dieciocho" | "diciotto" | "dezoito" => Some(Teen(18)),
        "nineteen" | "diecinueve" | "diciannove" | "dezenove" | "dezanove" => Some(Teen(19)),
        "hundred" | "cien" | "ciento" | "cento" | "cem" => Some(Hundred),
        _ => tens(w).map(Tens).or_else(|| compound(w).map(Compound)),
    }
}

fn tens(w: &str) -> Option<u64> {
    Some(match w {
        "twenty" | "veinte" | "venti" | "vinte" => 20,
        "thirty" | "treinta" | "trenta" | "trinta" => 30,
        "forty" | "cuarenta" | "quaranta" | "quarenta" => 40,
        "fifty" | "cincuenta" | "cinquanta" | "cinquenta" => 50,
        "sixty" | "sesenta" | "sessanta" | "sessenta" => 60,
        "seventy" | "setenta" | "settanta" => 70,
        "eighty" | "ochenta" | "ottanta" | "oitenta" => 80,
        "ninety" | "noventa" | "novanta" => 90,
        _ => return None,
    })
}

/// Spanish "veintidos" and Italian "quarantadue", "ventotto".
fn compound(w: &str) -> Option<u64> {
    const PREFIXES: [(&str, u64); 17] = [
        ("veinti", 20),
        ("venti", 20),
        ("vent", 20),
        ("trenta", 30),
        ("trent", 30),
        ("quaranta", 40),
        ("quarant", 40),
        ("cinquanta", 50),
        ("cinquant", 50),
        ("sessanta", 60),
        ("sessant", 60),
        ("settanta", 70),
        ("settant", 70),
        ("ottanta", 80),
        ("ottant", 80),
        ("novanta", 90),
        ("novant", 90),
    ];
    PREFIXES.iter().find_map(|(prefix, tens)| {
        let rest = w.strip_prefix(prefix)?;
        match number_word(rest)? {
            NumberWord::Unit(u) if u > 0 => Some(tens + u),
            _ => None,
        }
    })
}

/// A token after spelled numbers were read: a number (with the digits as
/// said, so "one eight four two" keeps its four digits) or a word.
#[derive(Debug, Clone, PartialEq)]
enum Token<'a> {
    Word(&'a str),
    Number {
        digits: String,
        groups: usize,
        /// "un", "una", "um", "uma" alone: an article, or "one".
        article: bool,
    },
}

/// Reads runs of number words and digit groups into numbers. Groups said in
/// a row are concatenated ("eighteen forty two" → 1842) because that is how
/// people read out order numbers; a single group keeps its value ("forty
/// two" → 42); "hundred" multiplies ("four hundred twelve" → 412).
fn tokens<'a>(ws: &[&'a str]) -> Vec<Token<'a>> {
    let mut out = Vec::new();
    let mut groups: Vec<u64> = Vec::new();
    let mut digit_groups: Vec<String> = Vec::new();
    let mut open_tens: Option<u64> = None;
    let mut hundreds: Option<u64> = None;
    let mut run: Vec<&'a str> = Vec::new();
    let flush = |run: &mut Vec<&'a str>,
                 groups: &mut Vec<u64>,
                 digit_groups: &mut Vec<String>,
                 open_tens: &mut Option<u64>,
                 hundreds: &mut Option<u64>,
                 out: &mut Vec<Token<'a>>| {
        if let Some(t) = open_tens.take() {
            groups.push(t);
        }
        if let Some(h) = hundreds.take() {
            let rest: u64 = groups.drain(..).sum();
            digit_groups.push((h + rest).to_string());
        } else {
            digit_groups.extend(groups.drain(..).map(|g| g.to_string()));
        }
        if !digit_groups.is_empty() {
            out.push(Token::Number {
                digits: digit_groups.concat(),
                groups: digit_groups.len(),
                article: matches!(run[..], ["un" | "una" | "uno" | "um" | "uma"]),
            });
            digit_groups.clear();
        }
        run.clear();
    };
    for (i, &w) in ws.iter().enumerate() {
        let is_connector = matches!(w, "y" | "e" | "and")
            && open_tens.is_some()
            && ws
                .get(i + 1)
                .is_some_and(|n| matches!(number_word(n), Some(NumberWord::Unit(_))));
        if is_connector {
            continue;
        }
        if w.len() <= 10 && w.bytes().all(|b| b.is_ascii_digit()) {
            run.push(w);
            if let Some(t) = open_tens.take() {
                groups.push(t);
            }
            if hundreds.is_some() {
                flush(
                    &mut run,
                    &mut groups,
                    &mut digit_groups,
                    &mut open_tens,
                    &mut hundreds,
                    &mut out,
                );
            }
            digit_groups.extend(groups.drain(..).map(|g| g.to_string()));
            digit_groups.push(w.to_string());
            continue;
        }
        let word = number_word(w);
        if word.is_some() {
            run.push(w);
        }
        match word {
            Some(NumberWord::Unit(u)) => match open_tens.take() {
                Some(t) if u > 0 => groups.push(t + u),
                Some(t) => {
                    groups.push(t);
                    groups.push(u);
                }
                None => groups.push(u),
            },
            Some(NumberWord::Teen(v)) | Some(NumberWord::Compound(v)) => {
                if let Some(t) = open_tens.take() {
                    groups.push(t);
                }
                groups.push(v);
            }
            Some(NumberWord::Tens(t)) => {
                if let Some(prev) = open_tens.replace(t) {
                    groups.push(prev);
                }
            }
            Some(NumberWord::Hundred) => {
                if let Some(t) = open_tens.take() {
                    groups.push(t);
                }
                let base = groups.pop().unwrap_or(1);
                digit_groups.extend(groups.drain(..).map(|g| g.to_string()));
                hundreds = Some(base * 100);
            }
            None => {
                flush(
                    &mut run,
                    &mut groups,
                    &mut digit_groups,
                    &mut open_tens,
                    &mut hundreds,
                    &mut out,
                );
                out.push(Token::Word(w));
            }
        }
    }
    flush(
        &mut run,
        &mut groups,
        &mut digit_groups,
        &mut open_tens,
        &mut hundreds,
        &mut out,
    );
    out
}

const ORDER_CUES: &[&str] = &[
    "order",
    "pedido",
    "ordine",
    "encomenda",
    "number",
    "numero",
    "n",
    "no",
    "nr",
    "num",
];
const SIZE_CUES: &[&str] = &[
    "size", "talla", "taglia", "tamanho", "numero", "number", "n",
];

fn weekday(w: &str) -> Option<u8> {
    Some(match w {
        "monday" | "lunes" | "lunedi" | "segunda" => 0,
        "tuesday" | "martes" | "martedi" | "terca" => 1,
        "wednesday" | "miercoles" | "mercoledi" | "quarta" => 2,
        "thursday" | "jueves" | "giovedi" | "quinta" => 3,
        "friday" | "viernes" | "venerdi" | "sexta" => 4,
        "saturday" | "sabado" | "sabato" => 5,
        "sunday" | "domingo" | "domenica" => 6,
        _ => return None,
    })
}

/// The day a message names. "Today" gives way to any other day named in
/// the same message ("if I order today, will it arrive Friday").
fn date(ws: &[&str]) -> Option<DateRef> {
    let mut today = None;
    for i in 0..ws.len() {
        match date_at(ws, i) {
            Some(DateRef::InDays(0)) => today = Some(DateRef::InDays(0)),
            Some(d) => return Some(d),
            None => {}
        }
    }
    today
}

fn date_at(ws: &[&str], i: usize) -> Option<DateRef> {
    {
        let w = ws[i];
        let next = ws.get(i + 1).copied().unwrap_or("");
        let prev = if i > 0 { ws[i - 1] } else { "" };
        if let Some(d) = weekday(w) {
            // "quarta" and "quinta" are also ordinals in Portuguese; count
            // them as days only as "quarta-feira" or after "na"/"de".
            if matches!(w, "segunda" | "terca" | "quarta" | "quinta" | "sexta")
                && next != "feira"
                && !matches!(prev, "na" | "de" | "ate" | "para" | "a")
            {
                return None;
            }
            return Some(DateRef::Weekday(d));
        }
        match (w, next) {
            ("day", "after") | ("pasado", "manana") | ("depois", "de") => {
                return Some(DateRef::InDays(2))
            }
            ("dopodomani", _) => return Some(DateRef::InDays(2)),
            _ => {}
        }
        match w {
            "tomorrow" | "domani" | "amanha" => return Some(DateRef::InDays(1)),
            // "mañana" is also "morning" ("por la mañana", "de mañana").
            "manana" if !matches!(prev, "la" | "de" | "esta" | "pasado") => {
                return Some(DateRef::InDays(1))
            }
            "today" | "hoy" | "oggi" | "hoje" => return Some(DateRef::InDays(0)),
            _ => {}
        }
        let ordinal = w
            .strip_suffix("th")
            .or_else(|| w.strip_suffix("st"))
            .or_else(|| w.strip_suffix("nd"))
            .or_else(|| w.strip_suffix("rd"))
            .or_else(|| w.strip_suffix("o"));
        let day_cue = matches!(prev, "the" | "el" | "il" | "dia" | "on" | "giorno" | "day");
        let n = ordinal
            .and_then(|d| d.parse::<u8>().ok())
            .or_else(|| day_cue.then(|| w.parse::<u8>().ok()).flatten());
        if let Some(d) = n.filter(|d| (1..=31).contains(d)) {
            if day_cue || ordinal.is_some_and(|o| o.len() < w.len()) {
                return Some(DateRef::DayOfMonth(d));
            }
        }
    }
    None
}

static STREET_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b((?:calle|avenida|av\.|paseo|plaza|via|viale|corso|piazza|largo|rua|travessa|praça|praca|alameda|estrada)\s+[^,.;!?\d]+?,?\s*\d+[a-z]?)\b",
    )
    .expect("street pattern")
});

static NUMBER_FIRST: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(\d+[a-z]?\s+(?:[\p{L}'-]+\s+){0,3}(?:street|st|road|rd|avenue|ave|lane|ln|drive|dr|way|square|place|close|court|crescent|terrace))\b",
    )
    .expect("street pattern")
});

fn address(text: &str) -> Option<String> {
    STREET_FIRST
        .captures(text)
        .or_else(|| NUMBER_FIRST.captures(text))
        .map(|c| c[1].trim().to_string())
}

/// Extracts every slot the text states. `text` is the message as written
/// (the address keeps its case); the rest works on the folded form.
pub fn extract(text: &str, folded: &str, lexicon: &Lexicon) -> Slots {
    let ws: Vec<&str> = words(folded).collect();
    let toks = tokens(&ws);
    let address = address(text);
    let mut slots = Slots {
        product: lexicon.find(&ws),
        date: date(&ws),
        ..Slots::default()
    };
    let address_digits: Vec<String> = address
        .as_deref()
        .map(|a| {
            a.split(|c: char| !c.is_ascii_digit())
                .filter(|d| !d.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    for (i, t) in toks.iter().enumerate() {
        let Token::Number {
            digits,
            groups,
            article,
        } = t
        else {
            continue;
        };
        let prev: Vec<&str> = toks[i.saturating_sub(3)..i]
            .iter()
            .filter_map(|t| match t {
                Token::Word(w) => Some(*w),
                Token::Number { .. } => None,
            })
            .collect();
        let last = prev.last().copied().unwrap_or("");
        let cued = prev.iter().any(|w| ORDER_CUES.contains(w));
        let in_address = address_digits.contains(digits);
        if slots.order.is_none()
            && !in_address
            && (digits.len() >= 4 || (digits.len() == 3 && cued))
            && digits.len() <= 10
        {
            slots.order = Some(digits.clone());
            continue;
        }
        let is_day = matches!(slots.date, Some(DateRef::DayOfMonth(d)) if d.to_string() == *digits);
        // "una lámpara" is one lamp, "una persona" is not a quantity: an
        // article counts only next to a product.
        if slots.quantity.is_none()
            && *groups == 1
            && (!article || slots.product.is_some())
            && !SIZE_CUES.contains(&last)
            && !in_address
            && !is_day
        {
            if let Ok(q) = digits.parse::<u32>() {
                if (1..=99).contains(&q) {
                    slots.quantity = Some(q);
                }
            }
        }
    }
    if let Some(a) = address {
        slots.address = Some(a);
    }
    slots
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(text: &str) -> Slots {
        let lexicon = Lexicon::new([
            ("backpack".to_string(), "backpack".to_string()),
            ("blue backpack".to_string(), "backpack-blue".to_string()),
            ("mochila azul".to_string(), "backpack-blue".to_string()),
            ("water bottle".to_string(), "bottle".to_string()),
            ("botella de agua".to_string(), "bottle".to_string()),
        ]);
        extract(text, &fold(text), &lexicon)
    }

    #[test]
    fn order_numbers_in_digits_and_words() {
        assert_eq!(
            slots("Where is my order 1842?").order.as_deref(),
            Some("1842")
        );
        assert_eq!(
            slots("where is order eighteen forty two").order.as_deref(),
            Some("1842")
        );
        assert_eq!(
            slots("pedido uno ocho cuatro dos").order.as_deref(),
            Some("1842")
        );
        assert_eq!(
            slots("ordine diciotto quarantadue").order.as_deref(),
            Some("1842")
        );
        assert_eq!(
            slots("pedido dezoito quarenta e dois").order.as_deref(),
            Some("1842")
        );
        assert_eq!(slots("order 18 42 please").order.as_deref(), Some("1842"));
        assert_eq!(slots("order number 512").order.as_deref(), Some("512"));
        assert_eq!(slots("shoes in size 42").order, None);
    }

    #[test]
    fn quantities_are_small_single_numbers() {
        assert_eq!(slots("Add two of those to my cart").quantity, Some(2));
        assert_eq!(slots("añade 3 botellas").quantity, Some(3));
        assert_eq!(slots("running shoes in size 42").quantity, None);
        assert_eq!(slots("aggiungi ventidue borracce").quantity, Some(22));
        assert_eq!(slots("quero falar com uma pessoa").quantity, None);
        assert_eq!(slots("añade una botella de agua").quantity, Some(1));
        assert_eq!(slots("add one bottle").quantity, Some(1));
    }

    #[test]
    fn dates() {
        assert_eq!(
            slots("deliver it on Saturday instead").date,
            Some(DateRef::Weekday(5))
        );
        assert_eq!(
            slots("me lo entregan el sábado").date,
            Some(DateRef::Weekday(5))
        );
        assert_eq!(
            slots("podem entregar na sexta-feira").date,
            Some(DateRef::Weekday(4))
        );
        assert_eq!(slots("quinta coisa").date, None);
        assert_eq!(
            slots("can it arrive tomorrow").date,
            Some(DateRef::InDays(1))
        );
        assert_eq!(slots("buenos días, por la mañana").date, None);
        assert_eq!(
            slots("move it to the 14th").date,
            Some(DateRef::DayOfMonth(14))
        );
        assert_eq!(slots("consegna dopodomani").date, Some(DateRef::InDays(2)));
    }

    #[test]
    fn products_prefer_the_longest_name_and_accept_plurals() {
        assert_eq!(
            slots("How much is the blue backpack?").product.as_deref(),
            Some("backpack-blue")
        );
        assert_eq!(
            slots("do you have backpacks").product.as_deref(),
            Some("backpack")
        );
        assert_eq!(
            slots("¿Cuánto cuesta la mochila azul?").product.as_deref(),
            Some("backpack-blue")
        );
        assert_eq!(
            slots("add 2 water bottles").product.as_deref(),
            Some("bottle")
        );
    }

    #[test]
    fn addresses_keep_their_case_and_number() {
        let s = slots("change the address of order 1842 to 22 Baker Street please");
        assert_eq!(s.address.as_deref(), Some("22 Baker Street"));
        assert_eq!(s.order.as_deref(), Some("1842"));
        let s = slots("envía el pedido a Calle Mayor 12, gracias");
        assert_eq!(s.address.as_deref(), Some("Calle Mayor 12"));
        assert_eq!(s.quantity, None);
        let s = slots("manda para Rua Augusta 100");
        assert_eq!(s.address.as_deref(), Some("Rua Augusta 100"));
        assert_eq!(s.order, None);
    }
}
