//! Language routing: which language, and so which model, hears a voice note.
//!
//! Before transcription the [`LanguageRouter`] has a [`Prior`]: the
//! conversation's language from earlier turns, else the language of the
//! sender's calling code when it maps to exactly one configured language.
//! The multilingual model then detects the spoken language (one encoder pass
//! over the fitted window and one decoder step) and the router:
//!
//! - keeps the prior unless detection contradicts it with high probability
//!   (an expat with a foreign number, a customer switching language), in
//!   which case the conversation follows the customer;
//! - without a prior, takes the most likely of the configured languages;
//! - does not transcribe at all when the speech is, with high probability, in
//!   a language the business does not serve;
//! - redoes the note in the other candidate languages (at most two) when the
//!   routed transcription comes back with low confidence, and keeps the
//!   transcript with the best confidence weighed by detection.
//!
//! English notes go to the English-only model when one is configured (it is
//! faster at equal word error rate); every other language to the
//! multilingual one. Each transcript carries its [`Routing`]: the decision
//! and why, for the turn's trace.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::{SpeechToText, SttError, TranscribeOptions, Transcript};

/// Where the language known before the note is heard comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PriorSource {
    /// The conversation's language from earlier turns.
    Conversation,
    /// The sender's country calling code.
    CallingCode,
}

/// The language expected before the note is heard.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prior {
    pub language: String,
    pub source: PriorSource,
}

/// `[stt.routing]`: when detection overrides the prior, when a note is
/// taken for another language, when a transcription is redone.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutingConfig {
    /// Detection replaces the prior when the detected language has at least
    /// this probability among the configured languages. Default 0.8.
    pub switch_probability: f32,
    /// … and the prior at most this one. Default 0.1.
    pub prior_below: f32,
    /// A note whose most likely language is not configured, at least this
    /// probable, is not transcribed: the customer is asked to say it again
    /// or type it. Default 0.6.
    pub unserved_probability: f32,
    /// … provided the configured languages together are at most this
    /// probable. Default 0.2.
    pub served_below: f32,
    /// Languages never taken for the customer's own when detection names
    /// them: Whisper names Latin for Italian, Spanish and Portuguese speech
    /// and Galician for Portuguese and Spanish, and nobody sends a voice note
    /// in Latin. Default `["la", "gl"]`.
    pub unserved_ignored: Vec<String>,
    /// A transcription whose confidence is below this is redone in the other
    /// candidate language (the prior, or the detected one). Default 0.45.
    pub redo_below_confidence: f32,
    /// The other candidate must have at least this probability among the
    /// configured languages. Default 0.05.
    pub redo_candidate_probability: f32,
    /// At most this many other languages are tried, most likely first.
    /// Default 2.
    pub redo_candidates: usize,
    /// Of the transcripts, the one with the highest confidence × p^this is
    /// kept, p being detection's probability of its language. Default 0.25:
    /// a soft prior. Confidence alone ranks languages badly when detection
    /// leans to one: an Italian note detected at 0.70 came back more
    /// confident in Portuguese ("Vou eu falar com uma pessoa"), a noisy
    /// Spanish one detected at 0.74 in Italian.
    #[serde(deserialize_with = "non_negative")]
    pub redo_detection_weight: f32,
}

/// A finite number of 0 or more: a negative weight would favour the
/// languages detection found least likely.
fn non_negative<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f32, D::Error> {
    let v = f32::deserialize(d)?;
    if v.is_finite() && v >= 0.0 {
        Ok(v)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be a number of 0 or more, not {v}"
        )))
    }
}

impl Default for RoutingConfig {
    fn default() -> Self {
        Self {
            switch_probability: 0.8,
            prior_below: 0.1,
            unserved_probability: 0.6,
            served_below: 0.2,
            unserved_ignored: vec!["la".into(), "gl".into()],
            redo_below_confidence: 0.45,
            redo_candidate_probability: 0.05,
            redo_candidates: 2,
            redo_detection_weight: 0.25,
        }
    }
}

