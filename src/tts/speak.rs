//! Reply text made speakable: prices, times, dates, order numbers,
//! percentages and plain numbers become words in the reply's language, so
//! every provider reads them the same way ("order 1842" → "order eighteen
//! forty-two"; "€12.50" → "twelve euros fifty", "doce euros con
//! cincuenta"), and formatting a voice cannot read (Markdown marks, URLs'
//! schemes) is removed.
//!
//! The passes run from the most specific pattern to the least, and each
//! turns its digits into words, so a later pass never sees them again.

use std::sync::LazyLock;

use regex::{Captures, Regex};

use super::numbers::{
    cardinal, cardinal_before_noun, cardinal_feminine, digits_as_spoken, english_ordinal,
    one_by_one, year,
};
use super::Language;

/// `text` with its numbers and symbols spelled out for a voice.
pub fn speakable(text: &str, language: Language) -> String {
    let text = MARKDOWN.replace_all(text, "");
    let text = EMAIL.replace_all(&text, |c: &Captures| email(c, language));
    let text = URL.replace_all(&text, |c: &Captures| url(c, language));
    let text = PRICE_BEFORE.replace_all(&text, |c: &Captures| price(&c[1], &c[2], language));
    let text = PRICE_AFTER.replace_all(&text, |c: &Captures| price(&c[2], &c[1], language));
    let text = PERCENT.replace_all(&text, |c: &Captures| percent(&c[1], language));
    let text = ORDER.replace_all(&text, |c: &Captures| {
        format!("{} {}", &c[1], digits_as_spoken(&c[2], language))
    });
    let text = HASH_NUMBER.replace_all(&text, |c: &Captures| digits_as_spoken(&c[1], language));
    let text = ISO_DATE.replace_all(&text, |c: &Captures| {
        let (y, m, d) = (num(&c[1]), num(&c[2]), num(&c[3]));
        date(d, m, Some(y), language).unwrap_or_else(|| c[0].to_string())
    });
    let text = SLASH_DATE.replace_all(&text, |c: &Captures| {
        let (a, b) = (num(&c[1]), num(&c[2]));
        let y = c.get(3).map(|y| num(y.as_str()));
        // English replies may be American (month first) unless the first
        // part cannot be a month.
        let (d, m) = if language == Language::En && a <= 12 {
            (b, a)
        } else {
            (a, b)
        };
        date(d, m, y, language).unwrap_or_else(|| c[0].to_string())
    });
    let clock = match language {
        Language::Fr => &*FRENCH_TIME,
        _ => &*TIME,
    };
    let text = clock.replace_all(&text, |c: &Captures| {
        let minutes = c.get(2).map_or(0, |m| num(m.as_str()));
        time(num(&c[1]), minutes, language)
    });
    let text = ENGLISH_ORDINAL.replace_all(&text, |c: &Captures| match language {
        Language::En => english_ordinal(num(&c[1])),
        _ => c[0].to_string(),
    });
    let text = PHONE.replace_all(&text, |c: &Captures| one_by_one(&c[0], language));
    let text = NUMBER.replace_all(&text, |c: &Captures| number(&c[0], language));
    SPACES.replace_all(text.trim(), " ").into_owned()
}

