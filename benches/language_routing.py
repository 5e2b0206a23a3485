#!/usr/bin/env python3
"""Language routing on the fixtures, detection alone: each Ogg/Opus note of
`audio-fixtures/manifest.json` whose file starts with one of the sources is
sent through `voxline transcribe --json` (default routing, no prior, no
budget) in one call, and the language it was transcribed in is counted
against the manifest's.

    python3 benches/language_routing.py [--sources natural,natural_noisy]
        [--config FILE] [--show]

Prints per source and language: notes, language right (and heard), not
heard (the service would ask for the note again: `not_heard` in the JSON,
for an unserved language, no speech, low confidence, a known hallucination),
redone (a low-confidence first transcript tried again in the other
candidate) and the stt time's median. Notes whose manifest language is not
served (hi, ja, pl, zh in audioeval) count as right when not heard.
`--show` prints every miss with its routing.
"""
import argparse
import json
import statistics
import subprocess
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVED = {"en", "es", "it", "pt", "fr"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sources", default="natural,natural_noisy")
    ap.add_argument("--config", help="a voxline config file")
    ap.add_argument("--voxline", default=str(ROOT / "target/release/voxline"))
    ap.add_argument("--show", action="store_true", help="print each miss")
    args = ap.parse_args()

    sources = args.sources.split(",")
    manifest = json.loads((ROOT / "audio-fixtures/manifest.json").read_text())["fixtures"]
    notes = [
        f for f in manifest
        if f["file"].split("/")[0] in sources and f["file"].endswith(".ogg")
    ]
    expected = {str((ROOT / "audio-fixtures" / f["file"]).resolve()): f for f in notes}
    settings = ["--config", args.config] if args.config else []
    out = subprocess.run(
        [args.voxline, *settings, "transcribe", "--json", *expected],
        capture_output=True, text=True, check=True, cwd=ROOT,
    ).stdout

    rows = defaultdict(lambda: {"n": 0, "right": 0, "not_heard": 0, "redone": 0, "stt": []})
    misses = []
    for line in out.splitlines():
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        f = expected[str(Path(r["file"]).resolve())]
        row = rows[(f["file"].split("/")[0], f["language"])]
        row["n"] += 1
        routing = r.get("routing") or {}
        heard = r.get("not_heard") is None
        served = f["language"] in SERVED
        right = (r["language"] == f["language"] and heard) if served else not heard
        row["right"] += right
        row["not_heard"] += served and not heard
        row["redone"] += routing.get("redone_from") is not None
        row["stt"].append(r["timings_ms"]["stt"])
        if not right:
            misses.append((f["file"], f["language"], r["language"], r.get("text", ""), r.get("not_heard"), routing))

    print("| source | lang | notes | language right | not heard | redone | stt p50 ms |")
    print("|---|---|---:|---:|---:|---:|---:|")
    total = defaultdict(int)
    for (source, lang), row in sorted(rows.items()):
        print(
            f"| {source} | {lang} | {row['n']} | {row['right']} | {row['not_heard']} "
            f"| {row['redone']} | {statistics.median(row['stt']):.0f} |"
        )
        for k in ("n", "right", "not_heard", "redone"):
            total[k] += row[k]
    print(
        f"| all | | {total['n']} | {total['right']} ({100 * total['right'] / max(total['n'], 1):.1f}%) "
        f"| {total['not_heard']} | {total['redone']} | |"
    )
    if args.show:
        for file, want, got, text, not_heard, routing in misses:
            print(f"\n{file}: {want} -> {got} {text!r} not heard: {not_heard}\n  {json.dumps(routing)}")


if __name__ == "__main__":
    main()
