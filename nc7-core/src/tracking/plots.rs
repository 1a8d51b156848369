//! Line charts of a run's values over its steps, as SVG and PNG, drawn by nc7 itself (no
//! plotting library, no fonts to install): the loss, the learning rate and every evaluation
//! value and KPI, training and evaluation curves together, written to `training/plots/` at every
//! evaluation.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

mod font;
mod raster;

/// One curve: a label and `(step, value)` points; values that are not finite are left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// What the legend calls it (`train`, `eval`).
    pub label: String,
    /// The points, in step order.
    pub points: Vec<(f64, f64)>,
}

/// A chart: a title and its curves.
#[derive(Debug, Clone, PartialEq)]
pub struct Chart {
    /// The title (the value's name).
    pub title: String,
    /// The curves.
    pub curves: Vec<Curve>,
}

const WIDTH: f64 = 640.0;
const HEIGHT: f64 = 400.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 36.0;
const BOTTOM: f64 = 44.0;
/// Curve colours, in order.
const COLOURS: [(u8, u8, u8); 6] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
];

/// About five round tick values covering `[lo, hi]`.
fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    let span = (hi - lo).max(f64::EPSILON);
    let raw = span / 5.0;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|s| span / s <= 6.0)
        .unwrap_or(10.0 * magnitude);
    let mut t = (lo / step).ceil() * step;
    let mut out = Vec::new();
    while t <= hi + step * 1e-9 {
        out.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    out
}

/// A tick label: short, without trailing zeros.
fn label(v: f64) -> String {
    if v != 0.0 && (v.abs() >= 1e5 || v.abs() < 1e-3) {
        return format!("{v:.1e}");
    }
    let s = format!("{v:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    if s == "-0" { "0".into() } else { s.to_owned() }
}

/// Where the chart maps values: `(x0, x1, y0, y1)` of the data.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn of(chart: &Chart) -> Option<Frame> {
        let points = chart
            .curves
            .iter()
            .flat_map(|c| c.points.iter())
            .filter(|(x, y)| x.is_finite() && y.is_finite());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        let mut any = false;
        for &(x, y) in points {
            any = true;
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if !any {
            return None;
        }
        if (x1 - x0).abs() < f64::EPSILON {
            (x0, x1) = (x0 - 1.0, x1 + 1.0);
        }
        let pad = ((y1 - y0) * 0.05).max(y1.abs().max(1e-12) * 1e-6);
        Some(Frame {
            x: (x0, x1),
            y: (y0 - pad, y1 + pad),
        })
    }

    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - LEFT - RIGHT)
    }

    fn py(&self, y: f64) -> f64 {
        HEIGHT - BOTTOM - (y - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - TOP - BOTTOM)
    }
}

use crate::dna::xml;

