//! Kokoro's inputs besides the model: the phoneme vocabulary and the
//! voices' style vectors.
//!
//! A voice is a `.npy` array of shape (510, 1, 256), little-endian f32: one
//! 256-wide style vector per input length, the row for `n` phonemes at
//! index `n - 1`. The Japanese voices come as `.npy` in their wheel; the
//! native voices come from the npm package `kokoro-js` as the same array
//! raw (`<name>.bin`, 522,240 bytes), and `models/fetch.sh` checks their
//! size and puts a `.npy` header in front, so one format is read here.

use std::collections::HashMap;

use serde::Deserialize;

use crate::models::npy::{parse_npy, Data};

/// Width of one style vector.
pub const STYLE: usize = 256;

/// Rows in a voice file, and so the most phonemes one inference takes.
pub const ROWS: usize = 510;

/// The phoneme → input id map.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocab {
    ids: HashMap<char, i64>,
}

#[derive(Deserialize)]
struct VocabFile {
    vocab: HashMap<String, i64>,
}

impl Vocab {
    pub fn parse(json: &str) -> Result<Self, String> {
        let file: VocabFile =
            serde_json::from_str(json).map_err(|e| format!("not a Kokoro vocabulary: {e}"))?;
        let mut ids = HashMap::with_capacity(file.vocab.len());
        for (symbol, id) in file.vocab {
            let mut chars = symbol.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) if id > 0 => {
                    ids.insert(c, id);
                }
                _ => {
                    return Err(format!(
                        "vocabulary entry {symbol:?} → {id} is not one symbol"
                    ))
                }
            }
        }
        if ids.is_empty() {
            return Err("the vocabulary is empty".into());
        }
        Ok(Self { ids })
    }

    /// The ids of `phonemes`, and how many symbols had none (dropped).
    pub fn ids(&self, phonemes: &str) -> (Vec<i64>, usize) {
        let mut unknown = 0;
        let ids = phonemes
            .chars()
            .filter_map(|c| {
                let id = self.ids.get(&c).copied();
                unknown += usize::from(id.is_none());
                id
            })
            .collect();
        (ids, unknown)
    }
}

/// One voice's style vectors.
#[derive(Debug, Clone, PartialEq)]
pub struct Style {
    rows: Vec<f32>,
}

impl Style {
    /// From the bytes of a `.npy` file: version 1 to 3, `<f4`, C order,
    /// shape (510, 1, 256) or (510, 256).
    pub fn parse_npy(bytes: &[u8]) -> Result<Self, String> {
        let array = parse_npy(bytes)?;
        if array.shape != [ROWS, 1, STYLE] && array.shape != [ROWS, STYLE] {
            return Err(format!(
                "expected shape ({ROWS}, 1, {STYLE}), the file says {:?}",
                array.shape
            ));
        }
        match array.data {
            Data::F32(rows) => Ok(Self { rows }),
            Data::U8(_) => Err("expected f32 data, the file holds bytes".into()),
        }
    }

    /// The style vector for an input of `phonemes` symbols (1 to 510).
    pub fn for_length(&self, phonemes: usize) -> &[f32] {
        let row = phonemes.clamp(1, ROWS) - 1;
        &self.rows[row * STYLE..(row + 1) * STYLE]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(shape: &str, values: usize) -> Vec<u8> {
        let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        bytes.extend((header.len() as u16).to_le_bytes());
        bytes.extend(header.as_bytes());
        for i in 0..values {
            bytes.extend((i as f32).to_le_bytes());
        }
        bytes
    }

    #[test]
    fn a_voice_file_gives_one_row_per_length() {
        let style = Style::parse_npy(&npy("(510, 1, 256)", ROWS * STYLE)).unwrap();
        assert_eq!(style.for_length(1)[0], 0.0);
        assert_eq!(style.for_length(2)[0], 256.0);
        assert_eq!(style.for_length(0), style.for_length(1));
        assert_eq!(style.for_length(9_999), style.for_length(ROWS));
        assert_eq!(style.for_length(3).len(), STYLE);
    }

    #[test]
    fn wrong_voice_files_are_refused_with_the_reason() {
        let short = npy("(510, 1, 256)", 10);
        assert!(Style::parse_npy(&short)
            .unwrap_err()
            .contains("bytes of data"));
        let shape = npy("(3, 256)", 3 * STYLE);
        assert!(Style::parse_npy(&shape).unwrap_err().contains("shape"));
        assert!(Style::parse_npy(b"PK\x03\x04 a zip")
            .unwrap_err()
            .contains("not a .npy"));
        let mut cut = npy("(510, 1, 256)", 0);
        cut.truncate(20);
        assert!(Style::parse_npy(&cut).unwrap_err().contains("cut short"));
    }

    #[test]
    fn the_vocabulary_maps_symbols_and_counts_the_unknown() {
        let vocab = Vocab::parse(r#"{"vocab": {"a": 43, "ʧ": 133, " ": 16}}"#).unwrap();
        assert_eq!(vocab.ids("a ʧa"), (vec![43, 16, 133, 43], 0));
        assert_eq!(vocab.ids("aXa"), (vec![43, 43], 1));
        assert!(Vocab::parse(r#"{"vocab": {"ab": 1}}"#).is_err());
        assert!(Vocab::parse(r#"{"vocab": {}}"#).is_err());
        assert!(Vocab::parse("[]").is_err());
    }
}
