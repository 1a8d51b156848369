//! Reading sample files: images (PNG, JPEG) and `.npy` arrays, as tensor data.
//!
//! Images become float tensors of shape `[C, H, W]` (channels first, burn's convolution
//! layout) with values in `[0, 1]`: `C` is 1 for `grey`, 3 for `rgb`; other colour types are
//! converted. `.npy` files (format versions 1–3, little-endian or byte-sized dtypes, C order)
//! keep their dtype and shape.

use super::DataError;
use std::path::Path;

use burn::tensor::{DType, TensorData};

/// The colour of images read.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Default,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Color {
    /// One channel.
    Grey,
    /// Three channels.
    #[default]
    Rgb,
}

/// Reads a PNG or JPEG file as `[C, H, W]` floats in `[0, 1]`; the error names the file.
pub fn read_image(path: &Path, color: Color) -> Result<TensorData, crate::data::DataError> {
    let img = image::ImageReader::open(path)
        .and_then(|r| r.with_guessed_format())
        .map_err(|e| DataError::caused(format!("cannot read image {}: {e}", path.display()), e))?
        .decode()
        .map_err(|e| {
            DataError::caused(format!("cannot decode image {}: {e}", path.display()), e)
        })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    let (channels, pixels) = match color {
        Color::Grey => (1, img.into_luma8().into_raw()),
        Color::Rgb => (3, img.into_rgb8().into_raw()),
    };
    let mut out = vec![0f32; channels * h * w];
    for (p, chunk) in pixels.chunks_exact(channels).enumerate() {
        for (c, v) in chunk.iter().enumerate() {
            out[c * h * w + p] = f32::from(*v) / 255.0;
        }
    }
    Ok(TensorData::new(out, [channels, h, w]))
}

/// Writes `[C, H, W]` (or `[H, W]`) values as a PNG file: floats in `[0, 1]`, integers as
/// pixel values in `[0, 255]` (values clamped).
pub fn write_png(path: &Path, data: &TensorData) -> Result<(), crate::data::DataError> {
    let shape = data.shape.to_vec();
    let (c, h, w) = match shape.as_slice() {
        [h, w] => (1, *h, *w),
        [c, h, w] if matches!(c, 1 | 3 | 4) => (*c, *h, *w),
        _ => {
            return Err(format!(
                "{}: an image is [C, H, W] with 1, 3 or 4 channels or [H, W], not {shape:?}",
                path.display()
            )
            .into());
        }
    };
    // Floats are in [0, 1]; integers are pixel values already (class masks, 8-bit images).
    let scale = if data.dtype.is_float() { 255.0 } else { 1.0 };
    // The common element types are read in place; the others are converted first.
    let pixels = match data.dtype {
        burn::tensor::DType::F32 => data.as_slice::<f32>().map(|v| to_pixels(v, c, true, scale)),
        burn::tensor::DType::F64 => data.as_slice::<f64>().map(|v| to_pixels(v, c, true, scale)),
        burn::tensor::DType::U8 => data.as_slice::<u8>().map(|v| to_pixels(v, c, true, scale)),
        _ => data
            .clone()
            .convert::<f64>()
            .as_slice::<f64>()
            .map(|v| to_pixels(v, c, true, scale)),
    }
    .map_err(|e| format!("{}: {e:?}", path.display()))?;
    let color = match c {
        1 => image::ExtendedColorType::L8,
        3 => image::ExtendedColorType::Rgb8,
        _ => image::ExtendedColorType::Rgba8,
    };
    image::save_buffer_with_format(
        path,
        &pixels,
        w as u32,
        h as u32,
        color,
        image::ImageFormat::Png,
    )
    .map_err(|e| DataError::caused(format!("cannot write {}: {e}", path.display()), e))
}

