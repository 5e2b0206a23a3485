//! Lengths a file declares, checked before symphonia believes them.
//!
//! symphonia 0.5 sizes buffers from header fields before reading what they
//! describe: an MP4 sample table's entry count, an MP4 sample's size, a
//! Vorbis comment's length (in FLAC, Ogg Vorbis and Ogg FLAC), a FLAC
//! picture's lengths. A few bytes can ask for gigabytes, and a failed
//! allocation aborts the process, which no `catch_unwind` stops (found by
//! `fuzz/`, finding 2). Every such field is checked here against the box,
//! block or packet that holds it; a note that declares more than it carries
//! is malformed.
//!
//! The Vorbis setup header's codebooks declare entries and lookup tables
//! that symphonia unpacks from a few bits each; their sum is bounded too.

use super::mp4::{be_u32 as be32, be_u64 as be64};
use crate::media::{AudioFormat, MediaError};

/// What the bytes so far say about a note's headers.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Every declared length checked so far fits; the rest is audio.
    Fine,
    /// The headers go on past the bytes so far.
    NeedMore,
    /// A length points past what holds it.
    Refuse(String),
}

impl Verdict {
    /// The verdict on a whole note: headers cut short are a truncated file.
    pub(crate) fn at_end(self, format: AudioFormat) -> Result<(), MediaError> {
        match self {
            Verdict::Fine => Ok(()),
            Verdict::NeedMore => Err(MediaError::Truncated {
                format: format.name(),
            }),
            Verdict::Refuse(reason) => Err(MediaError::malformed(format.name(), reason)),
        }
    }
}

/// Checks the headers of a note that streams through symphonia, from its
/// first byte. Formats without such headers are [`Verdict::Fine`] at once.
pub(crate) fn streamed_headers(format: AudioFormat, head: &[u8]) -> Verdict {
    match format {
        AudioFormat::Flac => flac_blocks(head, 4),
        AudioFormat::OggVorbis => ogg_vorbis(head),
        AudioFormat::OggFlac => ogg_flac(head),
        _ => Verdict::Fine,
    }
}

/// FLAC metadata blocks from `at` (RFC 9639 §8): each a 4-byte header (last
/// flag, type, 24-bit length) and its body.
fn flac_blocks(file: &[u8], mut at: usize) -> Verdict {
    loop {
        let Some(header) = file.get(at..at + 4) else {
            return Verdict::NeedMore;
        };
        let len = be24(&header[1..4]);
        let Some(body) = file.get(at + 4..at + 4 + len) else {
            return Verdict::NeedMore;
        };
        if let Err(reason) = flac_block(header[0] & 0x7F, body) {
            return Verdict::Refuse(reason);
        }
        if header[0] & 0x80 != 0 {
            return Verdict::Fine;
        }
        at += 4 + len;
    }
}

/// One FLAC metadata block's body: the Vorbis comment (type 4) and the
/// picture (type 6) declare lengths inside it.
fn flac_block(kind: u8, body: &[u8]) -> Result<(), String> {
    match kind {
        4 => vorbis_comment(body),
        6 => flac_picture(body),
        _ => Ok(()),
    }
}

/// A Vorbis comment: vendor string and counted comments, each behind a
/// little-endian 32-bit length (RFC 9639 §8.6).
fn vorbis_comment(body: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(body);
    let vendor = reader.le32("vendor length")?;
    reader.skip(vendor, "vendor string")?;
    let count = reader.le32("comment count")?;
    if count > reader.left() / 4 {
        return Err(format!(
            "the Vorbis comment counts {count} comments in {} bytes",
            reader.left()
        ));
    }
    for _ in 0..count {
        let len = reader.le32("comment length")?;
        reader.skip(len, "comment")?;
    }
    Ok(())
}

/// A FLAC picture block (RFC 9639 §8.8): its media type, description and
/// data each behind a big-endian 32-bit length.
fn flac_picture(body: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(body);
    reader.skip(4, "picture type")?;
    let media_type = reader.be32("media type length")?;
    reader.skip(media_type, "media type")?;
    let description = reader.be32("description length")?;
    reader.skip(description, "description")?;
    reader.skip(16, "picture size")?;
    let data = reader.be32("picture length")?;
    reader.skip(data, "picture")
}

