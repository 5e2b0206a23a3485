//! Which audio format a note is in, judged from its first bytes only.
//!
//! WhatsApp and the customer's phone both label media with a MIME type, and
//! both get it wrong (a forwarded MP3 arrives as `audio/ogg`), so the label is
//! never read. The container's magic bytes decide; for Ogg the first packet
//! names the codec, and a bare MPEG or ADTS frame sync only counts when the
//! header fields are valid and the next frame starts where the first one ends,
//! so random bytes are not taken for audio.

use super::MediaError;

/// A container and codec the media stage decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AudioFormat {
    /// Opus in Ogg: WhatsApp voice notes.
    OggOpus,
    OggVorbis,
    OggFlac,
    /// MPEG-1/2 Layer III, with or without an ID3v2 tag.
    Mp3,
    /// Raw AAC in ADTS frames.
    Aac,
    /// MP4 or M4A (ISO base media file).
    Mp4,
    Wav,
    Flac,
}

impl AudioFormat {
    /// Short human name, as used in error messages.
    pub fn name(self) -> &'static str {
        match self {
            Self::OggOpus => "Ogg/Opus",
            Self::OggVorbis => "Ogg/Vorbis",
            Self::OggFlac => "Ogg/FLAC",
            Self::Mp3 => "MP3",
            Self::Aac => "AAC",
            Self::Mp4 => "MP4",
            Self::Wav => "WAV",
            Self::Flac => "FLAC",
        }
    }

    /// The MIME type the format should have been labelled with.
    pub fn mime(self) -> &'static str {
        match self {
            Self::OggOpus => "audio/ogg; codecs=opus",
            Self::OggVorbis => "audio/ogg; codecs=vorbis",
            Self::OggFlac => "audio/ogg; codecs=flac",
            Self::Mp3 => "audio/mpeg",
            Self::Aac => "audio/aac",
            Self::Mp4 => "audio/mp4",
            Self::Wav => "audio/wav",
            Self::Flac => "audio/flac",
        }
    }
}

impl std::fmt::Display for AudioFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Sniffs the format of a whole note.
///
/// Bytes that start like a known container but stop before the format can be
/// told are [`MediaError::Truncated`]; bytes that start like nothing known are
/// [`MediaError::Unrecognised`].
pub fn detect(bytes: &[u8]) -> Result<AudioFormat, MediaError> {
    match sniff(bytes, true)? {
        Sniff::Known(format) => Ok(format),
        // `sniff` never asks for more once told the input is complete.
        Sniff::NeedMore => Err(MediaError::Unrecognised),
    }
}

/// Verdict on a prefix of a note that may still grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Sniff {
    Known(AudioFormat),
    NeedMore,
}

/// Sniffs the format from a prefix. With `complete` false, a prefix too short
/// to decide gives [`Sniff::NeedMore`]; with `complete` true it is an error.
pub(crate) fn sniff(bytes: &[u8], complete: bool) -> Result<Sniff, MediaError> {
    // Every magic below fits in 12 bytes.
    if bytes.len() < 12 && !complete {
        return Ok(Sniff::NeedMore);
    }
    if bytes.is_empty() {
        return Err(MediaError::Empty);
    }
    let known = |format| Ok(Sniff::Known(format));
    let unsupported = |format| Err(MediaError::UnsupportedFormat { format });

    if bytes.starts_with(b"OggS") {
        return sniff_ogg(bytes, complete);
    }
    if bytes.starts_with(b"RIFF") {
        return match bytes.get(8..12) {
            Some(b"WAVE") => known(AudioFormat::Wav),
            Some(_) => Err(MediaError::Unrecognised),
            None => Err(MediaError::Truncated { format: "WAV" }),
        };
    }
    if bytes.starts_with(b"RF64") || bytes.starts_with(b"BW64") {
        return unsupported("RF64");
    }
    if bytes.starts_with(b"fLaC") {
        return known(AudioFormat::Flac);
    }
    // RFC 4867 §5: "#!AMR\n", "#!AMR-WB\n" and their multichannel forms.
    if bytes.starts_with(b"#!AMR-WB") {
        return unsupported("AMR-WB");
    }
    if bytes.starts_with(b"#!AMR") {
        return unsupported("AMR");
    }
    if bytes.get(4..8) == Some(b"ftyp") {
        return known(AudioFormat::Mp4);
    }
    if bytes.starts_with(&[0x1A, 0x45, 0xDF, 0xA3]) {
        return unsupported("WebM");
    }
    if bytes.starts_with(b"FORM") && matches!(bytes.get(8..12), Some(b"AIFF" | b"AIFC")) {
        return unsupported("AIFF");
    }
    if bytes.starts_with(b"caff") {
        return unsupported("CAF");
    }
    if let Some(tag_len) = id3v2_len(bytes) {
        // An ID3v2 tag is followed by MPEG audio (or, rarely, ADTS); some
        // taggers pad past the declared size with zeros.
        let Some(rest) = bytes.get(tag_len..) else {
            return need_more(complete, "MP3");
        };
        let audio = rest.iter().position(|&b| b != 0);
        return match audio {
            Some(start) => sniff_frames(bytes, tag_len + start, complete, true),
            None => need_more(complete, "MP3"),
        };
    }
    sniff_frames(bytes, 0, complete, false)
}

