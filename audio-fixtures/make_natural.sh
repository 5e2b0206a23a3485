#!/usr/bin/env bash
# audio-fixtures/make_natural.sh: the Spanish, Italian, Portuguese and French commerce utterances
# spoken by Kokoro-82M's native voices, and their manifest entries.
#
# What it makes (paths relative to audio-fixtures/):
#   natural/<lang>/<slug>.ogg        one utterance per dialog intent in es, it, pt and fr (76). The
#                                    es/it/pt texts and slugs are those of the espeak-ng notes in
#                                    commerce/ (read from manifest.json); the French ones are below
#   natural_noisy/<lang>_<slug>.ogg  8 of them mixed with make.sh's synthetic street noise at 10 dB SNR
#   manifest.json                    its "kokoro" entries replaced by one per file above; every other
#                                    entry is kept as it is
#
# The voices are Kokoro v1.0's native ones (from the npm package kokoro-js, see models/fetch.sh):
# es ef_dora/em_alex, it if_sara/im_nicola, pt (Brazilian) pf_dora/pm_alex, fr ff_siwis, taken in
# turn through each language's list, at speeds cycling through 1.0, 0.9, 1.1, 0.95, 1.05. Text is
# spoken by `voxline say --provider kokoro` exactly as a reply is (numbers in words, espeak-ng
# phonemes, the int8 model), then decoded, trimmed of the model's own silence, given 0.3 s of silence
# before and about 0.45 s after (as make.sh), peak-normalised to -2.5 dBFS (the espeak-ng notes'
# level; the voices differ by up to 10 dB) and encoded in voice-note form: Ogg/Opus, mono, 16 kHz
# input, 24 kbit/s VBR, VOIP, 20 ms frames.
#
# Needs: a voxline binary with `say` (default target/release/voxline; `cargo build --release`), the
# Kokoro model and voices in models/ (`./x setup`, or models/fetch.sh), python3, ffmpeg/ffprobe
# with libopus, sox, awk. Reproducible: Kokoro and the encoders are deterministic and the noise has
# fixed seeds, so running it twice gives identical files. Everything is built in a temporary folder
# and swapped in at the end. Run time: about 2 s per utterance on 2 idle cores (the model loads once
# per utterance).
#
# Usage: bash audio-fixtures/make_natural.sh [VOXLINE_BINARY]
set -euo pipefail
export LC_ALL=C.UTF-8

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/.." && pwd)"
VOXLINE="${1:-$ROOT/target/release/voxline}"
export VOXLINE_MODELS_DIR="${VOXLINE_MODELS_DIR:-$ROOT/models}"
SNR_DB=10
SPEEDS=(1.0 0.9 1.1 0.95 1.05)
declare -A VOICES=([es]="ef_dora em_alex" [it]="if_sara im_nicola" [pt]="pf_dora pm_alex" [fr]="ff_siwis")
GENERATED=(natural natural_noisy)

die() { echo "make_natural.sh: $*" >&2; exit 1; }
for tool in python3 awk ffmpeg ffprobe sox; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool not found: $tool"
done
[ -x "$VOXLINE" ] || die "no voxline binary at $VOXLINE (cargo build --release)"
"$VOXLINE" say --help >/dev/null 2>&1 || die "$VOXLINE has no 'say' command (rebuild it)"
for lang in es it pt fr; do
    for v in ${VOICES[$lang]}; do
        [ -f "$VOXLINE_MODELS_DIR/kokoro/voices/$v.npy" ] ||
            die "Kokoro voice $v is missing from $VOXLINE_MODELS_DIR/kokoro/voices (run models/fetch.sh)"
    done
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
OUT="$tmp/out"
WORK="$tmp/work"
TSV="$tmp/manifest.tsv"
mkdir -p "$OUT" "$WORK/say" "$WORK/master" "$WORK/noisy"
: >"$TSV"

# The reply path's waits are for customers; a fixture may take its time on a busy machine.
CONFIG="$tmp/voxline.toml"
cat >"$CONFIG" <<'EOF'
[tts.fallback]
first_audio_timeout_ms = 600000
stall_timeout_ms = 600000
[tts.kokoro]
threads = 2
EOF

FF=(ffmpeg -nostdin -hide_banner -loglevel error -y)
EXACT=(-map_metadata -1 -fflags +bitexact -flags:a +bitexact)

