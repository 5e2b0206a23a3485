//! Ogg/Opus, the format of WhatsApp voice notes, decoded page by page as the
//! bytes arrive: the `ogg` crate checks each page and reassembles packets,
//! libopus decodes them, and this module applies the rules of RFC 7845
//! (Ogg Encapsulation for the Opus Audio Codec).

use ogg::reading::{BasePacketReader, OggReadError, PageParser};

use crate::media::MediaError;

const FORMAT: &str = "Ogg/Opus";

/// Opus always decodes at 48 kHz here; pre-skip and granule positions count
/// 48 kHz samples whatever the encoder's input rate was (RFC 7845 §4).
pub(crate) const OPUS_RATE: u32 = 48_000;

/// Longest Opus packet: 120 ms of audio in at most 48 frames of at most 1275
/// bytes each (RFC 6716 §3.2.5), plus its table of contents and lengths.
/// Anything longer is refused before it is assembled.
const MAX_AUDIO_PACKET: usize = 64 * 1024;

/// Most samples per channel one packet decodes to: 120 ms at 48 kHz.
const MAX_PACKET_SAMPLES: usize = 5760;

/// Ogg page header length before the segment table (RFC 3533 §6).
const PAGE_HEADER: usize = 27;

/// An incremental Ogg/Opus decoder: push bytes, collect interleaved 48 kHz
/// PCM.
pub(crate) struct OggOpusDecoder {
    /// Bytes received but not yet part of a complete page.
    pending: Vec<u8>,
    packets: BasePacketReader,
    /// Serial number of the Opus stream; pages of any other logical stream
    /// (a multiplexed or chained file) are skipped.
    serial: Option<u32>,
    next_sequence: u32,
    /// Bytes so far of the packet that continues onto the next page.
    open_packet_len: usize,
    /// Packets of the stream completed so far, headers included.
    packets_completed: u64,
    head: Option<OpusHead>,
    decoder: Option<opus::Decoder>,
    scratch: Vec<f32>,
    /// Samples per channel decoded so far, pre-skip included.
    decoded: u64,
    last_granule: Option<u64>,
    /// Granule position minus decoded samples, fixed by the first audio page
    /// (non-zero when a stream was cut out of a longer one, RFC 7845 §4.5).
    granule_offset: Option<u64>,
    /// The latest audio page, held back until we know whether it is the last
    /// one, whose end is trimmed to its granule position.
    held: Option<AudioPage>,
    /// Interleaved PCM ready to hand out.
    ready: Vec<f32>,
    /// Samples per channel handed out or ready.
    emitted: u64,
    max_frames: u64,
    capped: bool,
    ended: bool,
}

/// The identification header (RFC 7845 §5.1).
#[derive(Debug, Clone, Copy)]
struct OpusHead {
    channels: u16,
    pre_skip: u64,
}

/// The samples of the packets that end on one page.
struct AudioPage {
    /// Decoded-sample position of the page's first sample.
    start: u64,
    granule: u64,
    pcm: Vec<f32>,
}

impl OggOpusDecoder {
    /// A decoder that stops after `max_frames` samples per channel.
    pub(crate) fn new(max_frames: u64) -> Self {
        Self {
            pending: Vec::new(),
            packets: BasePacketReader::new(),
            serial: None,
            next_sequence: 0,
            open_packet_len: 0,
            packets_completed: 0,
            head: None,
            decoder: None,
            scratch: Vec::new(),
            decoded: 0,
            last_granule: None,
            granule_offset: None,
            held: None,
            ready: Vec::new(),
            emitted: 0,
            max_frames,
            capped: false,
            ended: false,
        }
    }

    /// Channel count, once the identification header has been read.
    pub(crate) fn channels(&self) -> Option<u16> {
        self.head.map(|head| head.channels)
    }

    /// Whether decoding stopped at the length cap.
    pub(crate) fn capped(&self) -> bool {
        self.capped
    }

