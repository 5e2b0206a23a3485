//! `out += a · w` for the branches' products, whose rows are a message's
//! pieces: the encoder's bulk of arithmetic (about 1.7 million
//! multiply-adds per piece), in bfloat16.
//!
//! Both `a` and `w` are rounded to bfloat16 (8 bits of mantissa, rounding to
//! the nearest, ties to even): `a` by [`round_all`], as `f32` numbers whose
//! low 16 bits are zero, `w` when loaded, kept in pairs along `k`: one 32-bit
//! word holds the numbers of rows `2p` (low half) and `2p + 1` (high half)
//! of a column. The product of two bfloat16 numbers is exact in `f32`, so
//! every loop below multiplies the same values and adds the same products,
//! in another order:
//! - with AVX512-BF16 (checked at run time), `vdpbf16ps` adds a pair's two
//!   products to eight sums at once, twice the multiply-adds per cycle of
//!   `f32` FMA on the same core;
//! - with AVX2 and FMA, each half of a pair of `w` is widened (a shift or
//!   a mask) and added with FMA;
//! - elsewhere a portable loop.
//!
//! The blocks are [`super::gemm`]'s: six rows by 16 columns kept in
//! registers across the whole of `k`, narrower and wider ones for the rows
//! left over.

/// `x` rounded to bfloat16, to the nearest and ties to even; a NaN stays a
/// NaN. Without a branch, so that a loop over many numbers is vectorised.
pub fn bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    let rounded = bits.wrapping_add(0x7fff + ((bits >> 16) & 1)) >> 16;
    let quiet = (bits >> 16) | 0x40;
    (if x.is_nan() { quiet } else { rounded }) as u16
}

/// The `f32` a bfloat16 number stands for (exactly).
fn widen(half: u32) -> f32 {
    f32::from_bits(half << 16)
}

/// Every number of `a` rounded to bfloat16, as `f32`: what
/// [`matmul_pairs`] multiplies.
pub fn round_all(a: &[f32]) -> Vec<f32> {
    a.iter().map(|&x| widen(u32::from(bf16(x)))).collect()
}

/// Rounded numbers (see [`round_all`]) two to a word, as `w` is kept.
fn pack(a: &[f32]) -> Vec<u32> {
    a.chunks_exact(2)
        .map(|p| (p[0].to_bits() >> 16) | (p[1].to_bits() & 0xffff_0000))
        .collect()
}

/// A matrix's weights, `k` × `cols` with `k` even, as `k / 2` × `cols`
/// pairs, starting on a 64-byte boundary so that a block of 16 columns is
/// one cache line.
pub struct PairedWeights {
    pairs: Vec<u32>,
    start: usize,
    cols: usize,
}

impl PairedWeights {
    /// `numbers` row major, `cols` wide; an odd row count gets a row of
    /// zeros.
    pub fn new(numbers: &[f32], cols: usize) -> Self {
        let k = numbers.len().checked_div(cols).unwrap_or(0);
        let half_rows = k.div_ceil(2);
        let mut pairs = Vec::<u32>::with_capacity(half_rows * cols + 16);
        let start = pairs.as_ptr().align_offset(64).min(16);
        pairs.resize(start, 0);
        let at = |row: usize, col: usize| {
            numbers
                .get(row * cols + col)
                .map_or(0, |&x| u32::from(bf16(x)))
        };
        for p in 0..half_rows {
            pairs.extend((0..cols).map(|c| at(2 * p, c) | (at(2 * p + 1, c) << 16)));
        }
        Self { pairs, start, cols }
    }

    /// Rows `range` of the matrix (both ends even).
    pub fn rows(&self, range: std::ops::Range<usize>) -> PairedView<'_> {
        assert!(
            range.start.is_multiple_of(2) && range.end.is_multiple_of(2),
            "rows {range:?} split a pair"
        );
        let pairs = &self.pairs[self.start..];
        PairedView {
            pairs: &pairs[range.start / 2 * self.cols..range.end / 2 * self.cols],
        }
    }

    pub fn view(&self) -> PairedView<'_> {
        PairedView {
            pairs: &self.pairs[self.start..],
        }
    }
}