/// Ogg Vorbis: the comment header is the stream's second packet, the setup
/// header (with the codebooks) its third.
fn ogg_vorbis(head: &[u8]) -> Verdict {
    let (packets, _) = ogg_packets(head, 3);
    let Some(comment) = packets.get(1) else {
        return Verdict::NeedMore;
    };
    // Not a comment or setup header: symphonia refuses the stream itself.
    if let Some(comment) = comment.strip_prefix(b"\x03vorbis") {
        if let Err(reason) = vorbis_comment(comment) {
            return Verdict::Refuse(reason);
        }
    }
    match packets.get(2) {
        None => Verdict::NeedMore,
        Some(setup) => match setup.strip_prefix(b"\x05vorbis") {
            Some(setup) => match vorbis_codebooks(setup) {
                Ok(()) => Verdict::Fine,
                Err(reason) => Verdict::Refuse(reason),
            },
            None => Verdict::Fine,
        },
    }
}

/// The most codebook values a Vorbis stream may declare, summed over its
/// codebooks: entries, plus entries times dimensions for a vector lookup
/// table (symphonia unpacks both, 4 to 8 bytes each). libvorbis' own
/// streams declare a few tens of thousands; the Vorbis I fields allow 2^24
/// entries times 2^16 dimensions per codebook, from a few bits.
const MAX_CODEBOOK_VALUES: u64 = 1 << 21;

/// The Vorbis setup header's codebooks (Vorbis I specification §3.2.1),
/// read far enough to sum what they declare; the floors, residues and
/// modes after them are symphonia's.
fn vorbis_codebooks(setup: &[u8]) -> Result<(), String> {
    let cut = |()| "the Vorbis setup header ends inside its codebooks".to_string();
    let mut bits = LsbBits::new(setup);
    let count = bits.read(8).map_err(cut)? + 1;
    let mut declared = 0u64;
    for book in 0..count {
        if bits.read(24).map_err(cut)? != 0x56_4342 {
            return Err(format!("Vorbis codebook {book} has no sync pattern"));
        }
        let dimensions = bits.read(16).map_err(cut)?;
        let entries = bits.read(24).map_err(cut)?;
        let ordered = bits.read(1).map_err(cut)? == 1;
        if ordered {
            // Runs of entries per length: cheap in bits, each up to all.
            let mut entry = 0;
            bits.read(5).map_err(cut)?;
            while entry < entries {
                entry += bits.read(ilog(entries - entry)).map_err(cut)?;
            }
            if entry > entries {
                return Err(format!(
                    "Vorbis codebook {book} orders more than its entries"
                ));
            }
        } else {
            let sparse = bits.read(1).map_err(cut)? == 1;
            for _ in 0..entries {
                if !sparse || bits.read(1).map_err(cut)? == 1 {
                    bits.read(5).map_err(cut)?;
                }
            }
        }
        declared += u64::from(entries);
        let lookup = bits.read(4).map_err(cut)?;
        match lookup {
            0 => {}
            1 | 2 => {
                if dimensions == 0 {
                    return Err(format!(
                        "Vorbis codebook {book} has a lookup table and no dimensions"
                    ));
                }
                bits.read(32).map_err(cut)?;
                bits.read(32).map_err(cut)?;
                let value_bits = bits.read(4).map_err(cut)? + 1;
                bits.read(1).map_err(cut)?;
                let values = if lookup == 1 {
                    lookup1_values(entries, dimensions)
                } else {
                    u64::from(entries) * u64::from(dimensions)
                };
                declared += u64::from(entries) * u64::from(dimensions);
                if declared > MAX_CODEBOOK_VALUES {
                    break;
                }
                bits.skip(values * u64::from(value_bits)).map_err(cut)?;
            }
            other => return Err(format!("Vorbis codebook {book} has lookup type {other}")),
        }
        if declared > MAX_CODEBOOK_VALUES {
            break;
        }
    }
    if declared > MAX_CODEBOOK_VALUES {
        return Err(format!(
            "the Vorbis codebooks declare over {declared} values (at most {MAX_CODEBOOK_VALUES})"
        ));
    }
    Ok(())
}

