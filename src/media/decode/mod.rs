//! Bytes in, interleaved f32 PCM at the note's own rate out, chunk by chunk.
//!
//! [`StreamDecoder`] takes the note as it downloads, in chunks of any size.
//! It holds the first bytes until [`detect()`](crate::media::detect()) can name
//! the format, then hands everything to a backend:
//!
//! - Ogg/Opus (every WhatsApp voice note) is decoded on the caller's thread,
//!   page by page as each page completes, with the `ogg` crate and libopus
//!   (`ogg_opus`).
//! - MP3, ADTS AAC, WAV, FLAC, Ogg Vorbis and Ogg FLAC stream through
//!   symphonia on a worker thread (`symphonia`).
//! - MP4/M4A is buffered and decoded at [`StreamDecoder::finish`], because
//!   its index may follow the audio.
//!
//! PCM can be drained with [`StreamDecoder::take_pcm`] while the download
//! continues. Everything is bounded: input bytes by
//! [`MediaConfig::max_input_bytes`], decoded audio by
//! [`MediaConfig::max_note_ms`] plus [`DECODE_MARGIN_MS`], an Opus packet by
//! what RFC 6716 allows.
//!
//! An Ogg file cut mid-page, or any container that ends before the length it
//! declares (WAV, FLAC, MP3 with a Xing/Info header, MP4), is
//! [`MediaError::Truncated`] so the caller can fetch it again. MP3 without a
//! length header, ADTS AAC and an Ogg stream cut exactly at a page boundary
//! carry no declared length, and decode to what arrived.

mod guard;
mod mp4;
mod ogg_opus;
mod symphonia;

use self::ogg_opus::{OggOpusDecoder, OPUS_RATE};
use self::symphonia::{Limits, Streaming};
use super::detect::{sniff, Sniff};
use super::{AudioFormat, MediaConfig, MediaError, Pcm};

/// Audio decoded past [`MediaConfig::max_note_ms`] before decoding stops, so
/// that trimming leading silence still leaves a full-length note.
pub const DECODE_MARGIN_MS: u64 = 1_000;

/// An incremental decoder for one note. See the [module docs](self).
pub struct StreamDecoder {
    max_input_bytes: usize,
    max_ms: u64,
    received: usize,
    state: State,
    /// The first error; every later call returns it again.
    failed: Option<MediaError>,
}

enum State {
    /// Waiting for enough bytes to name the format.
    Sniffing(Vec<u8>),
    OggOpus(Box<OggOpusDecoder>),
    Streaming {
        format: AudioFormat,
        decoder: Streaming,
        /// Page boundaries of an Ogg stream, to tell a cut file from a
        /// complete one.
        framing: Option<OggFraming>,
    },
    Buffered {
        format: AudioFormat,
        bytes: Vec<u8>,
    },
    Finished,
}

/// What [`StreamDecoder`] produced for a whole note.
pub(crate) struct Decoded {
    pub format: AudioFormat,
    pub pcm: Pcm,
    /// Decoding stopped at the length cap; the note is longer.
    pub capped: bool,
}

impl StreamDecoder {
    pub fn new(config: &MediaConfig) -> Self {
        Self {
            max_input_bytes: config.max_input_bytes,
            max_ms: config.max_note_ms.saturating_add(DECODE_MARGIN_MS),
            received: 0,
            state: State::Sniffing(Vec::new()),
            failed: None,
        }
    }

    /// The format, once enough bytes have arrived to tell.
    pub fn format(&self) -> Option<AudioFormat> {
        match &self.state {
            State::OggOpus(_) => Some(AudioFormat::OggOpus),
            State::Streaming { format, .. } | State::Buffered { format, .. } => Some(*format),
            State::Sniffing(_) | State::Finished => None,
        }
    }

