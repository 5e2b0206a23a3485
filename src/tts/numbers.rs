//! Numbers as words in each reply language: cardinals, English ordinals,
//! years, and order numbers read the way people say them.

use super::Language;

/// `n` as a cardinal number ("one thousand eight hundred forty-two",
/// "mil ochocientos cuarenta y dos").
pub fn cardinal(n: u64, language: Language) -> String {
    match language {
        Language::En => english(n),
        Language::Es => spanish(n),
        Language::It => italian(n),
        Language::Pt => portuguese(n),
        Language::Fr => french(n),
    }
}

/// The cardinal used before a masculine noun: Spanish "un euro", "veintiún
/// euros"; the other languages already say "un"/"um"/"one".
pub fn cardinal_before_noun(n: u64, language: Language) -> String {
    let words = cardinal(n, language);
    match language {
        Language::Es if words.ends_with("veintiuno") => format!("{}ún", &words[..words.len() - 3]),
        Language::Es if words == "uno" || words.ends_with(" uno") => {
            format!("{}un", &words[..words.len() - 3])
        }
        Language::It if words == "uno" => "un".into(),
        _ => words,
    }
}

/// The cardinal for a feminine noun (hours in Spanish and Portuguese: "la
/// una", "às duas").
pub fn cardinal_feminine(n: u64, language: Language) -> String {
    let words = cardinal(n, language);
    match language {
        Language::Es if words.ends_with("uno") => format!("{}una", &words[..words.len() - 3]),
        Language::Pt if words == "um" || words.ends_with(" um") => {
            format!("{}uma", &words[..words.len() - 2])
        }
        Language::Pt if words == "dois" || words.ends_with(" dois") => {
            format!("{}duas", &words[..words.len() - 4])
        }
        Language::Fr if words == "un" || words.ends_with(" un") || words.ends_with("-un") => {
            format!("{words}e")
        }
        _ => words,
    }
}

/// A digit string as a speaker reads an identifier: up to three digits as a
/// number, four in two pairs ("eighteen forty-two", "eighteen oh five"),
/// longer ones digit by digit.
pub fn digits_as_spoken(digits: &str, language: Language) -> String {
    let Ok(value) = digits.parse::<u64>() else {
        return one_by_one(digits, language);
    };
    if digits.starts_with('0') && digits.len() > 1 {
        return one_by_one(digits, language);
    }
    match digits.len() {
        1..=3 => cardinal(value, language),
        4 => {
            let (high, low) = (value / 100, value % 100);
            let low = match (low, language) {
                (0, Language::En) => "hundred".to_string(),
                (0, _) => return cardinal(value, language),
                (1..=9, Language::En) => format!("oh {}", english(low)),
                (1..=9, _) => format!("{} {}", cardinal(0, language), cardinal(low, language)),
                _ => cardinal(low, language),
            };
            format!("{} {low}", cardinal(high, language))
        }
        _ => one_by_one(digits, language),
    }
}

/// A year: English "twenty twenty-six", "two thousand five"; the other
/// languages say years as cardinals.
pub fn year(y: u64, language: Language) -> String {
    match language {
        Language::En if (2000..2010).contains(&y) || !(1100..10_000).contains(&y) => english(y),
        Language::En => digits_as_spoken(&y.to_string(), language),
        _ => cardinal(y, language),
    }
}

/// English ordinal ("first", "twenty-fourth").
pub fn english_ordinal(n: u64) -> String {
    let words = english(n);
    let (head, last) = match words.rfind([' ', '-']) {
        Some(at) => words.split_at(at + 1),
        None => ("", words.as_str()),
    };
    let last = match last {
        "one" => "first".to_string(),
        "two" => "second".to_string(),
        "three" => "third".to_string(),
        "five" => "fifth".to_string(),
        "eight" => "eighth".to_string(),
        "nine" => "ninth".to_string(),
        "twelve" => "twelfth".to_string(),
        w if w.ends_with('y') => format!("{}ieth", &w[..w.len() - 1]),
        w => format!("{w}th"),
    };
    format!("{head}{last}")
}

