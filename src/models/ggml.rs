//! whisper.cpp's GGML model file, written from a CTranslate2 Whisper model.
//!
//! File layout (all little-endian): magic `ggml`; eleven `i32`
//! hyper-parameters (n_vocab, n_audio_ctx, n_audio_state, n_audio_head,
//! n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer,
//! n_mels, ftype); the mel filterbank (`i32` n_mels, `i32` n_bins, f32
//! weights); the vocabulary (`i32` count, then `u32` length + bytes per
//! token); then the tensors, each `i32` rank, `i32` name length, `i32` type,
//! the dims innermost first, the name, the data.
//!
//! whisper.cpp checks every tensor's name, shape and type against the ones it
//! builds for the hyper-parameters, so the choices below are not free: weight
//! matrices in f16 or Q8_0 (an all-f32 file loads but aborts in the
//! convolution's im2col), convolution kernels in f16, 1-D tensors,
//! positional embeddings and convolution biases in f32, and the biases shaped
//! `[1, n]`. CTranslate2 fuses the attention projections; they are split
//! here, and the key biases, which Whisper does not have and CTranslate2
//! stores as zeros, are dropped.

use std::io::{self, Write};

use super::ct2::{Ct2Model, Variable};

const MAGIC: u32 = 0x6767_6d6c;
/// ggml's quantisation format version, folded into `ftype` for quantised files.
const QNT_VERSION_FACTOR: i32 = 1000;
const QNT_VERSION: i32 = 2;

/// The storage type of the weight matrices.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WeightType {
    F16,
    Q8_0,
}

impl WeightType {
    fn file_ftype(self) -> i32 {
        match self {
            Self::F16 => 1,
            Self::Q8_0 => 7 + QNT_VERSION * QNT_VERSION_FACTOR,
        }
    }

    pub fn suffix(self) -> &'static str {
        match self {
            Self::F16 => "",
            Self::Q8_0 => "-q8_0",
        }
    }
}

