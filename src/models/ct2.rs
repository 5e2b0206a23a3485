//! Reader for CTranslate2's `model.bin` (binary version 6 and neighbours).
//!
//! Layout, little-endian: `u32` binary version, then (version ≥ 2) the spec
//! name as a string and a `u32` spec revision, then a `u32` variable count and
//! per variable: name, `u8` rank, `u32` dims, `u8` data type, `u32` byte
//! count, raw bytes; finally a `u32` alias count and alias/target name pairs.
//! A string is a `u16` length counting a trailing NUL, then the bytes.
//! Every length is checked against the bytes that remain, so a corrupt file is
//! an error and never a huge allocation.

use std::collections::BTreeMap;

/// Element type of a CTranslate2 variable (CTranslate2's `DataType` ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DType {
    F32,
    I8,
    I16,
    I32,
    F16,
    Bf16,
}

impl DType {
    fn from_id(id: u8) -> Option<Self> {
        Some(match id {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::Bf16,
            _ => return None,
        })
    }

    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::Bf16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One named tensor or scalar, borrowing its bytes from the file.
#[derive(Debug, Clone)]
pub struct Variable<'a> {
    pub shape: Vec<usize>,
    pub dtype: DType,
    pub data: &'a [u8],
}

impl Variable<'_> {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Values widened to f32; integers are converted by value.
    pub fn to_f32(&self) -> Vec<f32> {
        let n = self.dtype.size();
        self.data
            .chunks_exact(n)
            .map(|b| match self.dtype {
                DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
                DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::Bf16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
                DType::I8 => b[0] as i8 as f32,
                DType::I16 => i16::from_le_bytes([b[0], b[1]]) as f32,
                DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32,
            })
            .collect()
    }

    /// A scalar integer attribute such as `encoder/num_heads`.
    pub fn scalar_int(&self) -> Option<i64> {
        if self.len() != 1 {
            return None;
        }
        let b = self.data;
        Some(match self.dtype {
            DType::I8 => b[0] as i8 as i64,
            DType::I16 => i16::from_le_bytes([b[0], b[1]]) as i64,
            DType::I32 => i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as i64,
            _ => return None,
        })
    }
}

/// A parsed CTranslate2 model.
#[derive(Debug)]
pub struct Ct2Model<'a> {
    pub binary_version: u32,
    pub spec: String,
    pub revision: u32,
    pub variables: BTreeMap<String, Variable<'a>>,
    pub aliases: BTreeMap<String, String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Ct2Error {
    #[error("model.bin ends early at byte {offset} while reading {what}")]
    Truncated { offset: usize, what: &'static str },
    #[error("unsupported CTranslate2 binary version {0} (this reader knows 2 to 6)")]
    Version(u32),
    #[error("variable {name}: unknown data type id {id}")]
    DType { name: String, id: u8 },
    #[error(
        "variable {name}: shape {shape:?} of {dtype:?} needs {expected} bytes, file says {actual}"
    )]
    Size {
        name: String,
        shape: Vec<usize>,
        dtype: DType,
        expected: usize,
        actual: usize,
    },
    #[error("string at byte {0} is not UTF-8")]
    Utf8(usize),
    #[error("{0} trailing bytes after the alias table")]
    Trailing(usize),
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], Ct2Error> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.bytes.len())
            .ok_or(Ct2Error::Truncated {
                offset: self.pos,
                what,
            })?;
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, Ct2Error> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, Ct2Error> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, Ct2Error> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &'static str) -> Result<String, Ct2Error> {
        let at = self.pos;
        let len = self.u16(what)? as usize;
        let raw = self.take(len, what)?;
        let raw = raw.strip_suffix(&[0]).unwrap_or(raw);
        String::from_utf8(raw.to_vec()).map_err(|_| Ct2Error::Utf8(at))
    }
}

