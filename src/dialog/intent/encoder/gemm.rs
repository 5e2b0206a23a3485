//! `out += a · w` for the dense layers (the pooling and those after it),
//! `a` of rows × `k` and `w` of `k` × `cols`, both row major. The
//! branches' products, the bulk of the arithmetic, are
//! [`super::pairs`]'s, in bfloat16.
//!
//! The weights are half-precision numbers ([`Weights`]). With AVX2, FMA and
//! F16C (checked at run time) and `cols` a multiple of 64 (all of these
//! matrices), each is widened as it is loaded, and a block of
//! `out` is kept in registers across the whole of `k`: six rows by 16
//! columns, each step reading two vectors of `w` and six numbers of `a` for
//! twelve fused multiply-adds, so the loop is bound by arithmetic rather
//! than by loads and stores of `out`. The rows
//! left over take narrower, wider blocks (4 × 16, 2 × 32, 1 × 64) so that
//! there are always eight independent sums in flight. Elsewhere a portable
//! loop computes the same sums in another order.

/// A matrix's weights, kept as half-precision numbers (IEEE binary16): half
/// the bytes to bring from memory on every message, which is what a short
/// message waits for (the encoder's 12 MB of weights do not stay in the
/// second-level cache between messages). They start on a 64-byte boundary
/// so that a block of 16 columns is half a cache line, never parts of two.
/// The portable loop widens the same numbers, so that both loops multiply
/// by the same values.
pub struct Weights {
    halves: Vec<u16>,
    start: usize,
}

impl Weights {
    pub fn new(numbers: &[f32]) -> Self {
        let mut halves = Vec::<u16>::with_capacity(numbers.len() + 32);
        let start = halves.as_ptr().align_offset(64).min(32);
        halves.resize(start, 0);
        halves.extend(numbers.iter().map(|&x| half::f16::from_f32(x).to_bits()));
        Self { halves, start }
    }

    pub fn view(&self) -> View<'_> {
        View {
            halves: &self.halves[self.start..],
        }
    }
}

/// Some of a [`Weights`]' numbers, row major.
#[derive(Clone, Copy)]
pub struct View<'a> {
    halves: &'a [u16],
}

impl View<'_> {
    fn len(&self) -> usize {
        self.halves.len()
    }
}

/// `out += a · w`; `a.len()` is a multiple of `k`, `w` holds at least
/// `k · cols` numbers and `out` at least `a.len() / k · cols`.
pub fn matmul(a: &[f32], k: usize, w: View, cols: usize, out: &mut [f32]) {
    if k == 0 {
        return;
    }
    let rows = a.len() / k;
    assert!(
        a.len() == rows * k && w.len() >= k * cols && out.len() >= rows * cols,
        "matmul: {rows}×{k} · {k}×{cols} does not fit the slices given"
    );
    #[cfg(target_arch = "x86_64")]
    if cols.is_multiple_of(64)
        && std::arch::is_x86_feature_detected!("avx2")
        && std::arch::is_x86_feature_detected!("fma")
        && std::arch::is_x86_feature_detected!("f16c")
    {
        // SAFETY: the CPU has the three features, checked just above, and
        // the slices' lengths were checked against the shapes.
        unsafe {
            fma::matmul(
                a.as_ptr(),
                rows,
                k,
                w.halves.as_ptr(),
                cols,
                out.as_mut_ptr(),
            )
        };
        return;
    }
    portable(a, k, w.halves, cols, out);
}

