//! TensorBoard event files: `events.out.tfevents.*` in TFRecord framing (length, masked
//! CRC-32C, Event protocol buffer, masked CRC-32C), with scalars as `simple_value`,
//! images as PNG-encoded `Summary.Image` and histograms as `HistogramProto`, so TensorBoard and its Python readers load them as they are.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::nucleotide::SummaryWriter;

/// Writes one TensorBoard event file. Every event is flushed as it is written, so TensorBoard
/// shows a run while it trains; writes take `&self`, so callbacks can share one writer.
#[derive(Debug)]
pub struct EventWriter {
    path: PathBuf,
    file: Mutex<BufWriter<File>>,
    /// The first error met while writing; later writes are skipped and it is reported once.
    error: Mutex<Option<(std::io::ErrorKind, String)>>,
}

impl EventWriter {
    /// Creates `dir` when needed and a new event file in it (TensorBoard's naming:
    /// `events.out.tfevents.<seconds>.<host>.<pid>.nc7`, `….nc7.2` for a second writer in the
    /// same second), starting with the file-version event.
    pub fn create(dir: &Path) -> std::io::Result<EventWriter> {
        std::fs::create_dir_all(dir)?;
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let host = crate::project::host_name();
        let base = format!(
            "events.out.tfevents.{}.{host}.{}.nc7",
            now.as_secs(),
            std::process::id()
        );
        let mut n = 1;
        let (path, file) = loop {
            let path = if n == 1 {
                dir.join(&base)
            } else {
                dir.join(format!("{base}.{n}"))
            };
            match File::options().create_new(true).write(true).open(&path) {
                Ok(f) => break (path, f),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => return Err(e),
            }
        };
        let writer = EventWriter {
            path,
            file: Mutex::new(BufWriter::new(file)),
            error: Mutex::new(None),
        };
        let mut event = event_header(0);
        field_bytes(&mut event, 3, b"brain.Event:2");
        writer.write_record(&event)?;
        Ok(writer)
    }

    /// The event file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Records a histogram of `values` under `tag` at `step`, in `buckets` equal-width buckets
    /// between the smallest and the largest value.
    pub fn histogram(&self, tag: &str, values: &[f64], step: u64, buckets: usize) {
        let finite: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
        let (min, max) = finite
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            });
        let mut histo = Vec::new();
        if finite.is_empty() {
            for (field, v) in [(1, 0.0), (2, 0.0), (3, 0.0), (4, 0.0), (5, 0.0)] {
                field_f64(&mut histo, field, v);
            }
        } else {
            let n = buckets.max(1);
            let width = (max - min) / n as f64;
            let mut counts = vec![0.0f64; n];
            for &v in &finite {
                let i = if width > 0.0 {
                    (((v - min) / width) as usize).min(n - 1)
                } else {
                    n - 1
                };
                counts[i] += 1.0;
            }
            let limits: Vec<f64> = (1..=n)
                .map(|i| if i == n { max } else { min + width * i as f64 })
                .collect();
            field_f64(&mut histo, 1, min);
            field_f64(&mut histo, 2, max);
            field_f64(&mut histo, 3, finite.len() as f64);
            field_f64(&mut histo, 4, finite.iter().sum());
            field_f64(&mut histo, 5, finite.iter().map(|v| v * v).sum());
            packed_f64(&mut histo, 6, &limits);
            packed_f64(&mut histo, 7, &counts);
        }
        let mut value = Vec::new();
        field_bytes(&mut value, 1, tag.as_bytes());
        field_bytes(&mut value, 5, &histo);
        self.write_summary(&value, step);
    }

    /// Records an image under `tag` at `step`: 8-bit pixels, rows of `width` × `channels`
    /// values (1 grey, 2 grey and alpha, 3 RGB, 4 RGBA), stored PNG-encoded.
    pub fn image(
        &self,
        tag: &str,
        pixels: &[u8],
        height: u32,
        width: u32,
        channels: u8,
        step: u64,
    ) -> Result<(), String> {
        use image::ImageEncoder as _;
        let color = match channels {
            1 => image::ExtendedColorType::L8,
            2 => image::ExtendedColorType::La8,
            3 => image::ExtendedColorType::Rgb8,
            4 => image::ExtendedColorType::Rgba8,
            n => {
                return Err(format!(
                    "image `{tag}` has {n} channels; 1, 2, 3 or 4 are drawn"
                ));
            }
        };
        let expected = height as usize * width as usize * channels as usize;
        if pixels.len() != expected {
            return Err(format!(
                "image `{tag}` has {} values, {height}×{width}×{channels} = {expected} expected",
                pixels.len()
            ));
        }
        let mut png = Vec::new();
        image::codecs::png::PngEncoder::new(&mut png)
            .write_image(pixels, width, height, color)
            .map_err(|e| format!("image `{tag}`: {e}"))?;
        let mut img = Vec::new();
        key(&mut img, 1, 0);
        varint(&mut img, u64::from(height));
        key(&mut img, 2, 0);
        varint(&mut img, u64::from(width));
        key(&mut img, 3, 0);
        varint(&mut img, u64::from(channels));
        field_bytes(&mut img, 4, &png);
        let mut value = Vec::new();
        field_bytes(&mut value, 1, tag.as_bytes());
        field_bytes(&mut value, 4, &img);
        self.write_summary(&value, step);
        Ok(())
    }

    /// Writes what is buffered to disk; the first write error met so far, if any.
    pub fn flush(&self) -> std::io::Result<()> {
        if let Err(e) = self.lock_file().flush() {
            self.remember(&e);
        }
        let first = self.error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        match first {
            None => Ok(()),
            Some((kind, message)) => Err(std::io::Error::new(
                kind,
                format!(
                    "cannot write TensorBoard events to `{}`: {message}",
                    self.path.display()
                ),
            )),
        }
    }

    fn write_summary(&self, value: &[u8], step: u64) {
        let mut summary = Vec::new();
        field_bytes(&mut summary, 1, value);
        let mut event = event_header(step);
        field_bytes(&mut event, 5, &summary);
        if let Err(e) = self.write_record(&event) {
            self.remember(&e);
        }
    }

    fn write_record(&self, data: &[u8]) -> std::io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut file = self.lock_file();
        file.write_all(&len)?;
        file.write_all(&masked_crc(&len).to_le_bytes())?;
        file.write_all(data)?;
        file.write_all(&masked_crc(data).to_le_bytes())?;
        file.flush()
    }

    fn lock_file(&self) -> std::sync::MutexGuard<'_, BufWriter<File>> {
        self.file.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, error: &std::io::Error) {
        let mut e = self.error.lock().unwrap_or_else(|p| p.into_inner());
        if e.is_none() {
            log::error!(
                "cannot write TensorBoard events to `{}`: {error}",
                self.path.display()
            );
            *e = Some((error.kind(), error.to_string()));
        }
    }
}

