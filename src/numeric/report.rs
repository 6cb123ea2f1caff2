//! `--report out.html`: one self-contained HTML page (inline SVG and CSS, no script, no
//! network) with the model summary, a per-layer SQNR bar chart, and each quantized
//! tensor's histogram with its clipping range (the seed's Fig. 2).
//!
//! Histograms are of the float values themselves: activations as the float model
//! computes them on the data the command ran (every observer kind, not only histogram
//! observers, so the page is the same whatever `--observer` said), weights from their
//! initializers. The clipping range is the one the quantized model uses, read from its
//! QuantizeLinear/DequantizeLinear: [(qmin − zp)·scale, (qmax − zp)·scale]; for
//! per-channel weights the union of the channels' ranges (with the narrowest channel's
//! range given in the caption). Bar heights are on a square-root scale, so that the
//! sparse tails that decide the clipping stay visible next to the peak.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::{Context, Result};

/// Values kept per tensor to draw its histogram (a prefix of the data: the first
/// batches); the minimum and maximum are exact over all of it.
const KEEP: usize = 1 << 16;
/// Bins per histogram.
const BINS: usize = 64;

/// Accumulates one tensor's values.
#[derive(Clone, Debug)]
pub struct HistAcc {
    pub min: f32,
    pub max: f32,
    pub n: u64,
    kept: Vec<f32>,
}

impl Default for HistAcc {
    fn default() -> Self {
        HistAcc {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
            n: 0,
            kept: vec![],
        }
    }
}

impl HistAcc {
    pub fn add(&mut self, x: &[f32]) {
        for &v in x {
            if v.is_finite() {
                self.min = self.min.min(v);
                self.max = self.max.max(v);
            }
        }
        self.n += x.len() as u64;
        let room = KEEP.saturating_sub(self.kept.len());
        self.kept
            .extend(x.iter().copied().filter(|v| v.is_finite()).take(room));
    }

    /// The histogram over the hull of the data and the clipping range.
    pub fn finish(
        &self,
        name: &str,
        kind: &str,
        clip: Option<(f64, f64)>,
        note: String,
    ) -> Histogram {
        let (mut lo, mut hi) = (self.min as f64, self.max as f64);
        if !lo.is_finite() || !hi.is_finite() {
            (lo, hi) = (0.0, 0.0);
        }
        if let Some((a, b)) = clip {
            lo = lo.min(a);
            hi = hi.max(b);
        }
        if hi <= lo {
            hi = lo + 1e-6;
        }
        let mut counts = vec![0u64; BINS];
        let mut outside = 0u64;
        for &v in &self.kept {
            let v = v as f64;
            let b = (((v - lo) / (hi - lo)) * BINS as f64).floor() as isize;
            counts[b.clamp(0, BINS as isize - 1) as usize] += 1;
            if let Some((a, c)) = clip {
                if v < a || v > c {
                    outside += 1;
                }
            }
        }
        Histogram {
            name: name.to_string(),
            kind: kind.to_string(),
            counts,
            lo,
            hi,
            clip,
            min: self.min as f64,
            max: self.max as f64,
            n: self.n,
            sampled: self.kept.len() as u64,
            outside,
            note,
        }
    }
}

/// One tensor's histogram.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Histogram {
    pub name: String,
    /// `activation` or `weight`.
    pub kind: String,
    pub counts: Vec<u64>,
    /// The range the bins cover.
    pub lo: f64,
    pub hi: f64,
    /// The clipping range of the quantized model.
    pub clip: Option<(f64, f64)>,
    pub min: f64,
    pub max: f64,
    /// Values seen, and values binned.
    pub n: u64,
    pub sampled: u64,
    /// Binned values outside the clipping range.
    pub outside: u64,
    /// Extra caption (per-channel details).
    pub note: String,
}

/// A bar of the SQNR chart.
#[derive(Clone, Debug)]
pub struct Bar {
    pub label: String,
    pub sqnr_db: f64,
    /// Second series (e.g. "all but this unit"), drawn thinner.
    pub second: Option<f64>,
}