/// Some rows of a [`PairedWeights`].
#[derive(Clone, Copy)]
pub struct PairedView<'a> {
    pairs: &'a [u32],
}

/// `out += a · w`: `a` is `rows` × `k` numbers rounded by [`round_all`],
/// `k` is even, `w` holds at least `k · cols` numbers and `out` at least
/// `rows · cols`.
pub fn matmul_pairs(a: &[f32], k: usize, w: PairedView, cols: usize, out: &mut [f32]) {
    if k == 0 {
        return;
    }
    let rows = a.len() / k;
    let half = k / 2;
    assert!(
        k.is_multiple_of(2)
            && a.len() == rows * k
            && w.pairs.len() >= half * cols
            && out.len() >= rows * cols,
        "matmul_pairs: {rows}×{k} · {k}×{cols} does not fit the slices given"
    );
    debug_assert!(a.iter().all(|x| x.to_bits() & 0xffff == 0), "a not rounded");
    #[cfg(target_arch = "x86_64")]
    if cols.is_multiple_of(64) {
        if std::arch::is_x86_feature_detected!("avx512bf16")
            && std::arch::is_x86_feature_detected!("avx512vl")
            && std::arch::is_x86_feature_detected!("avx2")
        {
            let pairs = pack(a);
            // SAFETY: the CPU has the three features, checked just above,
            // and the slices' lengths were checked against the shapes.
            unsafe {
                dot::matmul(
                    pairs.as_ptr(),
                    rows,
                    half,
                    w.pairs.as_ptr(),
                    cols,
                    out.as_mut_ptr(),
                )
            };
            return;
        }
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: as above, for AVX2 and FMA.
            unsafe {
                fma::matmul(
                    a.as_ptr(),
                    rows,
                    half,
                    w.pairs.as_ptr(),
                    cols,
                    out.as_mut_ptr(),
                )
            };
            return;
        }
    }
    portable(a, half, w.pairs, cols, out);
}

/// Pair by pair of `w`'s rows, each half widened and added to every row of
/// `out` times the matching number of `a`.
fn portable(a: &[f32], half: usize, w: &[u32], cols: usize, out: &mut [f32]) {
    let rows = a.len() / (2 * half);
    for p in 0..half {
        let pair = &w[p * cols..(p + 1) * cols];
        for r in 0..rows {
            let (low, high) = (a[r * 2 * half + 2 * p], a[r * 2 * half + 2 * p + 1]);
            for (o, &w) in out[r * cols..(r + 1) * cols].iter_mut().zip(pair) {
                *o += high * widen(w >> 16) + low * widen(w & 0xffff);
            }
        }
    }
}