/// Vorbis' `ilog`: the position of the highest set bit (0 for 0).
fn ilog(x: u32) -> u32 {
    u32::BITS - x.leading_zeros()
}

/// The greatest `r` with `r^dimensions <= entries` (Vorbis I §9.2.3).
fn lookup1_values(entries: u32, dimensions: u32) -> u64 {
    let fits = |r: u64| {
        let mut power = 1u64;
        for _ in 0..dimensions {
            power = power.saturating_mul(r);
            if power > u64::from(entries) {
                return false;
            }
        }
        true
    };
    let mut r = (f64::from(entries).powf(1.0 / f64::from(dimensions)).floor() as u64).max(1);
    while r > 0 && !fits(r) {
        r -= 1;
    }
    while fits(r + 1) {
        r += 1;
    }
    r
}

/// A Vorbis packet's bits, least significant first.
struct LsbBits<'a> {
    bytes: &'a [u8],
    at: u64,
}

impl<'a> LsbBits<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    /// The next `n` bits (at most 32) as a number.
    fn read(&mut self, n: u32) -> Result<u32, ()> {
        let mut value = 0u32;
        for i in 0..n {
            let byte = *self.bytes.get((self.at / 8) as usize).ok_or(())?;
            value |= u32::from((byte >> (self.at % 8)) & 1) << i;
            self.at += 1;
        }
        Ok(value)
    }

    fn skip(&mut self, n: u64) -> Result<(), ()> {
        let to = self.at.checked_add(n).ok_or(())?;
        if to > self.bytes.len() as u64 * 8 {
            return Err(());
        }
        self.at = to;
        Ok(())
    }
}

/// Ogg FLAC (the FLAC-in-Ogg mapping): the first packet carries STREAMINFO,
/// each later header packet one metadata block, up to the one flagged last.
fn ogg_flac(head: &[u8]) -> Verdict {
    // The first packet states how many header packets follow; a bad count
    // only bounds how far we look, the last-block flag ends the headers.
    const MAX_HEADER_PACKETS: usize = 64;
    let (packets, _) = ogg_packets(head, MAX_HEADER_PACKETS + 1);
    for packet in packets.iter().skip(1) {
        let Some(header) = packet.get(..4) else {
            return Verdict::Refuse("an Ogg FLAC header packet shorter than its header".into());
        };
        let len = be24(&header[1..4]);
        let Some(body) = packet.get(4..4 + len) else {
            return Verdict::Refuse(format!(
                "an Ogg FLAC metadata block declares {len} bytes in a packet of {}",
                packet.len()
            ));
        };
        if let Err(reason) = flac_block(header[0] & 0x7F, body) {
            return Verdict::Refuse(reason);
        }
        if header[0] & 0x80 != 0 {
            return Verdict::Fine;
        }
    }
    if packets.len() > MAX_HEADER_PACKETS {
        Verdict::Fine
    } else {
        Verdict::NeedMore
    }
}

/// The first `want` complete packets of the first logical stream in `head`,
/// and whether the bytes ended on a page boundary. Pages of other streams
/// are skipped; a damaged page ends the scan (the demuxer reports it).
fn ogg_packets(head: &[u8], want: usize) -> (Vec<Vec<u8>>, bool) {
    let mut packets = Vec::new();
    let mut partial = Vec::new();
    let mut serial = None;
    let mut at = 0;
    while packets.len() < want {
        let Some(page) = head.get(at..at + 27) else {
            return (packets, at == head.len());
        };
        if &page[..4] != b"OggS" {
            return (packets, false);
        }
        let segments = usize::from(page[26]);
        let Some(lacing) = head.get(at + 27..at + 27 + segments) else {
            return (packets, false);
        };
        let body_len: usize = lacing.iter().map(|&l| usize::from(l)).sum();
        let body_start = at + 27 + segments;
        let Some(body) = head.get(body_start..body_start + body_len) else {
            return (packets, false);
        };
        let page_serial = u32::from_le_bytes([page[14], page[15], page[16], page[17]]);
        if *serial.get_or_insert(page_serial) == page_serial {
            let mut from = 0;
            for &l in lacing {
                let to = from + usize::from(l);
                partial.extend_from_slice(&body[from..to]);
                from = to;
                if l < 255 {
                    packets.push(std::mem::take(&mut partial));
                    if packets.len() == want {
                        break;
                    }
                }
            }
        }
        at = body_start + body_len;
    }
    (packets, at == head.len())
}