    pub(crate) fn push(&mut self, bytes: &[u8]) -> Result<(), MediaError> {
        if self.ended || self.capped {
            return Ok(());
        }
        self.pending.extend_from_slice(bytes);
        let mut at = 0;
        while let Some(len) = page_len(&self.pending[at..])? {
            let page = self.pending[at..at + len].to_vec();
            at += len;
            self.read_page(&page)?;
            if self.ended || self.capped {
                break;
            }
        }
        self.pending.drain(..at);
        Ok(())
    }

    /// Interleaved PCM decoded since the last call.
    pub(crate) fn take(&mut self) -> Vec<f32> {
        std::mem::take(&mut self.ready)
    }

    /// End of input. A page cut short is [`MediaError::Truncated`]; a stream
    /// that ends on a page boundary without its end-of-stream flag is
    /// accepted, since a cut landing exactly between pages is unlikely and
    /// some muxers omit the flag.
    pub(crate) fn finish(&mut self) -> Result<(), MediaError> {
        if self.capped || self.ended {
            return Ok(());
        }
        if self.packets_completed < 2 || !self.pending.is_empty() {
            return Err(MediaError::Truncated { format: FORMAT });
        }
        if let Some(page) = self.held.take() {
            self.release(page, true)?;
        }
        self.ended = true;
        Ok(())
    }

    fn read_page(&mut self, raw: &[u8]) -> Result<(), MediaError> {
        let flags = raw[5];
        let granule = u64::from_le_bytes(raw[6..14].try_into().expect("8 bytes"));
        let serial = u32::from_le_bytes(raw[14..18].try_into().expect("4 bytes"));
        let sequence = u32::from_le_bytes(raw[18..22].try_into().expect("4 bytes"));
        let segments = usize::from(raw[26]);
        let lacing = &raw[PAGE_HEADER..PAGE_HEADER + segments];
        let body = &raw[PAGE_HEADER + segments..];
        let last_page = flags & 0x04 != 0;

        match self.serial {
            None if flags & 0x02 != 0 => {
                self.serial = Some(serial);
                self.next_sequence = sequence;
            }
            None => return Err(malformed("the first page does not begin a stream")),
            Some(ours) if ours != serial => return Ok(()),
            Some(_) => {}
        }
        if sequence != self.next_sequence {
            return Err(malformed(format!(
                "page {sequence} where page {} was expected: pages are missing",
                self.next_sequence
            )));
        }
        self.next_sequence = sequence.wrapping_add(1);
        self.check_packet_sizes(lacing)?;

        let header: [u8; PAGE_HEADER] = raw[..PAGE_HEADER].try_into().expect("27 bytes");
        let (mut parser, _) = PageParser::new(header).map_err(ogg_error)?;
        parser.parse_segments(lacing.to_vec());
        let page = parser.parse_packet_data(body.to_vec()).map_err(ogg_error)?;
        self.packets.push_page(page).map_err(ogg_error)?;

        let start = self.decoded;
        let mut pcm = Vec::new();
        let mut audio_packets = 0;
        while let Some(packet) = self.packets.read_packet() {
            match self.packets_completed {
                0 => self.read_head(&packet.data)?,
                1 if !packet.data.starts_with(b"OpusTags") => {
                    return Err(malformed("the second packet is not OpusTags"))
                }
                1 => {}
                _ => {
                    self.decode_packet(&packet.data, &mut pcm)?;
                    audio_packets += 1;
                }
            }
            self.packets_completed += 1;
        }

        if audio_packets > 0 {
            // RFC 3533 §6: -1 marks a page on which no packet ends; the
            // position is a signed 64-bit count.
            if granule > i64::MAX as u64 {
                return Err(malformed("an audio page has no valid granule position"));
            }
            if self.last_granule.is_some_and(|last| granule < last) {
                return Err(malformed("granule positions go backwards"));
            }
            self.last_granule = Some(granule);
            if let Some(page) = self.held.take() {
                self.release(page, false)?;
            }
            self.held = Some(AudioPage {
                start,
                granule,
                pcm,
            });
        }
        if last_page {
            if let Some(page) = self.held.take() {
                self.release(page, true)?;
            }
            self.ended = true;
        }
        Ok(())
    }