static MARKDOWN: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?m)\*\*|__|`|^\s*#{1,6}\s+|^\s*[-*•]\s+").unwrap());
static EMAIL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b").unwrap());
static URL: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?:https?://|\bwww\.)((?:www\.)?[\w-]+(?:\.[\w-]+)+)(/[\w./?=&%#-]*[\w/])?")
        .unwrap()
});
/// A price with the symbol first: "€12.50", "$ 3.99", "R$ 10,90", "US$5".
static PRICE_BEFORE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(US\$|R\$|\$|€|£)\s?(\d[\d.,]*\d|\d)").unwrap());
/// A price with the symbol after: "12,50 €", "3.99$".
static PRICE_AFTER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(\d[\d.,]*\d|\d)\s?(€|\$|£)").unwrap());
static PERCENT: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"(\d[\d.,]*\d|\d)\s?%").unwrap());
/// "order 1842", "order #1842", "pedido nº 1842", "commande n° 1842".
static ORDER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i)\b(orders?|orden|pedidos?|ordine|ordini|encomendas?|commandes?|tracking)\s+(?:(?:number|número|numero|numéro|no\.?|nº|n°|n\.|nr\.?)\s*)?#?\s*(\d{1,12})\b",
    )
    .unwrap()
});
static HASH_NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"#(\d{1,12})\b").unwrap());
static ISO_DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{4})-(\d{2})-(\d{2})\b").unwrap());
static SLASH_DATE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{1,2})/(\d{1,2})(?:/(\d{4}))?\b").unwrap());
/// "14:30", "9:05".
static TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([01]?\d|2[0-3]):([0-5]\d)\b").unwrap());
/// French also writes "14h30" and "9h".
static FRENCH_TIME: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b([01]?\d|2[0-3])[:h]([0-5]\d)?\b").unwrap());
static ENGLISH_ORDINAL: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(\d{1,4})(?:st|nd|rd|th)\b").unwrap());
/// An international phone number: "+34 600 123 456", "+1-555-0100".
static PHONE: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\+\d{1,3}(?:[ -]?\d{2,4}){2,5}\b").unwrap());
/// A number with optional separators, or a phone number with a plus.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"\+?\d[\d.,]*\d|\d").unwrap());
static SPACES: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"[ \t]{2,}").unwrap());

fn num(digits: &str) -> u64 {
    digits.parse().unwrap_or(0)
}

/// Splits "1,842.50" or "1.842,50" into whole units and decimal digits. The
/// last separator is the decimal one unless it is followed by exactly three
/// digits and is the language's thousands separator.
fn split_amount(text: &str, language: Language) -> Option<(u64, Option<String>)> {
    let thousands = if language == Language::En { ',' } else { '.' };
    let (whole, fraction) = match text.rfind(['.', ',']) {
        Some(at) => {
            let sep = text[at..].chars().next()?;
            let after = &text[at + 1..];
            if after.len() == 3 && sep == thousands {
                (text.to_string(), None)
            } else {
                (text[..at].to_string(), Some(after.to_string()))
            }
        }
        None => (text.to_string(), None),
    };
    let whole: String = whole.chars().filter(char::is_ascii_digit).collect();
    Some((whole.parse().ok()?, fraction))
}

fn number(text: &str, language: Language) -> String {
    let digits: String = text.chars().filter(char::is_ascii_digit).collect();
    // Phone numbers and long identifiers are read digit by digit.
    if text.starts_with('+') || (digits.len() >= 7 && !text.contains(['.', ','])) {
        return digits_as_spoken(&digits, language);
    }
    let Some((whole, fraction)) = split_amount(text, language) else {
        return text.to_string();
    };
    let mut words = cardinal(whole, language);
    if let Some(fraction) = fraction {
        let point = match language {
            Language::En => "point",
            Language::Es => "coma",
            Language::It => "virgola",
            Language::Pt => "vírgula",
            Language::Fr => "virgule",
        };
        let fraction = if language == Language::En || fraction.starts_with('0') {
            fraction
                .chars()
                .filter_map(|c| c.to_digit(10))
                .map(|d| cardinal(u64::from(d), language))
                .collect::<Vec<_>>()
                .join(" ")
        } else {
            cardinal(num(&fraction), language)
        };
        words = format!("{words} {point} {fraction}");
    }
    words
}

fn price(symbol: &str, amount: &str, language: Language) -> String {
    let Some((units, fraction)) = split_amount(amount, language) else {
        return format!("{symbol}{amount}");
    };
    let cents = fraction.map_or(0, |f| {
        let mut f: String = f.chars().take(2).collect();
        while f.len() < 2 {
            f.push('0');
        }
        num(&f)
    });
    let (one, many, cent, cents_word) = currency(symbol, language);
    let unit_word = if units == 1 { one } else { many };
    let units_text = format!("{} {unit_word}", cardinal_before_noun(units, language));
    if cents == 0 {
        return units_text;
    }
    let cents_text = cardinal(cents, language);
    if units == 0 {
        let word = if cents == 1 { cent } else { cents_word };
        return format!("{} {word}", cardinal_before_noun(cents, language));
    }
    match language {
        Language::En if cents < 10 => format!("{units_text} and {cents_text} {cents_word}"),
        Language::En | Language::Fr => format!("{units_text} {cents_text}"),
        Language::Es => format!("{units_text} con {cents_text}"),
        Language::It | Language::Pt => format!("{units_text} e {cents_text}"),
    }
}

/// Singular, plural, and the hundredth in singular and plural.
fn currency(
    symbol: &str,
    language: Language,
) -> (&'static str, &'static str, &'static str, &'static str) {
    use Language::*;
    match (symbol, language) {
        ("€", En) => ("euro", "euros", "cent", "cents"),
        ("€", Es) => ("euro", "euros", "céntimo", "céntimos"),
        ("€", It) => ("euro", "euro", "centesimo", "centesimi"),
        ("€", Pt) => ("euro", "euros", "cêntimo", "cêntimos"),
        ("€", Fr) => ("euro", "euros", "centime", "centimes"),
        ("£", En) => ("pound", "pounds", "penny", "pence"),
        ("£", Es | Pt) => ("libra", "libras", "penique", "peniques"),
        ("£", It) => ("sterlina", "sterline", "penny", "pence"),
        ("£", Fr) => ("livre", "livres", "penny", "pence"),
        ("R$", En) => ("real", "reais", "centavo", "centavos"),
        ("R$", _) => ("real", "reais", "centavo", "centavos"),
        (_, En) => ("dollar", "dollars", "cent", "cents"),
        (_, Es) => ("dólar", "dólares", "centavo", "centavos"),
        (_, It) => ("dollaro", "dollari", "centesimo", "centesimi"),
        (_, Pt) => ("dólar", "dólares", "centavo", "centavos"),
        (_, Fr) => ("dollar", "dollars", "cent", "cents"),
    }
}

fn percent(amount: &str, language: Language) -> String {
    let words = number(amount, language);
    let suffix = match language {
        Language::En => "percent",
        Language::Es => "por ciento",
        Language::It => "per cento",
        Language::Pt => "por cento",
        Language::Fr => "pour cent",
    };
    format!("{words} {suffix}")
}

fn time(hours: u64, minutes: u64, language: Language) -> String {
    match language {
        Language::En => {
            let suffix = if hours < 12 { "AM" } else { "PM" };
            let h = match hours % 12 {
                0 => 12,
                h => h,
            };
            match minutes {
                0 => format!("{} {suffix}", cardinal(h, language)),
                1..=9 => format!(
                    "{} oh {} {suffix}",
                    cardinal(h, language),
                    cardinal(minutes, language)
                ),
                m => format!(
                    "{} {} {suffix}",
                    cardinal(h, language),
                    cardinal(m, language)
                ),
            }
        }
        Language::Es | Language::Pt => {
            let h = cardinal_feminine(hours, language);
            match (minutes, language) {
                (0, Language::Es) => format!("{h} en punto"),
                (0, _) => format!("{h} horas"),
                (m, Language::Es) => format!("{h} y {}", cardinal(m, language)),
                (m, _) => format!("{h} e {}", cardinal(m, language)),
            }
        }
        Language::It => match minutes {
            0 => cardinal(hours, language),
            m => format!("{} e {}", cardinal(hours, language), cardinal(m, language)),
        },
        Language::Fr => {
            let h = cardinal_feminine(hours, language);
            let heures = if hours == 1 { "heure" } else { "heures" };
            match minutes {
                0 => format!("{h} {heures}"),
                m => format!("{h} {heures} {}", cardinal(m, language)),
            }
        }
    }
}

fn date(day: u64, month: u64, y: Option<u64>, language: Language) -> Option<String> {
    if !(1..=31).contains(&day) || !(1..=12).contains(&month) {
        return None;
    }
    let name = month_name(month, language);
    let day_words = match (language, day) {
        (Language::En, d) => english_ordinal(d),
        (Language::It, 1) => "primo".into(),
        (Language::Pt, 1) => "primeiro".into(),
        (Language::Fr, 1) => "premier".into(),
        (_, d) => cardinal(d, language),
    };
    let year_words = y.map(|y| year(y, language));
    Some(match (language, year_words) {
        (Language::En, Some(y)) => format!("{name} {day_words}, {y}"),
        (Language::En, None) => format!("{name} {day_words}"),
        (Language::Es | Language::Pt, Some(y)) => format!("{day_words} de {name} de {y}"),
        (Language::Es | Language::Pt, None) => format!("{day_words} de {name}"),
        (_, Some(y)) => format!("{day_words} {name} {y}"),
        (_, None) => format!("{day_words} {name}"),
    })
}

fn month_name(month: u64, language: Language) -> &'static str {
    const EN: [&str; 12] = [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ];
    const ES: [&str; 12] = [
        "enero",
        "febrero",
        "marzo",
        "abril",
        "mayo",
        "junio",
        "julio",
        "agosto",
        "septiembre",
        "octubre",
        "noviembre",
        "diciembre",
    ];
    const IT: [&str; 12] = [
        "gennaio",
        "febbraio",
        "marzo",
        "aprile",
        "maggio",
        "giugno",
        "luglio",
        "agosto",
        "settembre",
        "ottobre",
        "novembre",
        "dicembre",
    ];
    const PT: [&str; 12] = [
        "janeiro",
        "fevereiro",
        "março",
        "abril",
        "maio",
        "junho",
        "julho",
        "agosto",
        "setembro",
        "outubro",
        "novembro",
        "dezembro",
    ];
    const FR: [&str; 12] = [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ];
    let names = match language {
        Language::En => &EN,
        Language::Es => &ES,
        Language::It => &IT,
        Language::Pt => &PT,
        Language::Fr => &FR,
    };
    names[(month as usize - 1).min(11)]
}

fn email(c: &Captures, language: Language) -> String {
    let (at, dot) = match language {
        Language::En => ("at", "dot"),
        Language::Es => ("arroba", "punto"),
        Language::It => ("chiocciola", "punto"),
        Language::Pt => ("arroba", "ponto"),
        Language::Fr => ("arobase", "point"),
    };
    let spell = |s: &str| s.replace('.', &format!(" {dot} "));
    format!("{} {at} {}", spell(&c[1]), spell(&c[2]))
}

fn url(c: &Captures, language: Language) -> String {
    let (dot, slash) = match language {
        Language::En => ("dot", "slash"),
        Language::Es => ("punto", "barra"),
        Language::It => ("punto", "barra"),
        Language::Pt => ("ponto", "barra"),
        Language::Fr => ("point", "slash"),
    };
    let host = c[1]
        .trim_start_matches("www.")
        .replace('.', &format!(" {dot} "));
    let path = c.get(2).map_or(String::new(), |p| {
        p.as_str()
            .split('/')
            .filter(|s| !s.is_empty())
            .map(|s| s.replace('.', &format!(" {dot} ")))
            .collect::<Vec<_>>()
            .join(&format!(" {slash} "))
    });
    if path.is_empty() {
        host
    } else {
        format!("{host} {slash} {path}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Language::*;

    #[test]
    fn english() {
        assert_eq!(
            speakable("Your order 1842 costs $3.99 and ships at 14:30.", En),
            "Your order eighteen forty-two costs three dollars ninety-nine and ships at two thirty PM."
        );
        assert_eq!(speakable("€12.50", En), "twelve euros fifty");
        assert_eq!(
            speakable("It's £1.05.", En),
            "It's one pound and five pence."
        );
        assert_eq!(
            speakable("Order #1805 arrives 2026-11-24.", En),
            "Order eighteen oh five arrives November twenty-fourth, twenty twenty-six."
        );
        assert_eq!(
            speakable("Save 15% on 1,250 items, 1.5 kg each.", En),
            "Save fifteen percent on one thousand two hundred fifty items, one point five kg each."
        );
        assert_eq!(
            speakable("Call +34 600 123 456 at 9:05.", En),
            "Call three four six zero zero one two three four five six at nine oh five AM."
        );
        assert_eq!(
            speakable("the 3rd of May, **today**", En),
            "the third of May, today"
        );
        assert_eq!(
            speakable(
                "Write help@shop.example.com or see https://shop.example.com/faq.",
                En
            ),
            "Write help at shop dot example dot com or see shop dot example dot com slash faq."
        );
        assert_eq!(speakable("50 cents: $0.50", En), "fifty cents: fifty cents");
    }

    #[test]
    fn spanish() {
        assert_eq!(
            speakable("Su pedido 1842 cuesta 12,50 € y llega el 24/11 a las 14:30.", Es),
            "Su pedido dieciocho cuarenta y dos cuesta doce euros con cincuenta y llega el veinticuatro de noviembre a las catorce y treinta."
        );
        assert_eq!(speakable("€21", Es), "veintiún euros");
        assert_eq!(speakable("$1", Es), "un dólar");
        assert_eq!(speakable("a la 1:00", Es), "a la una en punto");
        assert_eq!(
            speakable("1.500 unidades, 2,5 kg", Es),
            "mil quinientos unidades, dos coma cinco kg"
        );
    }

    #[test]
    fn italian() {
        assert_eq!(
            speakable("L'ordine n. 1842 costa €12,50, consegna il 2026-11-24 alle 14:30.", It),
            "L'ordine diciotto quarantadue costa dodici euro e cinquanta, consegna il ventiquattro novembre duemilaventisei alle quattordici e trenta."
        );
        assert_eq!(speakable("€1", It), "un euro");
    }

    #[test]
    fn portuguese() {
        assert_eq!(
            speakable("A encomenda 1842 custa R$ 3,99 e chega às 14:30 do dia 01/12.", Pt),
            "A encomenda dezoito quarenta e dois custa três reais e noventa e nove e chega às catorze e trinta do dia primeiro de dezembro."
        );
        assert_eq!(speakable("às 2:00", Pt), "às duas horas");
    }

    #[test]
    fn french() {
        assert_eq!(
            speakable("Votre commande n° 1842 coûte 12,50 € et arrive à 14h30.", Fr),
            "Votre commande dix-huit quarante-deux coûte douze euros cinquante et arrive à quatorze heures trente."
        );
        assert_eq!(
            speakable("à 1h, 80 %", Fr),
            "à une heure, quatre-vingts pour cent"
        );
    }
}