/// MP4 boxes the demuxer reads children of.
const CONTAINERS: [&[u8; 4]; 13] = [
    b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts", b"dinf", b"udta", b"mvex", b"moof",
    b"traf", b"mfra", b"ilst",
];

/// Checks a whole MP4 file: every box inside a container fits in it, and
/// every sample table's entries fit in their box and every sample in the
/// file. A file cut short (its last box running past the end) is walked as
/// far as it goes.
pub(crate) fn mp4(file: &[u8]) -> Result<(), MediaError> {
    mp4_children(file, file.len(), file, true)
        .map_err(|reason| MediaError::malformed(AudioFormat::Mp4.name(), reason))
}

/// The boxes in `data`, a container's body. `declared` is the body's length
/// as declared, which is more than `data` holds when the file was cut.
fn mp4_children(data: &[u8], declared: usize, file: &[u8], top: bool) -> Result<(), String> {
    let mut at = 0usize;
    while data.len().saturating_sub(at) >= 8 {
        let kind: [u8; 4] = data[at + 4..at + 8].try_into().unwrap_or_default();
        let (header, size) = match be32(&data[at..at + 4]) {
            0 => (8, declared - at),
            1 => match data.get(at + 8..at + 16) {
                Some(b) => (16, usize::try_from(be64(b)).unwrap_or(usize::MAX)),
                None => break,
            },
            size => (8, size as usize),
        };
        // At the top, only the file's end bounds a box: a cut file's last
        // box runs past it, and the demuxer reports the cut.
        if size < header || (!top && size > declared - at) {
            let name = String::from_utf8_lossy(&kind);
            return Err(format!(
                "an MP4 '{name}' box of {size} bytes where {} are left",
                declared - at
            ));
        }
        let end = at.saturating_add(size).min(data.len());
        let body = &data[(at + header).min(end)..end];
        mp4_box(&kind, body, size - header, file)?;
        at = at.saturating_add(size);
    }
    Ok(())
}

/// One box: descends into containers, checks sample tables.
fn mp4_box(kind: &[u8; 4], body: &[u8], declared: usize, file: &[u8]) -> Result<(), String> {
    if CONTAINERS.contains(&kind) {
        return mp4_children(body, declared, file, false);
    }
    // The demuxer reads `meta` as a full box (version and flags first).
    if kind == b"meta" {
        return match (body.get(4..), declared.checked_sub(4)) {
            (Some(rest), Some(len)) => mp4_children(rest, len, file, false),
            _ => Ok(()),
        };
    }
    let entry = match kind {
        b"stco" | b"stss" => 4,
        b"stts" | b"ctts" | b"co64" => 8,
        b"stsc" => 12,
        b"stsd" => 8,
        b"stsz" => return mp4_sample_sizes(body, file),
        _ => return Ok(()),
    };
    let mut reader = Reader::new(body);
    reader.skip(4, "version and flags")?;
    let count = reader.be32("entry count")?;
    if count > reader.left() / entry {
        let name = String::from_utf8_lossy(kind);
        return Err(format!(
            "an MP4 '{name}' table of {count} entries in {} bytes",
            reader.left()
        ));
    }
    Ok(())
}

