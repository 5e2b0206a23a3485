#!/usr/bin/env bash
# audio-fixtures/make_not_speech.sh: regenerates audio-fixtures/not_speech/, from scratch.
#
# The "not speech" set: WhatsApp-style voice notes that voxline must never act upon, because
# they hold no speech at all or speech in a language the business does not serve (it serves
# en, es, it, pt and fr). All of it is synthesised here; nothing is downloaded.
#
# What it makes (all paths relative to audio-fixtures/not_speech/):
#   silence_digital.ogg, silence_room_tone.ogg         digital silence; room tone at -60 dBFS RMS
#   noise_street.ogg, noise_wind.ogg, noise_hiss.ogg    traffic-like, wind-like and plain hiss
#   music_melody.ogg, music_beat.ogg                    a sox-synth melody over chords; a drum-like beat
#   cough_three.ogg, cough_throat_clear.ogg             coughs; a breath and a throat clearing
#   knock_pocket.ogg                                    knocks and taps, muffled as in a pocket
#   speech_de_*.ogg, speech_ja_*.ogg, speech_ru_*.ogg   espeak-ng speech in German, Japanese, Russian
#   list.json                                           one entry per note: file, kind, language,
#                                                       text, duration_ms (from ffprobe)
#
# "Voice-note form" = Ogg/Opus, mono, 16 kHz input, 24 kbit/s, VOIP application, 20 ms frames,
# exactly as in make.sh. Every note lasts 2 to 6 s.
#
# How the sounds are made: noise comes from ffmpeg's anoisesrc with fixed seeds, filtered, and
# multiplied (amultiply) by envelopes written as aevalsrc expressions; tones for the melody and
# chords come from sox synth; the beat, coughs and knocks are aevalsrc expressions plus shaped
# noise. Levels are set from what `sox stat` measures (RMS for the room tone and noises, peak for
# the music, coughs and knocks); the speech keeps espeak-ng's level, as in make.sh.
# Japanese is written in kana only: espeak-ng 1.51's Japanese voice cannot read kanji (it spells
# them out in English as "Chinese letter"), and it reads the particle は as "ha", so the spoken text
# writes it わ while the reference text keeps は.
#
# Tools it needs: bash, coreutils (mktemp), awk, python3 (list.json), espeak-ng (1.51 used),
# ffmpeg and ffprobe (with libopus), sox.
#
# Reproducible: noise sources have fixed seeds, sox runs in repeatable mode (-R), and ffmpeg writes
# bit-exact output without metadata; running it twice with the same tool versions gives identical
# files. Idempotent: everything is built in a temporary folder and swapped in only at the end, so a
# failed run leaves the previous not_speech/ untouched. Nothing outside not_speech/ is touched
# (make.sh does not touch not_speech/ either). Run time: a few seconds.
#
# Usage: bash audio-fixtures/make_not_speech.sh
set -euo pipefail
export LC_ALL=C.UTF-8

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
SET=not_speech
SR=16000             # every master is made at the voice-note input rate

die() { echo "make_not_speech.sh: $*" >&2; exit 1; }
for tool in python3 awk espeak-ng ffmpeg ffprobe sox; do
    command -v "$tool" >/dev/null 2>&1 || die "required tool not found: $tool"
done
# (read into a variable first: with pipefail, grep -q closing the pipe early can fail the test)
encoders="$(ffmpeg -hide_banner -encoders 2>/dev/null)"
grep -q libopus <<<"$encoders" || die "ffmpeg has no libopus encoder"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
OUT="$tmp/$SET"       # the new fixture folder
WORK="$tmp/work"      # intermediates: 32-bit float WAV masters
TSV="$tmp/list.tsv"
mkdir -p "$OUT" "$WORK"
: >"$TSV"

FF=(ffmpeg -nostdin -hide_banner -loglevel error -y)
# No tags, no encoder version strings, fixed Ogg serial numbers.
EXACT=(-map_metadata -1 -fflags +bitexact -flags:a +bitexact)

# to_opus IN OUT: the WhatsApp voice-note form.
to_opus() {
    "${FF[@]}" -i "$1" -ac 1 -ar 16000 -c:a libopus -b:a 24k -vbr on \
        -application voip -frame_duration 20 "${EXACT[@]}" "$2"
}

# add FILE KIND LANG TEXT  (LANG and TEXT "-" mean null)
add() { printf '%s\t%s\t%s\t%s\n' "$@" >>"$TSV"; }

