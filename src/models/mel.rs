//! The mel filterbank Whisper was trained with: 80 triangular filters on the
//! Slaney mel scale with Slaney area normalisation, over the 201 bins of a
//! 400-point FFT at 16 kHz (what `librosa.filters.mel(sr=16000, n_fft=400,
//! n_mels=80)` returns). whisper.cpp reads it from the model file.

const F_SP: f64 = 200.0 / 3.0;
const MIN_LOG_HZ: f64 = 1000.0;
const MIN_LOG_MEL: f64 = MIN_LOG_HZ / F_SP;

fn log_step() -> f64 {
    6.4f64.ln() / 27.0
}

/// Slaney's mel scale: linear below 1 kHz, logarithmic above.
pub fn hz_to_mel(hz: f64) -> f64 {
    if hz >= MIN_LOG_HZ {
        MIN_LOG_MEL + (hz / MIN_LOG_HZ).ln() / log_step()
    } else {
        hz / F_SP
    }
}

pub fn mel_to_hz(mel: f64) -> f64 {
    if mel >= MIN_LOG_MEL {
        MIN_LOG_HZ * (log_step() * (mel - MIN_LOG_MEL)).exp()
    } else {
        F_SP * mel
    }
}

/// Row-major `[n_mels][n_fft / 2 + 1]` filter weights.
pub fn filterbank(sample_rate: u32, n_fft: usize, n_mels: usize) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let nyquist = sample_rate as f64 / 2.0;
    let bin_hz: Vec<f64> = (0..n_bins)
        .map(|i| nyquist * i as f64 / (n_bins - 1) as f64)
        .collect();
    let (lo, hi) = (hz_to_mel(0.0), hz_to_mel(nyquist));
    let edges: Vec<f64> = (0..n_mels + 2)
        .map(|i| mel_to_hz(lo + (hi - lo) * i as f64 / (n_mels + 1) as f64))
        .collect();
    let mut out = Vec::with_capacity(n_mels * n_bins);
    for m in 0..n_mels {
        let (left, centre, right) = (edges[m], edges[m + 1], edges[m + 2]);
        let area_norm = 2.0 / (right - left);
        for &f in &bin_hz {
            let rising = (f - left) / (centre - left);
            let falling = (right - f) / (right - centre);
            out.push((rising.min(falling).max(0.0) * area_norm) as f32);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scale_round_trips_and_is_linear_below_1khz() {
        for hz in [0.0, 200.0, 999.0, 1000.0, 4000.0, 8000.0] {
            assert!((mel_to_hz(hz_to_mel(hz)) - hz).abs() < 1e-6);
        }
        assert!((hz_to_mel(1000.0) - 15.0).abs() < 1e-9);
    }

    #[test]
    fn whisper_shape_and_known_values() {
        let fb = filterbank(16000, 400, 80);
        assert_eq!(fb.len(), 80 * 201);
        // Reference values from the `mel_80` filterbank that OpenAI's
        // whisper package ships (assets/mel_filters.npz).
        assert!((fb[1] - 0.024_862_59).abs() < 1e-7, "{}", fb[1]);
        assert_eq!(fb[0], 0.0);
        let row40 = &fb[40 * 201..41 * 201];
        let peak = (0..201).max_by(|&a, &b| row40[a].total_cmp(&row40[b]));
        assert_eq!(peak, Some(43));
        assert!((row40[43] - 0.014_735_566).abs() < 1e-7);
        let last = &fb[79 * 201..];
        assert!((last[199] - 0.000_448_76).abs() < 1e-7 && last[200] == 0.0);
    }
}
