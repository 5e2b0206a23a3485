//! Operator commands of the dialog stage: `voxline intent` (what the fast
//! path makes of a text), `voxline chat` (an interactive text session
//! against the dialog stage and its store) and `voxline handoff`
//! (conversations waiting for a person).

use std::io::{BufRead, Write};

use serde::Serialize;

use super::commerce::seed::Seed;
use super::config::DialogConfig;
use super::intent::{Classification, IntentModel, Lexicon};
use super::session::SessionStore;
use super::stage::{DialogError, DialogStage};
use super::Message;

/// The intent model with the product names of the seed catalogue.
pub fn intent_model(config: &DialogConfig) -> Result<IntentModel, DialogError> {
    let seed = Seed::load(&config.data_dir.join("catalogue.toml")).ok();
    let lexicon = seed.map_or_else(Lexicon::default, |s| {
        Lexicon::new(
            s.products
                .iter()
                .flat_map(|p| {
                    p.names
                        .values()
                        .flatten()
                        .map(|n| (n.clone(), p.id.clone()))
                })
                .chain(s.categories.iter().flat_map(|c| {
                    c.names
                        .values()
                        .flatten()
                        .map(|n| (n.clone(), c.id.clone()))
                })),
        )
    });
    Ok(IntentModel::load(
        &config.data_dir.join("intents"),
        lexicon,
        config.thresholds,
        config.load_sentence_encoder()?,
    )?)
}

#[derive(Serialize)]
struct IntentLine<'a> {
    text: &'a str,
    #[serde(flatten)]
    classification: &'a Classification,
    micros: f64,
}

/// `voxline intent TEXT... [--lang L] [--json]`: one line per text.
pub fn intent(
    config: &DialogConfig,
    texts: &[String],
    lang: Option<&str>,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), DialogError> {
    let model = intent_model(config)?;
    let io = |e: std::io::Error| DialogError::Data {
        path: "stdout".into(),
        message: e.to_string(),
    };
    if !json {
        writeln!(
            out,
            "{:<22} {:>5} {:<4} {:<4} {:<40} text",
            "intent", "conf", "lang", "fast", "slots"
        )
        .map_err(io)?;
    }
    for text in texts {
        let start = std::time::Instant::now();
        let c = model.classify(text, lang);
        let micros = start.elapsed().as_secs_f64() * 1e6;
        if json {
            let line = IntentLine {
                text,
                classification: &c,
                micros: (micros * 10.0).round() / 10.0,
            };
            writeln!(out, "{}", serde_json::to_string(&line).unwrap_or_default()).map_err(io)?;
        } else {
            let slots = serde_json::to_string(&c.slots).unwrap_or_default();
            writeln!(
                out,
                "{:<22} {:>5.2} {:<4} {:<4} {:<40} {text}",
                c.intent,
                c.confidence,
                c.language,
                if c.fast_path { "yes" } else { "no" },
                if c.slots.is_empty() {
                    "-".to_string()
                } else {
                    slots
                },
            )
            .map_err(io)?;
        }
    }
    Ok(())
}

/// `voxline chat --from NUMBER`: reads messages from stdin, prints replies.
pub fn chat(
    config: &DialogConfig,
    from: &str,
    input: &mut dyn BufRead,
    out: &mut dyn Write,
) -> Result<(), DialogError> {
    let runtime = tokio::runtime::Runtime::new().map_err(|e| DialogError::Data {
        path: "runtime".into(),
        message: e.to_string(),
    })?;
    let io = |e: std::io::Error| DialogError::Data {
        path: "stdio".into(),
        message: e.to_string(),
    };
    runtime.block_on(async {
        let stage = DialogStage::open(config.clone()).await?;
        writeln!(
            out,
            "chatting as {from}; an empty line or end of input ends the session"
        )
        .map_err(io)?;
        let mut n = 0;
        loop {
            write!(out, "> ").map_err(io)?;
            out.flush().map_err(io)?;
            let mut line = String::new();
            if input.read_line(&mut line).map_err(io)? == 0 || line.trim().is_empty() {
                return Ok(());
            }
            n += 1;
            let id = format!("chat.{}.{n}", std::process::id());
            let (reply, o) = stage.answer(Message::text(&id, from, line.trim())).await;
            let shown = if reply.is_empty() {
                "(no reply)"
            } else {
                reply.as_str()
            };
            writeln!(out, "{shown}").map_err(io)?;
            writeln!(
                out,
                "  [{} {:.2} {} {:?}{}{}]",
                o.intent,
                o.confidence,
                o.language,
                o.source,
                if o.actions.is_empty() {
                    String::new()
                } else {
                    format!(" {}", serde_json::to_string(&o.actions).unwrap_or_default())
                },
                if o.needs_review { " needs review" } else { "" },
            )
            .map_err(io)?;
        }
    })
}

