//! Whether a transcript was really heard: the check that stands between
//! Whisper and any action. Whisper answers noise with fluent text ("Thank
//! you for watching!"), and a note in a language the business does not
//! serve is no request it can act on. A transcript that fails here gets the
//! customer a request to say it again or type it, and reaches no intent, no
//! shop and no LLM.

use serde::Deserialize;

use super::Transcript;

/// Why a transcript is not acted on.
#[derive(Debug, Clone, PartialEq)]
pub enum Unheard {
    /// Speech in a language the business does not serve.
    Unserved { language: String, probability: f32 },
    /// Whisper thinks the note holds no speech.
    NoSpeech { probability: f32 },
    /// The words are too uncertain to act on.
    LowConfidence { confidence: f32 },
    /// One of the phrases Whisper invents on noise and silence.
    Hallucination { phrase: String },
    /// The same sentence again and again: the decoder looping.
    Repeated { sentence: String },
    /// No word at all: only symbols ("♪"), or only Whisper's notes on the
    /// sound ("[Music]", "(applause)").
    NoWords { text: String },
}

impl std::fmt::Display for Unheard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unserved {
                language,
                probability,
            } => write!(f, "speech in {language} (p {probability:.2}), not served"),
            Self::NoSpeech { probability } => write!(f, "no speech (p {probability:.2})"),
            Self::LowConfidence { confidence } => write!(f, "confidence {confidence:.2}"),
            Self::Hallucination { phrase } => write!(f, "a known hallucination: {phrase:?}"),
            Self::Repeated { sentence } => write!(f, "a sentence repeated: {sentence:?}"),
            Self::NoWords { text } => write!(f, "no words: {text:?}"),
        }
    }
}

/// `[stt.hearing]`: the thresholds of [`judge`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HearingConfig {
    /// A transcript whose no-speech probability is above this, with a
    /// confidence below `no_speech_confidence`, is no speech. Default 0.6
    /// (Whisper's own no-speech threshold).
    pub no_speech_probability: f32,
    /// Default 0.5.
    pub no_speech_confidence: f32,
    /// Below this confidence nothing is acted on. Default 0.3.
    pub min_confidence: f32,
}

impl Default for HearingConfig {
    fn default() -> Self {
        Self {
            no_speech_probability: 0.6,
            no_speech_confidence: 0.5,
            min_confidence: 0.3,
        }
    }
}

/// Phrases Whisper is known to produce from silence, music and noise: the
/// closing lines of the subtitled videos it was trained on. Matched on
/// folded words (lower case, no accents or punctuation).
const HALLUCINATIONS: &[&str] = &[
    "thank you for watching",
    "thanks for watching",
    "thank you so much for watching",
    "please subscribe",
    "subscribe to my channel",
    "like and subscribe",
    "subtitles by",
    "subtitled by",
    "captions by",
    "amara org",
    "transcription by",
    "gracias por ver",
    "gracias por ver el video",
    "suscribete",
    "subtitulos realizados por",
    "subtitulos por la comunidad",
    "subtitulado por",
    "grazie per la visione",
    "grazie per aver guardato",
    "sottotitoli creati dalla comunita",
    "sottotitoli a cura di",
    "iscriviti al canale",
    "obrigado por assistir",
    "legendas pela comunidade",
    "legendas por",
    "inscreva se no canal",
    "merci d avoir regarde",
    "sous titres realises par",
    "sous titrage",
    "abonnez vous",
];

/// Lower case, accents removed, everything that is not a letter or a digit
/// turned into single spaces.
pub fn fold(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars().flat_map(char::to_lowercase) {
        let c = match c {
            'á' | 'à' | 'â' | 'ä' | 'ã' => 'a',
            'é' | 'è' | 'ê' | 'ë' => 'e',
            'í' | 'ì' | 'î' | 'ï' => 'i',
            'ó' | 'ò' | 'ô' | 'ö' | 'õ' => 'o',
            'ú' | 'ù' | 'û' | 'ü' => 'u',
            'ç' => 'c',
            'ñ' => 'n',
            c if c.is_alphanumeric() => c,
            _ => ' ',
        };
        if c == ' ' && (out.is_empty() || out.ends_with(' ')) {
            continue;
        }
        out.push(c);
    }
    out.trim_end().to_string()
}

/// The first known hallucination `text` contains, as whole words.
pub fn hallucination(text: &str) -> Option<&'static str> {
    let folded = format!(" {} ", fold(text));
    HALLUCINATIONS
        .iter()
        .find(|h| folded.contains(&format!(" {h} ")))
        .copied()
}

