//! Makes 16 kHz mono audio ready for speech recognition: finds the speech,
//! trims the silence around it, caps the length and sets the level.

use super::resample::TARGET_RATE;
use super::{MediaConfig, SpeechOutcome};

/// Length of the frames whose RMS level decides speech or silence.
pub const FRAME_MS: u64 = 20;

const FRAME: usize = (TARGET_RATE as u64 * FRAME_MS / 1000) as usize;

/// Trims, caps and normalises a note. Returns the samples to transcribe, what
/// was found, and their duration in milliseconds.
///
/// An empty or silent note gives no samples and [`SpeechOutcome::NoSpeech`]:
/// the customer sent nothing to answer, which is not an error.
pub fn prepare(mut samples: Vec<f32>, config: &MediaConfig) -> (Vec<f32>, SpeechOutcome, u64) {
    for s in &mut samples {
        if !s.is_finite() {
            *s = 0.0;
        }
    }
    let threshold = db_to_power(config.silence_threshold_dbfs);
    let speech: Vec<bool> = samples
        .chunks(FRAME)
        .map(|frame| mean_square(frame) >= threshold)
        .collect();
    let speech_frames = speech.iter().filter(|&&s| s).count() as u64;
    let (Some(first), Some(last)) = (
        speech.iter().position(|&s| s),
        speech.iter().rposition(|&s| s),
    ) else {
        return (Vec::new(), SpeechOutcome::NoSpeech, 0);
    };
    if speech_frames * FRAME_MS < config.min_speech_ms {
        return (Vec::new(), SpeechOutcome::NoSpeech, 0);
    }

    let margin = samples_in(config.trim_margin_ms);
    let start = (first * FRAME).saturating_sub(margin);
    let mut end = ((last + 1) * FRAME)
        .saturating_add(margin)
        .min(samples.len());
    let mut outcome = SpeechOutcome::Speech;
    let cap = samples_in(config.max_note_ms);
    if end - start > cap {
        end = start + cap;
        outcome = SpeechOutcome::Truncated {
            cap_ms: config.max_note_ms,
        };
    }

    // Level of the speech frames that are kept, silence excluded.
    let (mut power, mut counted) = (0.0f64, 0usize);
    for (i, frame) in samples.chunks(FRAME).enumerate() {
        let from = i * FRAME;
        if speech[i] && from >= start && from + frame.len() <= end {
            power += frame
                .iter()
                .map(|&s| f64::from(s) * f64::from(s))
                .sum::<f64>();
            counted += frame.len();
        }
    }
    samples.truncate(end);
    samples.drain(..start);

    if counted > 0 {
        let rms = (power / counted as f64).sqrt() as f32;
        let peak = samples.iter().fold(0.0f32, |p, s| p.max(s.abs()));
        let gain = (db_to_amplitude(config.target_rms_dbfs) / rms)
            .min(db_to_amplitude(config.max_gain_db))
            .min(db_to_amplitude(config.peak_ceiling_dbfs) / peak.max(f32::MIN_POSITIVE));
        for s in &mut samples {
            *s *= gain;
        }
    }
    let speech_ms = samples.len() as u64 * 1000 / u64::from(TARGET_RATE);
    (samples, outcome, speech_ms)
}

fn samples_in(ms: u64) -> usize {
    usize::try_from(ms.saturating_mul(u64::from(TARGET_RATE)) / 1000).unwrap_or(usize::MAX)
}

fn mean_square(frame: &[f32]) -> f32 {
    frame.iter().map(|s| s * s).sum::<f32>() / frame.len().max(1) as f32
}

fn db_to_power(db: f32) -> f32 {
    10f32.powf(db / 10.0)
}

fn db_to_amplitude(db: f32) -> f32 {
    10f32.powf(db / 20.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(ms: u64, amplitude: f32) -> Vec<f32> {
        (0..samples_in(ms))
            .map(|i| amplitude * (i as f32 * 2.0 * std::f32::consts::PI * 440.0 / 16_000.0).sin())
            .collect()
    }

    fn rms_dbfs(samples: &[f32]) -> f32 {
        10.0 * mean_square(samples).log10()
    }

    #[test]
    fn silence_and_nothing_are_no_speech() {
        let config = MediaConfig::default();
        assert_eq!(prepare(Vec::new(), &config).1, SpeechOutcome::NoSpeech);
        let hiss: Vec<f32> = tone(3000, 0.001); // -63 dBFS
        let (samples, outcome, ms) = prepare(hiss, &config);
        assert_eq!(
            (samples.len(), outcome, ms),
            (0, SpeechOutcome::NoSpeech, 0)
        );
        // A 40 ms click is not speech either.
        let click = [tone(1000, 0.0), tone(40, 0.5), tone(1000, 0.0)].concat();
        assert_eq!(prepare(click, &config).1, SpeechOutcome::NoSpeech);
    }

    #[test]
    fn trims_silence_keeping_the_margin() {
        let config = MediaConfig::default();
        let note = [tone(1000, 0.0), tone(2000, 0.3), tone(1500, 0.0)].concat();
        let (samples, outcome, ms) = prepare(note, &config);
        assert_eq!(outcome, SpeechOutcome::Speech);
        assert_eq!(ms, 2000 + 2 * config.trim_margin_ms);
        assert_eq!(samples.len(), samples_in(ms));
    }

    #[test]
    fn caps_the_length() {
        let config = MediaConfig {
            max_note_ms: 1000,
            ..MediaConfig::default()
        };
        let (samples, outcome, ms) = prepare(tone(3000, 0.3), &config);
        assert_eq!(outcome, SpeechOutcome::Truncated { cap_ms: 1000 });
        assert_eq!((samples.len(), ms), (16_000, 1000));
    }

    #[test]
    fn normalises_speech_level_within_the_gain_cap() {
        let config = MediaConfig::default();
        // -41.4 dBFS: above the silence threshold, more than 20 dB below target.
        let faint = tone(1000, 0.012);
        let (lifted, _, _) = prepare(faint.clone(), &config);
        let expected = rms_dbfs(&faint) + config.max_gain_db;
        assert!(
            (rms_dbfs(&lifted) - expected).abs() < 0.2,
            "{}",
            rms_dbfs(&lifted)
        );
        let (loud, _, _) = prepare(tone(1000, 0.9), &config);
        assert!((rms_dbfs(&loud) - config.target_rms_dbfs).abs() < 0.2);
        let peak = loud.iter().fold(0.0f32, |p, s| p.max(s.abs()));
        assert!(peak <= db_to_amplitude(config.peak_ceiling_dbfs) + 1e-6);
    }
}