# duration_s FILE
duration_s() { ffprobe -v error -show_entries format=duration -of default=nw=1:nk=1 "$1"; }

# rms FILE: RMS amplitude (linear, full scale = 1)
rms() { sox -R "$1" -n stat 2>&1 | awk '/^RMS +amplitude/ {print $3}'; }

# peak FILE: largest absolute sample value (linear)
peak() { sox -R "$1" -n stat 2>&1 | awk '/^Maximum amplitude/ {a = $3} /^Minimum amplitude/ {b = -$3} END {printf "%.6f", (a > b) ? a : b}'; }

# graph OUT_AU DURATION FILTERGRAPH: runs an ffmpeg filtergraph whose output pad is [out] and
# writes DURATION seconds of it, scaled down by HEADROOM, as a 32-bit float AU file (sox reads
# ffmpeg's float AU without complaint, and its float WAV with a warning). sox clips float input
# at full scale, so the peak must stay below 1; the levels are set afterwards anyway.
HEADROOM=0.25
graph() {
    "${FF[@]}" -filter_complex "$3;[out]volume=$HEADROOM[final]" -map '[final]' -t "$2" -ac 1 -ar "$SR" \
        -c:a pcm_f32be "${EXACT[@]}" "$1"
    awk -v p="$(peak "$1")" 'BEGIN { exit !(p < 0.99) }' || die "$1 reaches full scale; lower its gains"
}

# noise COLOR SEED DURATION: an anoisesrc source (amplitude 1) for a filtergraph
noise() { echo "anoisesrc=color=$1:amplitude=1:seed=$2:sample_rate=$SR:duration=$3"; }

# env DURATION EXPR: an aevalsrc source for a filtergraph
env() { echo "aevalsrc=exprs='$2':s=$SR:d=$1"; }

# bursts TEMPLATE LENGTH T1:A1 T2:A2 ...: the sum over i of Ai * TEMPLATE, with every @ in
# TEMPLATE standing for the time since Ti; each term is zero outside [Ti, Ti + LENGTH].
bursts() {
    local tmpl="$1" len="$2" sum="" item t a
    shift 2
    for item in "$@"; do
        t="${item%%:*}"; a="${item#*:}"
        sum="${sum:+$sum+}if(between(t,$t,$t+$len),$a*(${tmpl//@/(t-$t)}),0)"
    done
    echo "$sum"
}

# level_rms IN OUT DBFS: scales IN so that its RMS is DBFS; the peak must stay below 0.97.
level_rms() {
    local r g
    r="$(rms "$1")"
    g="$(awk -v r="$r" -v db="$3" 'BEGIN { if (r <= 0) exit 1; printf "%.6f", 10 ^ (db / 20) / r }')" \
        || die "$1 is silent, cannot set its RMS"
    sox -R "$1" "$2" vol "$g"
    awk -v p="$(peak "$2")" 'BEGIN { exit !(p < 0.97) }' || die "$2 clips at $3 dBFS RMS"
}

# level_peak IN OUT DBFS: scales IN so that its peak is DBFS.
level_peak() { sox -R "$1" "$2" gain -n "$3"; }

# note NAME KIND MASTER: encodes a master into not_speech/NAME.ogg and lists it
note() {
    to_opus "$3" "$OUT/$1.ogg"
    add "$1.ogg" "$2" "-" "-"
}

# ---------------------------------------------------------------------------------------------
# 1. Silence
# ---------------------------------------------------------------------------------------------
echo "== silence"
sox -R -n -r "$SR" -c 1 -e floating-point -b 32 "$WORK/silence_digital.wav" trim 0 3
note silence_digital silence "$WORK/silence_digital.wav"

# Room tone: brown noise (hum of a quiet room, 40 Hz to 1 kHz) with a little pink noise on top,
# at -60 dBFS RMS.
graph "$WORK/room.raw.au" 4 "\
$(noise brown 201 4),highpass=f=40,lowpass=f=1000[b];\
$(noise pink 202 4),highpass=f=200,lowpass=f=6000,volume=0.15[p];\
[b][p]amix=inputs=2:normalize=0[out]"
level_rms "$WORK/room.raw.au" "$WORK/silence_room_tone.wav" -60
note silence_room_tone silence "$WORK/silence_room_tone.wav"

