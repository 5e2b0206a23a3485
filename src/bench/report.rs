//! The bench's outputs: the table for a terminal and a self-contained HTML
//! page with its charts drawn as inline SVG (no scripts, no network).

use std::fmt::Write;

use super::{Report, Spread};

/// The stages in the order a turn meets them, with the budget drawn beside
/// each.
const ROWS: [(&str, Option<&str>); 14] = [
    ("ack", Some("ack")),
    ("queue", None),
    ("fetch", Some("fetch")),
    ("decode", Some("decode")),
    ("resample", None),
    ("stt", Some("stt")),
    ("dialog_first_token", Some("dialog_first_token")),
    ("dialog", Some("dialog_total")),
    ("tts_first_audio", Some("tts_first_audio")),
    ("tts", Some("tts_total")),
    ("encode", Some("encode")),
    ("upload", Some("upload")),
    ("hold", None),
    ("send", Some("send")),
];

/// The report as text for a terminal.
pub fn table(r: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "voxline bench: {} fixtures x {} rounds, concurrency {}, {}; fake LLM {} ms to first token, {} tokens/s",
        r.fixtures, r.rounds, r.concurrency, r.model, r.llm_first_token_ms, r.llm_tokens_per_second
    );
    let _ = writeln!(
        out,
        "\n{:<20} {:>6} {:>9} {:>9} {:>9} {:>9}",
        "stage", "n", "p50 ms", "p95 ms", "max ms", "budget"
    );
    for (stage, budget) in ROWS {
        let Some(s) = r.stages.get(stage) else {
            continue;
        };
        let budget = budget
            .and_then(|b| r.budgets_ms.get(b))
            .map_or_else(|| "-".to_string(), |ms| ms.to_string());
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            stage, s.count, s.p50, s.p95, s.max, budget
        );
    }
    let mut line = |name: &str, s: &Spread, budget: Option<u64>| {
        let _ = writeln!(
            out,
            "{:<20} {:>6} {:>9.1} {:>9.1} {:>9.1} {:>9}",
            name,
            s.count,
            s.p50,
            s.p95,
            s.max,
            budget.map_or_else(|| "-".to_string(), |b| b.to_string())
        );
    };
    line("turn", &r.turn, r.budgets_ms.get("turn").copied());
    line("turn (fast path)", &r.turn_fast_path, None);
    line("turn (LLM)", &r.turn_llm, None);
    line("stages in sequence", &r.sequential, None);
    if r.by_language.len() > 1 || r.rounds > 1 {
        let _ = writeln!(
            out,
            "\nturns per language, ms: fast path p50/p95 (count), LLM p50/p95 (count); all rounds | round 1"
        );
        let pair = |s: &Spread| {
            if s.count == 0 {
                "-".to_string()
            } else {
                format!("{:.0}/{:.0} ({})", s.p50, s.p95, s.count)
            }
        };
        for (language, t) in &r.by_language {
            let _ = writeln!(
                out,
                "{language:<4} {:>20} {:>20} | {:>20} {:>20}",
                pair(&t.fast_path),
                pair(&t.llm),
                pair(&t.fast_path_first_round),
                pair(&t.llm_first_round)
            );
        }
    }
    let _ = writeln!(
        out,
        "\nSTT real-time factor: p50 {:.3}, p95 {:.3}",
        r.stt_real_time_factor.p50, r.stt_real_time_factor.p95
    );
    let wer: Vec<String> = r
        .wer
        .iter()
        .map(|(l, w)| format!("{l} {:.1}%", w * 100.0))
        .collect();
    let _ = writeln!(out, "WER: {}", wer.join(", "));
    if let Some(acc) = r.intent_accuracy {
        let _ = writeln!(
            out,
            "intent accuracy: {:.1}% of {}",
            acc * 100.0,
            r.intent_checked
        );
    }
    if let Some(share) = r.fast_path_share {
        let _ = writeln!(out, "fast path (no LLM): {:.1}%", share * 100.0);
    }
    let _ = writeln!(
        out,
        "replies: {} voice, {} text, {} silent, {} failed; voice note bytes p50 {:.0}, max {:.0}",
        r.voice_replies, r.text_replies, r.silent, r.failed, r.reply_bytes.p50, r.reply_bytes.max
    );
    let rounds: Vec<String> = r
        .speech_cache
        .iter()
        .filter(|c| c.hits + c.misses > 0)
        .map(|c| {
            format!(
                "round {} {:.0}% ({}/{})",
                c.round,
                c.hits as f64 / (c.hits + c.misses) as f64 * 100.0,
                c.hits,
                c.hits + c.misses
            )
        })
        .collect();
    if !rounds.is_empty() {
        let _ = writeln!(out, "speech cache hits: {}", rounds.join(", "));
    }
    match r.warm_up {
        Some(w) => {
            let _ = writeln!(
                out,
                "speech cache warm-up before round 1: {} sentences in {:.0} ms{}",
                w.sentences,
                w.ms,
                if w.finished { "" } else { " (not finished)" }
            );
        }
        None => {
            let _ = writeln!(out, "speech cache warm-up: not waited for");
        }
    }
    if r.overruns.is_empty() {
        let _ = writeln!(out, "budget overruns: none");
    } else {
        let list: Vec<String> = r.overruns.iter().map(|(k, n)| format!("{k} {n}")).collect();
        let _ = writeln!(out, "budget overruns: {}", list.join(", "));
    }
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Horizontal bars of p50 and p95 per stage on one axis, with a tick at
/// each stage's budget.
fn stage_chart(r: &Report) -> String {
    let rows: Vec<(&str, Spread, Option<u64>)> = ROWS
        .iter()
        .filter_map(|(stage, budget)| {
            let s = r.stages.get(*stage)?;
            Some((
                *stage,
                *s,
                budget.and_then(|b| r.budgets_ms.get(b).copied()),
            ))
        })
        .chain(std::iter::once((
            "turn",
            r.turn,
            r.budgets_ms.get("turn").copied(),
        )))
        .collect();
    // Stages span four orders of magnitude (a 1 ms send, a 10 s send
    // budget): a log axis from 0.1 ms keeps each readable.
    const FLOOR: f64 = 0.1;
    let scale_max = rows
        .iter()
        .map(|(_, s, b)| s.max.max(b.unwrap_or(0) as f64))
        .fold(10.0, f64::max);
    let (label_w, plot_w, row_h) = (150.0, 620.0, 26.0);
    let span = (scale_max / FLOOR).log10();
    let x = |ms: f64| label_w + (ms.max(FLOOR) / FLOOR).log10() / span * plot_w;
    let height = rows.len() as f64 * row_h + 40.0;
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{height}" font-family="sans-serif" font-size="12">"#,
        w = label_w + plot_w + 40.0
    );
    let axis_y = 10.0 + rows.len() as f64 * row_h + 12.0;
    let mut tick = 1.0;
    while tick <= scale_max {
        let tx = x(tick);
        let label = if tick >= 1000.0 {
            format!("{} s", tick / 1000.0)
        } else {
            format!("{tick} ms")
        };
        let _ = write!(
            svg,
            r##"<line x1="{tx}" x2="{tx}" y1="6" y2="{y2}" stroke="#e4e4e4"/><text x="{tx}" y="{axis_y}" text-anchor="middle">{label}</text>"##,
            y2 = axis_y - 12.0
        );
        tick *= 10.0;
    }
    for (i, (name, s, budget)) in rows.iter().enumerate() {
        let y = 10.0 + i as f64 * row_h;
        let _ = write!(
            svg,
            r##"<text x="0" y="{ty}">{name}</text><rect x="{x0}" y="{y}" width="{w95}" height="16" fill="#b9d3ee"><title>p95 {p95:.1} ms</title></rect><rect x="{x0}" y="{y}" width="{w50}" height="16" fill="#3a78b8"><title>p50 {p50:.1} ms</title></rect>"##,
            ty = y + 12.0,
            name = escape(name),
            x0 = label_w,
            w95 = x(s.p95) - label_w,
            w50 = x(s.p50) - label_w,
            p95 = s.p95,
            p50 = s.p50,
        );
        if let Some(b) = budget {
            let bx = x(*b as f64);
            let _ = write!(
                svg,
                r##"<line x1="{bx}" x2="{bx}" y1="{y0}" y2="{y1}" stroke="#c0392b" stroke-width="2"><title>budget {b} ms</title></line>"##,
                y0 = y - 2.0,
                y1 = y + 18.0
            );
        }
    }
    let _ = write!(svg, "</svg>");
    svg
}