/// One image's values as 8-bit pixels, channels interleaved (the layout image encoders take):
/// each value times `scale`, rounded half up and clamped to `[0, 255]` (NaN gives 0).
/// `channels_first` says whether `values` is `[C, H, W]` (else `[H, W, C]`).
pub(crate) fn to_pixels<T: Copy + Into<f64>>(
    values: &[T],
    channels: usize,
    channels_first: bool,
    scale: f64,
) -> Vec<u8> {
    // Clamped first, so that `+ 0.5` and the truncating cast round half up without a call to
    // the C library's `round`.
    let to_u8 = |v: T| ((v.into() * scale).clamp(0.0, 255.0) + 0.5) as u8;
    if !channels_first || channels == 1 {
        return values.iter().map(|&v| to_u8(v)).collect();
    }
    let plane = values.len() / channels;
    let mut out = vec![0u8; values.len()];
    for (ch, values) in values.chunks_exact(plane.max(1)).enumerate() {
        for (o, &v) in out[ch..].iter_mut().step_by(channels).zip(values) {
            *o = to_u8(v);
        }
    }
    out
}

/// Reads a `.npy` file; the error names the file and what is wrong.
pub fn read_npy(path: &Path) -> Result<TensorData, crate::data::DataError> {
    let bytes = std::fs::read(path)
        .map_err(|e| DataError::caused(format!("cannot read {}: {e}", path.display()), e))?;
    parse_npy(&bytes).map_err(|e| format!("{}: {e}", path.display()).into())
}