# ---------------------------------------------------------------------------------------------
# 2. Noise
# ---------------------------------------------------------------------------------------------
echo "== noise"
# Street: traffic rumble (brown, 60-700 Hz) and tyre hiss (pink, 250 Hz-4.5 kHz) under a slow
# swell with one car passing at 2.3 s; on top of it a short horn at 0.5 s, an air-brake hiss
# at 1.3 s and a clunk (a wheel over a manhole cover) at 3.2 s.
swell="0.55+0.15*sin(2*PI*0.31*t)+0.9*exp(-pow(t-2.3,2)/0.3)"
horn="$(bursts "(1-exp(-@/0.01))*(1-exp(-(0.32-@)/0.02))*(sin(2*PI*415*@)+0.6*sin(2*PI*830*@)+0.5*sin(2*PI*520*@)+0.3*sin(2*PI*1040*@))" 0.32 0.5:0.14)"
brake="$(bursts "(1-exp(-@/0.008))*exp(-@/0.18)" 0.6 1.3:1)"
clunk="$(bursts "(1-exp(-@/0.002))*exp(-@/0.05)" 0.3 3.2:1 3.33:0.6)"
graph "$WORK/street.raw.au" 4 "\
$(noise brown 301 4),highpass=f=60,lowpass=f=700,lowpass=f=700[rumble];\
$(noise pink 302 4),highpass=f=250,lowpass=f=4500,volume=0.35[tyres];\
[rumble][tyres]amix=inputs=2:normalize=0[bed0];\
$(env 4 "$swell")[swell];[bed0][swell]amultiply[bed];\
$(noise white 303 4),highpass=f=2000,highpass=f=2000,lowpass=f=6000,volume=1.4[hiss];\
$(env 4 "$brake")[benv];[hiss][benv]amultiply[brake];\
$(noise brown 304 4),highpass=f=80,lowpass=f=400,volume=4[thud];\
$(env 4 "$clunk")[cenv];[thud][cenv]amultiply[clunk];\
$(env 4 "$horn")[horn];\
[bed][brake][clunk][horn]amix=inputs=4:normalize=0[out]"
level_rms "$WORK/street.raw.au" "$WORK/noise_street.wav" -24
note noise_street noise "$WORK/noise_street.wav"

# Wind on the microphone: low-passed pink and brown noise (buffeting) and a faint band of noise
# around 900 Hz (whistle), under slow gusts.
gusts="max(0.08,0.5+0.3*sin(2*PI*0.45*t+0.4)+0.25*sin(2*PI*0.17*t+2.1)+0.1*sin(2*PI*1.3*t))"
graph "$WORK/wind.raw.au" 3 "\
$(noise pink 401 3),highpass=f=60,lowpass=f=600,lowpass=f=600[buffet];\
$(noise brown 402 3),highpass=f=60,lowpass=f=300,volume=0.8[low];\
$(noise white 403 3),bandpass=f=900:width_type=q:w=6,volume=0.3[whistle];\
[buffet][low][whistle]amix=inputs=3:normalize=0[wind0];\
$(env 3 "$gusts")[gusts];[wind0][gusts]amultiply[out]"
level_rms "$WORK/wind.raw.au" "$WORK/noise_wind.wav" -26
note noise_wind noise "$WORK/noise_wind.wav"

# Hiss: steady pink noise (100 Hz to 7 kHz) at a normal recording level, -30 dBFS RMS.
graph "$WORK/hiss.raw.au" 3 "$(noise pink 501 3),highpass=f=100,lowpass=f=7000[out]"
level_rms "$WORK/hiss.raw.au" "$WORK/noise_hiss.wav" -30
note noise_hiss noise "$WORK/noise_hiss.wav"

# ---------------------------------------------------------------------------------------------
# 3. Music-like
# ---------------------------------------------------------------------------------------------
echo "== music"
# Melody: 16 triangle-wave notes of 0.3 s over four sine chords of 1.2 s (C, F, G, C),
# 0.1 s of silence before and after: 5.0 s.
MELODY=(E4 G4 C5 G4  A4 F4 A4 C5  B4 D5 G4 B4  C5 G4 E4 C4)
CHORDS=("C3 E3 G3" "F3 A3 C4" "G3 B3 D4" "C3 E3 G3")
mkdir -p "$WORK/melody"
i=0
for n in "${MELODY[@]}"; do
    sox -R -n -r "$SR" -c 1 -e floating-point -b 32 "$WORK/melody/n$(printf %02d $i).wav" \
        synth 0.3 triangle "$n" fade q 0.008 0.3 0.12
    i=$((i + 1))