fn need_more(complete: bool, format: &'static str) -> Result<Sniff, MediaError> {
    if complete {
        Err(MediaError::Truncated { format })
    } else {
        Ok(Sniff::NeedMore)
    }
}

/// Length of an ID3v2 tag at the start of `bytes`, header and footer
/// included, if the header is valid (id3.org, ID3v2.4 structure §3.1).
fn id3v2_len(bytes: &[u8]) -> Option<usize> {
    let header = bytes.get(..10)?;
    if &header[..3] != b"ID3" || header[3] == 0xFF || header[4] == 0xFF {
        return None;
    }
    let size = &header[6..10];
    if size.iter().any(|&b| b & 0x80 != 0) {
        return None;
    }
    let size = size
        .iter()
        .fold(0usize, |acc, &b| (acc << 7) | usize::from(b));
    let footer = if header[5] & 0x10 != 0 { 10 } else { 0 };
    Some(10 + size + footer)
}

/// The first Ogg page must start a stream and hold the codec's identification
/// header as its first packet (RFC 3533 §6, RFC 7845 §3).
fn sniff_ogg(bytes: &[u8], complete: bool) -> Result<Sniff, MediaError> {
    let malformed = |reason| Err(MediaError::malformed("Ogg", reason));
    if bytes.len() < 27 {
        return need_more(complete, "Ogg");
    }
    if bytes[4] != 0 {
        return malformed("unknown stream structure version");
    }
    if bytes[5] & 0x02 == 0 || bytes[5] & 0x01 != 0 {
        return malformed("first page does not begin a stream");
    }
    let segments = usize::from(bytes[26]);
    let Some(lacing) = bytes.get(27..27 + segments) else {
        return need_more(complete, "Ogg");
    };
    if segments == 0 {
        return malformed("first page holds no packet");
    }
    let first_packet_len: usize = lacing
        .iter()
        .take_while(|&&l| l == 255)
        .map(|&l| usize::from(l))
        .sum::<usize>()
        + usize::from(*lacing.iter().find(|&&l| l < 255).unwrap_or(&255));
    let body = 27 + segments;
    let magic_len = first_packet_len.min(8);
    let Some(magic) = bytes.get(body..body + magic_len) else {
        return need_more(complete, "Ogg");
    };
    if magic.starts_with(b"OpusHead") {
        Ok(Sniff::Known(AudioFormat::OggOpus))
    } else if magic.starts_with(b"\x01vorbis") {
        Ok(Sniff::Known(AudioFormat::OggVorbis))
    } else if magic.starts_with(b"\x7FFLAC") {
        Ok(Sniff::Known(AudioFormat::OggFlac))
    } else if magic.starts_with(b"Speex   ") {
        Err(MediaError::UnsupportedFormat {
            format: "Ogg/Speex",
        })
    } else {
        Err(MediaError::Unrecognised)
    }
}