impl Chart {
    /// The chart as SVG; `None` when it has no finite point.
    pub fn to_svg(&self) -> Option<String> {
        let f = Frame::of(self)?;
        let mut s = String::new();
        let _ = writeln!(
            s,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" font-family="Helvetica, Arial, sans-serif" font-size="11">"#
        );
        s.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        let _ = writeln!(
            s,
            r#"<text x="{}" y="22" font-size="14" text-anchor="middle" font-weight="bold">{}</text>"#,
            WIDTH / 2.0,
            xml(&self.title)
        );
        for t in ticks(f.y.0, f.y.1) {
            let y = f.py(t);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#e5e5e5"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
                WIDTH - RIGHT,
                LEFT - 6.0,
                y + 4.0,
                label(t)
            );
        }
        for t in ticks(f.x.0, f.x.1) {
            let x = f.px(t);
            let _ = writeln!(
                s,
                r##"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" stroke="#e5e5e5"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
                HEIGHT - BOTTOM,
                HEIGHT - BOTTOM + 16.0,
                label(t)
            );
        }
        let _ = writeln!(
            s,
            r##"<rect x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}" fill="none" stroke="#333"/><text x="{:.1}" y="{:.1}" text-anchor="middle">step</text>"##,
            WIDTH - LEFT - RIGHT,
            HEIGHT - TOP - BOTTOM,
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 8.0
        );
        for (i, c) in self.curves.iter().enumerate() {
            let (r, g, b) = COLOURS[i % COLOURS.len()];
            let pts: Vec<String> = c
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
                .collect();
            let _ = writeln!(
                s,
                r#"<polyline points="{}" fill="none" stroke="rgb({r},{g},{b})" stroke-width="2"/>"#,
                pts.join(" ")
            );
            if pts.len() == 1 {
                let _ = writeln!(
                    s,
                    r#"<circle cx="{}" r="3" fill="rgb({r},{g},{b})"/>"#,
                    pts[0].replace(',', "\" cy=\"")
                );
            }
            let ly = TOP + 14.0 + 16.0 * i as f64;
            let _ = writeln!(
                s,
                r#"<line x1="{:.1}" y1="{ly:.1}" x2="{:.1}" y2="{ly:.1}" stroke="rgb({r},{g},{b})" stroke-width="2"/><text x="{:.1}" y="{:.1}">{}</text>"#,
                WIDTH - RIGHT - 110.0,
                WIDTH - RIGHT - 90.0,
                WIDTH - RIGHT - 84.0,
                ly + 4.0,
                xml(&c.label)
            );
        }
        s.push_str("</svg>\n");
        Some(s)
    }

    /// The chart as a PNG image (the same drawing, with nc7's 5×7 pixel font); `None` when it
    /// has no finite point.
    pub fn to_png(&self) -> Option<Vec<u8>> {
        let f = Frame::of(self)?;
        let mut c = raster::Canvas::new(WIDTH as usize, HEIGHT as usize);
        c.text_centered(WIDTH / 2.0, 14.0, &self.title, (0, 0, 0), 2);
        for t in ticks(f.y.0, f.y.1) {
            let y = f.py(t);
            c.line(LEFT, y, WIDTH - RIGHT, y, (229, 229, 229), 1);
            let text = label(t);
            c.text(
                LEFT - 8.0 - raster::text_width(&text, 1),
                y - 3.0,
                &text,
                (0, 0, 0),
                1,
            );
        }
        for t in ticks(f.x.0, f.x.1) {
            let x = f.px(t);
            c.line(x, TOP, x, HEIGHT - BOTTOM, (229, 229, 229), 1);
            c.text_centered(x, HEIGHT - BOTTOM + 8.0, &label(t), (0, 0, 0), 1);
        }
        c.rect(LEFT, TOP, WIDTH - RIGHT, HEIGHT - BOTTOM, (51, 51, 51));
        c.text_centered(
            (LEFT + WIDTH - RIGHT) / 2.0,
            HEIGHT - 16.0,
            "step",
            (0, 0, 0),
            1,
        );
        for (i, curve) in self.curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            let pts: Vec<(f64, f64)> = curve
                .points
                .iter()
                .filter(|(x, y)| x.is_finite() && y.is_finite())
                .map(|&(x, y)| (f.px(x), f.py(y)))
                .collect();
            for w in pts.windows(2) {
                c.line(w[0].0, w[0].1, w[1].0, w[1].1, colour, 2);
            }
            if let [only] = pts[..] {
                c.dot(only.0, only.1, colour);
            }
            let ly = TOP + 14.0 + 16.0 * i as f64;
            c.line(
                WIDTH - RIGHT - 110.0,
                ly,
                WIDTH - RIGHT - 90.0,
                ly,
                colour,
                2,
            );
            c.text(WIDTH - RIGHT - 84.0, ly - 3.0, &curve.label, (0, 0, 0), 1);
        }
        c.png()
    }
}