/// Every turn's duration, sorted: the distribution at a glance.
fn turn_chart(r: &Report) -> String {
    let mut turns: Vec<f64> = r.rows.iter().map(|row| row.trace.turn_ms).collect();
    turns.sort_by(f64::total_cmp);
    let max = turns.last().copied().unwrap_or(1.0).max(1.0);
    let (w, h) = (770.0, 200.0);
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h2}" font-family="sans-serif" font-size="12">"#,
        h2 = h + 30.0
    );
    let n = turns.len().max(1) as f64;
    for (i, t) in turns.iter().enumerate() {
        let bw = (w / n).max(1.0);
        let bh = t / max * h;
        let _ = write!(
            svg,
            r##"<rect x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{bh:.1}" fill="#3a78b8"><title>{t:.0} ms</title></rect>"##,
            x = i as f64 * w / n,
            y = h - bh
        );
    }
    let _ = write!(
        svg,
        r#"<text x="0" y="{ty}">fastest</text><text x="{w}" y="{ty}" text-anchor="end">slowest: {max:.0} ms</text></svg>"#,
        ty = h + 20.0
    );
    svg
}

/// The report as a self-contained HTML page.
pub fn html(r: &Report) -> String {
    let mut rows = String::new();
    for row in &r.rows {
        let t = &row.trace;
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:.0}</td><td>{}</td></tr>",
            escape(&row.file),
            row.round,
            escape(t.transcript.as_deref().unwrap_or("")),
            escape(t.intent.as_deref().unwrap_or("")),
            t.end.name(),
            t.turn_ms,
            escape(t.note.as_deref().unwrap_or("")),
        );
    }
    format!(
        r#"<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>voxline bench</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:60em}}table{{border-collapse:collapse;font-size:13px}}td,th{{border-bottom:1px solid #ddd;padding:3px 8px;text-align:left}}pre{{background:#f6f6f6;padding:1em}}</style>
</head><body>
<h1>voxline bench</h1>
<pre>{table}</pre>
<h2>Stages: p50 (dark) and p95 (light), budget in red, on a log scale</h2>
{stages}
<h2>Turn durations, sorted</h2>
{turns}
<h2>Every turn</h2>
<table><tr><th>fixture</th><th>round</th><th>heard</th><th>intent</th><th>reply</th><th>turn ms</th><th>degraded</th></tr>
{rows}
</table>
</body></html>
"#,
        table = escape(&table(r)),
        stages = stage_chart(r),
        turns = turn_chart(r),
    )
}
