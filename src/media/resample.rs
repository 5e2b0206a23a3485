//! Any rate and channel count in, 16 kHz mono out, in a stream.
//!
//! Channels are averaged, then rubato's FFT resampler (`FftFixedInOut`)
//! converts the rate: a band-limited resampler whose anti-alias filter is a
//! Blackman-Harris windowed sinc as long as one FFT block, so everything
//! above 8 kHz is removed before it can fold back into the speech band. The
//! resampler's delay is removed, so the output lines up with the input
//! sample for sample.

use rubato::{FftFixedInOut, Resampler};

use super::MediaError;

/// The rate Whisper and the rest of voxline work at.
pub const TARGET_RATE: u32 = 16_000;

/// Input rates outside this range are not audio a phone sends; refusing them
/// also bounds the resampler's FFT sizes.
const RATES: std::ops::RangeInclusive<u32> = 4_000..=384_000;

/// Input frames per FFT block asked of rubato, which rounds it up to a whole
/// number of the two rates' common period. 768 gives FFT sizes with only
/// small prime factors at the common rates (1536 and 512 points for 48 kHz),
/// which measured twice as fast as 1024 (2052 and 684 points).
const CHUNK_FRAMES: usize = 768;

/// Samples beyond this are clipped before resampling. Decoders give
/// [-1, 1]; a float WAV may hold anything, and NaN, infinities or values
/// near `f32::MAX` make the FFT produce NaN, which rubato refuses with a
/// panic. 16 keeps any real signal's shape (24 dB of headroom) far from
/// overflow.
const HEADROOM: f32 = 16.0;

/// A sample the filter can take: non-finite ones are silence, the rest
/// clipped to the headroom.
fn tame(sample: f32) -> f32 {
    if sample.is_finite() {
        sample.clamp(-HEADROOM, HEADROOM)
    } else {
        0.0
    }
}

/// Downmixes and resamples a stream of interleaved PCM to 16 kHz mono.
pub struct StreamResampler {
    input_rate: u32,
    channels: usize,
    /// Samples of a frame split across two calls to `process`.
    partial_frame: Vec<f32>,
    input_frames: u64,
    output_frames: u64,
    /// `None` when the input is already 16 kHz.
    fft: Option<FftStage>,
}

struct FftStage {
    filter: Filter,
    /// Mono input waiting for a full block.
    pending: Vec<f32>,
}

struct Filter {
    resampler: FftFixedInOut<f32>,
    block: usize,
    output: Vec<Vec<f32>>,
    /// Output frames still to drop to cancel the filter's delay.
    delay_left: usize,
}

impl StreamResampler {
    pub fn new(input_rate: u32, channels: u16) -> Result<Self, MediaError> {
        let refuse = |reason: &str| MediaError::Resample {
            sample_rate: input_rate,
            channels,
            reason: reason.to_string(),
        };
        if channels == 0 {
            return Err(refuse("no channels"));
        }
        if !RATES.contains(&input_rate) {
            return Err(refuse("sample rate out of range"));
        }
        let fft = if input_rate == TARGET_RATE {
            None
        } else {
            let resampler = FftFixedInOut::<f32>::new(
                input_rate as usize,
                TARGET_RATE as usize,
                CHUNK_FRAMES,
                1,
            )
            .map_err(|e| refuse(&e.to_string()))?;
            Some(FftStage {
                filter: Filter {
                    block: resampler.input_frames_next(),
                    output: resampler.output_buffer_allocate(true),
                    delay_left: resampler.output_delay(),
                    resampler,
                },
                pending: Vec::new(),
            })
        };
        Ok(Self {
            input_rate,
            channels: usize::from(channels),
            partial_frame: Vec::new(),
            input_frames: 0,
            output_frames: 0,
            fft,
        })
    }

    /// Takes interleaved samples (any length, even part of a frame) and
    /// returns the 16 kHz mono samples that are ready.
    pub fn process(&mut self, interleaved: &[f32]) -> Vec<f32> {
        let mono = if self.channels == 1 {
            interleaved.iter().copied().map(tame).collect()
        } else {
            self.downmix(interleaved)
        };
        self.input_frames += mono.len() as u64;
        let out = match &mut self.fft {
            None => mono,
            Some(stage) => stage.push(&mono),
        };
        self.output_frames += out.len() as u64;
        out
    }

    /// Flushes the filter and returns the last samples. The whole output is
    /// `input_frames * 16000 / input_rate` samples long, rounded.
    pub fn finish(self) -> Vec<f32> {
        let expected = (u128::from(self.input_frames) * u128::from(TARGET_RATE)
            + u128::from(self.input_rate / 2))
            / u128::from(self.input_rate);
        let Some(mut stage) = self.fft else {
            return Vec::new();
        };
        let missing = (expected as u64).saturating_sub(self.output_frames) as usize;
        let mut out = Vec::with_capacity(missing);
        let filter = &mut stage.filter;
        if !stage.pending.is_empty() {
            stage.pending.resize(filter.block, 0.0);
            filter.run(&stage.pending, &mut out);
        }
        // Zeros push the filter's tail out.
        let silence = vec![0.0; filter.block];
        while out.len() < missing {
            let before = out.len();
            filter.run(&silence, &mut out);
            if out.len() == before {
                break;
            }
        }
        out.truncate(missing);
        out
    }