# to_opus IN OUT: the WhatsApp voice-note form (as in make.sh).
to_opus() {
    "${FF[@]}" -i "$1" -ac 1 -ar 16000 -c:a libopus -b:a 24k -vbr on \
        -application voip -frame_duration 20 "${EXACT[@]}" "$2"
}

# add FILE LANG INTENT CONDITION TEXT
add() { printf '%s\t%s\t%s\tkokoro\togg_opus\t%s\t%s\n' "$@" >>"$TSV"; }

duration_s() { ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$1"; }
rms() { local f="$1"; shift; sox -R "$f" -n "$@" stat 2>&1 | awk '/^RMS +amplitude/ {print $3}'; }
peak() { sox -R "$1" -n stat 2>&1 | awk '/^Maximum amplitude/ {a = $3} /^Minimum amplitude/ {b = -$3} END {printf "%.6f", (a > b) ? a : b}'; }

# ---------------------------------------------------------------------------------------------
# 1. The utterances: es/it/pt from the espeak-ng commerce notes, French here
#    lang|slug|intent|text
# ---------------------------------------------------------------------------------------------
FRENCH="$(cat <<'EOF'
fr|greeting_hello|greeting|Salut, bonjour !
fr|availability_running_shoes|availability_shipping|Vous avez des chaussures de course en taille 42 ?
fr|price_blue_backpack|price_inquiry|Combien coûte le sac à dos bleu ?
fr|availability_ship_tomorrow|availability_shipping|Si je commande maintenant, ça arrive demain ?
fr|cart_add_two|cart_add|Ajoutez-en deux à mon panier, s'il vous plaît.
fr|cart_view|cart_view|Qu'est-ce qu'il y a dans mon panier ?
fr|checkout_pay_now|checkout|Je veux finaliser ma commande et payer.
fr|order_status_1842|order_status|Où en est ma commande 1842 ?
fr|delivery_change_saturday|delivery_change|Vous pouvez me la livrer samedi plutôt ?
fr|address_change|address_change|Je veux changer l'adresse de livraison.
fr|cancel_order_2210|cancel_order|Annulez ma commande 2210.
fr|refund_broken_lamp|refund_request|Je veux être remboursé pour la lampe cassée.
fr|payment_status|payment_status|Est-ce que mon paiement est passé ?
fr|complaint_damaged|complaint|Le colis est arrivé abîmé et la boîte était ouverte.
fr|human_handoff_person|human_handoff|Je veux parler à une vraie personne.
fr|opt_out_stop|opt_out|Stop, ne m'envoyez plus de messages.
fr|text_only_no_voice|text_only|Écrivez-moi, pas de messages vocaux.
fr|thanks_bye|thanks_bye|Merci beaucoup, au revoir !
fr|faq_opening_hours|faq|Quels sont vos horaires d'ouverture ?
EOF
)"
UTTERANCES="$(python3 - "$HERE/manifest.json" <<'PY'
import json, re, sys
fixtures = json.load(open(sys.argv[1], encoding="utf-8"))["fixtures"]
rows = []
for f in fixtures:
    m = re.fullmatch(r"commerce/(es|it|pt)/([a-z0-9_]+)\.ogg", f["file"])
    if m and f["source"] == "espeak-ng" and f["condition"] == "clean" and f["intent"]:
        if "|" in f["text"] or "\n" in f["text"]:
            sys.exit(f"{f['file']}: a text with '|' or a line break")
        rows.append(f"{m[1]}|{m[2]}|{f['intent']}|{f['text']}")
print("\n".join(rows))
PY
)"
UTTERANCES="$UTTERANCES"$'\n'"$FRENCH"

