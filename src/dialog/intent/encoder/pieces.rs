//! SentencePiece unigram tokenisation, as the sentence encoder was trained
//! with: the model file's normaliser (the `nmt_nfkc` rules precompiled into a
//! darts-clone double-array trie), its whitespace handling (a `▁` before
//! each word, runs of spaces collapsed) and the Viterbi segmentation that
//! picks the pieces whose scores add up highest.
//!
//! The model file is a protocol buffer (`ModelProto` of sentencepiece's
//! `sentencepiece_model.proto`): field 1 the pieces (1 text, 2 score,
//! 3 type), field 3 the normaliser spec, whose field 2 is the charsmap.

use std::collections::HashMap;

/// Piece ids the encoder puts around every sentence.
pub const BOS: u32 = 1;
pub const EOS: u32 = 2;
const UNK: u32 = 0;

/// The piece types of sentencepiece that segmentation may not produce:
/// unknown, control and unused.
const NOT_MATCHED: [u64; 3] = [2, 3, 5];

/// Space as the pieces write it.
const SPACE: &str = "\u{2581}";

/// A field of a protocol-buffer message: its number and its bytes (for a
/// length-delimited or fixed32 field) or its value (for a varint).
enum Field<'a> {
    Varint(u32, u64),
    Bytes(u32, &'a [u8]),
    Fixed32(u32, [u8; 4]),
}

fn varint(data: &[u8], pos: &mut usize) -> Result<u64, String> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let b = *data.get(*pos).ok_or("a number is cut short")?;
        *pos += 1;
        value |= u64::from(b & 0x7f) << shift;
        if b & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err("a number runs over 64 bits".into())
}

/// The fields of one message, in order.
fn fields(data: &[u8]) -> Result<Vec<Field<'_>>, String> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < data.len() {
        let key = varint(data, &mut pos)?;
        let number = u32::try_from(key >> 3).map_err(|_| "a field number is too large")?;
        match key & 7 {
            0 => out.push(Field::Varint(number, varint(data, &mut pos)?)),
            1 => pos += 8,
            2 => {
                let len = usize::try_from(varint(data, &mut pos)?).map_err(|_| "too long")?;
                let end = pos
                    .checked_add(len)
                    .filter(|&e| e <= data.len())
                    .ok_or("a field runs past the end of the file")?;
                out.push(Field::Bytes(number, &data[pos..end]));
                pos = end;
            }
            5 => {
                let b = data.get(pos..pos + 4).ok_or("a field is cut short")?;
                out.push(Field::Fixed32(number, [b[0], b[1], b[2], b[3]]));
                pos += 4;
            }
            w => {
                return Err(format!(
                    "wire type {w} is not expected in a sentencepiece model"
                ))
            }
        }
    }
    if pos > data.len() {
        return Err("a field runs past the end of the file".into());
    }
    Ok(out)
}

/// The `nmt_nfkc` rules: a darts-clone double array whose keys are UTF-8
/// byte strings and whose values are offsets of the replacement (a
/// NUL-terminated string) in `replacements`.
struct Charsmap {
    units: Vec<u32>,
    replacements: Vec<u8>,
}