    fn downmix(&mut self, interleaved: &[f32]) -> Vec<f32> {
        let channels = self.channels;
        let scale = 1.0 / channels as f32;
        let mut input = interleaved;
        let mut mono = Vec::with_capacity(input.len() / channels + 1);
        if !self.partial_frame.is_empty() {
            let n = (channels - self.partial_frame.len()).min(input.len());
            self.partial_frame
                .extend(input[..n].iter().copied().map(tame));
            input = &input[n..];
            if self.partial_frame.len() < channels {
                return mono;
            }
            mono.push(self.partial_frame.iter().sum::<f32>() * scale);
            self.partial_frame.clear();
        }
        let frames = input.chunks_exact(channels);
        self.partial_frame
            .extend(frames.remainder().iter().copied().map(tame));
        mono.extend(frames.map(|frame| frame.iter().copied().map(tame).sum::<f32>() * scale));
        mono
    }
}

impl FftStage {
    /// Resamples every full block of pending and new input, keeping the rest
    /// for the next call.
    fn push(&mut self, mut input: &[f32]) -> Vec<f32> {
        let block = self.filter.block;
        let ready = self.pending.len() + input.len();
        let mut out = Vec::with_capacity(ready / block * self.filter.output[0].len());
        if !self.pending.is_empty() {
            let n = (block - self.pending.len()).min(input.len());
            self.pending.extend_from_slice(&input[..n]);
            input = &input[n..];
            if self.pending.len() < block {
                return out;
            }
            self.filter.run(&self.pending, &mut out);
            self.pending.clear();
        }
        let mut blocks = input.chunks_exact(block);
        for full in &mut blocks {
            self.filter.run(full, &mut out);
        }
        self.pending.extend_from_slice(blocks.remainder());
        out
    }
}

impl Filter {
    /// One block through rubato, appended to `out` once the delay is spent.
    fn run(&mut self, block: &[f32], out: &mut Vec<f32>) {
        let result = self
            .resampler
            .process_into_buffer(&[block], &mut self.output, None);
        // Buffers are sized by rubato itself, so processing cannot fail.
        let Ok((_, produced)) = result else {
            return;
        };
        let skip = self.delay_left.min(produced);
        self.delay_left -= skip;
        out.extend_from_slice(&self.output[0][skip..produced]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sixteen_kilohertz_passes_through_downmixed() {
        let mut r = StreamResampler::new(16_000, 2).unwrap();
        assert_eq!(r.process(&[1.0, 0.0, 0.5]), vec![0.5]);
        assert_eq!(r.process(&[0.5, -1.0, -1.0]), vec![0.5, -1.0]);
        assert!(r.finish().is_empty());
    }

    #[test]
    fn nan_infinite_and_huge_samples_do_not_reach_the_filter() {
        // A float WAV may carry any bit pattern; rubato panics on the NaN
        // its FFT makes of them (found by fuzz/, finding 1).
        let mut input = vec![0.25f32; 4_410];
        input[7] = f32::NAN;
        input[100] = f32::INFINITY;
        input[200] = -3.0e38;
        input[300] = 3.0e38;
        for channels in [1, 2] {
            let mut r = StreamResampler::new(22_050, channels).unwrap();
            let mut out = r.process(&input);
            out.extend(r.finish());
            assert_eq!(out.len(), 3_200 / usize::from(channels));
            assert!(out
                .iter()
                .all(|s| s.is_finite() && s.abs() <= 2.0 * HEADROOM));
        }
        let mut passthrough = StreamResampler::new(16_000, 1).unwrap();
        let out = passthrough.process(&[f32::NAN, 1.0e30, -0.5]);
        assert_eq!(out, vec![0.0, HEADROOM, -0.5]);
    }

    #[test]
    fn refuses_impossible_rates() {
        assert!(StreamResampler::new(0, 1).is_err());
        assert!(StreamResampler::new(u32::MAX, 1).is_err());
        assert!(StreamResampler::new(48_000, 0).is_err());
    }

    #[test]
    fn an_impulse_stays_in_place() {
        let mut input = vec![0.0f32; 48_000];
        input[24_000] = 1.0;
        let mut r = StreamResampler::new(48_000, 1).unwrap();
        let mut out = r.process(&input);
        out.extend(r.finish());
        assert_eq!(out.len(), 16_000);
        let peak = (0..out.len())
            .max_by(|&a, &b| out[a].abs().total_cmp(&out[b].abs()))
            .unwrap();
        assert_eq!(peak, 8_000);
    }
}