/// `voxline handoff list`.
pub fn handoff_list(
    config: &DialogConfig,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), DialogError> {
    let sessions = SessionStore::for_config(config)?;
    let io = |e: std::io::Error| DialogError::Data {
        path: "stdout".into(),
        message: e.to_string(),
    };
    let waiting = sessions.handoffs()?;
    if json {
        writeln!(
            out,
            "{}",
            serde_json::to_string(&waiting).unwrap_or_default()
        )
        .map_err(io)?;
        return Ok(());
    }
    if waiting.is_empty() {
        writeln!(out, "no conversations waiting for a person").map_err(io)?;
    }
    for s in waiting {
        let h = s.handoff.as_ref();
        writeln!(
            out,
            "{}  reason: {}  since: {}  language: {}  order: {}",
            s.number,
            h.map_or("-", |h| h.reason.as_str()),
            h.map_or(0, |h| h.since),
            s.language.as_deref().unwrap_or("-"),
            s.slots.order.as_deref().unwrap_or("-"),
        )
        .map_err(io)?;
        for t in s.history.iter().rev().take(6).rev() {
            writeln!(out, "    {:<8} {}", t.role, t.text).map_err(io)?;
        }
    }
    Ok(())
}

/// `voxline handoff release NUMBER`: the bot answers the number again.
pub fn handoff_release(
    config: &DialogConfig,
    number: &str,
    out: &mut dyn Write,
) -> Result<bool, DialogError> {
    let sessions = SessionStore::for_config(config)?;
    let released = sessions.release(number)?;
    let message = if released {
        format!("released {number}: the bot answers it again")
    } else {
        format!("{number} was not handed off")
    };
    writeln!(out, "{message}").map_err(|e| DialogError::Data {
        path: "stdout".into(),
        message: e.to_string(),
    })?;
    Ok(released)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dialog::stage::bundled_data;

    fn config() -> DialogConfig {
        DialogConfig {
            data_dir: bundled_data(),
            ..DialogConfig::default()
        }
    }

    #[test]
    fn intent_prints_one_json_line_per_text() {
        let mut out = Vec::new();
        let texts = vec![
            "Where is my order 1842?".to_string(),
            "quanto costa lo zaino blu".to_string(),
        ];
        intent(&config(), &texts, None, true, &mut out).unwrap();
        let lines: Vec<serde_json::Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines[0]["intent"], "order_status");
        assert_eq!(lines[0]["slots"]["order"], "1842");
        assert_eq!(lines[0]["fast_path"], true);
        assert_eq!(lines[1]["slots"]["product"], "backpack-blue");
        assert_eq!(lines[1]["language"], "it");
    }

    #[test]
    fn handoff_commands_list_and_release() {
        let dir = tempfile::tempdir().unwrap();
        let config = DialogConfig {
            database: Some(dir.path().join("d.sqlite")),
            ..config()
        };
        let store = SessionStore::open(&config.database_path()).unwrap();
        let mut s = store.load("111").unwrap();
        s.handoff = Some(crate::dialog::session::Handoff {
            reason: "asked".into(),
            since: 1,
        });
        store.save(&s).unwrap();
        let mut out = Vec::new();
        handoff_list(&config, false, &mut out).unwrap();
        assert!(String::from_utf8_lossy(&out).contains("111  reason: asked"));
        let mut out = Vec::new();
        assert!(handoff_release(&config, "111", &mut out).unwrap());
        assert!(!handoff_release(&config, "111", &mut out).unwrap());
    }
}