    /// Feeds the next chunk of the note.
    pub fn push(&mut self, chunk: &[u8]) -> Result<(), MediaError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        let result = self.push_inner(chunk);
        if let Err(e) = &result {
            self.failed = Some(e.clone());
            self.state = State::Finished;
        }
        result
    }

    fn push_inner(&mut self, chunk: &[u8]) -> Result<(), MediaError> {
        self.received = self.received.saturating_add(chunk.len());
        if self.received > self.max_input_bytes {
            return Err(MediaError::TooLarge {
                limit: self.max_input_bytes,
            });
        }
        match &mut self.state {
            State::Sniffing(prefix) => {
                prefix.extend_from_slice(chunk);
                if let Sniff::Known(format) = sniff(prefix, false)? {
                    let prefix = std::mem::take(prefix);
                    self.start(format, prefix)?;
                }
                Ok(())
            }
            State::OggOpus(decoder) => decoder.push(chunk),
            State::Streaming {
                decoder, framing, ..
            } => {
                if let Some(framing) = framing {
                    framing.feed(chunk)?;
                }
                decoder.push(chunk)
            }
            State::Buffered { bytes, .. } => {
                bytes.extend_from_slice(chunk);
                Ok(())
            }
            State::Finished => Ok(()),
        }
    }

    /// Starts the backend for `format` and gives it the bytes so far.
    fn start(&mut self, format: AudioFormat, prefix: Vec<u8>) -> Result<(), MediaError> {
        self.state = match format {
            AudioFormat::OggOpus => {
                let max_frames = self.max_ms * u64::from(OPUS_RATE) / 1000;
                let mut decoder = Box::new(OggOpusDecoder::new(max_frames));
                decoder.push(&prefix)?;
                State::OggOpus(decoder)
            }
            AudioFormat::Mp4 => State::Buffered {
                format,
                bytes: prefix,
            },
            _ => {
                let limits = Limits {
                    max_ms: self.max_ms,
                    check_length: !unknown_length_wav(format, &prefix),
                };
                let mut decoder = Streaming::start(format, limits)?;
                let mut framing = matches!(format, AudioFormat::OggVorbis | AudioFormat::OggFlac)
                    .then(OggFraming::default);
                if let Some(framing) = &mut framing {
                    framing.feed(&prefix)?;
                }
                decoder.push(&prefix)?;
                State::Streaming {
                    format,
                    decoder,
                    framing,
                }
            }
        };
        Ok(())
    }

    /// Drains the PCM decoded so far, if any.
    pub fn take_pcm(&mut self) -> Option<Pcm> {
        match &mut self.state {
            State::OggOpus(decoder) => {
                let samples = decoder.take();
                let channels = decoder.channels()?;
                (!samples.is_empty()).then_some(Pcm {
                    sample_rate: OPUS_RATE,
                    channels,
                    samples,
                })
            }
            State::Streaming { decoder, .. } => decoder.take(),
            _ => None,
        }
    }

    /// Ends the input and returns the PCM not yet taken.
    pub fn finish(self) -> Result<Pcm, MediaError> {
        self.finish_note().map(|decoded| decoded.pcm)
    }

    pub(crate) fn finish_note(mut self) -> Result<Decoded, MediaError> {
        if let Some(e) = self.failed.take() {
            return Err(e);
        }
        if let State::Sniffing(prefix) = &mut self.state {
            let prefix = std::mem::take(prefix);
            let Sniff::Known(format) = sniff(&prefix, true)? else {
                return Err(MediaError::Unrecognised);
            };
            self.start(format, prefix)?;
        }
        match std::mem::replace(&mut self.state, State::Finished) {
            State::OggOpus(mut decoder) => {
                decoder.finish()?;
                Ok(Decoded {
                    format: AudioFormat::OggOpus,
                    pcm: Pcm {
                        sample_rate: OPUS_RATE,
                        channels: decoder.channels().unwrap_or(1),
                        samples: decoder.take(),
                    },
                    capped: decoder.capped(),
                })
            }
            State::Streaming {
                format,
                decoder,
                framing,
            } => {
                let (pcm, outcome) = decoder.finish()?;
                if framing.is_some_and(|f| !f.at_page_boundary()) && !outcome.capped {
                    return Err(MediaError::Truncated {
                        format: format.name(),
                    });
                }
                Ok(Decoded::from_parts(format, pcm, outcome))
            }
            State::Buffered { format, bytes } => {
                let limits = Limits {
                    max_ms: self.max_ms,
                    check_length: true,
                };
                let (pcm, outcome) = symphonia::decode_buffered(format, bytes, limits)?;
                Ok(Decoded::from_parts(format, pcm, outcome))
            }
            State::Sniffing(_) | State::Finished => Err(MediaError::Unrecognised),
        }
    }
}

impl Decoded {
    fn from_parts(format: AudioFormat, pcm: Option<Pcm>, outcome: symphonia::Outcome) -> Self {
        Self {
            format,
            pcm: pcm.unwrap_or(Pcm {
                sample_rate: outcome.sample_rate,
                channels: outcome.channels,
                samples: Vec::new(),
            }),
            capped: outcome.capped,
        }
    }
}

/// A WAV whose RIFF size is 0xFFFFFFFF was written by a streaming recorder
/// that never learned its length; its data chunk size means nothing.
fn unknown_length_wav(format: AudioFormat, prefix: &[u8]) -> bool {
    format == AudioFormat::Wav && prefix.get(4..8) == Some(&[0xFF; 4])
}

/// Follows Ogg page boundaries (RFC 3533 §6) in a stream of bytes without
/// keeping the pages, to tell a file that stops mid-page.
#[derive(Debug, Default)]
struct OggFraming {
    /// The header of the page being read, up to and including its segment
    /// table.
    header: Vec<u8>,
    body_left: usize,
    /// The end-of-stream page has passed; what follows is ignored.
    ended: bool,
}

impl OggFraming {
    fn feed(&mut self, mut bytes: &[u8]) -> Result<(), MediaError> {
        while !bytes.is_empty() {
            if self.body_left > 0 {
                let n = self.body_left.min(bytes.len());
                self.body_left -= n;
                bytes = &bytes[n..];
                continue;
            }
            if self.ended {
                break;
            }
            let wanted = match self.header.get(26) {
                Some(&segments) => 27 + usize::from(segments),
                None => 27,
            };
            let n = (wanted - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..n]);
            bytes = &bytes[n..];
            let prefix = &self.header[..self.header.len().min(4)];
            if !b"OggS".starts_with(prefix) {
                return Err(MediaError::malformed("Ogg", "bytes between pages"));
            }
            if let Some(&segments) = self.header.get(26) {
                if self.header.len() == 27 + usize::from(segments) {
                    self.body_left = self.header[27..].iter().map(|&l| usize::from(l)).sum();
                    self.ended = self.header[5] & 0x04 != 0;
                    self.header.clear();
                }
            }
        }
        Ok(())
    }

    fn at_page_boundary(&self) -> bool {
        self.header.is_empty() && self.body_left == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framing_tracks_page_ends_across_chunks() {
        let mut page = b"OggS\0\x04".to_vec(); // end of stream
        page.resize(26, 0);
        page.extend([2, 255, 3]);
        page.resize(page.len() + 258, 7);
        let mut framing = OggFraming::default();
        framing.feed(&page[..20]).unwrap();
        assert!(!framing.at_page_boundary());
        framing.feed(&page[20..100]).unwrap();
        assert!(!framing.at_page_boundary());
        framing.feed(&page[100..]).unwrap();
        assert!(framing.at_page_boundary());
    }

    #[test]
    fn framing_rejects_garbage_between_pages() {
        let mut framing = OggFraming::default();
        assert!(framing.feed(b"OggX").is_err());
    }
}