done
sox -R "$WORK"/melody/n*.wav "$WORK/melody/line.wav"
i=0
for chord in "${CHORDS[@]}"; do
    parts=()
    for n in $chord; do
        sox -R -n -r "$SR" -c 1 -e floating-point -b 32 "$WORK/melody/c${i}_$n.wav" \
            synth 1.2 sine "$n" fade q 0.03 1.2 0.15
        parts+=(-v 0.33 "$WORK/melody/c${i}_$n.wav")
    done
    sox -R -m "${parts[@]}" "$WORK/melody/chord$i.wav"
    i=$((i + 1))
done
sox -R "$WORK"/melody/chord?.wav "$WORK/melody/chords.wav"
sox -R -m -v 0.6 "$WORK/melody/line.wav" -v 0.4 "$WORK/melody/chords.wav" "$WORK/melody/mix.wav" pad 0.1 0.1
level_peak "$WORK/melody/mix.wav" "$WORK/music_melody.wav" -3
note music_melody music "$WORK/music_melody.wav"

# Beat: 120 bpm, 4 s = 8 beats. Kick (a sine falling from 155 to 55 Hz) on beats 1 and 3 of each
# bar, snare (band-passed noise and a 190 Hz body) on 2 and 4, closed hi-hat (high-passed noise)
# on every eighth, and a plucked bass (A2, A2, A2, A2, F2, F2, G2, G2) on every beat.
kick="if(lt(mod(t,1),0.35),exp(-mod(t,1)/0.07)*sin(2*PI*(55*mod(t,1)+5*(1-exp(-mod(t,1)/0.05)))),0)"
body="if(lt(mod(t-0.5,1),0.2),0.35*exp(-mod(t-0.5,1)/0.05)*sin(2*PI*190*mod(t-0.5,1)),0)"
bass="0.45*(1-exp(-mod(t,0.5)/0.004))*exp(-mod(t,0.5)/0.22)*sin(2*PI*if(lt(t,2),110,if(lt(t,3),87.31,98))*mod(t,0.5))"
snare_env="if(gte(t,0.5),(1-exp(-mod(t-0.5,1)/0.002))*exp(-mod(t-0.5,1)/0.08),0)"
hat_env="(1-exp(-mod(t,0.25)/0.001))*exp(-mod(t,0.25)/0.018)*if(lt(mod(t,0.5),0.25),1,0.6)"
graph "$WORK/beat.raw.au" 4 "\
$(env 4 "$kick+$body+$bass")[tones];\
$(noise white 601 4),highpass=f=300,lowpass=f=5000,volume=0.5[sn];\
$(env 4 "$snare_env")[se];[sn][se]amultiply[snare];\
$(noise white 602 4),highpass=f=5000,highpass=f=5000,volume=0.4[hn];\
$(env 4 "$hat_env")[he];[hn][he]amultiply[hat];\
[tones][snare][hat]amix=inputs=3:normalize=0[out]"
level_peak "$WORK/beat.raw.au" "$WORK/music_beat.wav" -3
note music_beat music "$WORK/music_beat.wav"

# ---------------------------------------------------------------------------------------------
# 4. Coughs
# ---------------------------------------------------------------------------------------------
echo "== cough"
# Three coughs in one fit (0.35, 0.85, 1.4 s; 2.5 s in all): white noise band-passed to
# 300-3000 Hz with a chest resonance near 500 Hz, 4 ms attack, ~150 ms decay and a weaker tail.
cough_env="$(bursts "(1-exp(-@/0.004))*(0.8*exp(-@/0.035)+0.2*exp(-@/0.12))" 0.5 0.35:1 0.85:0.8 1.4:0.6)"
graph "$WORK/cough.raw.au" 2.5 "\
$(noise white 701 2.5),highpass=f=300,highpass=f=300,lowpass=f=3000,lowpass=f=3000,\
equalizer=f=500:width_type=q:w=1.5:g=8,equalizer=f=1600:width_type=q:w=2:g=4[n];\
$(env 2.5 "$cough_env")[e];[n][e]amultiply[out]"
level_peak "$WORK/cough.raw.au" "$WORK/cough_three.wav" -3
note cough_three cough "$WORK/cough_three.wav"