    /// Refuses a packet longer than any valid one before the `ogg` crate
    /// assembles it, however many pages it spans.
    fn check_packet_sizes(&mut self, lacing: &[u8]) -> Result<(), MediaError> {
        let mut completed = self.packets_completed;
        for &len in lacing {
            self.open_packet_len += usize::from(len);
            // Header packets may carry large tags; they are bounded by the
            // input size limit.
            if completed >= 2 && self.open_packet_len > MAX_AUDIO_PACKET {
                return Err(malformed(format!(
                    "a packet is longer than {MAX_AUDIO_PACKET} bytes"
                )));
            }
            if len < 255 {
                self.open_packet_len = 0;
                completed += 1;
            }
        }
        Ok(())
    }

    fn read_head(&mut self, packet: &[u8]) -> Result<(), MediaError> {
        if packet.len() < 19 || !packet.starts_with(b"OpusHead") {
            return Err(malformed("the first packet is not an OpusHead"));
        }
        // Only the major version (upper four bits) must be understood.
        let version = packet[8];
        if version >> 4 != 0 {
            return Err(unsupported(format!("header version {version}")));
        }
        let channels = packet[9];
        let pre_skip = u16::from_le_bytes([packet[10], packet[11]]);
        let output_gain = i16::from_le_bytes([packet[16], packet[17]]);
        let family = packet[18];
        if channels == 0 {
            return Err(malformed("zero channels"));
        }
        match family {
            0 if channels <= 2 => {}
            0 => return Err(malformed("mapping family 0 with more than two channels")),
            // Family 1 with one or two channels is the family 0 layout when
            // it is a single stream coupled as the channel count says.
            1 if channels <= 2 => {
                let table = packet.get(19..21 + usize::from(channels));
                let simple = match table {
                    Some([1, 0, 0]) if channels == 1 => true,
                    Some([1, 1, 0, 1]) if channels == 2 => true,
                    Some(_) => false,
                    None => return Err(malformed("channel mapping table is cut short")),
                };
                if !simple {
                    return Err(unsupported("multistream channel mapping".into()));
                }
            }
            _ => {
                return Err(unsupported(format!(
                    "channel mapping family {family} with {channels} channels"
                )))
            }
        }
        let layout = if channels == 1 {
            opus::Channels::Mono
        } else {
            opus::Channels::Stereo
        };
        let mut decoder = opus::Decoder::new(OPUS_RATE, layout).map_err(codec_error)?;
        // RFC 7845 §5.1: the output gain is Q7.8 dB, applied as
        // 10^(gain / (20 * 256)); libopus's decoder gain takes the same unit.
        decoder
            .set_gain(i32::from(output_gain))
            .map_err(codec_error)?;
        self.scratch = vec![0.0; MAX_PACKET_SAMPLES * usize::from(channels)];
        self.decoder = Some(decoder);
        self.head = Some(OpusHead {
            channels: u16::from(channels),
            pre_skip: u64::from(pre_skip),
        });
        Ok(())
    }

    fn decode_packet(&mut self, packet: &[u8], pcm: &mut Vec<f32>) -> Result<(), MediaError> {
        // A zero-byte packet carries no audio; libopus would read it as a
        // lost packet and invent some.
        if packet.is_empty() {
            return Ok(());
        }
        let (Some(decoder), Some(head)) = (self.decoder.as_mut(), self.head) else {
            return Err(malformed("audio before the OpusHead"));
        };
        let frames = decoder
            .decode_float(packet, &mut self.scratch, false)
            .map_err(|e| match e.code() {
                opus::ErrorCode::InvalidPacket | opus::ErrorCode::BufferTooSmall => {
                    malformed(format!("libopus rejected a packet: {}", e.description()))
                }
                _ => codec_error(e),
            })?;
        pcm.extend_from_slice(&self.scratch[..frames * usize::from(head.channels)]);
        self.decoded += frames as u64;
        Ok(())
    }

