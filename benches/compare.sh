#!/usr/bin/env bash
# Side-by-side figures for the README, in one run on this machine:
#  - voxline's STT (criterion, benches/stt.rs) against faster-whisper on the
#    same CTranslate2 weights, the same prepared PCM, 2 threads, greedy;
#  - voxline's decode + resample (benches/media.rs) against
#    `ffmpeg -ar 16000 -ac 1`.
# faster-whisper is installed into .venv (not committed) on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
export WHISPER_DONT_GENERATE_BINDINGS=1

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -c "import faster_whisper" 2>/dev/null || .venv/bin/pip install --quiet faster-whisper

cargo bench --quiet --bench media -- --noplot 2>&1 | grep -E "^[a-z_/0-9.-]+ +time:|time:" || true
cargo bench --quiet --bench stt -- --noplot 2>&1 | grep -E "time:" || true
.venv/bin/python benches/compare.py