impl<'a> Ct2Model<'a> {
    pub fn parse(bytes: &'a [u8]) -> Result<Self, Ct2Error> {
        let mut c = Cursor { bytes, pos: 0 };
        let binary_version = c.u32("binary version")?;
        if !(2..=6).contains(&binary_version) {
            return Err(Ct2Error::Version(binary_version));
        }
        let spec = c.string("spec name")?;
        let revision = c.u32("spec revision")?;
        let count = c.u32("variable count")?;
        let mut variables = BTreeMap::new();
        for _ in 0..count {
            let name = c.string("variable name")?;
            let rank = c.u8("rank")? as usize;
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32("dimension")? as usize);
            }
            let id = c.u8("data type")?;
            let dtype = DType::from_id(id).ok_or_else(|| Ct2Error::DType {
                name: name.clone(),
                id,
            })?;
            let actual = c.u32("byte count")? as usize;
            let expected = shape
                .iter()
                .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
                .unwrap_or(usize::MAX);
            if expected != actual {
                return Err(Ct2Error::Size {
                    name,
                    shape,
                    dtype,
                    expected,
                    actual,
                });
            }
            let data = c.take(actual, "variable data")?;
            variables.insert(name, Variable { shape, dtype, data });
        }
        let mut aliases = BTreeMap::new();
        if c.pos < bytes.len() {
            let n = c.u32("alias count")?;
            for _ in 0..n {
                let alias = c.string("alias")?;
                let target = c.string("alias target")?;
                aliases.insert(alias, target);
            }
        }
        if c.pos != bytes.len() {
            return Err(Ct2Error::Trailing(bytes.len() - c.pos));
        }
        Ok(Self {
            binary_version,
            spec,
            revision,
            variables,
            aliases,
        })
    }

    /// A variable by name, following aliases.
    pub fn get(&self, name: &str) -> Option<&Variable<'a>> {
        self.variables.get(name).or_else(|| {
            self.aliases
                .get(name)
                .and_then(|target| self.variables.get(target))
        })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Serialises variables in CTranslate2's layout, for tests.
    pub(crate) fn write_model(vars: &[(&str, Vec<usize>, u8, Vec<u8>)]) -> Vec<u8> {
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend(((s.len() + 1) as u16).to_le_bytes());
            out.extend(s.as_bytes());
            out.push(0);
        }
        let mut out = Vec::new();
        out.extend(6u32.to_le_bytes());
        string(&mut out, "WhisperSpec");
        out.extend(3u32.to_le_bytes());
        out.extend((vars.len() as u32).to_le_bytes());
        for (name, shape, dtype, data) in vars {
            string(&mut out, name);
            out.push(shape.len() as u8);
            for d in shape {
                out.extend((*d as u32).to_le_bytes());
            }
            out.push(*dtype);
            out.extend((data.len() as u32).to_le_bytes());
            out.extend(data);
        }
        out.extend(1u32.to_le_bytes());
        string(&mut out, "decoder/projection/weight");
        string(&mut out, "decoder/embeddings/weight");
        out
    }

    #[test]
    fn parses_variables_and_aliases() {
        let bytes = write_model(&[
            ("encoder/num_heads", vec![], 2, 6i16.to_le_bytes().to_vec()),
            (
                "decoder/embeddings/weight",
                vec![2, 2],
                0,
                [1.0f32, 2.0, 3.0, 4.0]
                    .iter()
                    .flat_map(|v| v.to_le_bytes())
                    .collect(),
            ),
        ]);
        let m = Ct2Model::parse(&bytes).unwrap();
        assert_eq!(m.spec, "WhisperSpec");
        assert_eq!(m.get("encoder/num_heads").unwrap().scalar_int(), Some(6));
        let w = m.get("decoder/projection/weight").unwrap();
        assert_eq!(w.to_f32(), vec![1.0, 2.0, 3.0, 4.0]);
    }

    #[test]
    fn rejects_lying_sizes_and_truncation_without_allocating() {
        let mut bytes = write_model(&[("x", vec![4], 0, vec![0; 16])]);
        assert!(Ct2Model::parse(&bytes[..bytes.len() - 40]).is_err());
        // claim a 2^32-1 element dimension: the size check fails before any read
        let dim_at = 4 + 2 + 12 + 4 + 4 + 2 + 2 + 1;
        bytes[dim_at..dim_at + 4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(matches!(
            Ct2Model::parse(&bytes),
            Err(Ct2Error::Size { .. })
        ));
        assert!(matches!(
            Ct2Model::parse(&[]),
            Err(Ct2Error::Truncated { .. })
        ));
    }
}