    /// Drops pre-skip from the start and, on the last page, trims the end to
    /// the granule position (RFC 7845 §4.2, §4.5), then caps the length.
    fn release(&mut self, page: AudioPage, last: bool) -> Result<(), MediaError> {
        let Some(head) = self.head else {
            return Ok(());
        };
        let channels = usize::from(head.channels);
        let end = page.start + (page.pcm.len() / channels) as u64;
        let offset = match self.granule_offset {
            Some(offset) => offset,
            None if page.granule >= end => page.granule - end,
            // Fewer samples than decoded on the first audio page is only
            // allowed when it is also the last one: a very short note.
            None if last => 0,
            None => {
                return Err(malformed(
                    "the first audio page's granule position is before its end",
                ))
            }
        };
        self.granule_offset = Some(offset);
        let mut keep_until = end;
        if last {
            let granule_end = page.granule.saturating_sub(offset);
            if granule_end < head.pre_skip || granule_end < page.start {
                return Err(malformed(
                    "the final granule position trims more audio than the last page holds",
                ));
            }
            keep_until = keep_until.min(granule_end);
        }
        let keep_from = page.start.max(head.pre_skip);
        if keep_until <= keep_from {
            return Ok(());
        }
        let room = self.max_frames.saturating_sub(self.emitted);
        let mut frames = keep_until - keep_from;
        if frames > room {
            frames = room;
            self.capped = true;
        }
        let from = (keep_from - page.start) as usize * channels;
        let to = from + frames as usize * channels;
        self.ready.extend_from_slice(&page.pcm[from..to]);
        self.emitted += frames;
        Ok(())
    }
}

/// Length of the complete page at the start of `bytes`, or `None` if more
/// bytes are needed to finish it.
fn page_len(bytes: &[u8]) -> Result<Option<usize>, MediaError> {
    if bytes.len() < PAGE_HEADER {
        if !b"OggS".starts_with(&bytes[..bytes.len().min(4)]) {
            return Err(malformed("bytes between pages"));
        }
        return Ok(None);
    }
    if &bytes[..4] != b"OggS" {
        return Err(malformed("bytes between pages"));
    }
    if bytes[4] != 0 {
        return Err(malformed("unknown stream structure version"));
    }
    let segments = usize::from(bytes[26]);
    let Some(lacing) = bytes.get(PAGE_HEADER..PAGE_HEADER + segments) else {
        return Ok(None);
    };
    // At most 255 segments of 255 bytes: a page is never larger than 65 307
    // bytes, so waiting for a whole one is bounded.
    let body: usize = lacing.iter().map(|&l| usize::from(l)).sum();
    let len = PAGE_HEADER + segments + body;
    Ok((bytes.len() >= len).then_some(len))
}

fn malformed(reason: impl Into<String>) -> MediaError {
    MediaError::malformed(FORMAT, reason)
}

fn unsupported(feature: String) -> MediaError {
    MediaError::UnsupportedFeature {
        format: FORMAT,
        feature,
    }
}

fn codec_error(e: opus::Error) -> MediaError {
    MediaError::Codec {
        format: FORMAT,
        reason: e.to_string(),
    }
}

fn ogg_error(e: OggReadError) -> MediaError {
    let reason = match e {
        OggReadError::HashMismatch(..) => "a page fails its checksum".to_string(),
        OggReadError::InvalidData => "pages do not join into packets".to_string(),
        other => other.to_string(),
    };
    malformed(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_len_waits_for_the_whole_page() {
        let mut page = b"OggS\0\x02".to_vec();
        page.resize(26, 0);
        page.push(2); // two segments
        page.extend([255, 10]);
        assert_eq!(page_len(&page).unwrap(), None);
        page.resize(page.len() + 265, 0);
        assert_eq!(page_len(&page).unwrap(), Some(27 + 2 + 265));
        assert!(page_len(b"OggX").is_err());
        assert_eq!(page_len(b"Og").unwrap(), None);
    }
}
