//! A small RGB canvas for PNG charts: lines, rectangles, dots and 5×7 pixel text.

use super::font::glyph;

pub(super) struct Canvas {
    width: usize,
    height: usize,
    pixels: Vec<u8>,
}

/// The width in pixels of `text` at `scale`.
pub(super) fn text_width(text: &str, scale: usize) -> f64 {
    (text.chars().count() * 6 * scale) as f64
}

impl Canvas {
    pub(super) fn new(width: usize, height: usize) -> Canvas {
        Canvas {
            width,
            height,
            pixels: vec![255; width * height * 3],
        }
    }

    fn set(&mut self, x: i64, y: i64, (r, g, b): (u8, u8, u8)) {
        if x < 0 || y < 0 || x as usize >= self.width || y as usize >= self.height {
            return;
        }
        let i = (y as usize * self.width + x as usize) * 3;
        self.pixels[i..i + 3].copy_from_slice(&[r, g, b]);
    }

    /// A line `thickness` pixels wide (Bresenham, with a square pen).
    pub(super) fn line(
        &mut self,
        x0: f64,
        y0: f64,
        x1: f64,
        y1: f64,
        colour: (u8, u8, u8),
        thickness: i64,
    ) {
        let (mut x, mut y) = (x0.round() as i64, y0.round() as i64);
        let (x1, y1) = (x1.round() as i64, y1.round() as i64);
        let (dx, dy) = ((x1 - x).abs(), -(y1 - y).abs());
        let (sx, sy) = (if x < x1 { 1 } else { -1 }, if y < y1 { 1 } else { -1 });
        let mut err = dx + dy;
        loop {
            for ox in 0..thickness {
                for oy in 0..thickness {
                    self.set(x + ox, y + oy, colour);
                }
            }
            if x == x1 && y == y1 {
                break;
            }
            let e2 = 2 * err;
            if e2 >= dy {
                err += dy;
                x += sx;
            }
            if e2 <= dx {
                err += dx;
                y += sy;
            }
        }
    }

    /// The outline of a rectangle.
    pub(super) fn rect(&mut self, x0: f64, y0: f64, x1: f64, y1: f64, colour: (u8, u8, u8)) {
        self.line(x0, y0, x1, y0, colour, 1);
        self.line(x1, y0, x1, y1, colour, 1);
        self.line(x1, y1, x0, y1, colour, 1);
        self.line(x0, y1, x0, y0, colour, 1);
    }

    /// A 5×5 dot.
    pub(super) fn dot(&mut self, x: f64, y: f64, colour: (u8, u8, u8)) {
        let (x, y) = (x.round() as i64, y.round() as i64);
        for ox in -2..=2 {
            for oy in -2..=2 {
                self.set(x + ox, y + oy, colour);
            }
        }
    }

    /// Text with its top-left corner at `(x, y)`, each font pixel `scale` pixels.
    pub(super) fn text(&mut self, x: f64, y: f64, text: &str, colour: (u8, u8, u8), scale: usize) {
        let (x, y) = (x.round() as i64, y.round() as i64);
        let s = scale as i64;
        for (i, c) in text.chars().enumerate() {
            let left = x + i as i64 * 6 * s;
            for (row, bits) in glyph(c).iter().enumerate() {
                for col in 0..5 {
                    if bits & (0x10 >> col) != 0 {
                        for ox in 0..s {
                            for oy in 0..s {
                                self.set(left + col * s + ox, y + row as i64 * s + oy, colour);
                            }
                        }
                    }
                }
            }
        }
    }

    /// Text centred on `x`, its top at `y`.
    pub(super) fn text_centered(
        &mut self,
        x: f64,
        y: f64,
        text: &str,
        colour: (u8, u8, u8),
        scale: usize,
    ) {
        self.text(x - text_width(text, scale) / 2.0, y, text, colour, scale);
    }

    /// The canvas as PNG bytes.
    pub(super) fn png(&self) -> Option<Vec<u8>> {
        use image::ImageEncoder as _;
        let mut out = Vec::new();
        image::codecs::png::PngEncoder::new(&mut out)
            .write_image(
                &self.pixels,
                self.width as u32,
                self.height as u32,
                image::ExtendedColorType::Rgb8,
            )
            .ok()?;
        Some(out)
    }
}
