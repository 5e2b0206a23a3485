"""Times faster-whisper on the PCM that benches/stt.rs wrote and prints it
beside voxline's criterion medians, with WER for both on the same clips.

Run by benches/compare.sh after `cargo bench --bench stt`.
"""
import glob
import json
import os
import re
import statistics
import subprocess
import time

import numpy as np
from faster_whisper import WhisperModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PCM = os.path.join(ROOT, "target", "bench-pcm")
CRITERION = os.path.join(ROOT, "target", "criterion", "stt_tiny_en")
CT2 = os.path.join(ROOT, "models", "ct2", "tiny.en")
ROUNDS = 10


def words(text):
    """Same normalisation as voxline::fixtures::normalise_words."""
    text = re.sub(r"(?<=\d)[.,](?=\d)", "", text.lower())
    return [w.strip("'") for w in re.sub(r"[^\w']+", " ", text).split() if w.strip("'")]


def edits(r, h):
    prev = list(range(len(h) + 1))
    for i, rw in enumerate(r):
        cur = [i + 1]
        for j, hw in enumerate(h):
            cur.append(min(prev[j] + (rw != hw), prev[j + 1] + 1, cur[j] + 1))
        prev = cur
    return prev[-1]


def criterion_ms(variant, name):
    path = os.path.join(CRITERION, variant, name, "new", "estimates.json")
    try:
        with open(path) as f:
            return json.load(f)["median"]["point_estimate"] / 1e6
    except FileNotFoundError:
        return None


def voxline_text(file):
    out = subprocess.run(
        [os.path.join(ROOT, "target", "release", "voxline"), "transcribe", "--json", file],
        check=True, capture_output=True, text=True,
        env={**os.environ, "VOXLINE_MODELS_DIR": os.path.join(ROOT, "models")},
    ).stdout
    return json.loads(out.splitlines()[-1])["text"]


def fw_run(model, audio):
    segments, _ = model.transcribe(audio, language="en", beam_size=1, best_of=1, vad_filter=False)
    return " ".join(s.text.strip() for s in segments)


def main():
    clips = sorted(glob.glob(os.path.join(PCM, "*.f32")))
    if not clips:
        raise SystemExit("no PCM in target/bench-pcm: run cargo bench --bench stt first")
    models = {
        ct: WhisperModel(CT2, device="cpu", compute_type=ct, cpu_threads=2, num_workers=1)
        for ct in ("float32", "int8")
    }
    rows = []
    totals = {"voxline": [0, 0], "float32": [0, 0]}
    for path in clips:
        name = os.path.basename(path)[:-4]
        with open(path[:-4] + ".json") as f:
            meta = json.load(f)
        audio = np.fromfile(path, dtype="<f4")
        fw = {}
        for ct, model in models.items():
            text = fw_run(model, audio)  # warm-up
            times = []
            for _ in range(ROUNDS):
                t = time.perf_counter()
                fw_run(model, audio)
                times.append((time.perf_counter() - t) * 1000)
            fw[ct] = (statistics.median(times), text)
        vtext = voxline_text(meta["file"])
        ref = words(meta["text"])
        totals["voxline"][0] += edits(ref, words(vtext))
        totals["float32"][0] += edits(ref, words(fw["float32"][1]))
        totals["voxline"][1] += len(ref)
        totals["float32"][1] += len(ref)
        rows.append((name, len(audio) / 16000, criterion_ms("f16-fitted", name),
                     criterion_ms("q8_0-fitted", name), criterion_ms("f16-full", name),
                     fw["float32"][0], fw["int8"][0]))
    print()
    print(f"{'clip':<34} {'sec':>5} {'vox f16':>8} {'vox q8':>8} {'vox full':>8} "
          f"{'fw f32':>8} {'fw int8':>8} {'f16/fw32':>8}")
    fmt = lambda v: f"{v:8.0f}" if v is not None else f"{'-':>8}"
    for name, sec, f16, q8, full, f32, i8 in rows:
        ratio = f"{f16 / f32:8.2f}" if f16 else f"{'-':>8}"
        print(f"{name[-34:]:<34} {sec:5.1f} {fmt(f16)} {fmt(q8)} {fmt(full)} {fmt(f32)} {fmt(i8)} {ratio}")
    for k, (e, n) in totals.items():
        label = "voxline tiny.en f16 (fitted)" if k == "voxline" else "faster-whisper float32"
        print(f"WER {label}: {e / max(n, 1):.3f} over {n} words")


if __name__ == "__main__":
    main()