/// Row by row of `w`, widened once and added to every row of `out` times
/// the matching number of `a`.
fn portable(a: &[f32], k: usize, w: &[u16], cols: usize, out: &mut [f32]) {
    let rows = a.len() / k;
    let mut widened = vec![0.0f32; cols];
    for i in 0..k {
        for (x, &h) in widened.iter_mut().zip(&w[i * cols..(i + 1) * cols]) {
            *x = half::f16::from_bits(h).to_f32();
        }
        for r in 0..rows {
            let v = a[r * k + i];
            for (o, &x) in out[r * cols..(r + 1) * cols].iter_mut().zip(&widened) {
                *o += x * v;
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod fma {
    use std::arch::x86_64::*;

    /// # Safety
    /// The CPU has AVX2, FMA and F16C; `a` holds `rows · k` numbers, `w` `k · cols`
    /// and `out` `rows · cols`; `cols` is a multiple of 64.
    #[target_feature(enable = "avx2,fma,f16c")]
    pub unsafe fn matmul(
        a: *const f32,
        rows: usize,
        k: usize,
        w: *const u16,
        cols: usize,
        out: *mut f32,
    ) {
        let m = Shape { a, k, w, cols, out };
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
        a: *const f32,
        k: usize,
        w: *const u16,
        cols: usize,
        out: *mut f32,
    }

    impl Shape {
        /// Rows `r..r + R` of `out`, in blocks of `V` vectors (8 columns each).
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn band<const R: usize, const V: usize>(&self, r: usize) {
            let mut j = 0;
            while j < self.cols {
                self.block::<R, V>(r, j);
                j += 8 * V;
            }
        }

        /// The `R` × `8V` block of `out` at row `r`, column `j`, summed in
        /// registers over all of `k`.
        #[target_feature(enable = "avx2,fma,f16c")]
        #[inline]
        unsafe fn block<const R: usize, const V: usize>(&self, r: usize, j: usize) {
            let mut sums = [[_mm256_setzero_ps(); V]; R];
            for (i, row) in sums.iter_mut().enumerate() {
                for (v, s) in row.iter_mut().enumerate() {
                    *s = _mm256_loadu_ps(self.out.add((r + i) * self.cols + j + 8 * v));
                }
            }
            for p in 0..self.k {
                let mut ws = [_mm256_setzero_ps(); V];
                for (v, x) in ws.iter_mut().enumerate() {
                    let at = self.w.add(p * self.cols + j + 8 * v);
                    *x = _mm256_cvtph_ps(_mm_loadu_si128(at.cast()));
                }
                for (i, row) in sums.iter_mut().enumerate() {
                    let x = _mm256_set1_ps(*self.a.add((r + i) * self.k + p));
                    for (s, w) in row.iter_mut().zip(&ws) {
                        *s = _mm256_fmadd_ps(x, *w, *s);
                    }
                }
            }
            for (i, row) in sums.iter().enumerate() {
                for (v, s) in row.iter().enumerate() {
                    _mm256_storeu_ps(self.out.add((r + i) * self.cols + j + 8 * v), *s);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every row count the blocks split differently, against the portable
    /// loop on the same numbers.
    #[test]
    fn the_blocked_product_equals_the_plain_one_for_any_row_count() {
        let (k, cols) = (37, 128);
        let w: Vec<f32> = (0..k * cols)
            .map(|i| ((i * 7919) % 97) as f32 / 97.0 - 0.5)
            .collect();
        let w = Weights::new(&w);
        for rows in 0..=13 {
            let a: Vec<f32> = (0..rows * k)
                .map(|i| ((i * 104729) % 89) as f32 / 89.0 - 0.5)
                .collect();
            let start: Vec<f32> = (0..rows * cols).map(|i| (i % 5) as f32).collect();
            let mut fast = start.clone();
            matmul(&a, k, w.view(), cols, &mut fast);
            let mut plain = start.clone();
            portable(&a, k, w.view().halves, cols, &mut plain);
            for (f, p) in fast.iter().zip(&plain) {
                assert!((f - p).abs() < 1e-4, "{rows} rows: {f} against {p}");
            }
            if rows > 0 {
                assert_ne!(fast, start, "{rows} rows: nothing was added");
            }
        }
    }

    #[test]
    fn a_narrow_product_is_added_to_what_out_held() {
        // [1 2; 3 4] · [1 2; 3 4] = [7 10; 15 22], plus 1 already in out.
        let mut out = vec![1.0; 4];
        let w = Weights::new(&[1.0, 2.0, 3.0, 4.0]);
        matmul(&[1.0, 2.0, 3.0, 4.0], 2, w.view(), 2, &mut out);
        assert_eq!(out, [8.0, 11.0, 16.0, 23.0]);
    }

    #[test]
    fn a_shape_that_does_not_fit_is_refused() {
        let result = std::panic::catch_unwind(|| {
            let mut out = vec![0.0; 3];
            matmul(&[1.0; 4], 2, Weights::new(&[1.0; 4]).view(), 2, &mut out);
        });
        assert!(result.is_err());
    }
}
