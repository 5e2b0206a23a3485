//! The streaming Ogg/Opus writer: libopus (VOIP application, mono, 20 ms
//! frames) for the packets, the `ogg` crate for the pages, and the rules of
//! RFC 7845 for what goes in between.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

use ogg::writing::{PacketWriteEndInfo, PacketWriter};
use opus::{Application, Bandwidth, Bitrate, Channels, Encoder, Signal};

use super::{EncodeConfig, EncodeError};
use crate::media::resample::{StreamResampler, TARGET_RATE};

/// Granule positions and pre-skip count 48 kHz samples whatever rate the
/// encoder runs at (RFC 7845 §4).
pub const OPUS_RATE: u32 = 48_000;

/// 20 ms frames: the usual choice for speech, and what WhatsApp sends.
const FRAMES_PER_SECOND: u32 = 50;

/// Samples of one frame at 48 kHz, the granule step per packet.
const FRAME_48K: u64 = (OPUS_RATE / FRAMES_PER_SECOND) as u64;

/// Largest packet libopus is asked for; its own recommendation (RFC 6716
/// §3.2.5 caps a frame at 1275 bytes).
const MAX_PACKET: usize = 4000;

/// What the encoder reports when the stream is closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoteInfo {
    /// Length of the audio in the note, in milliseconds.
    pub duration_ms: u64,
    /// The input was longer than [`EncodeConfig::max_reply_ms`] and was cut.
    pub truncated: bool,
    /// Size of the whole file.
    pub bytes: u64,
    /// Samples at 48 kHz the decoder drops at the start (the encoder's
    /// lookahead).
    pub pre_skip: u16,
    /// Granule position of the last page: pre-skip plus the note's length in
    /// 48 kHz samples.
    pub final_granule: u64,
}

/// Mono PCM in, Ogg/Opus bytes out, page by page.
pub struct VoiceNoteEncoder {
    opus: Encoder,
    /// Rate libopus runs at: always 16 kHz.
    rate: u32,
    /// Converts input at a rate libopus does not take to 16 kHz.
    resampler: Option<StreamResampler>,
    writer: PacketWriter<'static, Vec<u8>>,
    serial: u32,
    pre_skip: u16,
    /// Samples at `rate` waiting for a whole frame.
    pending: Vec<f32>,
    packet: Vec<u8>,
    /// Samples at `rate` accepted so far.
    accepted: u64,
    max_samples: u64,
    truncated: bool,
    frames_written: u64,
    frames_per_page: u64,
    bytes_out: u64,
}

impl VoiceNoteEncoder {
    /// Starts a note for mono audio at `input_rate`; the two header pages
    /// are returned by the first call to [`push`](Self::push).
    pub fn new(input_rate: u32, config: &EncodeConfig) -> Result<Self, EncodeError> {
        // Every note is coded at 16 kHz, as WhatsApp's own voice notes are
        // (some mobile clients refuse others); the bandwidth is wideband
        // anyway (`max_bandwidth_hz`), so nothing audible is lost.
        let (rate, resampler) = if input_rate == TARGET_RATE {
            (TARGET_RATE, None)
        } else {
            let resampler =
                StreamResampler::new(input_rate, 1).map_err(|e| EncodeError::SampleRate {
                    sample_rate: input_rate,
                    reason: e.to_string(),
                })?;
            (TARGET_RATE, Some(resampler))
        };
        let setting = |setting: &'static str, e: opus::Error| EncodeError::Setting {
            setting,
            reason: e.to_string(),
        };
        let mut opus = Encoder::new(rate, Channels::Mono, Application::Voip)?;
        let bitrate = i32::try_from(config.bitrate_bps).unwrap_or(i32::MAX);
        opus.set_bitrate(Bitrate::Bits(bitrate))
            .map_err(|e| setting("bitrate_bps", e))?;
        opus.set_complexity(i32::from(config.complexity))
            .map_err(|e| setting("complexity", e))?;
        let bandwidth = match config.max_bandwidth_hz {
            0..=4_000 => Bandwidth::Narrowband,
            4_001..=6_000 => Bandwidth::Mediumband,
            6_001..=8_000 => Bandwidth::Wideband,
            8_001..=12_000 => Bandwidth::Superwideband,
            _ => Bandwidth::Fullband,
        };
        opus.set_max_bandwidth(bandwidth)
            .map_err(|e| setting("max_bandwidth_hz", e))?;
        opus.set_signal(Signal::Voice)?;
        // Constrained VBR keeps the size of a note close to bitrate × length,
        // so the length cap bounds the file size.
        opus.set_vbr_constraint(true)?;