/// The routing decision, as the trace records it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Routing {
    /// The language the note was transcribed in.
    pub language: String,
    /// The model that transcribed it.
    pub model: String,
    /// Why, in words.
    pub reason: String,
    pub prior: Option<Prior>,
    /// The most likely configured language and its probability among them.
    pub detected: Option<(String, f32)>,
    /// The most likely language of all, when it is not a configured one and
    /// the note was not transcribed for that reason.
    pub unserved: Option<(String, f32)>,
    /// The first attempt's language and confidence, when the note was redone.
    pub redone_from: Option<(String, f32)>,
    /// The configured languages detection found most likely, with their
    /// probabilities among them (at most three; empty without detection).
    pub candidates: Vec<(String, f32)>,
}

/// Routes each note to a language and a model; see the module docs.
pub struct LanguageRouter {
    multilingual: Arc<dyn SpeechToText>,
    english: Option<Arc<dyn SpeechToText>>,
    languages: Vec<String>,
    config: RoutingConfig,
    name: String,
}

/// Detection's result over the configured languages.
struct Detection {
    /// Configured languages with their renormalised probabilities, most
    /// likely first.
    served: Vec<(String, f32)>,
    /// The most likely language of all and its raw probability.
    top: (String, f32),
    /// The configured languages' raw probabilities summed.
    served_total: f32,
}

impl LanguageRouter {
    /// `multilingual` hears every language; `english`, when given, hears the
    /// notes routed to English. `languages` are the business's (ISO 639-1).
    pub fn new(
        multilingual: Arc<dyn SpeechToText>,
        english: Option<Arc<dyn SpeechToText>>,
        languages: Vec<String>,
        config: RoutingConfig,
    ) -> Self {
        let english = english.filter(|_| languages.iter().any(|l| l == "en"));
        let name = match &english {
            Some(e) => format!("{}+{}", multilingual.name(), e.name()),
            None => multilingual.name().to_string(),
        };
        Self {
            multilingual,
            english,
            languages,
            config,
            name,
        }
    }

    pub fn languages(&self) -> &[String] {
        &self.languages
    }

    fn model_for(&self, language: &str) -> &Arc<dyn SpeechToText> {
        match (&self.english, language) {
            (Some(e), "en") => e,
            _ => &self.multilingual,
        }
    }

    fn detect(&self, speech: &[f32], options: &TranscribeOptions) -> Result<Detection, SttError> {
        let ranked = self
            .multilingual
            .detect_language(speech, options.abort.as_deref())?;
        let top = ranked.first().cloned().unwrap_or(("en".into(), 0.0));
        let served_total: f32 = ranked
            .iter()
            .filter(|(l, _)| self.languages.contains(l))
            .map(|(_, p)| p)
            .sum();
        let served = ranked
            .into_iter()
            .filter(|(l, _)| self.languages.contains(l))
            .map(|(l, p)| {
                (
                    l,
                    if served_total > 0.0 {
                        p / served_total
                    } else {
                        0.0
                    },
                )
            })
            .collect();
        Ok(Detection {
            served,
            top,
            served_total,
        })
    }

    fn run(
        &self,
        speech: &[f32],
        language: &str,
        options: &TranscribeOptions,
    ) -> Result<(Transcript, String), SttError> {
        let model = self.model_for(language);
        let asked = TranscribeOptions {
            language: Some(language.to_string()),
            prior: None,
            abort: options.abort.clone(),
        };
        let mut t = model.transcribe(speech, &asked)?;
        t.language = language.to_string();
        Ok((t, model.name().to_string()))
    }
}