/// A stream of MPEG audio or ADTS frames starting at `at`.
fn sniff_frames(
    bytes: &[u8],
    at: usize,
    complete: bool,
    tagged: bool,
) -> Result<Sniff, MediaError> {
    let Some(first) = bytes.get(at..).and_then(FrameHeader::parse) else {
        if bytes.len() < at + 7 && tagged {
            return need_more(complete, "MP3");
        }
        return Err(MediaError::Unrecognised);
    };
    let name = first.kind.name();
    let next = at + first.len;
    match bytes.get(next..).filter(|rest| rest.len() >= 7) {
        Some(rest) => match FrameHeader::parse(rest) {
            Some(second) if second.continues(&first) => first.verdict(),
            _ => Err(MediaError::Unrecognised),
        },
        // A note of exactly one frame is fine once we know it ended.
        None if complete && bytes.len() == next => first.verdict(),
        None => need_more(complete, name),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FrameKind {
    /// MPEG audio with the given layer (1, 2 or 3).
    Mpeg {
        layer: u8,
    },
    Adts,
}

impl FrameKind {
    fn name(self) -> &'static str {
        match self {
            Self::Mpeg { layer: 3 } => "MP3",
            Self::Mpeg { .. } => "MPEG Layer I/II",
            Self::Adts => "AAC",
        }
    }
}

/// The fields of an MPEG audio or ADTS frame header that must stay the same
/// from one frame to the next.
#[derive(Debug, Clone, Copy)]
struct FrameHeader {
    kind: FrameKind,
    /// MPEG version bits, or the ADTS MPEG-2/4 bit.
    version: u8,
    rate_index: u8,
    /// Frame length in bytes, header included.
    len: usize,
}

impl FrameHeader {
    fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < 4 || b[0] != 0xFF || b[1] & 0xE0 != 0xE0 {
            return None;
        }
        if b[1] & 0xF6 == 0xF0 {
            return Self::parse_adts(b);
        }
        Self::parse_mpeg(b)
    }

    /// ISO/IEC 11172-3 §2.4.2.3 and ISO/IEC 13818-3 (MPEG-2 and the
    /// unofficial 2.5 extension).
    fn parse_mpeg(b: &[u8]) -> Option<Self> {
        let version = (b[1] >> 3) & 3; // 0: 2.5, 1: reserved, 2: MPEG-2, 3: MPEG-1
        let layer = match (b[1] >> 1) & 3 {
            1 => 3,
            2 => 2,
            3 => 1,
            _ => return None,
        };
        let bitrate_index = usize::from(b[2] >> 4);
        let rate_index = (b[2] >> 2) & 3;
        let padding = usize::from((b[2] >> 1) & 1);
        // Free-format (index 0) streams are not worth the false positives.
        if version == 1 || bitrate_index == 0 || bitrate_index == 15 || rate_index == 3 {
            return None;
        }
        if b[3] & 3 == 2 {
            return None; // reserved emphasis
        }
        const KBPS: [[u16; 15]; 5] = [
            [
                0, 32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448,
            ],
            [
                0, 32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384,
            ],
            [
                0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320,
            ],
            [
                0, 32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256,
            ],
            [0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160],
        ];
        const RATES: [[u32; 3]; 3] = [
            [11025, 12000, 8000],
            [22050, 24000, 16000],
            [44100, 48000, 32000],
        ];
        let mpeg1 = version == 3;
        let table = match (mpeg1, layer) {
            (true, 1) => 0,
            (true, 2) => 1,
            (true, _) => 2,
            (false, 1) => 3,
            (false, _) => 4,
        };
        let bitrate = usize::from(KBPS[table][bitrate_index]) * 1000;
        let rate = RATES[usize::from(version.saturating_sub(1))][usize::from(rate_index)] as usize;
        let len = match layer {
            1 => (12 * bitrate / rate + padding) * 4,
            2 => 144 * bitrate / rate + padding,
            _ if mpeg1 => 144 * bitrate / rate + padding,
            _ => 72 * bitrate / rate + padding,
        };
        Some(Self {
            kind: FrameKind::Mpeg { layer },
            version,
            rate_index,
            len,
        })
    }

    /// ISO/IEC 13818-7 §6.2 (adts_fixed_header, adts_variable_header).
    fn parse_adts(b: &[u8]) -> Option<Self> {
        if b.len() < 7 {
            return None;
        }
        let rate_index = (b[2] >> 2) & 0xF;
        if rate_index > 12 {
            return None;
        }
        let protection_absent = b[1] & 1 == 1;
        let header_len = if protection_absent { 7 } else { 9 };
        let len = (usize::from(b[3] & 3) << 11) | (usize::from(b[4]) << 3) | usize::from(b[5] >> 5);
        if len <= header_len {
            return None;
        }
        Some(Self {
            kind: FrameKind::Adts,
            version: (b[1] >> 3) & 1,
            rate_index,
            len,
        })
    }

    fn continues(&self, first: &Self) -> bool {
        self.kind == first.kind
            && self.version == first.version
            && self.rate_index == first.rate_index
    }

    fn verdict(&self) -> Result<Sniff, MediaError> {
        match self.kind {
            FrameKind::Mpeg { layer: 3 } => Ok(Sniff::Known(AudioFormat::Mp3)),
            FrameKind::Adts => Ok(Sniff::Known(AudioFormat::Aac)),
            FrameKind::Mpeg { .. } => Err(MediaError::UnsupportedFormat {
                format: "MPEG Layer I/II",
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mpeg1_layer3_frame(kbps_index: u8) -> Vec<u8> {
        // 44.1 kHz, no padding: 144 * 128000 / 44100 = 417 bytes at index 9.
        let header = [0xFF, 0xFB, kbps_index << 4, 0x44];
        let len = FrameHeader::parse(&header).unwrap().len;
        let mut frame = header.to_vec();
        frame.resize(len, 0);
        frame
    }

    #[test]
    fn two_mpeg_frames_are_mp3() {
        let mut bytes = mpeg1_layer3_frame(9);
        assert_eq!(bytes.len(), 417);
        bytes.extend(mpeg1_layer3_frame(9));
        assert_eq!(detect(&bytes), Ok(AudioFormat::Mp3));
    }

    #[test]
    fn a_frame_sync_not_followed_by_a_frame_is_not_audio() {
        let mut bytes = mpeg1_layer3_frame(9);
        bytes.extend([0x12; 500]);
        assert_eq!(detect(&bytes), Err(MediaError::Unrecognised));
    }

    #[test]
    fn id3_tag_then_frames_is_mp3_and_a_cut_tag_asks_for_more() {
        let mut bytes = b"ID3\x04\x00\x00\x00\x00\x01\x00".to_vec(); // 128-byte tag
        bytes.resize(10 + 128, 0);
        assert_eq!(sniff(&bytes[..100], false), Ok(Sniff::NeedMore));
        bytes.extend(mpeg1_layer3_frame(9));
        bytes.extend(mpeg1_layer3_frame(9));
        assert_eq!(detect(&bytes), Ok(AudioFormat::Mp3));
    }

    #[test]
    fn amr_is_named_in_the_error() {
        let amr = detect(b"#!AMR\n\x3c\x00\x00\x00\x00\x00\x00");
        assert_eq!(amr.unwrap_err().to_string(), "unsupported format: AMR");
        let wb = detect(b"#!AMR-WB\n\x00\x00\x00\x00");
        assert_eq!(wb.unwrap_err().to_string(), "unsupported format: AMR-WB");
    }

    #[test]
    fn short_prefixes_wait_for_more_bytes() {
        assert_eq!(sniff(b"Ogg", false), Ok(Sniff::NeedMore));
        assert_eq!(sniff(b"", false), Ok(Sniff::NeedMore));
        assert_eq!(detect(b""), Err(MediaError::Empty));
        assert_eq!(
            detect(b"OggS"),
            Err(MediaError::Truncated { format: "Ogg" })
        );
    }

    #[test]
    fn wave_and_mp4_by_magic() {
        assert_eq!(
            detect(b"RIFF\x24\x00\x00\x00WAVEfmt "),
            Ok(AudioFormat::Wav)
        );
        assert_eq!(
            detect(b"RIFF\x24\x00\x00\x00AVI LIST"),
            Err(MediaError::Unrecognised)
        );
        assert_eq!(
            detect(b"\x00\x00\x00\x20ftypM4A \x00\x00"),
            Ok(AudioFormat::Mp4)
        );
    }
}
