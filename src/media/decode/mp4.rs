//! The edit list of an MP4's audio track, which says how many priming
//! samples the AAC encoder put before the audio and where the audio ends
//! (ISO/IEC 14496-12 §8.6.6). symphonia 0.5 does not apply it; ffmpeg does,
//! and without it an M4A note starts with 1024 samples of encoder delay.

/// The single edit of an audio track: play the media from `media_start`
/// for `duration`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EditList {
    media_start: u64,
    media_timescale: u32,
    /// In the movie's timescale; `None` plays to the end.
    duration: Option<u64>,
    movie_timescale: u32,
}

impl EditList {
    /// Reads the first audio track's edit list from a whole MP4 file. Files
    /// without one, or with more than one edit, give `None` and play as they
    /// are.
    pub(crate) fn read(file: &[u8]) -> Option<Self> {
        let moov = boxes(file).find(|(kind, _)| kind == b"moov")?.1;
        let movie_timescale = timescale(boxes(moov).find(|(kind, _)| kind == b"mvhd")?.1)?;
        let trak = boxes(moov)
            .filter(|(kind, _)| kind == b"trak")
            .find(|(_, trak)| {
                child(trak, b"mdia")
                    .and_then(|mdia| child(mdia, b"hdlr"))
                    .and_then(|hdlr| hdlr.get(8..12))
                    == Some(b"soun")
            })?
            .1;
        let media_timescale = timescale(child(child(trak, b"mdia")?, b"mdhd")?)?;
        let elst = child(child(trak, b"edts")?, b"elst")?;
        let version = *elst.first()?;
        let count = u32::from_be_bytes(elst.get(4..8)?.try_into().ok()?) as usize;
        let entry_len = if version == 1 { 20 } else { 12 };
        let mut edits = (0..count.min(16)).filter_map(|i| {
            let entry = elst.get(8 + i * entry_len..8 + (i + 1) * entry_len)?;
            let (duration, media_time) = if version == 1 {
                (be_u64(&entry[..8]), be_u64(&entry[8..16]) as i64)
            } else {
                (
                    u64::from(be_u32(&entry[..4])),
                    i64::from(be_u32(&entry[4..8]) as i32),
                )
            };
            Some((duration, media_time))
        });
        // Leading empty edits (media time -1) only delay the presentation.
        let mut edits = edits
            .by_ref()
            .skip_while(|&(_, media_time)| media_time == -1);
        let (duration, media_start) = edits.next()?;
        if edits.next().is_some() || media_start < 0 || count > 16 {
            return None;
        }
        Some(Self {
            media_start: media_start as u64,
            media_timescale,
            duration: (duration > 0).then_some(duration),
            movie_timescale,
        })
    }

    /// Frames to skip at the start and frames to keep after them, at the
    /// decoded sample rate.
    pub(crate) fn frames_at(&self, rate: u32) -> (u64, u64) {
        let convert = |value: u64, scale: u32| {
            (u128::from(value) * u128::from(rate) / u128::from(scale.max(1))).min(u64::MAX as u128)
                as u64
        };
        let skip = convert(self.media_start, self.media_timescale);
        let keep = self
            .duration
            .map_or(u64::MAX, |d| convert(d, self.movie_timescale));
        (skip, keep)
    }
}

/// The boxes directly inside `data`, as (type, body).
fn boxes(data: &[u8]) -> impl Iterator<Item = ([u8; 4], &[u8])> {
    let mut at = 0usize;
    std::iter::from_fn(move || {
        let header = data.get(at..at + 8)?;
        let kind: [u8; 4] = header[4..8].try_into().ok()?;
        let (body_start, len) = match be_u32(&header[..4]) {
            0 => (at + 8, data.len() - at),
            1 => (
                at + 16,
                usize::try_from(be_u64(data.get(at + 8..at + 16)?)).ok()?,
            ),
            len => (at + 8, len as usize),
        };
        let end = at.checked_add(len)?;
        let body = data.get(body_start..end)?;
        at = end;
        Some((kind, body))
    })
}

fn child<'a>(parent: &'a [u8], kind: &[u8; 4]) -> Option<&'a [u8]> {
    boxes(parent).find(|(k, _)| k == kind).map(|(_, body)| body)
}

/// The timescale of an `mvhd` or `mdhd` box.
fn timescale(full_box: &[u8]) -> Option<u32> {
    let at = if *full_box.first()? == 1 { 20 } else { 12 };
    full_box.get(at..at + 4).map(be_u32).filter(|&t| t > 0)
}

pub(super) fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

pub(super) fn be_u64(b: &[u8]) -> u64 {
    u64::from_be_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mp4_box(kind: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut b = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        b.extend_from_slice(kind);
        b.extend_from_slice(body);
        b
    }

    fn full_box_with_timescale(kind: &[u8; 4], scale: u32) -> Vec<u8> {
        let mut body = vec![0; 12];
        body.extend(scale.to_be_bytes());
        body.extend([0; 4]);
        mp4_box(kind, &body)
    }

    #[test]
    fn reads_priming_and_duration_of_the_audio_track() {
        let mut elst = vec![0, 0, 0, 0, 0, 0, 0, 1];
        elst.extend(2000u32.to_be_bytes()); // 2 s at the movie's 1000 Hz
        elst.extend(1024u32.to_be_bytes());
        elst.extend([0, 1, 0, 0]);
        let mut hdlr = vec![0; 8];
        hdlr.extend(b"soun");
        let mdia = [
            mp4_box(b"hdlr", &hdlr),
            full_box_with_timescale(b"mdhd", 16_000),
        ]
        .concat();
        let trak = [
            mp4_box(b"edts", &mp4_box(b"elst", &elst)),
            mp4_box(b"mdia", &mdia),
        ]
        .concat();
        let moov = [
            full_box_with_timescale(b"mvhd", 1000),
            mp4_box(b"trak", &trak),
        ]
        .concat();
        let file = [mp4_box(b"ftyp", b"M4A "), mp4_box(b"moov", &moov)].concat();
        let edits = EditList::read(&file).unwrap();
        assert_eq!(edits.frames_at(16_000), (1024, 32_000));
        assert_eq!(EditList::read(&file[..file.len() - 3]), None);
    }
}
