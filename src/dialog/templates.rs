//! Reply templates per language (`data/templates/<lang>.toml`), with the
//! formatting of money, dates and statuses that go into them.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::calendar::Date;
use super::commerce::{OrderStatus, PaymentStatus};

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Format {
    /// `{amount}` with the currency sign, e.g. `€{amount}`.
    pub money: String,
    pub decimal: String,
    /// `{weekday}`, `{day}` and `{month}`.
    pub date: String,
    pub weekdays: [String; 7],
    pub months: [String; 12],
    pub list_and: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LanguageTemplates {
    pub format: Format,
    pub status: BTreeMap<String, String>,
    pub payment: BTreeMap<String, String>,
    pub replies: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum TemplateError {
    #[error("cannot read templates {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("templates {path} are invalid: {source}")]
    Parse {
        path: PathBuf,
        source: toml::de::Error,
    },
    #[error("templates for {lang} lack reply {key:?}, which {reference} has")]
    Missing {
        lang: String,
        key: String,
        reference: String,
    },
    #[error("no English templates (data/templates/en.toml), the fallback language")]
    NoEnglish,
}

/// Every language's templates; English is the fallback.
#[derive(Debug, Clone)]
pub struct Templates {
    languages: HashMap<String, LanguageTemplates>,
}

impl Templates {
    pub fn load(dir: &Path) -> Result<Self, TemplateError> {
        let entries = std::fs::read_dir(dir).map_err(|source| TemplateError::Read {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut languages = HashMap::new();
        for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let Some(lang) = path
                .file_stem()
                .and_then(|s| s.to_str())
                .map(str::to_string)
            else {
                continue;
            };
            let text = std::fs::read_to_string(&path).map_err(|source| TemplateError::Read {
                path: path.clone(),
                source,
            })?;
            let t: LanguageTemplates =
                toml::from_str(&text).map_err(|source| TemplateError::Parse { path, source })?;
            languages.insert(lang, t);
        }
        let en = languages.get("en").ok_or(TemplateError::NoEnglish)?;
        // Every language must have every reply English has, so that a
        // missing translation is found at start-up, not by a customer.
        for (lang, t) in &languages {
            for key in en.replies.keys() {
                if !t.replies.contains_key(key) {
                    return Err(TemplateError::Missing {
                        lang: lang.clone(),
                        key: key.clone(),
                        reference: "en".into(),
                    });
                }
            }
        }
        Ok(Self { languages })
    }

    fn lang(&self, lang: &str) -> &LanguageTemplates {
        self.languages
            .get(lang)
            .or_else(|| self.languages.get("en"))
            .expect("English templates are checked at load")
    }

    pub fn has_language(&self, lang: &str) -> bool {
        self.languages.contains_key(lang)
    }

    /// Every reply of `lang` as written, a greeting's optional `{name}`
    /// left out: the texts whose sentences without slots are worth
    /// rendering ahead (the speech cache's warm-up).
    pub fn fixed_texts(&self, lang: &str) -> Vec<String> {
        self.lang(lang)
            .replies
            .values()
            .map(|text| text.replace("{name}", ""))
            .collect()
    }

    /// The reply `key` in `lang` with `{name}` placeholders filled.
    pub fn render(&self, lang: &str, key: &str, vars: &[(&str, &str)]) -> String {
        let t = self.lang(lang);
        let template = t
            .replies
            .get(key)
            .or_else(|| self.lang("en").replies.get(key))
            .map_or(key, String::as_str);
        fill(template, vars)
    }

    pub fn money(&self, lang: &str, cents: i64) -> String {
        let f = &self.lang(lang).format;
        let sign = if cents < 0 { "-" } else { "" };
        let c = cents.unsigned_abs();
        let (units, frac) = (c / 100, c % 100);
        let amount = if frac == 0 {
            format!("{sign}{units}")
        } else {
            format!("{sign}{units}{}{frac:02}", f.decimal)
        };
        fill(&f.money, &[("amount", &amount)])
    }

    pub fn date(&self, lang: &str, date: Date) -> String {
        let f = &self.lang(lang).format;
        let (_, m, d) = date.ymd();
        fill(
            &f.date,
            &[
                ("weekday", &f.weekdays[usize::from(date.weekday())]),
                ("day", &d.to_string()),
                ("month", &f.months[m as usize - 1]),
            ],
        )
    }

    pub fn status(&self, lang: &str, status: OrderStatus) -> String {
        self.lang(lang)
            .status
            .get(status.as_str())
            .cloned()
            .unwrap_or_else(|| status.as_str().to_string())
    }

    pub fn payment(&self, lang: &str, payment: PaymentStatus) -> String {
        self.lang(lang)
            .payment
            .get(payment.as_str())
            .cloned()
            .unwrap_or_else(|| payment.as_str().to_string())
    }

    /// "a, b and c" in `lang`.
    pub fn list(&self, lang: &str, items: &[String]) -> String {
        let and = &self.lang(lang).format.list_and;
        match items {
            [] => String::new(),
            [one] => one.clone(),
            [rest @ .., last] => format!("{}{and}{last}", rest.join(", ")),
        }
    }

    /// Every way `lang` and the others write statuses, for the guard.
    pub fn all_status_words(&self) -> Vec<(String, String)> {
        self.languages
            .values()
            .flat_map(|t| t.status.iter().chain(&t.payment))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// Each language's weekday and month names.
    pub fn calendars(&self) -> Vec<(&[String; 7], &[String; 12])> {
        self.languages
            .values()
            .map(|t| (&t.format.weekdays, &t.format.months))
            .collect()
    }
}

fn fill(template: &str, vars: &[(&str, &str)]) -> String {
    let mut out = template.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{k}}}"), v);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn templates() -> Templates {
        Templates::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("data/templates")).unwrap()
    }

    #[test]
    fn renders_money_dates_and_lists_per_language() {
        let t = templates();
        assert_eq!(t.money("en", 3990), "€39.90");
        assert_eq!(t.money("es", 3990), "39,90 €");
        assert_eq!(t.money("it", 1500), "15 €");
        let d = Date::from_ymd(2026, 11, 27).unwrap();
        assert_eq!(t.date("en", d), "Friday 27 November");
        assert_eq!(t.date("es", d), "el viernes 27 de noviembre");
        assert_eq!(
            t.list("en", &["a".into(), "b".into(), "c".into()]),
            "a, b and c"
        );
        let r = t.render(
            "en",
            "delivery_confirm",
            &[("order", "1842"), ("date", &t.date("en", d))],
        );
        assert_eq!(
            r,
            "I can move order 1842 to Friday 27 November. Reply yes to confirm."
        );
        assert_eq!(
            t.render("xx", "thanks_bye", &[]),
            t.render("en", "thanks_bye", &[])
        );
    }

    /// Everything voxline says exists in every language it serves by
    /// default: the dialog's replies (checked against English at load) and
    /// the notices about the message itself, each translated.
    #[test]
    fn every_configured_language_has_every_template() {
        let t = templates();
        let english = &t.languages["en"];
        for lang in crate::service::default_languages() {
            assert!(t.has_language(&lang), "no data/templates/{lang}.toml");
            let own = &t.languages[&lang];
            for key in english.replies.keys() {
                assert!(own.replies.contains_key(key), "{lang} lacks {key}");
            }
            for notice in crate::pipeline::reply::Notice::ALL {
                let text = own.replies.get(notice.key());
                assert!(
                    text.is_some_and(|s| !s.trim().is_empty()),
                    "{lang} lacks the notice {}",
                    notice.key()
                );
                if lang != "en" {
                    assert_ne!(
                        text,
                        english.replies.get(notice.key()),
                        "{lang}'s {} is the English text",
                        notice.key()
                    );
                }
            }
        }
        assert_eq!(
            t.render("en", "holding", &[]),
            crate::pipeline::budget::HOLDING_MESSAGE
        );
    }
}