/// `stsz`: one size for every sample, or one per sample; no sample can be
/// larger than the file.
fn mp4_sample_sizes(body: &[u8], file: &[u8]) -> Result<(), String> {
    let mut reader = Reader::new(body);
    reader.skip(4, "version and flags")?;
    let uniform = reader.be32("sample size")?;
    let count = reader.be32("sample count")?;
    let too_large = |size: usize| {
        format!(
            "an MP4 sample of {size} bytes in a {}-byte file",
            file.len()
        )
    };
    if uniform != 0 {
        return if uniform > file.len() {
            Err(too_large(uniform))
        } else {
            Ok(())
        };
    }
    if count > reader.left() / 4 {
        return Err(format!(
            "an MP4 'stsz' table of {count} entries in {} bytes",
            reader.left()
        ));
    }
    for _ in 0..count {
        let size = reader.be32("sample size")?;
        if size > file.len() {
            return Err(too_large(size));
        }
    }
    Ok(())
}

/// Reads lengths and skips what they describe, refusing to pass the end.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn left(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        if n > self.left() {
            return Err(format!("{what}: {n} bytes declared, {} left", self.left()));
        }
        let taken = &self.bytes[self.at..self.at + n];
        self.at += n;
        Ok(taken)
    }

    fn skip(&mut self, n: usize, what: &str) -> Result<(), String> {
        self.take(n, what).map(|_| ())
    }

    fn le32(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }

    fn be32(&mut self, what: &str) -> Result<usize, String> {
        Ok(be32(self.take(4, what)?) as usize)
    }
}

