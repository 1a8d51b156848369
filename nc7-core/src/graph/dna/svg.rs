//! The helix drawn as SVG by nc7 itself (no Graphviz needed): the handler's inputs in the first
//! column, each nucleotide one column right of its furthest inbound node, boxes coloured by
//! kind, edges labelled with the keys they carry (`generated → mapped`).

use std::fmt::Write as _;

use super::{EdgeKeys, Helix, kind_colour};

const BOX_HEIGHT: f64 = 44.0;
const ROW_GAP: f64 = 28.0;
const COLUMN_GAP: f64 = 150.0;
const MARGIN: f64 = 20.0;
const CHAR_WIDTH: f64 = 7.2;
/// The height of the lane of an edge that skips columns.
const LANE: f64 = 16.0;
/// Key lines shown on an edge before `+N more`.
const MAX_LABEL_LINES: usize = 3;

/// Text escaped for XML (SVG text and attributes).
pub(crate) fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Helix {
    /// The helix as a standalone SVG picture.
    pub fn to_svg(&self) -> String {
        let total = self.incoming_len() + self.nodes.len();
        // Columns: inputs in 0, a nucleotide one right of its furthest inbound node (run order
        // visits inbound nodes first).
        let mut column = vec![0usize; total];
        for &i in &self.order {
            let node = self.node(i).expect("order holds nucleotides");
            column[i] = node
                .inbound
                .iter()
                .map(|&j| column[j] + 1)
                .max()
                .unwrap_or(1);
        }
        let columns = column.iter().copied().max().unwrap_or(0) + 1;
        // Rows: inputs in their order; nucleotides by the mean row of their inbound nodes, then
        // by name, so the picture does not depend on the order configs were read in.
        let mut row = vec![0.0f64; total];
        let mut members: Vec<Vec<usize>> = vec![Vec::new(); columns];
        for (i, r) in row.iter_mut().enumerate().take(self.incoming_len()) {
            members[0].push(i);
            *r = i as f64;
        }
        for (c, slot) in members.iter_mut().enumerate().skip(1) {
            let mut nodes: Vec<(f64, &str, usize)> = self
                .order
                .iter()
                .filter(|&&i| column[i] == c)
                .map(|&i| {
                    let inbound = &self.node(i).expect("a nucleotide").inbound;
                    let mean = if inbound.is_empty() {
                        0.0
                    } else {
                        inbound.iter().map(|&j| row[j]).sum::<f64>() / inbound.len() as f64
                    };
                    (mean, self.name(i), i)
                })
                .collect();
            nodes.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(b.1)));
            for (r, (_, _, i)) in nodes.into_iter().enumerate() {
                row[i] = r as f64;
                slot.push(i);
            }
        }
        let label = |i: usize| -> (String, String) {
            let spec = self.spec(i);
            let second = if i < self.incoming_len() {
                "input".to_owned()
            } else {
                spec.kind.to_string()
            };
            (spec.name.clone(), second)
        };
        let width_of = |i: usize| {
            let (a, b) = label(i);
            (a.chars().count().max(b.chars().count()) as f64 * CHAR_WIDTH + 24.0).max(90.0)
        };
        let column_width: Vec<f64> = members
            .iter()
            .map(|m| m.iter().map(|&i| width_of(i)).fold(90.0, f64::max))
            .collect();
        let mut column_x = vec![MARGIN; columns];
        for c in 1..columns {
            column_x[c] = column_x[c - 1] + column_width[c - 1] + COLUMN_GAP;
        }
        let rows = members.iter().map(Vec::len).max().unwrap_or(1).max(1);
        let edges = self.edge_keys();
        // An edge that skips columns runs in a lane of its own above the boxes, so that it
        // crosses none of them.
        let long = edges
            .iter()
            .filter(|e| column[e.to] > column[e.from] + 1)
            .count();
        let top = MARGIN + LANE * long as f64;
        let width = column_x[columns - 1] + column_width[columns - 1] + MARGIN;
        let height = top + MARGIN + rows as f64 * (BOX_HEIGHT + ROW_GAP) - ROW_GAP;
        let at = |i: usize| -> (f64, f64, f64) {
            let c = column[i];
            (
                column_x[c],
                top + row[i] * (BOX_HEIGHT + ROW_GAP),
                column_width[c],
            )
        };
        let mut svg = String::new();
        let _ = writeln!(
            svg,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="Helvetica, Arial, sans-serif">"#
        );
        svg.push_str(
            "<defs><marker id=\"arrow\" viewBox=\"0 0 10 10\" refX=\"10\" refY=\"5\" markerWidth=\"7\" markerHeight=\"7\" orient=\"auto\"><path d=\"M0,0 L10,5 L0,10 z\" fill=\"#555\"/></marker></defs>\n",
        );
        svg.push_str("<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
        let mut lane = 0;
        for EdgeKeys { from, to, keys } in edges {
            let (fx, fy, fw) = at(from);
            let (tx, ty, _) = at(to);
            let (x1, y1, x2, y2) = (fx + fw, fy + BOX_HEIGHT / 2.0, tx, ty + BOX_HEIGHT / 2.0);
            let label_at = if column[to] > column[from] + 1 {
                lane += 1;
                let y = top - LANE * lane as f64 + LANE / 2.0 - 6.0;
                let _ = writeln!(
                    svg,
                    r##"<path d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y:.1} {:.1},{y:.1} L{:.1},{y:.1} C{:.1},{y:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#888" stroke-width="1.2" marker-end="url(#arrow)"/>"##,
                    x1 + 30.0,
                    x1 + 30.0,
                    x1 + 60.0,
                    x2 - 60.0,
                    x2 - 30.0,
                    x2 - 30.0
                );
                ((x1 + x2) / 2.0, y - 3.0, true)
            } else {
                let bend = (x2 - x1).abs() / 2.0;
                let _ = writeln!(
                    svg,
                    r##"<path d="M{x1:.1},{y1:.1} C{:.1},{y1:.1} {:.1},{y2:.1} {x2:.1},{y2:.1}" fill="none" stroke="#555" stroke-width="1.2" marker-end="url(#arrow)"/>"##,
                    x1 + bend,
                    x2 - bend
                );
                ((x1 + x2) / 2.0, (y1 + y2) / 2.0, false)
            };
            let mut lines: Vec<String> = keys
                .iter()
                .map(|(g, m)| {
                    if g == m {
                        g.clone()
                    } else {
                        format!("{g} → {m}")
                    }
                })
                .collect();
            if self.spec(from).signature.dynamic_generated {
                lines.push("(dynamic keys)".into());
            }
            let (mx, y, on_lane) = label_at;
            if on_lane {
                // One line on a lane: the keys side by side.
                let joined = lines.join(", ");
                lines = vec![if joined.chars().count() > 60 {
                    format!("{}…", joined.chars().take(59).collect::<String>())
                } else {
                    joined
                }];
            } else if lines.len() > MAX_LABEL_LINES {
                let more = lines.len() - (MAX_LABEL_LINES - 1);
                lines.truncate(MAX_LABEL_LINES - 1);
                lines.push(format!("+{more} more"));
            }
            let my = if on_lane {
                y
            } else {
                y - 4.0 * lines.len() as f64
            };
            for (k, line) in lines.iter().enumerate() {
                let _ = writeln!(
                    svg,
                    r##"<text x="{mx:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#333">{}</text>"##,
                    my + 11.0 * k as f64,
                    xml(line)
                );
            }
        }
        for i in 0..total {
            if i >= self.incoming_len() && !self.order.contains(&i) {
                continue;
            }
            let (x, y, w) = at(i);
            let fill = if i < self.incoming_len() {
                "#dddddd"
            } else {
                kind_colour(self.spec(i).kind)
            };
            let (name, second) = label(i);
            let _ = writeln!(
                svg,
                r##"<g><rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{BOX_HEIGHT}" rx="8" fill="{fill}" stroke="#333"/><text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle" font-weight="bold">{}</text><text x="{:.1}" y="{:.1}" font-size="10" text-anchor="middle" fill="#333">{}</text></g>"##,
                x + w / 2.0,
                y + 19.0,
                xml(&name),
                x + w / 2.0,
                y + 34.0,
                xml(&second)
            );
        }
        svg.push_str("</svg>\n");
        svg
    }
}