# A breath in (0.2-0.9 s), two throat clearings ("hm-hm": rough noise at 150-1200 Hz, chopped
# at 38 Hz, with a faint 110 Hz buzz; 1.2-1.55 s and 1.7-2.2 s) and a breath out (2.4-2.9 s): 3 s.
inhale="if(between(t,0.2,0.9),0.25*pow(sin(PI*(t-0.2)/0.7),2),0)"
exhale="if(between(t,2.4,2.9),0.3*(1-exp(-(t-2.4)/0.02))*exp(-(t-2.4)/0.15),0)"
clear_shape="(1-exp(-@/0.03))*if(lt(@,0.25),1,exp(-(@-0.25)/0.06))*(0.55+0.45*sin(2*PI*38*@))"
clear_env="$(bursts "$clear_shape" 0.5 1.2:0.8 1.7:1)"
buzz="$(bursts "0.08*(1-exp(-@/0.03))*if(lt(@,0.25),1,exp(-(@-0.25)/0.06))*(sin(2*PI*110*@)+0.5*sin(2*PI*220*@)+0.3*sin(2*PI*330*@))" 0.5 1.2:0.8 1.7:1)"
graph "$WORK/throat.raw.au" 3 "\
$(noise white 801 3),highpass=f=600,lowpass=f=4000[bn];\
$(env 3 "$inhale+$exhale")[be];[bn][be]amultiply[breath];\
$(noise pink 802 3),highpass=f=150,highpass=f=150,lowpass=f=1200,lowpass=f=1200,volume=2[tn];\
$(env 3 "$clear_env")[te];[tn][te]amultiply[rough];\
$(env 3 "$buzz")[buzz];\
[breath][rough][buzz]amix=inputs=3:normalize=0[out]"
level_peak "$WORK/throat.raw.au" "$WORK/cough_throat_clear.wav" -6
note cough_throat_clear cough "$WORK/cough_throat_clear.wav"

# ---------------------------------------------------------------------------------------------
# 5. Knocks and taps from a pocket: 3 s
# ---------------------------------------------------------------------------------------------
echo "== knock"
# Three knocks (a 180 Hz thump, 30 ms decay, plus a click), a pause, then four lighter taps
# (420 Hz, 15 ms), over quiet fabric rustle; all low-passed at 2.2 kHz as if through cloth.
knocks="$(bursts "exp(-@/0.03)*sin(2*PI*180*@)+0.6*exp(-@/0.004)*sin(2*PI*760*@)" 0.25 0.35:1 0.57:0.9 0.79:0.95)"
taps="$(bursts "exp(-@/0.015)*sin(2*PI*420*@)+0.5*exp(-@/0.003)*sin(2*PI*1300*@)" 0.15 1.65:0.45 1.82:0.4 2.3:0.5 2.47:0.4)"
click_env="$(bursts "exp(-@/0.004)" 0.05 0.35:1 0.57:0.9 0.79:0.95 1.65:0.5 1.82:0.45 2.3:0.55 2.47:0.45)"
rustle="0.04+0.06*pow(sin(2*PI*0.35*t+0.5),4)"
graph "$WORK/knock.raw.au" 3 "\
$(env 3 "$knocks+$taps")[tones];\
$(noise white 901 3),lowpass=f=3000[cn];$(env 3 "$click_env")[ce];[cn][ce]amultiply,volume=0.5[clicks];\
$(noise brown 902 3),highpass=f=60,lowpass=f=500[rn];$(env 3 "$rustle")[re];[rn][re]amultiply[rustle];\
[tones][clicks][rustle]amix=inputs=3:normalize=0,lowpass=f=2200,lowpass=f=2200[out]"
level_peak "$WORK/knock.raw.au" "$WORK/knock_pocket.wav" -6
note knock_pocket knock "$WORK/knock_pocket.wav"