/// Each digit as a word: phone numbers, long identifiers.
pub fn one_by_one(digits: &str, language: Language) -> String {
    digits
        .chars()
        .filter_map(|c| c.to_digit(10))
        .map(|d| cardinal(u64::from(d), language))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Splits `n` into groups of three digits, highest first, with their
/// scale (0 = units, 1 = thousands, 2 = millions, 3 = billions).
fn groups(n: u64) -> Vec<(u64, usize)> {
    let mut out = Vec::new();
    let mut rest = n;
    let mut scale = 0;
    while rest > 0 {
        out.push((rest % 1000, scale));
        rest /= 1000;
        scale += 1;
    }
    out.reverse();
    out
}

fn english(n: u64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "one",
        "two",
        "three",
        "four",
        "five",
        "six",
        "seven",
        "eight",
        "nine",
        "ten",
        "eleven",
        "twelve",
        "thirteen",
        "fourteen",
        "fifteen",
        "sixteen",
        "seventeen",
        "eighteen",
        "nineteen",
    ];
    const TENS: [&str; 10] = [
        "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
    ];
    const SCALES: [&str; 7] = [
        "",
        "thousand",
        "million",
        "billion",
        "trillion",
        "quadrillion",
        "quintillion",
    ];
    fn below_1000(n: u64) -> String {
        let mut parts = Vec::new();
        if n >= 100 {
            parts.push(format!("{} hundred", ONES[(n / 100) as usize]));
        }
        let rest = n % 100;
        if rest >= 20 {
            let tens = TENS[(rest / 10) as usize];
            parts.push(match rest % 10 {
                0 => tens.to_string(),
                u => format!("{tens}-{}", ONES[u as usize]),
            });
        } else if rest > 0 {
            parts.push(ONES[rest as usize].to_string());
        }
        parts.join(" ")
    }
    if n == 0 {
        return ONES[0].into();
    }
    groups(n)
        .into_iter()
        .filter(|&(g, _)| g > 0)
        .map(|(g, scale)| match scale {
            0 => below_1000(g),
            _ => format!("{} {}", below_1000(g), SCALES[scale]),
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn spanish(n: u64) -> String {
    const ONES: [&str; 30] = [
        "cero",
        "uno",
        "dos",
        "tres",
        "cuatro",
        "cinco",
        "seis",
        "siete",
        "ocho",
        "nueve",
        "diez",
        "once",
        "doce",
        "trece",
        "catorce",
        "quince",
        "dieciséis",
        "diecisiete",
        "dieciocho",
        "diecinueve",
        "veinte",
        "veintiuno",
        "veintidós",
        "veintitrés",
        "veinticuatro",
        "veinticinco",
        "veintiséis",
        "veintisiete",
        "veintiocho",
        "veintinueve",
    ];
    const TENS: [&str; 10] = [
        "",
        "",
        "",
        "treinta",
        "cuarenta",
        "cincuenta",
        "sesenta",
        "setenta",
        "ochenta",
        "noventa",
    ];
    const HUNDREDS: [&str; 10] = [
        "",
        "ciento",
        "doscientos",
        "trescientos",
        "cuatrocientos",
        "quinientos",
        "seiscientos",
        "setecientos",
        "ochocientos",
        "novecientos",
    ];
    fn below_1000(n: u64) -> String {
        if n == 100 {
            return "cien".into();
        }
        let mut parts = Vec::new();
        if n >= 100 {
            parts.push(HUNDREDS[(n / 100) as usize].to_string());
        }
        let rest = n % 100;
        if rest >= 30 {
            let tens = TENS[(rest / 10) as usize];
            parts.push(match rest % 10 {
                0 => tens.to_string(),
                u => format!("{tens} y {}", ONES[u as usize]),
            });
        } else if rest > 0 {
            parts.push(ONES[rest as usize].to_string());
        }
        parts.join(" ")
    }
    /// "veintiuno" → "veintiún", "uno" → "un" before "mil" and "millones".
    fn apocope(words: String) -> String {
        if let Some(stem) = words.strip_suffix("veintiuno") {
            format!("{stem}veintiún")
        } else if let Some(stem) = words.strip_suffix("uno") {
            format!("{stem}un")
        } else {
            words
        }
    }
    if n == 0 {
        return ONES[0].into();
    }
    let mut parts = Vec::new();
    for (g, scale) in groups(n) {
        if g == 0 {
            continue;
        }
        parts.push(match scale {
            0 => below_1000(g),
            1 if g == 1 => "mil".into(),
            1 => format!("{} mil", apocope(below_1000(g))),
            2 if g == 1 => "un millón".into(),
            2 => format!("{} millones", apocope(below_1000(g))),
            _ => format!("{} mil millones", apocope(below_1000(g))),
        });
    }
    parts.join(" ")
}

fn italian(n: u64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "uno",
        "due",
        "tre",
        "quattro",
        "cinque",
        "sei",
        "sette",
        "otto",
        "nove",
        "dieci",
        "undici",
        "dodici",
        "tredici",
        "quattordici",
        "quindici",
        "sedici",
        "diciassette",
        "diciotto",
        "diciannove",
    ];
    const TENS: [&str; 10] = [
        "",
        "",
        "venti",
        "trenta",
        "quaranta",
        "cinquanta",
        "sessanta",
        "settanta",
        "ottanta",
        "novanta",
    ];
    fn below_100(n: u64) -> String {
        if n < 20 {
            return ONES[n as usize].into();
        }
        let tens = TENS[(n / 10) as usize];
        match n % 10 {
            0 => tens.into(),
            // The tens lose their vowel before "uno" and "otto": ventuno.
            u @ (1 | 8) => format!("{}{}", &tens[..tens.len() - 1], ONES[u as usize]),
            3 => format!("{tens}tré"),
            u => format!("{tens}{}", ONES[u as usize]),
        }
    }
    fn below_1000(n: u64) -> String {
        let (h, rest) = (n / 100, n % 100);
        let hundreds = match h {
            0 => String::new(),
            1 => "cento".into(),
            h => format!("{}cento", ONES[h as usize]),
        };
        if rest == 0 {
            return hundreds;
        }
        let rest = below_100(rest);
        // "centottanta", "centotto": the o of cento merges with an o.
        if !hundreds.is_empty() && rest.starts_with('o') {
            format!("{}{rest}", &hundreds[..hundreds.len() - 1])
        } else {
            format!("{hundreds}{rest}")
        }
    }
    if n == 0 {
        return ONES[0].into();
    }
    let mut out = String::new();
    for (g, scale) in groups(n) {
        if g == 0 {
            continue;
        }
        let part = match scale {
            0 => below_1000(g),
            1 if g == 1 => "mille".into(),
            1 => format!("{}mila", below_1000(g)),
            2 if g == 1 => "un milione ".into(),
            2 => format!("{} milioni ", below_1000(g)),
            _ if g == 1 => "un miliardo ".into(),
            _ => format!("{} miliardi ", below_1000(g)),
        };
        out.push_str(&part);
    }
    out.trim_end().to_string()
}

fn portuguese(n: u64) -> String {
    const ONES: [&str; 20] = [
        "zero",
        "um",
        "dois",
        "três",
        "quatro",
        "cinco",
        "seis",
        "sete",
        "oito",
        "nove",
        "dez",
        "onze",
        "doze",
        "treze",
        "catorze",
        "quinze",
        "dezesseis",
        "dezessete",
        "dezoito",
        "dezenove",
    ];
    const TENS: [&str; 10] = [
        "",
        "",
        "vinte",
        "trinta",
        "quarenta",
        "cinquenta",
        "sessenta",
        "setenta",
        "oitenta",
        "noventa",
    ];
    const HUNDREDS: [&str; 10] = [
        "",
        "cento",
        "duzentos",
        "trezentos",
        "quatrocentos",
        "quinhentos",
        "seiscentos",
        "setecentos",
        "oitocentos",
        "novecentos",
    ];
    fn below_1000(n: u64) -> String {
        if n == 100 {
            return "cem".into();
        }
        let mut parts = Vec::new();
        if n >= 100 {
            parts.push(HUNDREDS[(n / 100) as usize].to_string());
        }
        let rest = n % 100;
        if rest >= 20 {
            parts.push(TENS[(rest / 10) as usize].to_string());
            if !rest.is_multiple_of(10) {
                parts.push(ONES[(rest % 10) as usize].to_string());
            }
        } else if rest > 0 {
            parts.push(ONES[rest as usize].to_string());
        }
        parts.join(" e ")
    }
    if n == 0 {
        return ONES[0].into();
    }
    let groups: Vec<_> = groups(n).into_iter().filter(|&(g, _)| g > 0).collect();
    let mut out = String::new();
    for (i, &(g, scale)) in groups.iter().enumerate() {
        let part = match scale {
            0 => below_1000(g),
            1 if g == 1 => "mil".into(),
            1 => format!("{} mil", below_1000(g)),
            2 if g == 1 => "um milhão".into(),
            2 => format!("{} milhões", below_1000(g)),
            _ if g == 1 => "um bilhão".into(),
            _ => format!("{} bilhões", below_1000(g)),
        };
        if i > 0 {
            // "mil e quarenta", "mil e quinhentos", but "mil oitocentos e
            // quarenta e dois".
            let last = i + 1 == groups.len() && scale == 0;
            out.push_str(if last && (g < 100 || g % 100 == 0) {
                " e "
            } else {
                " "
            });
        }
        out.push_str(&part);
    }
    out
}

fn french(n: u64) -> String {
    const ONES: [&str; 20] = [
        "zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix",
        "onze", "douze", "treize", "quatorze", "quinze", "seize", "dix-sept", "dix-huit",
        "dix-neuf",
    ];
    const TENS: [&str; 7] = [
        "",
        "",
        "vingt",
        "trente",
        "quarante",
        "cinquante",
        "soixante",
    ];
    fn below_100(n: u64) -> String {
        if n < 20 {
            return ONES[n as usize].into();
        }
        let (t, u) = (n / 10, n % 10);
        match t {
            2..=6 => match u {
                0 => TENS[t as usize].into(),
                1 => format!("{} et un", TENS[t as usize]),
                u => format!("{}-{}", TENS[t as usize], ONES[u as usize]),
            },
            7 => match u {
                1 => "soixante et onze".into(),
                u => format!("soixante-{}", ONES[10 + u as usize]),
            },
            8 if u == 0 => "quatre-vingts".into(),
            8 => format!("quatre-vingt-{}", ONES[u as usize]),
            _ => format!("quatre-vingt-{}", ONES[10 + u as usize]),
        }
    }
    fn below_1000(n: u64, last: bool) -> String {
        let (h, rest) = (n / 100, n % 100);
        let hundreds = match h {
            0 => String::new(),
            1 => "cent".into(),
            // "deux cents" only when nothing follows.
            h if rest == 0 && last => format!("{} cents", ONES[h as usize]),
            h => format!("{} cent", ONES[h as usize]),
        };
        match (hundreds.is_empty(), rest) {
            (_, 0) => hundreds,
            (true, r) => below_100(r),
            (false, r) => format!("{hundreds} {}", below_100(r)),
        }
    }
    if n == 0 {
        return ONES[0].into();
    }
    let mut parts = Vec::new();
    for (g, scale) in groups(n) {
        if g == 0 {
            continue;
        }
        parts.push(match scale {
            0 => below_1000(g, true),
            1 if g == 1 => "mille".into(),
            // "quatre-vingt mille" keeps no s before mille.
            1 => format!("{} mille", below_1000(g, false).trim_end_matches('s')),
            2 if g == 1 => "un million".into(),
            2 => format!("{} millions", below_1000(g, true)),
            _ if g == 1 => "un milliard".into(),
            _ => format!("{} milliards", below_1000(g, true)),
        });
    }
    parts.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use Language::*;

    #[test]
    fn cardinals_in_each_language() {
        let cases: &[(u64, Language, &str)] = &[
            (0, En, "zero"),
            (42, En, "forty-two"),
            (1842, En, "one thousand eight hundred forty-two"),
            (2_000_015, En, "two million fifteen"),
            (21, Es, "veintiuno"),
            (100, Es, "cien"),
            (101, Es, "ciento uno"),
            (1842, Es, "mil ochocientos cuarenta y dos"),
            (21_000, Es, "veintiún mil"),
            (2_500_000, Es, "dos millones quinientos mil"),
            (21, It, "ventuno"),
            (23, It, "ventitré"),
            (88, It, "ottantotto"),
            (180, It, "centottanta"),
            (1842, It, "milleottocentoquarantadue"),
            (2026, It, "duemilaventisei"),
            (16, Pt, "dezesseis"),
            (1842, Pt, "mil oitocentos e quarenta e dois"),
            (1040, Pt, "mil e quarenta"),
            (2026, Pt, "dois mil e vinte e seis"),
            (100, Pt, "cem"),
            (21, Fr, "vingt et un"),
            (71, Fr, "soixante et onze"),
            (80, Fr, "quatre-vingts"),
            (99, Fr, "quatre-vingt-dix-neuf"),
            (200, Fr, "deux cents"),
            (1842, Fr, "mille huit cent quarante-deux"),
            (80_000, Fr, "quatre-vingt mille"),
        ];
        for &(n, language, words) in cases {
            assert_eq!(cardinal(n, language), words, "{n} in {language}");
        }
    }

    #[test]
    fn order_numbers_in_pairs() {
        assert_eq!(digits_as_spoken("1842", En), "eighteen forty-two");
        assert_eq!(digits_as_spoken("1805", En), "eighteen oh five");
        assert_eq!(digits_as_spoken("1800", En), "eighteen hundred");
        assert_eq!(digits_as_spoken("512", En), "five hundred twelve");
        assert_eq!(digits_as_spoken("1842", Es), "dieciocho cuarenta y dos");
        assert_eq!(digits_as_spoken("0042", En), "zero zero four two");
        assert_eq!(
            digits_as_spoken("123456", Fr),
            "un deux trois quatre cinq six"
        );
    }

    #[test]
    fn years_and_ordinals() {
        assert_eq!(year(2026, En), "twenty twenty-six");
        assert_eq!(year(2005, En), "two thousand five");
        assert_eq!(year(1999, En), "nineteen ninety-nine");
        assert_eq!(english_ordinal(24), "twenty-fourth");
        assert_eq!(english_ordinal(1), "first");
        assert_eq!(english_ordinal(30), "thirtieth");
        assert_eq!(english_ordinal(12), "twelfth");
        assert_eq!(cardinal_before_noun(21, Es), "veintiún");
        assert_eq!(cardinal_before_noun(1, Es), "un");
        assert_eq!(cardinal_feminine(1, Es), "una");
        assert_eq!(cardinal_feminine(2, Pt), "duas");
    }
}