/// The languages to redo a transcription in, most likely first: when the
/// transcript's confidence is low, the other candidate (the prior, or the
/// detected one) and then detection's next most likely languages, each at
/// all likely, at most `redo_candidates` of them; none when detection was
/// sure of the routed language. Confidences of different models are not
/// comparable (tiny.en against base), so a sure detection is not
/// second-guessed by a low confidence: an Italian note detected at 0.91,
/// heard by `base` at 0.33 and redone in English by `tiny.en` at 0.41 was
/// English nonsense. Trying more than one other language matters when
/// detection is split three ways: an Italian "quanto costa lo zaino blu?"
/// detected as English (0.37) was heard by `base` in Italian at 0.66, but
/// only French, the second candidate, was tried.
fn redo_in(
    routed: &str,
    other: Option<String>,
    confidence: f32,
    detection: &Detection,
    config: &RoutingConfig,
) -> Vec<String> {
    if confidence >= config.redo_below_confidence {
        return Vec::new();
    }
    let sure = detection
        .served
        .first()
        .is_some_and(|(l, p)| l == routed && *p >= config.switch_probability);
    if sure {
        return Vec::new();
    }
    let likely = |language: &str| {
        detection
            .served
            .iter()
            .any(|(l, p)| l == language && *p >= config.redo_candidate_probability)
    };
    let mut tries: Vec<String> = Vec::new();
    let ranked = detection.served.iter().map(|(l, _)| l.clone());
    for language in other.into_iter().chain(ranked) {
        if tries.len() >= config.redo_candidates {
            break;
        }
        if language != routed && !tries.contains(&language) && likely(&language) {
            tries.push(language);
        }
    }
    tries
}

/// A transcript's confidence weighed by detection's probability of its
/// language: what the redo ranks transcripts in different languages by.
fn weighed(language: &str, confidence: f32, detection: &Detection, weight: f32) -> f32 {
    let p = detection
        .served
        .iter()
        .find(|(l, _)| l == language)
        .map_or(0.0, |(_, p)| *p);
    confidence * p.powf(weight)
}

/// The language chosen before transcription, the other candidate, and why.
fn choose(
    prior: Option<&Prior>,
    detection: &Detection,
    config: &RoutingConfig,
) -> (String, Option<String>, String) {
    let p = |lang: &str| {
        detection
            .served
            .iter()
            .find(|(l, _)| l == lang)
            .map_or(0.0, |(_, p)| *p)
    };
    let best = detection.served.first().cloned();
    let second = detection.served.get(1).cloned();
    match (prior, best) {
        (Some(prior), Some((best, p_best))) if best != prior.language => {
            let from = match prior.source {
                PriorSource::Conversation => "the conversation's",
                PriorSource::CallingCode => "the calling code's",
            };
            let p_prior = p(&prior.language);
            if p_best >= config.switch_probability && p_prior <= config.prior_below {
                (
                    best.clone(),
                    Some(prior.language.clone()),
                    format!(
                        "detected {best} (p {p_best:.2}) over {from} {} (p {p_prior:.2})",
                        prior.language
                    ),
                )
            } else {
                (
                    prior.language.clone(),
                    Some(best.clone()),
                    format!(
                        "{from} {} (p {p_prior:.2}); detection's {best} (p {p_best:.2}) not sure enough",
                        prior.language
                    ),
                )
            }
        }
        (Some(prior), best) => {
            let from = match prior.source {
                PriorSource::Conversation => "the conversation's language",
                PriorSource::CallingCode => "the calling code's language",
            };
            let agree = best.map_or(String::new(), |(_, p)| {
                format!(", detection agrees (p {p:.2})")
            });
            (
                prior.language.clone(),
                second.map(|(l, _)| l),
                format!("{from} {}{agree}", prior.language),
            )
        }
        (None, Some((best, p_best))) => (
            best.clone(),
            second.map(|(l, _)| l),
            format!("detected {best} (p {p_best:.2}), no prior"),
        ),
        (None, None) => ("en".into(), None, "nothing detected; English".into()),
    }
}