impl Charsmap {
    fn parse(blob: &[u8]) -> Result<Self, String> {
        let size = blob
            .get(..4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
            .ok_or("the charsmap is cut short")?;
        let trie = blob
            .get(4..4 + size)
            .filter(|t| t.len() % 4 == 0 && !t.is_empty())
            .ok_or("the charsmap's trie is cut short")?;
        let units = trie
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        Ok(Self {
            units,
            replacements: blob[4 + size..].to_vec(),
        })
    }

    fn offset(unit: u32) -> usize {
        ((unit >> 10) << ((unit & 0x200) >> 6)) as usize
    }

    /// The longest key that starts `bytes`: its length and its replacement.
    fn longest(&self, bytes: &[u8]) -> Option<(usize, &[u8])> {
        let mut node = Self::offset(*self.units.first()?);
        let mut best = None;
        for (i, &c) in bytes.iter().enumerate() {
            node ^= usize::from(c);
            let unit = *self.units.get(node)?;
            if unit & 0x8000_00ff != u32::from(c) {
                break;
            }
            node ^= Self::offset(unit);
            if unit & 0x100 != 0 {
                let value = (*self.units.get(node)? & 0x7fff_ffff) as usize;
                best = Some((i + 1, value));
            }
        }
        let (len, value) = best?;
        let rest = self.replacements.get(value..)?;
        let end = rest.iter().position(|&b| b == 0)?;
        Some((len, &rest[..end]))
    }
}

/// A SentencePiece unigram model.
pub struct Pieces {
    ids: HashMap<Box<str>, u32>,
    scores: Vec<f32>,
    unknown_score: f32,
    /// The longest piece, in characters.
    longest: usize,
    charsmap: Option<Charsmap>,
}

impl Pieces {
    /// From the bytes of a `.model` file.
    pub fn parse(data: &[u8]) -> Result<Self, String> {
        let mut ids: HashMap<Box<str>, u32> = HashMap::new();
        let mut scores = Vec::new();
        let mut charsmap = None;
        for field in fields(data)? {
            match field {
                Field::Bytes(1, piece) => {
                    let (mut text, mut score, mut kind) = (None, 0.0, 1);
                    for f in fields(piece)? {
                        match f {
                            Field::Bytes(1, t) => {
                                text = Some(
                                    std::str::from_utf8(t).map_err(|_| "a piece is not UTF-8")?,
                                )
                            }
                            Field::Fixed32(2, b) => score = f32::from_le_bytes(b),
                            Field::Varint(3, k) => kind = k,
                            _ => {}
                        }
                    }
                    let text = text.ok_or("a piece has no text")?;
                    let id = u32::try_from(scores.len()).map_err(|_| "too many pieces")?;
                    scores.push(score);
                    if !NOT_MATCHED.contains(&kind) && !text.is_empty() {
                        ids.entry(text.into()).or_insert(id);
                    }
                }
                Field::Bytes(3, spec) => {
                    for f in fields(spec)? {
                        if let Field::Bytes(2, blob) = f {
                            charsmap = Some(Charsmap::parse(blob)?);
                        }
                    }
                }
                _ => {}
            }
        }
        if scores.len() <= EOS as usize {
            return Err(format!("{} pieces, too few for a model", scores.len()));
        }
        let unknown_score = scores.iter().copied().fold(f32::INFINITY, f32::min) - 10.0;
        let longest = ids.keys().map(|p| p.chars().count()).max().unwrap_or(1);
        Ok(Self {
            ids,
            scores,
            unknown_score,
            longest,
            charsmap,
        })
    }

    pub fn len(&self) -> usize {
        self.scores.len()
    }

    pub fn is_empty(&self) -> bool {
        self.scores.is_empty()
    }

    /// The text as the pieces spell it: normalised, words led by `▁`,
    /// spaces collapsed, none at either end.
    pub fn normalize(&self, text: &str) -> String {
        let bytes = text.as_bytes();
        let mut out: Vec<u8> = Vec::with_capacity(bytes.len() + 8);
        out.extend_from_slice(SPACE.as_bytes());
        let mut after_space = true;
        let mut pos = 0;
        while pos < bytes.len() {
            let (len, replacement) = match self
                .charsmap
                .as_ref()
                .and_then(|m| m.longest(&bytes[pos..]))
            {
                Some(found) => found,
                None => {
                    let len = text[pos..].chars().next().map_or(1, char::len_utf8);
                    (len, &bytes[pos..pos + len])
                }
            };
            pos += len;
            let mut replacement = replacement;
            if after_space {
                while let [b' ', rest @ ..] = replacement {
                    replacement = rest;
                }
            }
            let Some(&last) = replacement.last() else {
                continue;
            };
            for &b in replacement {
                if b == b' ' {
                    out.extend_from_slice(SPACE.as_bytes());
                } else {
                    out.push(b);
                }
            }
            after_space = last == b' ';
        }
        while out.ends_with(SPACE.as_bytes()) {
            out.truncate(out.len() - SPACE.len());
        }
        String::from_utf8_lossy(&out).into_owned()
    }