/// ggml tensor type ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TensorType {
    F32 = 0,
    F16 = 1,
    Q8_0 = 8,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HyperParams {
    pub n_vocab: usize,
    pub n_audio_ctx: usize,
    pub n_audio_state: usize,
    pub n_audio_head: usize,
    pub n_audio_layer: usize,
    pub n_text_ctx: usize,
    pub n_text_state: usize,
    pub n_text_head: usize,
    pub n_text_layer: usize,
    pub n_mels: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum GgmlError {
    #[error("the CTranslate2 model has no variable {0}")]
    Missing(String),
    #[error("variable {name} has shape {shape:?}, expected {expected}")]
    Shape {
        name: String,
        shape: Vec<usize>,
        expected: String,
    },
    #[error("{0} is not all zeros; whisper.cpp has no key bias to put it in")]
    KeyBias(String),
    #[error("{name}: row length {len} is not a multiple of 32, cannot store as Q8_0")]
    Q8Block { name: String, len: usize },
    #[error(transparent)]
    Io(#[from] io::Error),
}

/// A tensor ready to write: values in row-major order with the outermost
/// dimension first (PyTorch order).
struct Tensor {
    name: String,
    shape: Vec<usize>,
    values: Vec<f32>,
}

fn var<'m, 'a>(m: &'m Ct2Model<'a>, name: &str) -> Result<&'m Variable<'a>, GgmlError> {
    m.get(name)
        .ok_or_else(|| GgmlError::Missing(name.to_string()))
}

fn shape_2d(m: &Ct2Model, name: &str) -> Result<(usize, usize), GgmlError> {
    let v = var(m, name)?;
    match v.shape[..] {
        [a, b] => Ok((a, b)),
        _ => Err(GgmlError::Shape {
            name: name.to_string(),
            shape: v.shape.clone(),
            expected: "rank 2".into(),
        }),
    }
}

fn count_layers(m: &Ct2Model, prefix: &str) -> usize {
    (0..)
        .take_while(|i| {
            m.variables
                .contains_key(&format!("{prefix}/layer_{i}/ffn/layer_norm/gamma"))
        })
        .count()
}

fn heads(m: &Ct2Model, name: &str, state: usize) -> usize {
    // Whisper's heads are 64 wide; the spec stores the count as a scalar
    m.get(name)
        .and_then(Variable::scalar_int)
        .map(|h| h as usize)
        .unwrap_or(state / 64)
}

impl HyperParams {
    pub fn from_ct2(m: &Ct2Model) -> Result<Self, GgmlError> {
        let (n_vocab, n_text_state) = shape_2d(m, "decoder/embeddings/weight")?;
        let (n_text_ctx, _) = shape_2d(m, "decoder/position_encodings/encodings")?;
        let (n_audio_ctx, n_audio_state) = shape_2d(m, "encoder/position_encodings/encodings")?;
        let conv1 = var(m, "encoder/conv1/weight")?;
        let n_mels = match conv1.shape[..] {
            [_, mels, 3] => mels,
            _ => {
                return Err(GgmlError::Shape {
                    name: "encoder/conv1/weight".into(),
                    shape: conv1.shape.clone(),
                    expected: "[state, mels, 3]".into(),
                })
            }
        };
        Ok(Self {
            n_vocab,
            n_audio_ctx,
            n_audio_state,
            n_audio_head: heads(m, "encoder/num_heads", n_audio_state),
            n_audio_layer: count_layers(m, "encoder"),
            n_text_ctx,
            n_text_state,
            n_text_head: heads(m, "decoder/num_heads", n_text_state),
            n_text_layer: count_layers(m, "decoder"),
            n_mels,
        })
    }

    pub fn is_multilingual(&self) -> bool {
        self.n_vocab >= 51865
    }

    fn fields(&self) -> [usize; 10] {
        [
            self.n_vocab,
            self.n_audio_ctx,
            self.n_audio_state,
            self.n_audio_head,
            self.n_audio_layer,
            self.n_text_ctx,
            self.n_text_state,
            self.n_text_head,
            self.n_text_layer,
            self.n_mels,
        ]
    }
}

/// Collects every tensor under whisper.cpp's names.
struct Mapper<'m, 'a> {
    model: &'m Ct2Model<'a>,
    out: Vec<Tensor>,
}

impl Mapper<'_, '_> {
    fn copy(&mut self, from: &str, to: &str) -> Result<(), GgmlError> {
        let v = var(self.model, from)?;
        self.out.push(Tensor {
            name: to.to_string(),
            shape: v.shape.clone(),
            values: v.to_f32(),
        });
        Ok(())
    }

    /// Copies `{from}/weight` and `{from}/bias` (or `gamma`/`beta`).
    fn linear(&mut self, from: &str, to: &str) -> Result<(), GgmlError> {
        self.copy(&format!("{from}/weight"), &format!("{to}.weight"))?;
        self.copy(&format!("{from}/bias"), &format!("{to}.bias"))
    }

    fn norm(&mut self, from: &str, to: &str) -> Result<(), GgmlError> {
        self.copy(&format!("{from}/gamma"), &format!("{to}.weight"))?;
        self.copy(&format!("{from}/beta"), &format!("{to}.bias"))
    }

    /// Splits a fused projection (rows stacked as `parts`) into one tensor per
    /// part; a part named with `None` bias must have an all-zero bias.
    fn split(&mut self, from: &str, parts: &[(&str, bool)]) -> Result<(), GgmlError> {
        let wname = format!("{from}/weight");
        let bname = format!("{from}/bias");
        let (rows, cols) = shape_2d(self.model, &wname)?;
        if rows % parts.len() != 0 {
            return Err(GgmlError::Shape {
                name: wname,
                shape: vec![rows, cols],
                expected: format!("rows divisible by {}", parts.len()),
            });
        }
        let part_rows = rows / parts.len();
        let weight = var(self.model, &wname)?.to_f32();
        let bias = var(self.model, &bname)?.to_f32();
        if bias.len() != rows {
            return Err(GgmlError::Shape {
                name: bname,
                shape: vec![bias.len()],
                expected: format!("[{rows}]"),
            });
        }
        for (i, &(to, has_bias)) in parts.iter().enumerate() {
            let rows_range = i * part_rows..(i + 1) * part_rows;
            self.out.push(Tensor {
                name: format!("{to}.weight"),
                shape: vec![part_rows, cols],
                values: weight[rows_range.start * cols..rows_range.end * cols].to_vec(),
            });
            let b = &bias[rows_range];
            if has_bias {
                self.out.push(Tensor {
                    name: format!("{to}.bias"),
                    shape: vec![part_rows],
                    values: b.to_vec(),
                });
            } else if b.iter().any(|&x| x != 0.0) {
                return Err(GgmlError::KeyBias(format!("{bname} part {i}")));
            }
        }
        Ok(())
    }
}

fn map_tensors(m: &Ct2Model, hp: &HyperParams) -> Result<Vec<Tensor>, GgmlError> {
    let mut t = Mapper {
        model: m,
        out: Vec::new(),
    };
    t.copy(
        "encoder/position_encodings/encodings",
        "encoder.positional_embedding",
    )?;
    t.linear("encoder/conv1", "encoder.conv1")?;
    t.linear("encoder/conv2", "encoder.conv2")?;
    for i in 0..hp.n_audio_layer {
        let (f, b) = (format!("encoder/layer_{i}"), format!("encoder.blocks.{i}"));
        t.norm(
            &format!("{f}/self_attention/layer_norm"),
            &format!("{b}.attn_ln"),
        )?;
        t.split(
            &format!("{f}/self_attention/linear_0"),
            &[
                (&format!("{b}.attn.query"), true),
                (&format!("{b}.attn.key"), false),
                (&format!("{b}.attn.value"), true),
            ],
        )?;
        t.linear(
            &format!("{f}/self_attention/linear_1"),
            &format!("{b}.attn.out"),
        )?;
        t.norm(&format!("{f}/ffn/layer_norm"), &format!("{b}.mlp_ln"))?;
        t.linear(&format!("{f}/ffn/linear_0"), &format!("{b}.mlp.0"))?;
        t.linear(&format!("{f}/ffn/linear_1"), &format!("{b}.mlp.2"))?;
    }
    t.norm("encoder/layer_norm", "encoder.ln_post")?;

    t.copy(
        "decoder/position_encodings/encodings",
        "decoder.positional_embedding",
    )?;
    t.copy(
        "decoder/embeddings/weight",
        "decoder.token_embedding.weight",
    )?;
    for i in 0..hp.n_text_layer {
        let (f, b) = (format!("decoder/layer_{i}"), format!("decoder.blocks.{i}"));
        t.norm(
            &format!("{f}/self_attention/layer_norm"),
            &format!("{b}.attn_ln"),
        )?;
        t.split(
            &format!("{f}/self_attention/linear_0"),
            &[
                (&format!("{b}.attn.query"), true),
                (&format!("{b}.attn.key"), false),
                (&format!("{b}.attn.value"), true),
            ],
        )?;
        t.linear(
            &format!("{f}/self_attention/linear_1"),
            &format!("{b}.attn.out"),
        )?;
        t.norm(
            &format!("{f}/attention/layer_norm"),
            &format!("{b}.cross_attn_ln"),
        )?;
        t.linear(
            &format!("{f}/attention/linear_0"),
            &format!("{b}.cross_attn.query"),
        )?;
        t.split(
            &format!("{f}/attention/linear_1"),
            &[
                (&format!("{b}.cross_attn.key"), false),
                (&format!("{b}.cross_attn.value"), true),
            ],
        )?;
        t.linear(
            &format!("{f}/attention/linear_2"),
            &format!("{b}.cross_attn.out"),
        )?;
        t.norm(&format!("{f}/ffn/layer_norm"), &format!("{b}.mlp_ln"))?;
        t.linear(&format!("{f}/ffn/linear_0"), &format!("{b}.mlp.0"))?;
        t.linear(&format!("{f}/ffn/linear_1"), &format!("{b}.mlp.2"))?;
    }
    t.norm("decoder/layer_norm", "decoder.ln")?;
    Ok(t.out)
}

/// The type whisper.cpp expects for a tensor of this name and rank.
fn storage_type(name: &str, rank: usize, weights: WeightType) -> TensorType {
    let always_f32 = rank < 2
        || name.ends_with("positional_embedding")
        || name == "encoder.conv1.bias"
        || name == "encoder.conv2.bias";
    if always_f32 {
        TensorType::F32
    } else if rank == 3 || weights == WeightType::F16 {
        TensorType::F16
    } else {
        TensorType::Q8_0
    }
}

/// Q8_0: blocks of 32 values stored as one f16 scale and 32 signed bytes.
pub fn quantize_q8_0(values: &[f32], out: &mut Vec<u8>) {
    for block in values.chunks(32) {
        let amax = block.iter().fold(0f32, |m, v| m.max(v.abs()));
        let scale = amax / 127.0;
        let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
        out.extend(half::f16::from_f32(scale).to_le_bytes());
        for &v in block {
            out.push((v * inv).round().clamp(-127.0, 127.0) as i8 as u8);
        }
    }
}

fn write_i32(w: &mut impl Write, v: i32) -> io::Result<()> {
    w.write_all(&v.to_le_bytes())
}

fn write_tensor(w: &mut impl Write, t: &Tensor, weights: WeightType) -> Result<(), GgmlError> {
    // whisper.cpp's convolution bias is 2-D: [1, n] innermost first
    let shape: Vec<usize> = if t.name.starts_with("encoder.conv") && t.name.ends_with(".bias") {
        vec![t.shape[0], 1]
    } else {
        t.shape.clone()
    };
    let ty = storage_type(&t.name, shape.len(), weights);
    write_i32(w, shape.len() as i32)?;
    write_i32(w, t.name.len() as i32)?;
    write_i32(w, ty as i32)?;
    for &d in shape.iter().rev() {
        write_i32(w, d as i32)?;
    }
    w.write_all(t.name.as_bytes())?;
    let mut buf = Vec::with_capacity(t.values.len() * 4);
    match ty {
        TensorType::F32 => buf.extend(t.values.iter().flat_map(|v| v.to_le_bytes())),
        TensorType::F16 => buf.extend(
            t.values
                .iter()
                .flat_map(|&v| half::f16::from_f32(v).to_le_bytes()),
        ),
        TensorType::Q8_0 => {
            let row = *shape.last().unwrap_or(&0);
            if !row.is_multiple_of(32) {
                return Err(GgmlError::Q8Block {
                    name: t.name.clone(),
                    len: row,
                });
            }
            quantize_q8_0(&t.values, &mut buf);
        }
    }
    w.write_all(&buf)?;
    Ok(())
}

/// What a conversion wrote.
#[derive(Debug, Clone)]
pub struct Written {
    pub hparams: HyperParams,
    pub tensors: usize,
    pub vocab: usize,
}

/// Writes the whole GGML file for `model`.
pub fn write(
    w: &mut impl Write,
    model: &Ct2Model,
    tokens: &[Vec<u8>],
    mel: &[f32],
    weights: WeightType,
) -> Result<Written, GgmlError> {
    let hp = HyperParams::from_ct2(model)?;
    let tensors = map_tensors(model, &hp)?;
    w.write_all(&MAGIC.to_le_bytes())?;
    for f in hp.fields() {
        write_i32(w, f as i32)?;
    }
    write_i32(w, weights.file_ftype())?;
    let n_bins = mel.len() / hp.n_mels.max(1);
    write_i32(w, hp.n_mels as i32)?;
    write_i32(w, n_bins as i32)?;
    for v in mel {
        w.write_all(&v.to_le_bytes())?;
    }
    write_i32(w, tokens.len() as i32)?;
    for t in tokens {
        w.write_all(&(t.len() as u32).to_le_bytes())?;
        w.write_all(t)?;
    }
    for t in &tensors {
        write_tensor(w, t, weights)?;
    }
    Ok(Written {
        hparams: hp,
        tensors: tensors.len(),
        vocab: tokens.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q8_0_round_trips_within_half_a_step() {
        let values: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) / 10.0).collect();
        let mut out = Vec::new();
        quantize_q8_0(&values, &mut out);
        assert_eq!(out.len(), 2 * 34);
        for (b, block) in out.chunks(34).zip(values.chunks(32)) {
            let d = half::f16::from_le_bytes([b[0], b[1]]).to_f32();
            for (q, v) in b[2..].iter().zip(block) {
                // half a step, plus the scale's rounding to f16 (2^-11
                // relative) times the largest quantised value
                assert!(((*q as i8) as f32 * d - v).abs() <= d * (0.5 + 127.0 / 2048.0));
            }
        }
    }

    #[test]
    fn storage_types_follow_whisper_cpp() {
        use TensorType::*;
        let q = WeightType::Q8_0;
        assert_eq!(storage_type("encoder.conv1.bias", 2, q), F32);
        assert_eq!(storage_type("encoder.conv1.weight", 3, q), F16);
        assert_eq!(storage_type("decoder.positional_embedding", 2, q), F32);
        assert_eq!(storage_type("decoder.blocks.0.mlp.0.weight", 2, q), Q8_0);
        assert_eq!(storage_type("decoder.blocks.0.mlp.0.bias", 1, q), F32);
        let f = WeightType::F16;
        assert_eq!(storage_type("decoder.token_embedding.weight", 2, f), F16);
    }
}