/// The page's content.
#[derive(Clone, Debug, Default)]
pub struct Page {
    pub title: String,
    /// Preformatted text blocks: (heading, text).
    pub sections: Vec<(String, String)>,
    pub chart_title: String,
    /// Legend of the first and second bar series.
    pub legend: (String, Option<String>),
    pub bars: Vec<Bar>,
    pub histograms: Vec<Histogram>,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn fmt_db(x: f64) -> String {
    if x.is_infinite() && x > 0.0 {
        "∞".into()
    } else if x.is_infinite() {
        "−∞".into()
    } else {
        format!("{x:.1}")
    }
}

/// Color of an SQNR: red below 20 dB, amber below 30 dB, green above.
fn color(db: f64) -> &'static str {
    if db < 20.0 {
        "#d9534f"
    } else if db < 30.0 {
        "#f0ad4e"
    } else {
        "#5cb85c"
    }
}

impl Page {
    fn chart_svg(&self) -> String {
        if self.bars.is_empty() {
            return "<p>(no figures)</p>".into();
        }
        let row = 18.0;
        let label_w = 330.0;
        let plot_w = 420.0;
        let h = self.bars.len() as f64 * row + 40.0;
        // Scale: 0 .. max finite SQNR (at least 40 dB); infinite bars are full length.
        let finite_max = self
            .bars
            .iter()
            .flat_map(|b| std::iter::once(b.sqnr_db).chain(b.second))
            .filter(|x| x.is_finite())
            .fold(40.0f64, f64::max);
        let scale = |x: f64| -> f64 {
            if x.is_infinite() {
                if x > 0.0 {
                    plot_w
                } else {
                    0.0
                }
            } else {
                (x.max(0.0) / finite_max * plot_w).min(plot_w)
            }
        };
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img" aria-label="{t}">"#,
            w = label_w + plot_w + 70.0,
            t = esc(&self.chart_title)
        );
        // Grid every 10 dB.
        let mut g = 0.0;
        while g <= finite_max + 1e-9 {
            let x = label_w + scale(g);
            let _ = write!(
                s,
                r##"<line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{x:.1}" y="{ty:.1}" font-size="10" text-anchor="middle" fill="#555">{g}</text>"##,
                y = h - 28.0,
                ty = h - 16.0
            );
            g += 10.0;
        }
        let _ = write!(
            s,
            r##"<text x="{x:.1}" y="{y:.1}" font-size="11" text-anchor="middle" fill="#333">SQNR (dB)</text>"##,
            x = label_w + plot_w / 2.0,
            y = h - 3.0
        );
        for (i, b) in self.bars.iter().enumerate() {
            let y = i as f64 * row + 4.0;
            let label: String = if b.label.chars().count() > 52 {
                let tail: String = b
                    .label
                    .chars()
                    .rev()
                    .take(50)
                    .collect::<Vec<_>>()
                    .into_iter()
                    .rev()
                    .collect();
                format!("…{tail}")
            } else {
                b.label.clone()
            };
            let _ = write!(
                s,
                r##"<text x="{lx:.1}" y="{ty:.1}" font-size="11" text-anchor="end" fill="#222"><title>{full}</title>{label}</text>"##,
                lx = label_w - 6.0,
                ty = y + 12.0,
                full = esc(&b.label),
                label = esc(&label)
            );
            let w = scale(b.sqnr_db);
            let _ = write!(
                s,
                r#"<rect x="{label_w}" y="{y:.1}" width="{w:.1}" height="{bh:.1}" fill="{c}"><title>{l}: {v} dB</title></rect>"#,
                bh = if b.second.is_some() { 9.0 } else { 14.0 },
                c = color(b.sqnr_db),
                l = esc(&b.label),
                v = fmt_db(b.sqnr_db)
            );
            if let Some(sec) = b.second {
                let _ = write!(
                    s,
                    r##"<rect x="{label_w}" y="{y2:.1}" width="{w2:.1}" height="5" fill="#337ab7"><title>{l}: {v} dB</title></rect>"##,
                    y2 = y + 9.5,
                    w2 = scale(sec),
                    l = esc(&b.label),
                    v = fmt_db(sec)
                );
            }
            let _ = write!(
                s,
                r##"<text x="{tx:.1}" y="{ty:.1}" font-size="10" fill="#333">{v}</text>"##,
                tx = label_w + w + 4.0,
                ty = y + 11.0,
                v = fmt_db(b.sqnr_db)
            );
        }
        s += "</svg>";
        s
    }

    fn histogram_svg(h: &Histogram) -> String {
        let (w, ht, pad) = (360.0, 130.0, 22.0);
        let plot_h = ht - pad - 6.0;
        let maxc = h.counts.iter().copied().max().unwrap_or(0).max(1) as f64;
        let bw = w / h.counts.len() as f64;
        let xof = |v: f64| (v - h.lo) / (h.hi - h.lo) * w;
        let mut s = format!(
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{ht}" role="img" aria-label="histogram of {n}">"#,
            n = esc(&h.name)
        );
        if let Some((a, b)) = h.clip {
            // Shade what falls outside the clipping range.
            let (xa, xb) = (xof(a).clamp(0.0, w), xof(b).clamp(0.0, w));
            let _ = write!(
                s,
                r##"<rect x="0" y="0" width="{xa:.1}" height="{ph:.1}" fill="#fbe3e3"/><rect x="{xb:.1}" y="0" width="{rw:.1}" height="{ph:.1}" fill="#fbe3e3"/>"##,
                ph = plot_h + 6.0,
                rw = (w - xb).max(0.0)
            );
        }
        for (i, &c) in h.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let bh = (c as f64 / maxc).sqrt() * plot_h;
            let _ = write!(
                s,
                r##"<rect x="{x:.2}" y="{y:.2}" width="{bw:.2}" height="{bh:.2}" fill="#4a78b5"/>"##,
                x = i as f64 * bw,
                y = plot_h + 6.0 - bh,
                bw = (bw - 0.5).max(0.5)
            );
        }
        if let Some((a, b)) = h.clip {
            for v in [a, b] {
                let x = xof(v).clamp(1.0, w - 1.0);
                let _ = write!(
                    s,
                    r##"<line x1="{x:.1}" y1="0" x2="{x:.1}" y2="{y:.1}" stroke="#c9302c" stroke-width="2" stroke-dasharray="4 2"/>"##,
                    y = plot_h + 6.0
                );
            }
        }
        let _ = write!(
            s,
            r##"<line x1="0" y1="{y:.1}" x2="{w}" y2="{y:.1}" stroke="#888"/><text x="0" y="{ty:.1}" font-size="10" fill="#333">{lo}</text><text x="{w}" y="{ty:.1}" font-size="10" text-anchor="end" fill="#333">{hi}</text>"##,
            y = plot_h + 6.0,
            ty = ht - 4.0,
            lo = esc(&format!("{:.4}", h.lo)),
            hi = esc(&format!("{:.4}", h.hi))
        );
        s += "</svg>";
        s
    }

    /// The HTML text.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = write!(
            s,
            r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{t}</title>