impl SpeechToText for LanguageRouter {
    fn transcribe(
        &self,
        speech: &[f32],
        options: &TranscribeOptions,
    ) -> Result<Transcript, SttError> {
        if let Some(language) = &options.language {
            let (mut t, model) = self.run(speech, language, options)?;
            t.routing = Some(Box::new(Routing {
                language: language.clone(),
                model,
                reason: "language fixed by the caller".into(),
                prior: None,
                detected: None,
                unserved: None,
                redone_from: None,
                candidates: Vec::new(),
            }));
            return Ok(t);
        }
        let prior = options
            .prior
            .clone()
            .filter(|p| self.languages.contains(&p.language));
        if self.languages.len() == 1 {
            let language = self.languages[0].clone();
            let (mut t, model) = self.run(speech, &language, options)?;
            t.routing = Some(Box::new(Routing {
                language,
                model,
                reason: "the one configured language".into(),
                prior,
                detected: None,
                unserved: None,
                redone_from: None,
                candidates: Vec::new(),
            }));
            return Ok(t);
        }
        let detection = self.detect(speech, options)?;
        let detected = detection.served.first().cloned();
        let (top, p_top) = detection.top.clone();
        if !self.languages.contains(&top)
            && !self.config.unserved_ignored.contains(&top)
            && p_top >= self.config.unserved_probability
            && detection.served_total <= self.config.served_below
        {
            // Not transcribed: nothing here may be acted on.
            return Ok(Transcript {
                language: top.clone(),
                text: String::new(),
                segments: Vec::new(),
                confidence: 0.0,
                no_speech_probability: 0.0,
                window: super::Window::Full,
                routing: Some(Box::new(Routing {
                    language: top.clone(),
                    model: self.multilingual.name().to_string(),
                    reason: format!("speech in {top} (p {p_top:.2}), not a configured language"),
                    prior,
                    detected,
                    unserved: Some((top, p_top)),
                    redone_from: None,
                    candidates: detection.served.iter().take(3).cloned().collect(),
                })),
            });
        }
        let (language, other, reason) = choose(prior.as_ref(), &detection, &self.config);
        let (mut t, mut model) = self.run(speech, &language, options)?;
        let mut redone_from = None;
        let mut chosen = language.clone();
        for other in redo_in(&language, other, t.confidence, &detection, &self.config) {
            let (again, again_model) = self.run(speech, &other, options)?;
            tracing::info!(
                first = %language,
                first_confidence = t.confidence,
                other = %other,
                other_confidence = again.confidence,
                "low confidence: redone in another candidate language"
            );
            redone_from.get_or_insert_with(|| (language.clone(), t.confidence));
            let weight = self.config.redo_detection_weight;
            if weighed(&other, again.confidence, &detection, weight)
                > weighed(&chosen, t.confidence, &detection, weight)
            {
                t = again;
                model = again_model;
                chosen = other;
            }
        }
        t.routing = Some(Box::new(Routing {
            language: chosen,
            model,
            reason,
            prior,
            detected,
            unserved: None,
            redone_from,
            candidates: detection.served.iter().take(3).cloned().collect(),
        }));
        Ok(t)
    }

    fn detect_language(
        &self,
        speech: &[f32],
        abort: Option<&std::sync::atomic::AtomicBool>,
    ) -> Result<Vec<(String, f32)>, SttError> {
        self.multilingual.detect_language(speech, abort)
    }

    fn is_multilingual(&self) -> bool {
        true
    }

    fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detection(served: &[(&str, f32)]) -> Detection {
        Detection {
            served: served.iter().map(|(l, p)| (l.to_string(), *p)).collect(),
            top: (served[0].0.to_string(), served[0].1),
            served_total: 1.0,
        }
    }

    fn prior(language: &str, source: PriorSource) -> Prior {
        Prior {
            language: language.into(),
            source,
        }
    }

    #[test]
    fn the_prior_holds_unless_detection_is_sure_it_is_wrong() {
        let config = RoutingConfig::default();
        let es = prior("es", PriorSource::CallingCode);
        // agrees
        let (l, other, why) = choose(Some(&es), &detection(&[("es", 0.9), ("pt", 0.1)]), &config);
        assert_eq!((l.as_str(), other.as_deref()), ("es", Some("pt")));
        assert!(why.contains("calling code"), "{why}");
        // unsure: the prior stays
        let (l, other, _) = choose(Some(&es), &detection(&[("pt", 0.6), ("es", 0.4)]), &config);
        assert_eq!((l.as_str(), other.as_deref()), ("es", Some("pt")));
        // an English speaker with a Spanish number
        let (l, other, why) = choose(
            Some(&es),
            &detection(&[("en", 0.97), ("es", 0.02)]),
            &config,
        );
        assert_eq!((l.as_str(), other.as_deref()), ("en", Some("es")));
        assert!(why.contains("over the calling code's es"), "{why}");
    }