/// The blocks both kernels walk: rows in bands of `R`, each band in blocks
/// of `V` vectors of eight columns.
#[cfg(target_arch = "x86_64")]
macro_rules! bands {
    ($features:literal, $a:ty) => {
        /// # Safety
        /// The CPU has the module's features; `a` holds `rows` rows of
        /// `2 · half` numbers (as pairs or widened), `w` `half · cols` pairs
        /// and `out` `rows · cols` numbers; `cols` is a multiple of 64.
        #[target_feature(enable = $features)]
        pub unsafe fn matmul(
            a: *const $a,
            rows: usize,
            half: usize,
            w: *const u32,
            cols: usize,
            out: *mut f32,
        ) {
            let m = Shape {
                a,
                half,
                w,
                cols,
                out,
            };
            let mut r = 0;
            while rows - r >= 6 {
                m.band::<6, 2>(r);
                r += 6;
            }
            if rows - r >= 4 {
                m.band::<4, 2>(r);
                r += 4;
            }
            if rows - r >= 2 {
                m.band::<2, 4>(r);
                r += 2;
            }
            if rows - r == 1 {
                m.band::<1, 8>(r);
            }
        }

        struct Shape {
            a: *const $a,
            half: usize,
            w: *const u32,
            cols: usize,
            out: *mut f32,
        }

        impl Shape {
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn band<const R: usize, const V: usize>(&self, r: usize) {
                let mut j = 0;
                while j < self.cols {
                    self.block::<R, V>(r, j);
                    j += 8 * V;
                }
            }

            /// The `R` × `8V` block of `out` at row `r`, column `j`.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn load<const R: usize, const V: usize>(
                &self,
                r: usize,
                j: usize,
            ) -> [[__m256; V]; R] {
                let mut sums = [[_mm256_setzero_ps(); V]; R];
                for (i, row) in sums.iter_mut().enumerate() {
                    for (v, s) in row.iter_mut().enumerate() {
                        *s = _mm256_loadu_ps(self.out.add((r + i) * self.cols + j + 8 * v));
                    }
                }
                sums
            }

            /// Writes `sums` back where [`Self::load`] read them.
            #[target_feature(enable = $features)]
            #[inline]
            unsafe fn store<const R: usize, const V: usize>(
                &self,
                sums: &[[__m256; V]; R],
                r: usize,
                j: usize,
            ) {
                for (i, row) in sums.iter().enumerate() {
                    for (v, s) in row.iter().enumerate() {
                        _mm256_storeu_ps(self.out.add((r + i) * self.cols + j + 8 * v), *s);
                    }
                }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
mod dot {
    use std::arch::x86_64::*;

    bands!("avx512bf16,avx512vl,avx2", u32);

    impl Shape {
        /// The `R` × `8V` block of `out` at row `r`, column `j`, summed in
        /// registers over all of `k`, a pair of rows of `w` per step.
        #[target_feature(enable = "avx512bf16,avx512vl,avx2")]
        #[inline]
        unsafe fn block<const R: usize, const V: usize>(&self, r: usize, j: usize) {
            let mut sums = self.load::<R, V>(r, j);
            for p in 0..self.half {
                let mut ws = [_mm256_setzero_si256(); V];
                for (v, x) in ws.iter_mut().enumerate() {
                    *x = _mm256_loadu_si256(self.w.add(p * self.cols + j + 8 * v).cast());
                }
                for (i, row) in sums.iter_mut().enumerate() {
                    let x = _mm256_set1_epi32(*self.a.add((r + i) * self.half + p) as i32);
                    for (s, w) in row.iter_mut().zip(&ws) {
                        // SAFETY (of the transmutes): both are 256 bits of
                        // sixteen bfloat16 numbers.
                        *s = _mm256_dpbf16_ps(
                            *s,
                            std::mem::transmute::<__m256i, __m256bh>(x),
                            std::mem::transmute::<__m256i, __m256bh>(*w),
                        );
                    }
                }
            }
            self.store(&sums, r, j);
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    bands!("avx2,fma", f32);

    impl Shape {
        /// As [`super::dot`]'s, each half of a pair widened: the high half
        /// by masking the low one away, the low half by shifting it up; `a`
        /// is widened already.
        #[target_feature(enable = "avx2,fma")]
        #[inline]
        unsafe fn block<const R: usize, const V: usize>(&self, r: usize, j: usize) {
            let mut sums = self.load::<R, V>(r, j);
            let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
            for p in 0..self.half {
                let mut lows = [_mm256_setzero_ps(); V];
                let mut highs = [_mm256_setzero_ps(); V];
                for v in 0..V {
                    let x = _mm256_loadu_si256(self.w.add(p * self.cols + j + 8 * v).cast());
                    lows[v] = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(x));
                    highs[v] = _mm256_castsi256_ps(_mm256_and_si256(x, high));
                }
                for (i, row) in sums.iter_mut().enumerate() {
                    let at = self.a.add((r + i) * 2 * self.half + 2 * p);
                    let low = _mm256_set1_ps(*at);
                    let up = _mm256_set1_ps(*at.add(1));
                    for (v, s) in row.iter_mut().enumerate() {
                        *s = _mm256_fmadd_ps(up, highs[v], *s);
                        *s = _mm256_fmadd_ps(low, lows[v], *s);
                    }
                }
            }
            self.store(&sums, r, j);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_to_bfloat16_is_to_the_nearest_and_ties_to_even() {
        assert_eq!(bf16(1.0), 0x3f80);
        assert_eq!(bf16(-2.5), 0xc020);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: to the even, 1.
        assert_eq!(bf16(1.0 + 1.0 / 256.0), 0x3f80);
        // 1 + 3·2^-8 is halfway between 1 + 2^-7 and 1 + 2^-6: to the even.
        assert_eq!(bf16(1.0 + 3.0 / 256.0), 0x3f82);
        assert_eq!(bf16(1.0 + 1.5 / 256.0), 0x3f81);
        assert!(widen(u32::from(bf16(f32::NAN))).is_nan());
        assert_eq!(widen(u32::from(bf16(f32::INFINITY))), f32::INFINITY);
        assert_eq!(widen(u32::from(bf16(0.15625))), 0.15625);
    }

    /// The plain sums of the rounded numbers, in `f64`.
    fn reference(a: &[f32], k: usize, w: &[f32], cols: usize, start: &[f32]) -> Vec<f64> {
        let round = |x: f32| f64::from(widen(u32::from(bf16(x))));
        let rows = a.len() / k;
        let mut out: Vec<f64> = start.iter().map(|&x| f64::from(x)).collect();
        for r in 0..rows {
            for c in 0..cols {
                for i in 0..k {
                    out[r * cols + c] += round(a[r * k + i]) * round(w[i * cols + c]);
                }
            }
        }
        out
    }

    /// Every row count the blocks split differently, each kernel this
    /// machine has and the portable loop, against the plain sums.
    #[test]
    fn every_loop_adds_the_products_of_the_rounded_numbers() {
        let (k, cols) = (38, 128);
        let w: Vec<f32> = (0..k * cols)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let paired = PairedWeights::new(&w, cols);
        for rows in 0..=13 {
            let a: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
                .collect();
            let start: Vec<f32> = (0..rows * cols).map(|i| (i % 5) as f32).collect();
            let expected = reference(&a, k, &w, cols, &start);
            let a = round_all(&a);
            let mut fast = start.clone();
            matmul_pairs(&a, k, paired.view(), cols, &mut fast);
            let mut plain = start.clone();
            portable(&a, k / 2, paired.view().pairs, cols, &mut plain);
            for (got, name) in [(&fast, "fastest"), (&plain, "portable")] {
                for (g, e) in got.iter().zip(&expected) {
                    assert!(
                        (f64::from(*g) - e).abs() < 1e-4,
                        "{name}, {rows} rows: {g} against {e}"
                    );
                }
            }
            #[cfg(target_arch = "x86_64")]
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
            {
                let mut widened = start.clone();
                // SAFETY: the features were checked just above; the shapes
                // are the test's own.
                unsafe {
                    fma::matmul(
                        a.as_ptr(),
                        rows,
                        k / 2,
                        paired.view().pairs.as_ptr(),
                        cols,
                        widened.as_mut_ptr(),
                    )
                };
                for (g, e) in widened.iter().zip(&expected) {
                    assert!((f64::from(*g) - e).abs() < 1e-4, "fma, {rows} rows");
                }
            }
            if rows > 0 {
                assert_ne!(fast, start, "{rows} rows: nothing was added");
            }
        }
    }

    #[test]
    fn rows_of_the_weights_are_whole_pairs() {
        // 4 × 2: rows 2 and 3 alone are [5 6; 7 8].
        let w = PairedWeights::new(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0], 2);
        let mut out = vec![0.0; 2];
        matmul_pairs(&round_all(&[1.0, 10.0]), 2, w.rows(2..4), 2, &mut out);
        assert_eq!(out, [75.0, 86.0]);
    }

    #[test]
    fn a_shape_that_does_not_fit_is_refused() {
        let result = std::panic::catch_unwind(|| {
            let mut out = vec![0.0; 3];
            let w = PairedWeights::new(&[1.0; 4], 2);
            matmul_pairs(&round_all(&[1.0; 4]), 2, w.view(), 2, &mut out);
        });
        assert!(result.is_err());
    }
}