/// Writes `<dir>/<name>.svg` and `.png` for every chart (`/` in a name becomes `_`); a chart
/// without a finite point is skipped.
pub fn write_charts(dir: &Path, charts: &[Chart]) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    for chart in charts {
        let name: String = chart
            .title
            .chars()
            .map(|c| {
                if c.is_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if let (Some(svg), Some(png)) = (chart.to_svg(), chart.to_png()) {
            std::fs::write(dir.join(format!("{name}.svg")), svg)?;
            std::fs::write(dir.join(format!("{name}.png")), png)?;
        }
    }
    Ok(())
}

/// A run's values over its steps, by mode (`train`, `eval`) and name, kept in
/// `training/plots/values.json` so that a continued run's charts start where it started.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlotValues(pub BTreeMap<String, BTreeMap<String, Vec<(u64, f64)>>>);

impl PlotValues {
    /// The values in `file` up to `step` (for a continued run), or none.
    pub fn open(file: &Path, up_to_step: Option<u64>) -> PlotValues {
        let Some(step) = up_to_step else {
            return PlotValues::default();
        };
        let mut values: PlotValues = std::fs::read_to_string(file)
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok())
            .unwrap_or_default();
        for series in values.0.values_mut().flat_map(|m| m.values_mut()) {
            series.retain(|(s, _)| *s <= step);
        }
        values
    }

    /// Adds values of `mode` at `step` (not-a-number values are stored as skipped).
    pub fn add<'a>(
        &mut self,
        mode: &str,
        step: u64,
        values: impl IntoIterator<Item = (&'a str, f64)>,
    ) {
        let m = self.0.entry(mode.to_owned()).or_default();
        for (k, v) in values {
            if v.is_finite() {
                m.entry(k.to_owned()).or_default().push((step, v));
            }
        }
    }

    /// One chart per name, its training and evaluation curves together.
    pub fn charts(&self) -> Vec<Chart> {
        let mut names: Vec<&String> = self.0.values().flat_map(|m| m.keys()).collect();
        names.sort();
        names.dedup();
        names
            .into_iter()
            .map(|name| Chart {
                title: name.clone(),
                curves: self
                    .0
                    .iter()
                    .filter_map(|(mode, m)| {
                        m.get(name).map(|pts| Curve {
                            label: mode.clone(),
                            points: pts.iter().map(|&(s, v)| (s as f64, v)).collect(),
                        })
                    })
                    .collect(),
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_labels_short() {
        assert_eq!(
            ticks(0.0, 1.0),
            [0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        assert_eq!(label(0.30000000000000004), "0.3");
        assert_eq!(label(150.0), "150");
        assert_eq!(label(2e-5), "2.0e-5");
    }

    #[test]
    fn charts_draw_as_svg_and_png() {
        let mut v = PlotValues::default();
        for s in 1..=10u64 {
            v.add(
                "train",
                s,
                [("loss", 1.0 / s as f64), ("learning_rate", 0.01)],
            );
        }
        v.add("eval", 10, [("loss", 0.2), ("kpi/acc/f1", f64::NAN)]);
        let charts = v.charts();
        let names: Vec<&str> = charts.iter().map(|c| c.title.as_str()).collect();
        assert_eq!(names, ["learning_rate", "loss"]);
        let loss = &charts[1];
        assert_eq!(loss.curves.len(), 2);
        let svg = loss.to_svg().unwrap();
        assert!(svg.contains("<polyline") && svg.contains(">eval<"), "{svg}");
        let png = loss.to_png().unwrap();
        let img = image::load_from_memory(&png).unwrap();
        assert_eq!((img.width(), img.height()), (640, 400));
        // Curves are drawn: some pixels have the first curve's colour.
        let rgb = img.to_rgb8();
        assert!(rgb.pixels().any(|p| p.0 == [31, 119, 180]));
        let dir = tempfile::tempdir().unwrap();
        write_charts(dir.path(), &charts).unwrap();
        assert!(
            dir.path().join("loss.png").is_file() && dir.path().join("learning_rate.svg").is_file()
        );
        // A continued run keeps the values up to its checkpoint.
        let file = dir.path().join("values.json");
        std::fs::write(&file, serde_json::to_string(&v).unwrap()).unwrap();
        let back = PlotValues::open(&file, Some(5));
        assert_eq!(back.0["train"]["loss"].len(), 5);
        assert!(back.0["eval"].get("loss").is_none_or(|s| s.is_empty()));
        assert_eq!(PlotValues::open(&file, None), PlotValues::default());
    }
}