    /// The piece ids of `text`, with [`BOS`] before and [`EOS`] after.
    pub fn encode(&self, text: &str) -> Vec<u32> {
        let normalized = self.normalize(text);
        let mut ids = vec![BOS];
        if normalized.is_empty() {
            ids.push(UNK);
        } else {
            ids.extend(self.viterbi(&normalized));
        }
        ids.push(EOS);
        ids
    }

    /// The segmentation with the highest total score. Every character can
    /// start a piece of one character or, failing that, an unknown one, so
    /// each position is reached.
    fn viterbi(&self, s: &str) -> Vec<u32> {
        let bounds: Vec<usize> = s
            .char_indices()
            .map(|(i, _)| i)
            .chain(std::iter::once(s.len()))
            .collect();
        let chars = bounds.len() - 1;
        let mut best = vec![f32::NEG_INFINITY; chars + 1];
        let mut from = vec![0usize; chars + 1];
        let mut piece = vec![UNK; chars + 1];
        best[0] = 0.0;
        for i in 0..chars {
            let base = best[i];
            let mut single = false;
            for j in i + 1..=chars.min(i + self.longest) {
                if let Some(&id) = self.ids.get(&s[bounds[i]..bounds[j]]) {
                    let score = base + self.scores[id as usize];
                    if score > best[j] {
                        best[j] = score;
                        from[j] = i;
                        piece[j] = id;
                    }
                    single |= j == i + 1;
                }
            }
            if !single && base + self.unknown_score > best[i + 1] {
                best[i + 1] = base + self.unknown_score;
                from[i + 1] = i;
                piece[i + 1] = UNK;
            }
        }
        let mut ids = Vec::new();
        let mut at = chars;
        while at > 0 {
            ids.push(piece[at]);
            at = from[at];
        }
        ids.reverse();
        ids
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A model file with the given pieces (text, score, type) and no
    /// charsmap, written as sentencepiece writes one.
    fn model(pieces: &[(&str, f32, u64)]) -> Vec<u8> {
        let mut out = Vec::new();
        for (text, score, kind) in pieces {
            let mut p = vec![0x0a, text.len() as u8];
            p.extend_from_slice(text.as_bytes());
            p.push(0x15);
            p.extend_from_slice(&score.to_le_bytes());
            p.extend_from_slice(&[0x18, *kind as u8]);
            out.push(0x0a);
            out.push(p.len() as u8);
            out.extend(p);
        }
        out
    }

    fn toy() -> Pieces {
        Pieces::parse(&model(&[
            ("<unk>", 0.0, 2),
            ("<s>", 0.0, 3),
            ("</s>", 0.0, 3),
            ("\u{2581}", -2.0, 1),
            ("\u{2581}can", -3.0, 1),
            ("cel", -3.0, 1),
            ("\u{2581}cancel", -4.0, 1),
            ("c", -5.0, 1),
            ("a", -5.0, 1),
            ("n", -5.0, 1),
            ("e", -5.0, 1),
            ("l", -5.0, 1),
        ]))
        .expect("model")
    }

    #[test]
    fn the_highest_scoring_segmentation_wins_and_unknown_characters_are_kept() {
        let pieces = toy();
        assert_eq!(pieces.normalize("  cancel   cancel "), "▁cancel▁cancel");
        // "▁cancel" (-4) beats "▁can" + "cel" (-6).
        assert_eq!(pieces.encode("cancel"), vec![BOS, 6, EOS]);
        // "x" is no piece: one unknown id; "<s>" as text is not the control piece.
        assert_eq!(pieces.encode("cancel x"), vec![BOS, 6, 3, UNK, EOS]);
        assert_eq!(pieces.encode("   "), vec![BOS, UNK, EOS]);
    }

    #[test]
    fn a_cut_or_foreign_file_is_an_error() {
        let whole = model(&[("<unk>", 0.0, 2), ("<s>", 0.0, 3), ("</s>", 0.0, 3)]);
        assert!(Pieces::parse(&whole).is_ok());
        assert!(Pieces::parse(&whole[..whole.len() - 3]).is_err());
        assert!(Pieces::parse(b"\x0a\xff\xff\xff\xff\x0f").is_err());
        assert!(Pieces::parse(b"").is_err());
    }
}
