#!/usr/bin/env python3
"""The intent classifier scored on its own training data, one part left out
at a time: for each fold (a read corpus set of `data/intents/corpus/`, the
two halves of `train4.tsv`), a scratch copy of `data/` without that fold is
trained on and the fold is scored with `voxline intent eval --json`. The
sums are a development figure for changes to the classifier or its data,
chosen without touching the blind sets of `tests/intents/blind/`.

    python3 benches/intent_cv.py [--voxline target/release/voxline] [--per-fold] [--show]
        [--all-misses] [--whole-files] [--set fast_path_from=0.85 ...]

Prints messages, accuracy, acted and confident wrong per language over all
folds.
"""
import argparse
import json
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "data/intents/corpus"


def folds(whole_files=False):
    """(name, lines) per fold; a fold's lines leave the corpus while it is scored.
    `whole_files`: each training file leaves whole, so that no line written
    by the same helper in the same sitting stays behind to vouch for it."""
    out = []
    for path in sorted(CORPUS.glob("*.tsv")):
        lines = [l for l in path.read_text().splitlines() if l and not l.startswith("#")]
        header, body = [l for l in lines if l.startswith("lang\t")], [
            l for l in lines if not l.startswith("lang\t")
        ]
        if path.name == "dev.tsv":
            continue  # read line by line while the patterns were written
        if path.name.startswith("train") and not whole_files:
            out.append((path.name + ":even", path.name, header, body[0::2], body[1::2]))
            out.append((path.name + ":odd", path.name, header, body[1::2], body[0::2]))
        else:
            out.append((path.name, path.name, header, body, []))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--voxline", default=str(ROOT / "target/release/voxline"))
    ap.add_argument("--per-fold", action="store_true")
    ap.add_argument("--show", action="store_true",
                    help="print each held-out message classified wrong with confidence to act")
    ap.add_argument("--all-misses", action="store_true",
                    help="print every held-out message classified wrong, acted on or not")
    ap.add_argument("--whole-files", action="store_true",
                    help="leave each training file out whole rather than half at a time")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a [dialog.thresholds] setting for every fold")
    args = ap.parse_args()

    totals = defaultdict(lambda: defaultdict(int))
    for name, file, header, held, kept in folds(args.whole_files):
        with tempfile.TemporaryDirectory() as tmp:
            tmp = Path(tmp)
            data = tmp / "data"
            shutil.copytree(ROOT / "data", data)
            learned = data / "intents/learned"
            if learned.exists():
                shutil.rmtree(learned)
            (data / "intents/corpus" / file).write_text("\n".join(header + kept) + "\n")
            fold = tmp / "fold.tsv"
            fold.write_text("\n".join(["lang\ttext\tintent"] + held) + "\n")
            config = tmp / "voxline.toml"
            thresholds = "".join(f"{kv}\n" for kv in args.set)
            config.write_text(f'[dialog]\ndata_dir = "{data}"\n'
                              f'[dialog.thresholds]\n{thresholds}')
            out = subprocess.run(
                [args.voxline, "--config", str(config), "intent", "eval", "--json",
                 *(["--misses"] if args.show or args.all_misses else []), str(fold)],
                capture_output=True, text=True, check=True, cwd=ROOT,
            ).stdout
        report = json.loads(out)
        figures = report["figures"]
        for miss in report.get("misses", []):
            if miss.get("acted") or args.all_misses:
                print(f"{name}: {miss['lang']} {miss['text']!r} -> {miss['got']} "
                      f"({miss['confidence']:.2f}), want {miss['want']}")
        if args.per_fold:
            a = figures["all"]
            print(f"{name}: {a['correct']}/{a['messages']} acted {a['acted']} "
                  f"confident wrong {a['confident_wrong']}")
        for lang, f in figures.items():
            for k in ("messages", "correct", "acted", "confident_wrong"):
                totals[lang][k] += f[k]

    print("| lang | messages | accuracy | acted | confident wrong |")
    print("|---|---:|---:|---:|---:|")
    for lang in sorted(totals, key=lambda l: (l == "all", l)):
        t = totals[lang]
        print(f"| {lang} | {t['messages']} | {t['correct'] / t['messages']:.3f} | {t['acted']} "
              f"| {t['confident_wrong']} ({t['confident_wrong'] / t['messages']:.1%}) |")


if __name__ == "__main__":
    main()
