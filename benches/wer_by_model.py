#!/usr/bin/env python3
"""Word error rate per language of two (or more) speech models on the same
fixtures, forced to each fixture's language, with no latency budget in the
way (`voxline transcribe`, not the service).

    python3 benches/wer_by_model.py [--models base-q8_0,base] [--source natural]
    .venv/bin/python benches/wer_by_model.py --models base-q8_0,base,fw:base

A model named `fw:NAME` is faster-whisper (installed into .venv by
`benches/compare.sh`, or `pip install faster-whisper`) on the CTranslate2
conversion of the same weights in `models/ct2/NAME`, greedy (beam 1,
temperature 0, no fallback) like voxline, 2 threads, float32.

Picks the clean Ogg/Opus fixtures of `audio-fixtures/manifest.json` whose
file starts with `<source>/`, transcribes each language's notes with each
model in one `voxline transcribe --json` call, and prints the WER per
language and model. Normalisation: lower case, letters and digits only,
digit groups joined ("1,842" -> "1842"); close to `fixtures::normalise_words`
but without its number words, so the figures are for comparing models with
each other, not with the bench's own WER.
"""
import argparse
import json
import re
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def words(text):
    text = re.sub(r"(?<=\d)[.,](?=\d)", "", text.lower())
    return [w.strip("'") for w in re.split(r"[^\w']+", text) if w.strip("'")]


def edits(ref, hyp):
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def voxline_heard(args, model, config, lang, files):
    settings = ["--config", config] if config else []
    out = subprocess.run(
        [args.voxline, *settings, "transcribe", "--json", "--model", model, "--lang", lang, *files],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout
    heard = {}
    for line in out.splitlines():
        if line.startswith("{"):
            r = json.loads(line)
            heard[str(Path(r["file"]).resolve())] = r.get("text", "")
    return heard


FASTER = {}


def faster_whisper_heard(name, lang, files):
    if name not in FASTER:
        try:
            from faster_whisper import WhisperModel
        except ImportError:
            sys.exit("faster-whisper is not installed: run benches/compare.sh once, "
                     "or use .venv/bin/python")
        FASTER[name] = WhisperModel(str(ROOT / "models/ct2" / name), device="cpu",
                                    compute_type="float32", cpu_threads=2)
    model = FASTER[name]
    heard = {}
    for file in files:
        segments, _ = model.transcribe(file, language=lang, beam_size=1, temperature=0.0,
                                       condition_on_previous_text=False)
        heard[str(Path(file).resolve())] = " ".join(s.text.strip() for s in segments)
    return heard


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="base-q8_0,base")
    p.add_argument("--source", default="natural")
    p.add_argument("--condition", default="clean", help="clean or noisy")
    p.add_argument("--langs", help="only these languages, comma-separated")
    p.add_argument("--show", action="store_true",
                   help="print each note's transcripts where the models' errors differ")
    p.add_argument("--voxline", default=str(ROOT / "target/release/voxline"))
    p.add_argument("--config", action="append", default=[],
                   help="a voxline config file; repeat to compare settings (a column per model and config)")
    args = p.parse_args()
    manifest = json.loads((ROOT / "audio-fixtures/manifest.json").read_text())["fixtures"]
    by_lang = defaultdict(list)
    for f in manifest:
        if (f["file"].startswith(args.source + "/") and f.get("condition") == args.condition
                and f.get("form") == "ogg_opus" and f.get("text")):
            by_lang[f["language"]].append(f)
    # A column per voxline model and config; faster-whisper once per model.
    models = []
    for model in args.models.split(","):
        if model.startswith("fw:") or not args.config:
            models.append((model, None))
        else:
            models.extend((model, c) for c in args.config)
    names = [m if c is None else f"{m}@{Path(c).stem}" for m, c in models]
    print(f"{'lang':<5} {'notes':>5} {'words':>6} " + " ".join(f"{m:>12}" for m in names))
    for lang in sorted(by_lang):
        if args.langs and lang not in args.langs.split(","):
            continue
        fixtures = by_lang[lang]
        ref_words = sum(len(words(f["text"])) for f in fixtures)
        row = []
        per_file = defaultdict(dict)
        for (model, config), name in zip(models, names):
            files = [str(ROOT / "audio-fixtures" / f["file"]) for f in fixtures]
            if model.startswith("fw:"):
                heard = faster_whisper_heard(model[3:], lang, files)
            else:
                heard = voxline_heard(args, model, config, lang, files)
            errors = 0
            for f in fixtures:
                text = heard.get(str((ROOT / "audio-fixtures" / f["file"]).resolve()), "")
                e = edits(words(f["text"]), words(text))
                per_file[f["file"]][name] = (e, text)
                errors += e
            row.append(errors / max(ref_words, 1))
        print(f"{lang:<5} {len(fixtures):>5} {ref_words:>6} " + " ".join(f"{w:>12.3f}" for w in row))
        if args.show:
            ref = {f["file"]: f["text"] for f in fixtures}
            for file, by_model in per_file.items():
                if len({e for e, _ in by_model.values()}) > 1:
                    print(f"  {file}: {ref[file]!r}")
                    for model, (e, text) in by_model.items():
                        print(f"    {model:>12} {e} {text!r}")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