    #[test]
    fn a_low_confidence_is_redone_only_when_detection_was_unsure() {
        let config = RoutingConfig::default();
        let none: Vec<String> = Vec::new();
        let it = detection(&[("it", 0.91), ("en", 0.06)]);
        // sure detection: a low confidence does not override it
        assert_eq!(redo_in("it", Some("en".into()), 0.33, &it, &config), none);
        // unsure detection and a low confidence: redone in the other one
        let unsure = detection(&[("it", 0.6), ("es", 0.35), ("fr", 0.01)]);
        assert_eq!(
            redo_in("it", Some("es".into()), 0.33, &unsure, &config),
            ["es"]
        );
        // routed by a prior against an unsure detection: redone in the detected one
        let pt = detection(&[("pt", 0.6), ("es", 0.4)]);
        assert_eq!(redo_in("es", Some("pt".into()), 0.3, &pt, &config), ["pt"]);
        // confident enough, or an unlikely candidate: not redone
        assert_eq!(
            redo_in("it", Some("es".into()), 0.5, &unsure, &config),
            none
        );
        let far = detection(&[("it", 0.7), ("es", 0.01)]);
        assert_eq!(redo_in("it", Some("es".into()), 0.2, &far, &config), none);
    }

    #[test]
    fn a_three_way_split_tries_the_next_likely_languages_too() {
        let config = RoutingConfig::default();
        let split = detection(&[("en", 0.37), ("fr", 0.3), ("it", 0.25), ("es", 0.08)]);
        assert_eq!(
            redo_in("en", Some("fr".into()), 0.33, &split, &config),
            ["fr", "it"]
        );
        // the prior's language first, then detection's order, never the routed one twice
        let prior_kept = detection(&[("fr", 0.5), ("es", 0.3), ("it", 0.2)]);
        assert_eq!(
            redo_in("es", Some("fr".into()), 0.2, &prior_kept, &config),
            ["fr", "it"]
        );

        let one = RoutingConfig {
            redo_candidates: 1,
            ..RoutingConfig::default()
        };
        assert_eq!(redo_in("en", Some("fr".into()), 0.33, &split, &one), ["fr"]);
    }

    #[test]
    fn a_redone_transcript_needs_more_than_confidence_against_a_leaning_detection() {
        let w = RoutingConfig::default().redo_detection_weight;
        // an Italian note detected at 0.70, heard in Italian at 0.448 and in
        // Portuguese at 0.55: Italian is kept
        let d = detection(&[("it", 0.70), ("pt", 0.12), ("es", 0.09)]);
        assert!(weighed("it", 0.448, &d, w) > weighed("pt", 0.55, &d, w));
        // a split detection: the clearly more confident transcript wins
        let split = detection(&[("en", 0.37), ("fr", 0.3), ("it", 0.25)]);
        assert!(weighed("it", 0.66, &split, w) > weighed("fr", 0.42, &split, w));
        assert!(weighed("it", 0.66, &split, w) > weighed("en", 0.33, &split, w));
        // a language detection did not list weighs nothing
        assert_eq!(weighed("de", 0.9, &split, w), 0.0);
    }

    #[test]
    fn a_negative_detection_weight_is_refused() {
        let parse = |text: &str| toml::from_str::<RoutingConfig>(text);
        assert_eq!(
            parse("redo_detection_weight = 0.5")
                .unwrap()
                .redo_detection_weight,
            0.5
        );
        let err = parse("redo_detection_weight = -1.0")
            .unwrap_err()
            .to_string();
        assert!(err.contains("0 or more"), "{err}");
        assert!(parse("redo_detection_weight = nan").is_err());
    }

    #[test]
    fn without_a_prior_the_most_likely_served_language_wins() {
        let config = RoutingConfig::default();
        let (l, other, why) = choose(None, &detection(&[("it", 0.7), ("es", 0.3)]), &config);
        assert_eq!((l.as_str(), other.as_deref()), ("it", Some("es")));
        assert!(why.contains("no prior"), "{why}");
    }
}