<style>
body {{ font-family: sans-serif; margin: 24px; color: #222; background: #fff; }}
h1 {{ font-size: 20px; }} h2 {{ font-size: 16px; margin-top: 28px; border-bottom: 1px solid #ccc; }}
pre {{ background: #f6f6f6; padding: 10px; overflow-x: auto; font-size: 12px; }}
.grid {{ display: flex; flex-wrap: wrap; gap: 14px; }}
.card {{ border: 1px solid #ddd; padding: 8px; width: 372px; }}
.card h3 {{ font-size: 12px; margin: 0 0 4px 0; word-break: break-all; }}
.cap {{ font-size: 11px; color: #444; }}
.legend span {{ display: inline-block; width: 12px; height: 10px; margin: 0 4px 0 12px; }}
</style></head><body>
<h1>{t}</h1>
"#,
            t = esc(&self.title)
        );
        for (head, text) in &self.sections {
            let _ = write!(s, "<h2>{}</h2>\n<pre>{}</pre>\n", esc(head), esc(text));
        }
        let _ = writeln!(s, "<h2>{}</h2>", esc(&self.chart_title));
        let _ = write!(
            s,
            r##"<p class="legend">colour by SQNR: <span style="background:#d9534f"></span>&lt; 20 dB<span style="background:#f0ad4e"></span>20–30 dB<span style="background:#5cb85c"></span>≥ 30 dB; bars: {}{}</p>"##,
            esc(&self.legend.0),
            self.legend
                .1
                .as_ref()
                .map(|l| format!(r##"; <span style="background:#337ab7"></span>{}"##, esc(l)))
                .unwrap_or_default()
        );
        s += &self.chart_svg();
        s += "\n";
        let _ = write!(
            s,
            "<h2>Histograms and clipping ranges ({} tensors)</h2>\n<p class=\"cap\">Blue: the float values (square-root scale). Dashed red lines: the clipping range of the quantized model; shaded: values that saturate.</p>\n<div class=\"grid\">\n",
            self.histograms.len()
        );
        for h in &self.histograms {
            let clip = match h.clip {
                Some((a, b)) => format!("clip [{a:.4}, {b:.4}]"),
                None => "no clipping range".into(),
            };
            let sat = if h.sampled > 0 {
                format!(
                    "{:.3} % of the binned values outside",
                    100.0 * h.outside as f64 / h.sampled as f64
                )
            } else {
                String::new()
            };
            let _ = writeln!(
                s,
                "<div class=\"card\"><h3>{kind}: {name}</h3>{svg}<div class=\"cap\">data [{min:.4}, {max:.4}], {clip}, {sat}; {n} values{note}</div></div>",
                kind = esc(&h.kind),
                name = esc(&h.name),
                svg = Self::histogram_svg(h),
                min = h.min,
                max = h.max,
                n = h.n,
                note = if h.note.is_empty() {
                    String::new()
                } else {
                    format!("; {}", esc(&h.note))
                }
            );
        }
        s += "</div>\n</body></html>\n";
        s
    }

    /// Writes the page atomically (temporary file, then rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        crate::emit::write_atomic(path, self.render().as_bytes())
            .with_context(|| format!("writing the report {}", path.display()))
    }
}

/// The clipping range of per-tensor or per-channel qparams (union over channels), and
/// for per-channel ones a caption with the narrowest channel.
pub fn clip_range(scale: &[f32], zp: &[i64], qmin: i64, qmax: i64) -> (Option<(f64, f64)>, String) {
    if scale.is_empty() {
        return (None, String::new());
    }
    let mut lo = f64::INFINITY;
    let mut hi = f64::NEG_INFINITY;
    let mut narrow = f64::INFINITY;
    for (c, &s) in scale.iter().enumerate() {
        let z = *zp.get(c).or(zp.first()).unwrap_or(&0) as f64;
        let (a, b) = ((qmin as f64 - z) * s as f64, (qmax as f64 - z) * s as f64);
        lo = lo.min(a);
        hi = hi.max(b);
        narrow = narrow.min(b - a);
    }
    let note = if scale.len() > 1 {
        format!(
            "per channel ({} channels, union shown; narrowest channel range {narrow:.4})",
            scale.len()
        )
    } else {
        String::new()
    };
    (Some((lo, hi)), note)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_is_self_contained_and_escaped() {
        let mut acc = HistAcc::default();
        acc.add(&[0.0, 1.0, 2.0, 10.0]);
        let page = Page {
            title: "a <b> & c".into(),
            sections: vec![("summary".into(), "x < y".into())],
            chart_title: "SQNR".into(),
            legend: ("dB".into(), None),
            bars: vec![Bar {
                label: "conv".into(),
                sqnr_db: 25.0,
                second: None,
            }],
            histograms: vec![acc.finish("v", "activation", Some((0.0, 5.0)), String::new())],
        };
        let html = page.render();
        assert!(html.contains("a &lt;b&gt; &amp; c"));
        assert!(!html.contains("<script"));
        let h = &page.histograms[0];
        assert_eq!(h.counts.iter().sum::<u64>(), 4);
        assert_eq!(h.outside, 1);
        let (c, note) = clip_range(&[0.1, 0.2], &[0], -128, 127);
        let (lo, hi) = c.unwrap();
        assert!(
            (lo + 25.6).abs() < 1e-5 && (hi - 25.4).abs() < 1e-5,
            "{lo} {hi}"
        );
        assert!(note.contains("2 channels"));
    }
}