        // The lookahead is counted at the encoder's rate; pre-skip is at
        // 48 kHz (RFC 7845 §4.2).
        let lookahead = u64::try_from(opus.get_lookahead()?).unwrap_or(0);
        let pre_skip = u16::try_from(lookahead * u64::from(OPUS_RATE / rate)).unwrap_or(u16::MAX);

        let page_ms = u64::from(config.page_ms.max(20));
        let mut encoder = Self {
            opus,
            rate,
            resampler,
            writer: PacketWriter::new(Vec::new()),
            serial: random_serial(),
            pre_skip,
            pending: Vec::new(),
            packet: vec![0; MAX_PACKET],
            accepted: 0,
            max_samples: config.max_reply_ms * u64::from(rate) / 1000,
            truncated: false,
            frames_written: 0,
            frames_per_page: page_ms * u64::from(FRAMES_PER_SECOND) / 1000,
            bytes_out: 0,
        };
        encoder.write_headers()?;
        Ok(encoder)
    }

    /// Pre-skip of this stream in 48 kHz samples.
    pub fn pre_skip(&self) -> u16 {
        self.pre_skip
    }

    /// Takes mono samples (any number, full scale ±1.0) and returns the Ogg
    /// bytes completed so far.
    pub fn push(&mut self, samples: &[f32]) -> Result<Vec<u8>, EncodeError> {
        match &mut self.resampler {
            Some(resampler) => {
                let resampled = resampler.process(samples);
                self.accept(&resampled);
            }
            None => self.accept(samples),
        }
        let frame = self.frame_len();
        let pending = std::mem::take(&mut self.pending);
        let frames = pending.chunks_exact(frame);
        let rest = frames.remainder().to_vec();
        for samples in frames {
            let end_of_page = (self.frames_written + 1).is_multiple_of(self.frames_per_page);
            let info = if end_of_page {
                PacketWriteEndInfo::EndPage
            } else {
                PacketWriteEndInfo::NormalPacket
            };
            let granule = (self.frames_written + 1) * FRAME_48K;
            self.write_frame(samples, info, granule)?;
        }
        self.pending = pending;
        self.pending.clear();
        self.pending.extend_from_slice(&rest);
        Ok(self.take_output())
    }

    /// Encodes what is left, closes the stream and returns its last bytes.
    ///
    /// libopus delays its output by the lookahead, so frames of silence are
    /// encoded until the packets cover pre-skip plus the input; the last
    /// page's granule position then tells the decoder where the audio ends,
    /// and it drops the padding (RFC 7845 §4.4).
    pub fn finish(mut self) -> Result<(Vec<u8>, NoteInfo), EncodeError> {
        if let Some(resampler) = self.resampler.take() {
            let tail = resampler.finish();
            self.accept(&tail);
        }
        let scale = u64::from(OPUS_RATE / self.rate);
        let final_granule = u64::from(self.pre_skip) + self.accepted * scale;
        let frames_needed = final_granule
            .div_ceil(FRAME_48K)
            .max(self.frames_written + 1);
        let frame = self.frame_len();
        let mut pending = std::mem::take(&mut self.pending);
        while self.frames_written < frames_needed {
            pending.resize(frame, 0.0);
            let last = self.frames_written + 1 == frames_needed;
            let (info, granule) = if last {
                (PacketWriteEndInfo::EndStream, final_granule)
            } else {
                (
                    PacketWriteEndInfo::NormalPacket,
                    (self.frames_written + 1) * FRAME_48K,
                )
            };
            self.write_frame(&pending, info, granule)?;
            pending.clear();
        }
        let tail = self.take_output();
        let info = NoteInfo {
            duration_ms: self.accepted * 1000 / u64::from(self.rate),
            truncated: self.truncated,
            bytes: self.bytes_out,
            pre_skip: self.pre_skip,
            final_granule,
        };
        Ok((tail, info))
    }

    fn frame_len(&self) -> usize {
        (self.rate / FRAMES_PER_SECOND) as usize
    }

    /// Queues samples at the encoder's rate, up to the length cap.
    fn accept(&mut self, samples: &[f32]) {
        let room = self.max_samples.saturating_sub(self.accepted);
        let take = samples
            .len()
            .min(usize::try_from(room).unwrap_or(usize::MAX));
        if take < samples.len() {
            self.truncated = true;
        }
        // libopus expects ±1.0; a NaN from a broken provider becomes silence.
        self.pending.extend(samples[..take].iter().map(|&s| {
            if s.is_finite() {
                s.clamp(-1.0, 1.0)
            } else {
                0.0
            }
        }));
        self.accepted += take as u64;
    }

    fn write_frame(
        &mut self,
        samples: &[f32],
        info: PacketWriteEndInfo,
        granule: u64,
    ) -> Result<(), EncodeError> {
        let len = self.opus.encode_float(samples, &mut self.packet)?;
        self.writer
            .write_packet(self.packet[..len].to_vec(), self.serial, info, granule)?;
        self.frames_written += 1;
        Ok(())
    }

    /// The identification and comment headers, each on a page of its own
    /// (RFC 7845 §3).
    fn write_headers(&mut self) -> Result<(), EncodeError> {
        let mut head = Vec::with_capacity(19);
        head.extend_from_slice(b"OpusHead");
        head.push(1); // version
        head.push(1); // channels
        head.extend_from_slice(&self.pre_skip.to_le_bytes());
        // The rate the audio was coded at (informational, RFC 7845 §5.1).
        head.extend_from_slice(&self.rate.to_le_bytes());
        head.extend_from_slice(&0i16.to_le_bytes()); // output gain
        head.push(0); // channel mapping family 0: mono or stereo, no table
        self.writer
            .write_packet(head, self.serial, PacketWriteEndInfo::EndPage, 0)?;

        let vendor = opus::version().as_bytes();
        let comment = format!("ENCODER=voxline {}", env!("CARGO_PKG_VERSION"));
        let mut tags = Vec::with_capacity(24 + vendor.len() + comment.len());
        tags.extend_from_slice(b"OpusTags");
        tags.extend_from_slice(&(vendor.len() as u32).to_le_bytes());
        tags.extend_from_slice(vendor);
        tags.extend_from_slice(&1u32.to_le_bytes());
        tags.extend_from_slice(&(comment.len() as u32).to_le_bytes());
        tags.extend_from_slice(comment.as_bytes());
        self.writer
            .write_packet(tags, self.serial, PacketWriteEndInfo::EndPage, 0)?;
        Ok(())
    }

    fn take_output(&mut self) -> Vec<u8> {
        let bytes = std::mem::take(self.writer.inner_mut());
        self.bytes_out += bytes.len() as u64;
        bytes
    }
}