fn parse_npy(bytes: &[u8]) -> Result<TensorData, String> {
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        return Err("not a .npy file (no \\x93NUMPY magic)".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy format version {v}")),
    };
    let header = bytes
        .get(start..start + header_len)
        .ok_or("the header is cut short")?;
    let header = std::str::from_utf8(header).map_err(|_| "the header is not text")?;
    let field = |name: &str| -> Result<&str, String> {
        let at = header
            .find(&format!("'{name}'"))
            .ok_or(format!("the header has no '{name}'"))?;
        let rest = header[at + name.len() + 2..].trim_start();
        Ok(rest.strip_prefix(':').unwrap_or(rest).trim_start())
    };
    let descr = field("descr")?;
    let descr = descr
        .strip_prefix('\'')
        .and_then(|d| d.split('\'').next())
        .ok_or("the header's descr is not a string")?;
    if field("fortran_order")?.starts_with("True") {
        return Err(
            "Fortran-ordered arrays are not read; save it with np.ascontiguousarray".into(),
        );
    }
    let shape_text = field("shape")?;
    let shape_text = shape_text
        .strip_prefix('(')
        .and_then(|s| s.split(')').next())
        .ok_or("the header's shape is not a tuple")?;
    let shape: Vec<usize> = shape_text
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad shape dimension `{s}`"))
        })
        .collect::<Result<_, _>>()?;
    let dtype = match descr {
        "<f4" => DType::F32,
        "<f8" => DType::F64,
        "<f2" => DType::F16,
        "<i8" => DType::I64,
        "<i4" => DType::I32,
        "<i2" => DType::I16,
        "|i1" => DType::I8,
        "|u1" => DType::U8,
        "<u2" => DType::U16,
        "<u4" => DType::U32,
        "<u8" => DType::U64,
        "|b1" => DType::Bool(burn::tensor::BoolStore::Native),
        other => {
            return Err(format!(
                "dtype `{other}` is not read (little-endian numbers and bool are)"
            ));
        }
    };
    let data = &bytes[start + header_len..];
    let expected = shape.iter().product::<usize>() * dtype.size();
    if data.len() != expected {
        return Err(format!(
            "shape {shape:?} of {descr} needs {expected} bytes of data, the file has {}",
            data.len()
        ));
    }
    Ok(TensorData::from_bytes_vec(data.to_vec(), shape, dtype))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn npy(descr: &str, shape: &str, data: &[u8]) -> Vec<u8> {
        let mut header =
            format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
        while (10 + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = b"\x93NUMPY\x01\x00".to_vec();
        out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        out.extend_from_slice(header.as_bytes());
        out.extend_from_slice(data);
        out
    }

    #[test]
    fn npy_table() {
        let f: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = parse_npy(&npy("<f4", "(2,)", &f)).unwrap();
        assert_eq!(t.shape.to_vec(), [2]);
        assert_eq!(t.to_vec::<f32>().unwrap(), [1.5, -2.0]);
        let i: Vec<u8> = [1i64, 2, 3, 4, 5, 6]
            .iter()
            .flat_map(|v| v.to_le_bytes())
            .collect();
        let t = parse_npy(&npy("<i8", "(2, 3)", &i)).unwrap();
        assert_eq!(t.shape.to_vec(), [2, 3]);
        assert_eq!(t.dtype, DType::I64);
        let t = parse_npy(&npy("|u1", "()", &[7])).unwrap();
        assert_eq!(t.shape.to_vec(), Vec::<usize>::new());
        for (bytes, expected) in [
            (b"hello world".to_vec(), "no \\x93NUMPY magic"),
            (npy(">f4", "(1,)", &[0; 4]), "dtype `>f4` is not read"),
            (
                npy("<f4", "(3,)", &[0; 4]),
                "needs 12 bytes of data, the file has 4",
            ),
        ] {
            let e = parse_npy(&bytes).unwrap_err().to_string();
            assert!(e.contains(expected), "{e}");
        }
    }

    #[test]
    fn images_round_trip_through_png() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        // 3 channels, 2×2: a distinct value per channel and pixel.
        let values: Vec<f32> = (0..12).map(|i| i as f32 / 11.0).collect();
        write_png(&path, &TensorData::new(values.clone(), [3, 2, 2])).unwrap();
        let back = read_image(&path, Color::Rgb).unwrap();
        assert_eq!(back.shape.to_vec(), [3, 2, 2]);
        for (a, b) in back.to_vec::<f32>().unwrap().iter().zip(&values) {
            assert!((a - b).abs() <= 0.5 / 255.0 + 1e-6, "{a} vs {b}");
        }
        let grey = read_image(&path, Color::Grey).unwrap();
        assert_eq!(grey.shape.to_vec(), [1, 2, 2]);
        std::fs::write(dir.path().join("bad.png"), b"not an image").unwrap();
        let e = read_image(&dir.path().join("bad.png"), Color::Rgb)
            .unwrap_err()
            .to_string();
        assert!(e.contains("bad.png"), "{e}");
        let e = write_png(&path, &TensorData::new(vec![0f32; 10], [5, 2])).map(|_| ());
        assert!(e.is_ok(), "[H, W] is an image");
        let e = write_png(&path, &TensorData::new(vec![0f32; 20], [5, 2, 2]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not [5, 2, 2]"), "{e}");
    }

    #[test]
    fn pixels_round_half_up_clamp_and_interleave() {
        // (value, pixel) at scale 255: rounding, clamping, NaN.
        for (v, want) in [
            (0.0f64, 0u8),
            (-0.3, 0),
            (0.4 / 255.0, 0),
            (0.5 / 255.0, 1),
            (0.6 / 255.0, 1),
            (254.5 / 255.0, 255),
            (1.0, 255),
            (1.7, 255),
            (f64::NAN, 0),
            (f64::INFINITY, 255),
            (f64::NEG_INFINITY, 0),
        ] {
            assert_eq!(to_pixels(&[v], 1, true, 255.0), [want], "{v}");
        }
        // Integers at scale 1, clamped.
        assert_eq!(to_pixels(&[0u8, 7, 255], 1, true, 1.0), [0, 7, 255]);
        // [C, H, W] interleaves; [H, W, C] is kept in order.
        let planes: Vec<f32> = vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        assert_eq!(to_pixels(&planes, 3, true, 1.0), [1, 3, 5, 2, 4, 6]);
        assert_eq!(to_pixels(&planes, 3, false, 1.0), [1, 2, 3, 4, 5, 6]);
        assert!(to_pixels::<f32>(&[], 3, true, 1.0).is_empty());
    }

    #[test]
    fn png_writing_reads_each_element_type() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.png");
        let back = |data: TensorData| {
            write_png(&path, &data).unwrap();
            read_image(&path, Color::Grey)
                .unwrap()
                .to_vec::<f32>()
                .unwrap()
        };
        let want = [0.0, 1.0 / 255.0, 1.0];
        let floats: [f32; 3] = [0.0, 1.0 / 255.0, 1.0];
        assert_eq!(back(TensorData::new(floats.to_vec(), [1, 3])), want);
        let doubles = floats.map(f64::from);
        assert_eq!(back(TensorData::new(doubles.to_vec(), [1, 3])), want);
        assert_eq!(back(TensorData::new(vec![0u8, 1, 255], [1, 3])), want);
        assert_eq!(back(TensorData::new(vec![0i64, 1, 300], [1, 3])), want);
    }
}