# ---------------------------------------------------------------------------------------------
# 2. Speaking them
# ---------------------------------------------------------------------------------------------
echo "== natural: speaking the utterances with Kokoro's native voices"
declare -A TEXT INTENT COUNT
while IFS='|' read -r lang slug intent text; do
    [ -n "$lang" ] || continue
    key="$lang/$slug"
    [ -z "${TEXT[$key]+x}" ] || die "duplicate utterance $key"
    TEXT[$key]="$text"; INTENT[$key]="$intent"
    i=${COUNT[$lang]:-0}; COUNT[$lang]=$((i + 1))
    read -r -a voices <<<"${VOICES[$lang]}"
    voice="${voices[i % ${#voices[@]}]}"
    speed="${SPEEDS[i % ${#SPEEDS[@]}]}"
    say="$WORK/say/${lang}_$slug"
    (cd "$ROOT" && "$VOXLINE" --config "$CONFIG" say --provider kokoro --lang "$lang" \
        --voice "$voice" --speed "$speed" --out "$say.ogg" "$text" >/dev/null </dev/null) ||
        die "voxline say failed for $key"
    # Decoded at half level: Opus overshoots full scale where a loud voice (if_sara) reaches it.
    "${FF[@]}" -i "$say.ogg" -ac 1 -af volume=0.5 -c:a pcm_s16le "${EXACT[@]}" "$say.wav"
    # Off with the model's own silence at both ends (below -60 dBFS), on with make.sh's: 0.3 s
    # before, 0.45 s after, at least 1.2 s in all.
    sox -R "$say.wav" "$say.trim.wav" silence 1 0.01 0.1% reverse silence 1 0.01 0.1% reverse
    d="$(duration_s "$say.trim.wav")"
    tail="$(awk -v d="$d" 'BEGIN { t = 0.45; if (d + 0.3 + t < 1.2) t = 1.2 - d - 0.3; printf "%.3f", t }')"
    mkdir -p "$WORK/master/$lang" "$OUT/natural/$lang"
    sox -R "$say.trim.wav" -b 16 "$WORK/master/$key.wav" pad 0.3 "$tail" gain -n -2.5
    d="$(duration_s "$WORK/master/$key.wav")"
    awk -v d="$d" 'BEGIN { exit !(d >= 1.0 && d <= 6.0) }' || die "$key lasts ${d}s, outside 1..6 s"
    s_rms="$(rms "$WORK/master/$key.wav" silence 1 0.02 1% -1 0.05 1%)"
    awk -v r="$s_rms" 'BEGIN { exit !(r >= 0.05) }' || die "$key is too quiet: speech RMS $s_rms"
    to_opus "$WORK/master/$key.wav" "$OUT/natural/$key.ogg"
    printf '   %-40s %-10s speed %-4s %5.2f s, speech RMS %s\n' "natural/$key.ogg" "$voice" "$speed" "$d" "$s_rms"
    add "natural/$key.ogg" "$lang" "$intent" clean "$text"
done <<<"$UTTERANCES"
for lang in es it pt fr; do
    [ "${COUNT[$lang]:-0}" -eq 19 ] || die "expected 19 utterances in $lang, found ${COUNT[$lang]:-0}"
done

# ---------------------------------------------------------------------------------------------
# 3. Noisy forms: make.sh's street noise (same recipe, other seeds) at SNR_DB
# ---------------------------------------------------------------------------------------------
echo "== natural_noisy"
mkdir -p "$OUT/natural_noisy"
# noisy KEY SEED
noisy() {
    local key="$1" seed="$2"
    local lang="${key%%/*}" slug="${key#*/}"
    local rel="natural_noisy/${lang}_${slug}.ogg" w="$WORK/noisy/${lang}_${slug}"
    [ -f "$WORK/master/$key.wav" ] || die "no master for $key"
    sox -R "$WORK/master/$key.wav" -r 16000 -c 1 "$w.speech.wav"
    local d; d="$(duration_s "$w.speech.wav")"
    local c1 c2
    c1="$(awk -v d="$d" -v s="$seed" 'BEGIN { printf "%.3f", d * (0.45 + 0.02 * (s % 6)) }')"
    c2="$(awk -v d="$d" 'BEGIN { printf "%.3f", (d > 2.5) ? 0.4 : -5 }')"
    local env="0.55+0.2*sin(2*PI*0.23*t+$((seed % 7)))+0.12*sin(2*PI*0.07*t)+1.5*exp(-pow(t-$c1,2)/0.45)+0.8*exp(-pow(t-$c2,2)/0.3)"
    "${FF[@]}" -filter_complex "\
anoisesrc=color=brown:amplitude=0.8:seed=$seed:sample_rate=16000:duration=$d,highpass=f=120,lowpass=f=700[rumble];\
anoisesrc=color=pink:amplitude=0.25:seed=$((seed + 1000)):sample_rate=16000:duration=$d,highpass=f=250,lowpass=f=5000[hiss];\
[rumble][hiss]amix=inputs=2:normalize=0,volume=eval=frame:volume='$env',volume=0.25[out]" \
        -map '[out]' -c:a pcm_s16le "${EXACT[@]}" "$w.noise.wav"
    awk -v p="$(peak "$w.noise.wav")" 'BEGIN { exit !(p < 0.99) }' || die "noise bed for $key clips"
    local s_rms n_rms gain
    s_rms="$(rms "$w.speech.wav" silence 1 0.02 1% -1 0.05 1%)"
    n_rms="$(rms "$w.noise.wav")"
    gain="$(awk -v s="$s_rms" -v n="$n_rms" -v snr="$SNR_DB" 'BEGIN { printf "%.6f", s / (n * 10 ^ (snr / 20)) }')"
    sox -R -m -v 0.7 "$w.speech.wav" -v "$(awk -v g="$gain" 'BEGIN { printf "%.6f", 0.7 * g }')" \
        "$w.noise.wav" -e floating-point -b 32 "$w.mix.wav"
    if awk -v p="$(peak "$w.mix.wav")" 'BEGIN { exit !(p > 0.95) }'; then
        sox -R "$w.mix.wav" "$w.mix2.wav" gain -n -1 && mv "$w.mix2.wav" "$w.mix.wav"
    fi
    to_opus "$w.mix.wav" "$OUT/$rel"
    printf '   %-40s speech RMS %s, noise RMS %s, gain %s\n' "$rel" "$s_rms" "$n_rms" "$gain"
    add "$rel" "$lang" "${INTENT[$key]}" noisy "${TEXT[$key]}"
}
# make.sh's noisy Spanish, Italian and Portuguese notes, so that the two voices compare, and more
noisy es/price_blue_backpack        21
noisy es/human_handoff_person       22
noisy it/cancel_order_2210          23
noisy it/payment_status             24
noisy pt/delivery_change_saturday   25
noisy pt/order_status_1842          26
noisy fr/order_status_1842          27
noisy fr/cancel_order_2210          28