/// Ogg wants serial numbers that differ between streams (RFC 3533 §4); the
/// standard library's per-process random hash keys are enough for that.
fn random_serial() -> u32 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0),
    );
    hasher.finish() as u32
}

#[cfg(test)]
mod tests {
    use super::*;
    use ogg::reading::PacketReader;
    use std::io::Cursor;

    fn tone(rate: u32, ms: u64) -> Vec<f32> {
        let n = (u64::from(rate) * ms / 1000) as usize;
        (0..n)
            .map(|i| 0.3 * (i as f32 * 220.0 * std::f32::consts::TAU / rate as f32).sin())
            .collect()
    }

    /// (granule, end-of-stream) of every page.
    fn pages(bytes: &[u8]) -> Vec<(u64, bool)> {
        let mut reader = PacketReader::new(Cursor::new(bytes));
        let mut out = Vec::new();
        while let Some(packet) = reader.read_packet().unwrap() {
            if packet.last_in_page() {
                out.push((packet.absgp_page(), packet.last_in_stream()));
            }
        }
        out
    }

    #[test]
    fn headers_follow_rfc_7845() {
        // Coded at 16 kHz whatever comes in (here Kokoro's 24 kHz).
        let encoder = VoiceNoteEncoder::new(24_000, &EncodeConfig::default()).unwrap();
        let (bytes, info) = encoder.finish().unwrap();
        let mut reader = PacketReader::new(Cursor::new(&bytes));
        let head = reader.read_packet().unwrap().unwrap();
        assert_eq!(&head.data[..8], b"OpusHead");
        assert_eq!(head.data.len(), 19);
        assert_eq!(head.data[8], 1, "version");
        assert_eq!(head.data[9], 1, "channels");
        assert_eq!(
            u16::from_le_bytes([head.data[10], head.data[11]]),
            info.pre_skip
        );
        assert_eq!(
            u32::from_le_bytes(head.data[12..16].try_into().unwrap()),
            16_000
        );
        assert_eq!(&head.data[16..19], &[0, 0, 0], "gain and mapping family");
        assert!(head.first_in_stream() && head.last_in_page());
        let tags = reader.read_packet().unwrap().unwrap();
        assert_eq!(&tags.data[..8], b"OpusTags");
        assert!(tags.last_in_page());
    }

