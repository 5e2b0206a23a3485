//! Safety checks on a transcript decoded from a fitted (shortened) encoder
//! window. A short window makes a 2 s note many times cheaper to encode, but
//! the decoder can then fall into a repeating-token loop; these checks catch
//! that so the caller can fall back to the full window.

use std::io::Write;

/// Why a fitted-window transcript was rejected.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejection {
    /// Text compresses too well: the same words over and over.
    Compression { ratio: f32 },
    /// An n-gram of tokens repeats back to back.
    RepeatedNgram { n: usize, times: usize },
    /// Far more tokens than the audio could hold.
    TokenRate { per_second: f32 },
}

impl std::fmt::Display for Rejection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Compression { ratio } => write!(f, "compression ratio {ratio:.2}"),
            Self::RepeatedNgram { n, times } => {
                write!(f, "a {n}-token sequence repeated {times} times in a row")
            }
            Self::TokenRate { per_second } => write!(f, "{per_second:.1} tokens per second"),
        }
    }
}

/// Thresholds for [`check`].
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub max_compression_ratio: f32,
    pub max_tokens_per_second: f32,
}

/// Length of `text` over its zlib-deflated length, as Whisper computes it.
pub fn compression_ratio(text: &str) -> f32 {
    if text.is_empty() {
        return 0.0;
    }
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // writing to a Vec cannot fail
    let compressed = enc
        .write_all(text.as_bytes())
        .and_then(|()| enc.finish())
        .map(|v| v.len())
        .unwrap_or(text.len());
    text.len() as f32 / compressed.max(1) as f32
}

/// Longest n-gram checked for back-to-back repetition.
const MAX_NGRAM: usize = 48;

/// The worst back-to-back repetition of any n-gram (n = 1 to 48): returns
/// (n, times), preferring more repetitions, then longer n-grams.
pub fn longest_repeat(tokens: &[i32]) -> (usize, usize) {
    let mut worst = (1, 1);
    for n in 1..=MAX_NGRAM.min(tokens.len() / 2) {
        for start in 0..=tokens.len() - 2 * n {
            let mut times = 1;
            while start + (times + 1) * n <= tokens.len()
                && tokens[start..start + n] == tokens[start + times * n..start + (times + 1) * n]
            {
                times += 1;
            }
            if times > worst.1 || (times == worst.1 && times > 1 && n > worst.0) {
                worst = (n, times);
            }
        }
    }
    worst
}

/// How many back-to-back copies of an n-gram speech plausibly holds: "no,
/// no, no, no" is speech, a phrase said twice in a row is rare, and a whole
/// sentence twice is the decoder looping.
fn allowed_repeats(n: usize) -> usize {
    match n {
        1 => 4,
        2..=5 => 3,
        6..=9 => 2,
        _ => 1,
    }
}

/// Checks a transcript's text and text tokens against the length of the
/// audio it came from. (Segment end times are no signal: Whisper stamps the
/// last segment up to the end of the window, which lies past the speech by
/// design.)
pub fn check(text: &str, tokens: &[i32], audio_ms: u64, limits: Limits) -> Result<(), Rejection> {
    // short texts compress badly whatever they say; the ratio means little
    // below Whisper's own 100-character floor
    let ratio = compression_ratio(text);
    if text.len() >= 100 && ratio > limits.max_compression_ratio {
        return Err(Rejection::Compression { ratio });
    }
    let (n, times) = longest_repeat(tokens);
    if times > allowed_repeats(n) {
        return Err(Rejection::RepeatedNgram { n, times });
    }
    let seconds = (audio_ms as f32 / 1000.0).max(1.0);
    let per_second = tokens.len() as f32 / seconds;
    if per_second > limits.max_tokens_per_second {
        return Err(Rejection::TokenRate { per_second });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_compression_ratio: 2.4,
        max_tokens_per_second: 12.0,
    };

    #[test]
    fn ordinary_speech_passes() {
        let text = "Can this ship tomorrow if I order now?";
        let tokens: Vec<i32> = (100..110).collect();
        assert_eq!(check(text, &tokens, 2600, LIMITS), Ok(()));
    }

    #[test]
    fn repetition_loops_are_caught() {
        let looped = "thank you for watching ".repeat(12);
        assert!(compression_ratio(&looped) > 2.4);
        assert!(matches!(
            check(&looped, &[1, 2, 3], 3000, LIMITS),
            Err(Rejection::Compression { .. })
        ));
        let tokens: Vec<i32> = [7, 8, 9].repeat(5);
        assert_eq!(longest_repeat(&tokens), (3, 5));
        assert!(matches!(
            check("short", &tokens, 3000, LIMITS),
            Err(Rejection::RepeatedNgram { n: 3, times: 5 })
        ));
        // a whole sentence said twice: the loop seen on a fitted window
        let sentence: Vec<i32> = (500..512).collect();
        let twice = [sentence.clone(), sentence].concat();
        assert_eq!(longest_repeat(&twice), (12, 2));
        assert!(matches!(
            check("short", &twice, 4000, LIMITS),
            Err(Rejection::RepeatedNgram { n: 12, times: 2 })
        ));
        // "no, no, no" stays
        let no: Vec<i32> = [1, 2, 1, 2, 1, 2, 9].to_vec();
        assert_eq!(check("no, no, no", &no, 2000, LIMITS), Ok(()));
    }

    #[test]
    fn runaway_length_is_caught() {
        let tokens: Vec<i32> = (0..80).collect();
        assert!(matches!(
            check("x", &tokens, 2000, LIMITS),
            Err(Rejection::TokenRate { .. })
        ));
    }
}
