//! The chart (`bench/results/chart.svg`), written by hand: grouped bars of each allocator's
//! time relative to the baseline, one group per workload plus the geometric mean, on a log2
//! axis with bars growing up (slower) or down (faster) from the 1× line.

use super::{Results, Summary};
use crate::runner::alloc::BASELINE;
use std::fmt::Write;

const BAR_W: f64 = 10.0;
const GROUP_GAP: f64 = 18.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 78.0;
const PLOT_H: f64 = 320.0;
const BOTTOM: f64 = 100.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Renders the chart of the allocators of `s`'s mode.
pub fn render(r: &Results, s: &Summary) -> String {
    let shown: Vec<usize> = (0..r.allocators.len())
        .filter(|&i| r.allocators[i].in_mode(s.mode))
        .collect();
    // Groups: (label, ratio per allocator).
    let mut groups: Vec<(&str, Vec<Option<f64>>)> = r
        .workloads
        .iter()
        .zip(&s.cells)
        .map(|(w, row)| {
            (
                w.name,
                shown
                    .iter()
                    .map(|&i| row[i].and_then(|c| c.ratio))
                    .collect(),
            )
        })
        .collect();
    groups.push((
        "geomean",
        shown
            .iter()
            .map(|&i| s.per_alloc[i].geomean.map(|g| g.0))
            .collect(),
    ));

    // Axis range: whole powers of two around the data, at least 0.5×–2×, at most 1/16×–64×.
    let all: Vec<f64> = groups
        .iter()
        .flat_map(|g| g.1.iter().flatten().copied())
        .filter(|x| *x > 0.0)
        .collect();
    let lo = all
        .iter()
        .copied()
        .fold(1.0f64, f64::min)
        .log2()
        .floor()
        .clamp(-4.0, -1.0);
    let hi = all
        .iter()
        .copied()
        .fold(1.0f64, f64::max)
        .log2()
        .ceil()
        .clamp(1.0, 6.0);
    let y = |ratio: f64| TOP + (hi - ratio.log2().clamp(lo, hi)) / (hi - lo) * PLOT_H;

    let n_alloc = shown.len().max(1);
    let group_w = n_alloc as f64 * BAR_W + GROUP_GAP;
    let width = LEFT + groups.len() as f64 * group_w + RIGHT;
    let height = TOP + PLOT_H + BOTTOM;

    let mut o = String::new();
    writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width:.0}" height="{height:.0}" viewBox="0 0 {width:.0} {height:.0}" font-family="sans-serif" font-size="11">"#
    )
    .unwrap();
    writeln!(o, r#"<rect width="100%" height="100%" fill="white"/>"#).unwrap();
    writeln!(
        o,
        r#"<text x="{LEFT}" y="20" font-size="14" font-weight="bold">Rust mode: time relative to {BASELINE} (median of {} runs; log scale; lower is better)</text>"#,
        r.reps_done
    )
    .unwrap();
    writeln!(
        o,
        r##"<text x="{LEFT}" y="36" fill="#555">{} ({} cores), {} UTC</text>"##,
        esc(&r.machine.cpu),
        r.machine.cores,
        r.machine.date
    )
    .unwrap();

    // Legend.
    let mut lx = LEFT;
    for a in shown.iter().map(|&i| &r.allocators[i]) {
        writeln!(
            o,
            r#"<rect x="{lx}" y="48" width="11" height="11" fill="{}"/>"#,
            a.colour
        )
        .unwrap();
        writeln!(
            o,
            r#"<text x="{}" y="58">{}</text>"#,
            lx + 15.0,
            esc(a.name)
        )
        .unwrap();
        lx += 30.0 + 7.0 * a.name.len() as f64;
    }

    // Shade the geomean group (drawn first, so grid and bars stay on top).
    let geo_x = LEFT + (groups.len() - 1) as f64 * group_w;
    writeln!(o, r##"<rect x="{geo_x:.1}" y="{TOP}" width="{group_w:.1}" height="{PLOT_H}" fill="#f3f3f3"/>"##).unwrap();

    // Grid lines at every power of two.
    let mut e = lo;
    while e <= hi {
        let gy = y(2f64.powf(e));
        let (stroke, w) = if e == 0.0 {
            ("#000", 1.2)
        } else {
            ("#ddd", 1.0)
        };
        writeln!(o, r#"<line x1="{LEFT}" y1="{gy:.1}" x2="{:.1}" y2="{gy:.1}" stroke="{stroke}" stroke-width="{w}"/>"#, width - RIGHT).unwrap();
        let label = if e >= 0.0 {
            format!("{}×", 2f64.powf(e))
        } else {
            format!("1/{}×", 2f64.powf(-e))
        };
        writeln!(
            o,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="end">{label}</text>"#,
            LEFT - 6.0,
            gy + 4.0
        )
        .unwrap();
        e += 1.0;
    }

    // Bars.
    let one = y(1.0);
    for (gi, (label, ratios)) in groups.iter().enumerate() {
        let gx = LEFT + gi as f64 * group_w + GROUP_GAP / 2.0;
        let bars = shown.iter().map(|&i| &r.allocators[i]).zip(ratios);
        for (ai, (a, ratio)) in bars.enumerate() {
            let Some(ratio) = *ratio else { continue };
            let bx = gx + ai as f64 * BAR_W;
            let by = y(ratio);
            let (top, h) = if by < one {
                (by, one - by)
            } else {
                (one, by - one)
            };
            writeln!(
                o,
                r#"<rect x="{bx:.1}" y="{top:.1}" width="{:.1}" height="{:.1}" fill="{}"><title>{} on {}: {ratio:.2}×</title></rect>"#,
                BAR_W - 1.0,
                h.max(0.5),
                a.colour,
                esc(a.name),
                esc(label)
            )
            .unwrap();
            // Off-scale bars get their value written at the end of the bar.
            if ratio.log2() > hi || ratio.log2() < lo {
                let ty = if ratio > 1.0 {
                    top - 3.0
                } else {
                    top + h + 10.0
                };
                writeln!(o, r#"<text x="{:.1}" y="{ty:.1}" font-size="9" text-anchor="middle">{ratio:.0}×</text>"#, bx + BAR_W / 2.0).unwrap();
            }
        }
        let cx = gx + n_alloc as f64 * BAR_W / 2.0;
        let ly = TOP + PLOT_H + 14.0;
        writeln!(o, r#"<text x="{cx:.1}" y="{ly:.1}" text-anchor="end" transform="rotate(-35 {cx:.1} {ly:.1})">{}</text>"#, esc(label)).unwrap();
    }
    o.push_str("</svg>\n");
    o
}