    #[test]
    fn pre_skip_is_the_lookahead_at_48_khz() {
        for rate in [8_000, 16_000, 22_050, 24_000, 48_000] {
            let encoder = VoiceNoteEncoder::new(rate, &EncodeConfig::default()).unwrap();
            // libopus: 2.5 ms of delay plus 4 ms of compensation, at any rate.
            assert_eq!(encoder.pre_skip(), 312, "at {rate} Hz");
        }
    }

    #[test]
    fn last_granule_is_pre_skip_plus_the_input() {
        for (rate, ms) in [(16_000, 1234), (24_000, 2000), (48_000, 7), (22_050, 1000)] {
            let mut encoder = VoiceNoteEncoder::new(rate, &EncodeConfig::default()).unwrap();
            let pcm = tone(rate, ms);
            let mut bytes = Vec::new();
            for chunk in pcm.chunks(777) {
                bytes.extend(encoder.push(chunk).unwrap());
            }
            let (tail, info) = encoder.finish().unwrap();
            bytes.extend(tail);
            let pages = pages(&bytes);
            let (last_granule, eos) = *pages.last().unwrap();
            assert!(eos);
            assert!(pages[..pages.len() - 1].iter().all(|&(_, eos)| !eos));
            let input_48k = (pcm.len() as u64 * 48_000).div_ceil(u64::from(rate));
            // Resampled input is rounded to whole 16 kHz samples.
            let tolerance = if rate == 22_050 { 3 } else { 0 };
            assert!(
                last_granule.abs_diff(u64::from(info.pre_skip) + input_48k) <= tolerance,
                "{rate} Hz: {last_granule} vs {}",
                u64::from(info.pre_skip) + input_48k
            );
            assert_eq!(info.final_granule, last_granule);
            assert_eq!(info.bytes, bytes.len() as u64);
            // Granules never go back.
            assert!(pages.windows(2).all(|w| w[0].0 <= w[1].0));
        }
    }

    #[test]
    fn pages_come_out_while_pushing() {
        let mut encoder = VoiceNoteEncoder::new(24_000, &EncodeConfig::default()).unwrap();
        let first = encoder.push(&tone(24_000, 10)).unwrap();
        assert!(first.starts_with(b"OggS"), "headers at once");
        let before = first.len();
        let more = encoder.push(&tone(24_000, 1500)).unwrap();
        assert!(more.len() > 1000, "a page of audio after a second");
        assert!(before > 0);
    }

    #[test]
    fn long_replies_are_capped() {
        let config = EncodeConfig {
            max_reply_ms: 1000,
            ..EncodeConfig::default()
        };
        let note = crate::encode::encode(&tone(16_000, 3000), 16_000, &config).unwrap();
        assert!(note.info.truncated);
        assert_eq!(note.info.duration_ms, 1000);
        assert_eq!(
            note.info.final_granule,
            u64::from(note.info.pre_skip) + 48_000
        );
    }

    #[test]
    fn the_cap_keeps_a_note_under_whatsapps_limit() {
        // Full-band noise is the worst case for the bitrate.
        let config = EncodeConfig::default();
        let mut state = 1u32;
        let noise: Vec<f32> = (0..16_000 * 100)
            .map(|_| {
                state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                (state >> 8) as f32 / (1u32 << 24) as f32 - 0.5
            })
            .collect();
        let note = crate::encode::encode(&noise, 16_000, &config).unwrap();
        assert!(note.info.truncated);
        assert!(note.bytes.len() < 400 * 1024, "{} bytes", note.bytes.len());
    }

    #[test]
    fn bad_rates_and_samples_are_errors_or_silence() {
        assert!(VoiceNoteEncoder::new(0, &EncodeConfig::default()).is_err());
        assert!(VoiceNoteEncoder::new(1_000_000, &EncodeConfig::default()).is_err());
        let note = crate::encode::encode(
            &[f32::NAN, f32::INFINITY, 7.0, -7.0],
            16_000,
            &EncodeConfig::default(),
        )
        .unwrap();
        assert!(note.bytes.starts_with(b"OggS"));
    }
}