# ---------------------------------------------------------------------------------------------
# 6. Speech in languages the business does not serve (espeak-ng)
#    name|language|espeak voice|wpm|pitch|reference text|spoken text (only when it must differ)
# ---------------------------------------------------------------------------------------------
echo "== foreign speech"
FOREIGN="$(cat <<'EOF'
speech_de_order_status|de|de|150|50|Wo ist meine Bestellung? Ich habe sie letzte Woche aufgegeben.|
speech_de_return_shoes|de|de|165|40|Ich möchte die Schuhe zurückschicken, sie sind zu klein.|
speech_de_invoice|de|de|140|60|Können Sie mir bitte die Rechnung noch einmal schicken?|
speech_ja_order_status|ja|ja|145|55|わたしのちゅうもんはどこですか。せんしゅうかいました。|わたしのちゅうもんわどこですか。せんしゅうかいました。
speech_ja_return_shoes|ja|ja|160|45|このくつをかえしたいです。サイズがあいません。|
speech_ru_order_status|ru|ru|155|45|Где мой заказ? Я оплатил его в понедельник.|
EOF
)"
while IFS='|' read -r name lang voice wpm pitch text say; do
    [ -n "$name" ] || continue
    raw="$WORK/$name.raw.wav"
    espeak-ng -b 1 -v "$voice" -s "$wpm" -p "$pitch" -w "$raw" "${say:-$text}"
    # as in make.sh: 0.3 s of silence before the speech and 0.45 s after it
    sox -R "$raw" "$WORK/$name.wav" pad 0.3 0.45
    to_opus "$WORK/$name.wav" "$OUT/$name.ogg"
    add "$name.ogg" foreign_speech "$lang" "$text"
done <<<"$FOREIGN"

# ---------------------------------------------------------------------------------------------
# 7. Check every file with ffprobe/ffmpeg, then write list.json
# ---------------------------------------------------------------------------------------------
echo "== checking and writing list.json"
python3 - "$OUT" "$TSV" <<'PY'
import json, os, subprocess, sys

out, tsv = sys.argv[1], sys.argv[2]
kinds = {"silence", "noise", "music", "cough", "knock", "foreign_speech"}
served = {"en", "es", "it", "pt", "fr"}
notes = []
with open(tsv, encoding="utf-8") as fh:
    for line in fh:
        file, kind, lang, text = line.rstrip("\n").split("\t")
        path = os.path.join(out, file)
        probe = subprocess.run(
            ["ffprobe", "-v", "error", "-show_entries",
             "format=duration:stream=codec_name,channels,sample_rate", "-of", "json", path],
            capture_output=True, text=True)
        if probe.returncode != 0 or probe.stderr.strip():
            sys.exit(f"ffprobe failed on {file}: {probe.stderr.strip()}")
        info = json.loads(probe.stdout)
        streams = [(s["codec_name"], s["channels"]) for s in info.get("streams", [])]
        if streams != [("opus", 1)]:
            sys.exit(f"{file}: expected one mono Opus stream, found {streams}")
        decode = subprocess.run(["ffmpeg", "-nostdin", "-v", "error", "-i", path, "-f", "null", "-"],
                                capture_output=True, text=True)
        if decode.returncode != 0 or decode.stderr.strip():
            sys.exit(f"decoding {file} reported: {decode.stderr.strip()}")
        duration_ms = int(round(float(info["format"]["duration"]) * 1000))
        if not 2000 <= duration_ms <= 6000:
            sys.exit(f"{file} lasts {duration_ms} ms, outside 2..6 s")
        if kind not in kinds:
            sys.exit(f"{file}: unknown kind {kind}")
        language = None if lang == "-" else lang
        if (kind == "foreign_speech") != (language is not None) or language in served:
            sys.exit(f"{file}: kind {kind} with language {language}")
        notes.append({"file": file, "kind": kind, "language": language,
                      "text": None if text == "-" else text, "duration_ms": duration_ms})
files = [n["file"] for n in notes]
if len(set(files)) != len(files):
    sys.exit("duplicate file in list.json")
if sorted(files) != sorted(f for f in os.listdir(out) if f.endswith(".ogg")):
    sys.exit("list.json and the .ogg files do not match")
with open(os.path.join(out, "list.json"), "w", encoding="utf-8") as fh:
    fh.write('{"notes":[\n')
    fh.write(",\n".join(json.dumps(n, ensure_ascii=False) for n in notes))
    fh.write("\n]}\n")
json.load(open(os.path.join(out, "list.json"), encoding="utf-8"))
print(f"   {len(notes)} notes checked and listed")
PY

# ---------------------------------------------------------------------------------------------
# 8. Swap the new folder in
# ---------------------------------------------------------------------------------------------
rm -rf "${HERE:?}/$SET"
mv "$OUT" "$HERE/$SET"
echo "== done: $(du -sh "$HERE/$SET" | cut -f1) in $HERE/$SET"
