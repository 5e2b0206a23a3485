//! A Piper voice's JSON config (`<model>.onnx.json`): its sample rate, the
//! espeak-ng voice it was trained on, its inference scales, and the map from
//! phonemes to the model's input ids.

use std::collections::HashMap;

use serde::Deserialize;

/// Piper's markers: beginning and end of a sentence, and the pad placed
/// after every phoneme.
const BOS: char = '^';
const EOS: char = '$';
const PAD: char = '_';

/// The parts of the JSON config used here.
#[derive(Debug, Deserialize)]
struct File {
    audio: Audio,
    espeak: Espeak,
    #[serde(default)]
    inference: Inference,
    #[serde(default = "espeak_phonemes")]
    phoneme_type: String,
    phoneme_id_map: HashMap<String, Vec<i64>>,
    #[serde(default = "one")]
    num_speakers: u32,
}

#[derive(Debug, Deserialize)]
struct Audio {
    sample_rate: u32,
}

#[derive(Debug, Deserialize)]
struct Espeak {
    voice: String,
}

/// Defaults are Piper's own, for configs that leave them out.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct Inference {
    noise_scale: f32,
    length_scale: f32,
    noise_w: f32,
}

impl Default for Inference {
    fn default() -> Self {
        Self {
            noise_scale: 0.667,
            length_scale: 1.0,
            noise_w: 0.8,
        }
    }
}

fn espeak_phonemes() -> String {
    "espeak".into()
}

fn one() -> u32 {
    1
}

/// What synthesis needs from the config.
#[derive(Debug, Clone, PartialEq)]
pub struct Voice {
    pub sample_rate: u32,
    /// The espeak-ng voice that phonemises text for this model ("en-us").
    pub espeak_voice: String,
    /// `noise_scale`, `length_scale`, `noise_w`: the model's `scales` input.
    pub scales: [f32; 3],
    /// Multi-speaker models take a speaker id; this is speaker 0's.
    pub speakers: u32,
    ids: HashMap<char, Vec<i64>>,
    bos: Vec<i64>,
    eos: Vec<i64>,
    pad: Vec<i64>,
}

impl Voice {
    /// Parses `<model>.onnx.json`.
    pub fn parse(json: &str) -> Result<Self, String> {
        let file: File = serde_json::from_str(json).map_err(|e| e.to_string())?;
        if file.phoneme_type != "espeak" {
            return Err(format!(
                "phoneme_type {:?} is not supported, only \"espeak\"",
                file.phoneme_type
            ));
        }
        if !(8_000..=48_000).contains(&file.audio.sample_rate) {
            return Err(format!("sample rate {} Hz", file.audio.sample_rate));
        }
        let mut ids = HashMap::new();
        for (phoneme, id) in file.phoneme_id_map {
            let mut chars = phoneme.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => {
                    ids.insert(c, id);
                }
                _ => return Err(format!("phoneme {phoneme:?} is not one character")),
            }
        }
        let marker = |c: char| {
            ids.get(&c)
                .cloned()
                .ok_or_else(|| format!("phoneme_id_map has no {c:?}"))
        };
        let (bos, eos, pad) = (marker(BOS)?, marker(EOS)?, marker(PAD)?);
        let Inference {
            noise_scale,
            length_scale,
            noise_w,
        } = file.inference;
        Ok(Self {
            sample_rate: file.audio.sample_rate,
            espeak_voice: file.espeak.voice,
            scales: [noise_scale, length_scale, noise_w],
            speakers: file.num_speakers,
            ids,
            bos,
            eos,
            pad,
        })
    }

    /// The model input for one sentence of IPA phonemes, in Piper's format:
    /// BOS, then every phoneme (one Unicode character, combining marks
    /// included) followed by PAD, then EOS. Phonemes the model does not know
    /// are left out.
    pub fn phoneme_ids(&self, phonemes: &str) -> Vec<i64> {
        let mut out = self.bos.clone();
        out.extend(&self.pad);
        for id in phonemes.chars().filter_map(|c| self.ids.get(&c)) {
            out.extend(id);
            out.extend(&self.pad);
        }
        out.extend(&self.eos);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{
        "audio": {"sample_rate": 22050},
        "espeak": {"voice": "en-us"},
        "inference": {"noise_scale": 0.667, "length_scale": 1, "noise_w": 0.8},
        "phoneme_type": "espeak",
        "phoneme_id_map": {"_": [0], "^": [1], "$": [2], " ": [3], "h": [20],
                           "ə": [59], "l": [24], "ˈ": [120], "o": [27], "ʊ": [100]},
        "num_speakers": 1
    }"#;

    #[test]
    fn ids_have_bos_eos_and_a_pad_after_each_phoneme() {
        let voice = Voice::parse(CONFIG).unwrap();
        assert_eq!(voice.sample_rate, 22_050);
        assert_eq!(voice.espeak_voice, "en-us");
        assert_eq!(voice.scales, [0.667, 1.0, 0.8]);
        assert_eq!(
            voice.phoneme_ids("həlˈoʊ"),
            [1, 0, 20, 0, 59, 0, 24, 0, 120, 0, 27, 0, 100, 0, 2]
        );
        // Unknown phonemes are skipped, not guessed.
        assert_eq!(voice.phoneme_ids("hX"), [1, 0, 20, 0, 2]);
        assert_eq!(voice.phoneme_ids(""), [1, 0, 2]);
    }

    #[test]
    fn configs_it_cannot_use_are_errors() {
        let text = CONFIG.replace("\"espeak\",", "\"text\",");
        assert!(Voice::parse(&text).unwrap_err().contains("phoneme_type"));
        let no_pad = CONFIG.replace("\"_\": [0], ", "");
        assert!(Voice::parse(&no_pad).unwrap_err().contains("'_'"));
        assert!(Voice::parse("{}").is_err());
        assert!(Voice::parse("not json").is_err());
    }
}