impl SummaryWriter for EventWriter {
    fn scalar(&self, tag: &str, value: f64, step: u64) {
        let mut v = Vec::new();
        field_bytes(&mut v, 1, tag.as_bytes());
        // simple_value is a 32-bit float in the Summary.Value message.
        key(&mut v, 2, 5);
        v.extend_from_slice(&(value as f32).to_le_bytes());
        self.write_summary(&v, step);
    }
}

impl Drop for EventWriter {
    fn drop(&mut self) {
        let _ = self.lock_file().flush();
    }
}

fn event_header(step: u64) -> Vec<u8> {
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let mut event = Vec::new();
    field_f64(&mut event, 1, wall);
    key(&mut event, 2, 0);
    varint(&mut event, step);
    event
}

// Protocol buffer encoding: just what Event, Summary and HistogramProto need.

fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn key(out: &mut Vec<u8>, field: u64, wire: u64) {
    varint(out, (field << 3) | wire);
}

fn field_f64(out: &mut Vec<u8>, field: u64, v: f64) {
    key(out, field, 1);
    out.extend_from_slice(&v.to_le_bytes());
}

fn field_bytes(out: &mut Vec<u8>, field: u64, bytes: &[u8]) {
    key(out, field, 2);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

fn packed_f64(out: &mut Vec<u8>, field: u64, values: &[f64]) {
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    field_bytes(out, field, &bytes);
}

/// CRC-32C (Castagnoli), masked as TFRecord does so that CRCs of CRCs stay well spread.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c(data);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn crc32c(data: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    (c >> 1) ^ 0x82f6_3b78
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !data.iter().fold(!0u32, |c, &b| {
        table[((c ^ u32::from(b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_known_values() {
        // RFC 3720's test vectors.
        assert_eq!(crc32c(&[0u8; 32]), 0x8a91_36aa);
        assert_eq!(crc32c(&[0xffu8; 32]), 0x62a8_ab43);
        assert_eq!(crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn varints() {
        let mut v = Vec::new();
        varint(&mut v, 300);
        assert_eq!(v, [0xac, 0x02]);
    }
}
