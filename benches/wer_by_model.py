#!/usr/bin/env python3
"""Word error rate per language of two (or more) speech models on the same
fixtures, forced to each fixture's language, with no latency budget in the
way (`voxline transcribe`, not the service).

    python3 benches/wer_by_model.py [--models base-q8_0,base] [--source natural]

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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="base-q8_0,base")
    p.add_argument("--source", default="natural")
    p.add_argument("--voxline", default=str(ROOT / "target/release/voxline"))
    args = p.parse_args()
    manifest = json.loads((ROOT / "audio-fixtures/manifest.json").read_text())["fixtures"]
    by_lang = defaultdict(list)
    for f in manifest:
        if (f["file"].startswith(args.source + "/") and f.get("condition") == "clean"
                and f.get("form") == "ogg_opus" and f.get("text")):
            by_lang[f["language"]].append(f)
    models = args.models.split(",")
    print(f"{'lang':<5} {'notes':>5} {'words':>6} " + " ".join(f"{m:>12}" for m in models))
    for lang in sorted(by_lang):
        fixtures = by_lang[lang]
        ref_words = sum(len(words(f["text"])) for f in fixtures)
        row = []
        for model in models:
            files = [str(ROOT / "audio-fixtures" / f["file"]) for f in fixtures]
            out = subprocess.run(
                [args.voxline, "transcribe", "--json", "--model", model, "--lang", lang, *files],
                capture_output=True, text=True, check=True, cwd=ROOT,
            ).stdout
            heard = {}
            for line in out.splitlines():
                if line.startswith("{"):
                    r = json.loads(line)
                    heard[str(Path(r["file"]).resolve())] = r.get("text", "")
            errors = sum(
                edits(words(f["text"]), words(heard.get(str((ROOT / "audio-fixtures" / f["file"]).resolve()), "")))
                for f in fixtures
            )
            row.append(errors / max(ref_words, 1))
        print(f"{lang:<5} {len(fixtures):>5} {ref_words:>6} " + " ".join(f"{w:>12.3f}" for w in row))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