fn be24(b: &[u8]) -> usize {
    usize::from(b[0]) << 16 | usize::from(b[1]) << 8 | usize::from(b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reproducer(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/fuzz/artifacts/decode/{name}",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    #[test]
    fn the_fuzzers_mp4_files_are_refused() {
        for name in [
            "oom-971d0f63ab4057bf13d2c6b0793e9dfd1d083040.m4a",
            "symphonia-mp4-stsc-count-abort.m4a",
            "oom-df2cae57a5191c4e8329093c4e8aaf791fe82bd7.m4a",
        ] {
            let err = mp4(&reproducer(name)).unwrap_err();
            assert!(
                matches!(err, MediaError::Malformed { .. }),
                "{name}: {err:?}"
            );
        }
    }

    #[test]
    fn the_fuzzers_flac_file_is_refused() {
        let file = reproducer("oom-0f5ce287a86ecca2deeb0f44d6c0faea2aaf50a9.flac");
        let verdict = streamed_headers(AudioFormat::Flac, &file);
        assert!(matches!(verdict, Verdict::Refuse(_)), "{verdict:?}");
    }

    #[test]
    fn a_huge_comment_in_ogg_vorbis_is_refused() {
        // Two pages: the identification packet, then a comment header whose
        // only comment claims 4 GiB.
        let page = |serial: u32, body: &[u8]| {
            let mut p = b"OggS\0\0".to_vec();
            p.extend([0; 8]);
            p.extend(serial.to_le_bytes());
            p.extend([0; 8]);
            p.push(1);
            p.push(body.len() as u8);
            p.extend_from_slice(body);
            p
        };
        let mut comment = b"\x03vorbis".to_vec();
        comment.extend(0u32.to_le_bytes());
        comment.extend(1u32.to_le_bytes());
        comment.extend(u32::MAX.to_le_bytes());
        comment.extend(b"x=y");
        let ident = b"\x01vorbis-identification";
        let mut file = page(7, ident);
        assert_eq!(
            streamed_headers(AudioFormat::OggVorbis, &file),
            Verdict::NeedMore
        );
        file.extend(page(9, b"another stream"));
        file.extend(page(7, &comment));
        assert!(matches!(
            streamed_headers(AudioFormat::OggVorbis, &file),
            Verdict::Refuse(_)
        ));
        let honest = comment.len() - 7;
        comment.truncate(honest);
        comment.extend(3u32.to_le_bytes());
        comment.extend(b"x=y");
        let mut file = page(7, ident);
        file.extend(page(7, &comment));
        assert_eq!(
            streamed_headers(AudioFormat::OggVorbis, &file),
            Verdict::NeedMore,
            "the setup header is still to come"
        );
        file.extend(page(7, &setup(&[(2, 16, 1)])));
        assert_eq!(
            streamed_headers(AudioFormat::OggVorbis, &file),
            Verdict::Fine
        );
    }

    /// A Vorbis setup header of ordered codebooks `(dimensions, entries,
    /// lookup type)`, all entries one length; a lookup table's values are
    /// one bit each.
    fn setup(books: &[(u32, u32, u32)]) -> Vec<u8> {
        let mut bits: Vec<bool> = Vec::new();
        let mut put = |value: u64, n: u32| {
            for i in 0..n {
                bits.push(value >> i & 1 == 1);
            }
        };
        put(books.len() as u64 - 1, 8);
        for &(dimensions, entries, lookup) in books {
            put(0x56_4342, 24);
            put(u64::from(dimensions), 16);
            put(u64::from(entries), 24);
            put(1, 1); // ordered
            put(4, 5); // length 5
            put(u64::from(entries), ilog(entries));
            put(u64::from(lookup), 4);
            if lookup != 0 {
                put(0, 32);
                put(0, 32);
                put(0, 4); // one bit per value
                put(0, 1);
                let values = match lookup {
                    1 => lookup1_values(entries, dimensions),
                    _ => u64::from(entries) * u64::from(dimensions),
                };
                put(0, values.min(1 << 16) as u32);
            }
        }
        let mut packet = b"\x05vorbis".to_vec();
        packet.extend(bits.chunks(8).map(|byte| {
            byte.iter()
                .enumerate()
                .fold(0u8, |b, (i, &bit)| b | u8::from(bit) << i)
        }));
        packet
    }

    #[test]
    fn vorbis_codebooks_declaring_gigabytes_are_refused() {
        // 2^24 - 1 entries of 24 dimensions, lookup type 1: a 1.6 GB table
        // from a few dozen bits.
        let huge = setup(&[(24, (1 << 24) - 1, 1)]);
        assert!(huge.len() < 40, "{} bytes", huge.len());
        let err = vorbis_codebooks(&huge[7..]).unwrap_err();
        assert!(err.contains("declare over"), "{err}");
        // Many modest codebooks add up the same way.
        let many = setup(&[(1, 1 << 16, 0); 40]);
        let err = vorbis_codebooks(&many[7..]).unwrap_err();
        assert!(err.contains("declare over"), "{err}");
        // What libvorbis writes passes: a few small books with tables.
        let modest = setup(&[(2, 81, 1), (4, 625, 1), (8, 6561, 1), (1, 256, 0)]);
        assert_eq!(vorbis_codebooks(&modest[7..]), Ok(()));
        // A setup cut inside its codebooks is refused, not waited for: the
        // packet is complete.
        assert!(vorbis_codebooks(&modest[7..20]).is_err());
    }

    #[test]
    fn lookup1_values_is_the_integer_root() {
        assert_eq!(lookup1_values(81, 4), 3);
        assert_eq!(lookup1_values(80, 4), 2);
        assert_eq!(lookup1_values(6561, 8), 3);
        assert_eq!(lookup1_values(1, 5), 1);
        assert_eq!(lookup1_values((1 << 24) - 1, 24), 1);
        assert_eq!(lookup1_values(1 << 24, 24), 2);
    }

    #[test]
    fn real_files_pass_and_a_cut_header_waits() {
        let mut checked = 0;
        let root = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("audio-fixtures");
        let mut dirs = vec![root];
        let mut files = Vec::new();
        while let Some(dir) = dirs.pop() {
            for entry in std::fs::read_dir(dir).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    dirs.push(path);
                } else {
                    files.push(path);
                }
            }
        }
        for path in files {
            let name = path.display().to_string();
            let bytes = std::fs::read(&path).unwrap();
            match crate::media::detect(&bytes) {
                Ok(AudioFormat::Mp4) => assert_eq!(mp4(&bytes), Ok(()), "{name}"),
                Ok(
                    format @ (AudioFormat::Flac | AudioFormat::OggVorbis | AudioFormat::OggFlac),
                ) => {
                    assert_eq!(streamed_headers(format, &bytes), Verdict::Fine, "{name}");
                    assert_eq!(streamed_headers(format, &bytes[..20]), Verdict::NeedMore);
                }
                _ => continue,
            }
            checked += 1;
        }
        assert!(checked >= 3, "only {checked} fixtures had headers to check");
    }
}