# ---------------------------------------------------------------------------------------------
# 4. Check every file, then write manifest.json: its other entries as they are, then these
# ---------------------------------------------------------------------------------------------
echo "== checking and updating manifest.json"
python3 - "$OUT" "$TSV" "$HERE/manifest.json" <<'PY'
import json, os, subprocess, sys

out, tsv, manifest = sys.argv[1:4]
new = []
with open(tsv, encoding="utf-8") as fh:
    for line in fh:
        file, lang, intent, source, form, condition, text = line.rstrip("\n").split("\t")
        path = os.path.join(out, file)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name",
             "-of", "json", path], capture_output=True, text=True)
        if probe.returncode != 0 or probe.stderr.strip():
            sys.exit(f"ffprobe failed on {file}: {probe.stderr.strip()}")
        info = json.loads(probe.stdout)
        codecs = [s["codec_name"] for s in info.get("streams", [])]
        if codecs != ["opus"]:
            sys.exit(f"{file}: streams {codecs}, expected one opus stream")
        decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
                                capture_output=True, text=True)
        if decode.returncode != 0 or decode.stderr.strip():
            sys.exit(f"decoding {file} reported: {decode.stderr.strip()}")
        new.append({
            "file": file, "language": lang, "text": text, "intent": intent,
            "source": source, "form": form, "condition": condition,
            "duration_ms": int(round(float(info["format"]["duration"]) * 1000)),
        })
kept = [f for f in json.load(open(manifest, encoding="utf-8"))["fixtures"] if f["source"] != "kokoro"]
fixtures = kept + new
files = [f["file"] for f in fixtures]
if len(set(files)) != len(files):
    sys.exit("duplicate file in manifest")
with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as fh:
    fh.write('{"fixtures":[\n')
    fh.write(",\n".join(json.dumps(f, ensure_ascii=False) for f in fixtures))
    fh.write("\n]}\n")
print(f"   {len(new)} natural-voice fixtures checked; {len(fixtures)} in the manifest")
PY

# ---------------------------------------------------------------------------------------------
# 5. Swap the new files in
# ---------------------------------------------------------------------------------------------
for item in "${GENERATED[@]}"; do
    rm -rf "${HERE:?}/$item"
    mv "$OUT/$item" "$HERE/$item"
done
mv "$OUT/manifest.json" "$HERE/manifest.json"
echo "== done: $(du -sh "$HERE/natural" "$HERE/natural_noisy" | awk '{print $2 " " $1}' | tr '\n' ' ')"