/// Whether `text` has a letter or a digit outside Whisper's bracketed
/// notes on the sound ("[Music]", "(upbeat music)", "[BLANK_AUDIO]").
fn has_words(text: &str) -> bool {
    let mut depth = 0usize;
    for c in text.chars() {
        match c {
            '[' | '(' => depth += 1,
            ']' | ')' => depth = depth.saturating_sub(1),
            c if depth == 0 && c.is_alphanumeric() => return true,
            _ => {}
        }
    }
    false
}

/// A sentence of three or more words said twice or more in a row.
fn repeated_sentence(text: &str) -> Option<String> {
    let sentences: Vec<String> = text
        .split(['.', '!', '?', '。', '\n'])
        .map(fold)
        .filter(|s| !s.is_empty())
        .collect();
    sentences
        .windows(2)
        .find(|w| w[0] == w[1] && w[0].split(' ').count() >= 3)
        .map(|w| w[0].clone())
}

/// Checks a transcript before anything acts on it.
pub fn judge(t: &Transcript, config: &HearingConfig) -> Result<(), Unheard> {
    if let Some((language, probability)) = t.routing.as_ref().and_then(|r| r.unserved.clone()) {
        return Err(Unheard::Unserved {
            language,
            probability,
        });
    }
    if t.no_speech_probability > config.no_speech_probability
        && t.confidence < config.no_speech_confidence
    {
        return Err(Unheard::NoSpeech {
            probability: t.no_speech_probability,
        });
    }
    if !has_words(&t.text) {
        return Err(Unheard::NoWords {
            text: t.text.trim().to_string(),
        });
    }
    if let Some(phrase) = hallucination(&t.text) {
        return Err(Unheard::Hallucination {
            phrase: phrase.to_string(),
        });
    }
    if let Some(sentence) = repeated_sentence(&t.text) {
        return Err(Unheard::Repeated { sentence });
    }
    if t.confidence < config.min_confidence {
        return Err(Unheard::LowConfidence {
            confidence: t.confidence,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stt::Window;

    fn transcript(text: &str, confidence: f32, no_speech: f32) -> Transcript {
        Transcript {
            language: "en".into(),
            text: text.into(),
            segments: Vec::new(),
            confidence,
            no_speech_probability: no_speech,
            window: Window::Full,
            routing: None,
        }
    }

    #[test]
    fn ordinary_requests_pass() {
        let c = HearingConfig::default();
        for text in [
            "Can this ship tomorrow if I order now?",
            "Thank you, bye!",
            "¿Dónde está mi pedido 1842?",
            "No, no, no, quiero cancelarlo.",
        ] {
            assert_eq!(judge(&transcript(text, 0.8, 0.01), &c), Ok(()), "{text}");
        }
    }

    #[test]
    fn what_whisper_invents_is_not_acted_on() {
        let c = HearingConfig::default();
        assert!(matches!(
            judge(&transcript("Thank you for watching!", 0.9, 0.1), &c),
            Err(Unheard::Hallucination { .. })
        ));
        assert!(matches!(
            judge(
                &transcript("Sottotitoli creati dalla comunità Amara.org", 0.9, 0.1),
                &c
            ),
            Err(Unheard::Hallucination { .. })
        ));
        assert!(matches!(
            judge(
                &transcript("I want a lamp. I want a lamp. I want a lamp.", 0.9, 0.0),
                &c
            ),
            Err(Unheard::Repeated { .. })
        ));
        for text in [
            " ♪",
            "[Music]",
            " (upbeat music) ♪♪",
            "[BLANK_AUDIO]",
            " ...",
        ] {
            assert!(
                matches!(
                    judge(&transcript(text, 0.9, 0.1), &c),
                    Err(Unheard::NoWords { .. })
                ),
                "{text}"
            );
        }
        // A number alone is words: an order number said on its own.
        assert_eq!(judge(&transcript(" 2210.", 0.9, 0.1), &c), Ok(()));
        assert!(matches!(
            judge(&transcript("you", 0.3, 0.9), &c),
            Err(Unheard::NoSpeech { .. })
        ));
        assert!(matches!(
            judge(&transcript("the bar is the", 0.12, 0.1), &c),
            Err(Unheard::LowConfidence { .. })
        ));
    }

    #[test]
    fn folding_drops_case_accents_and_punctuation() {
        assert_eq!(fold("¿Dónde   está?! L'ordine"), "donde esta l ordine");
    }
}
