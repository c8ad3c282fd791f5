//! Confusion-matrix images (like the paper's Fig. 7): one PNG per group and
//! one for the whole set. Cells are shaded by the row-normalized rate
//! (recall along the diagonal) and print the raw count.

use std::path::{Path, PathBuf};

use anyhow::{Result, anyhow, ensure};
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::metrics::Evaluation;

const CELL: i32 = 64;
const LEFT: i32 = 120;
const TOP: i32 = 56;
const BOTTOM: i32 = 64;

/// Draws one confusion matrix (`m[true][predicted]`) to a PNG at `path`.
pub fn confusion_png(
    path: &Path,
    title: &str,
    class_names: &[String],
    m: &[Vec<usize>],
) -> Result<()> {
    let nc = class_names.len();
    ensure!(
        nc > 0 && m.len() == nc && m.iter().all(|r| r.len() == nc),
        "confusion matrix must be {nc}x{nc}"
    );
    let w = (LEFT + CELL * nc as i32 + 16) as u32;
    let h = (TOP + CELL * nc as i32 + BOTTOM) as u32;
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    {
        let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let font = |size: i32| ("sans-serif", size).into_font();
        root.draw(&Text::new(
            title.to_string(),
            (LEFT, 10),
            font(18).color(&BLACK),
        ))
        .map_err(|e| err(&e))?;
        let centre = Pos::new(HPos::Center, VPos::Center);
        let right = Pos::new(HPos::Right, VPos::Center);
        for (t, row) in m.iter().enumerate() {
            let total: usize = row.iter().sum();
            let y0 = TOP + t as i32 * CELL;
            root.draw(&Text::new(
                class_names[t].clone(),
                (LEFT - 8, y0 + CELL / 2),
                font(14).color(&BLACK).pos(right),
            ))
            .map_err(|e| err(&e))?;
            for (p, &count) in row.iter().enumerate() {
                let rate = if total > 0 {
                    count as f64 / total as f64
                } else {
                    0.0
                };
                let x0 = LEFT + p as i32 * CELL;
                // White -> dark blue; text flips to white on dark cells.
                let shade = |lo: f64, hi: f64| (hi + (lo - hi) * rate).round() as u8;
                let fill = RGBColor(shade(8.0, 255.0), shade(48.0, 255.0), shade(107.0, 255.0));
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + CELL, y0 + CELL)],
                    fill.filled(),
                ))
                .map_err(|e| err(&e))?;
                root.draw(&Rectangle::new(
                    [(x0, y0), (x0 + CELL, y0 + CELL)],
                    RGBColor(200, 200, 200),
                ))
                .map_err(|e| err(&e))?;
                let ink = if rate > 0.5 { WHITE } else { BLACK };
                root.draw(&Text::new(
                    count.to_string(),
                    (x0 + CELL / 2, y0 + CELL / 2),
                    font(15).color(&ink).pos(centre),
                ))
                .map_err(|e| err(&e))?;
            }
        }
        let yb = TOP + nc as i32 * CELL;
        for (p, name) in class_names.iter().enumerate() {
            root.draw(&Text::new(
                name.clone(),
                (LEFT + p as i32 * CELL + CELL / 2, yb + 12),
                font(13).color(&BLACK).pos(centre),
            ))
            .map_err(|e| err(&e))?;
        }
        root.draw(&Text::new(
            "predicted (rows: true class)".to_string(),
            (LEFT + nc as i32 * CELL / 2, yb + 40),
            font(14).color(&BLACK).pos(centre),
        ))
        .map_err(|e| err(&e))?;
        root.present().map_err(|e| err(&e))?;
    }
    Ok(())
}

/// Writes `<dir>/<prefix>confusion_all.png` and one
/// `<dir>/<prefix>confusion_<group>.png` per group with samples; returns the
/// paths written.
pub fn confusion_pngs(dir: &Path, prefix: &str, eval: &Evaluation) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut out = Vec::new();
    let p = dir.join(format!("{prefix}confusion_all.png"));
    let title = format!(
        "all groups: n={}, acc={:.1}%",
        eval.n,
        100.0 * eval.accuracy
    );
    confusion_png(&p, &title, &eval.class_names, &eval.confusion)?;
    out.push(p);
    for g in eval.groups.iter().filter(|g| g.n > 0) {
        let safe: String = g
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        let p = dir.join(format!("{prefix}confusion_{safe}.png"));
        let title = format!(
            "{}: n={}, acc={:.1}%",
            g.name,
            g.n,
            100.0 * g.accuracy.unwrap_or(0.0)
        );
        confusion_png(&p, &title, &eval.class_names, &g.confusion)?;
        out.push(p);
    }
    Ok(out)
}

/// Bar colours of [`grouped_bars_png`], one per series (cycled).
const PALETTE: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
];

/// A grouped bar plot (like the paper's Fig. 6) of values in `[0, 1]`: one group per
/// `groups` entry along x, one bar per `series` entry in each group, `values[series][group]`
/// = `(mean, std)` drawn as a bar with a ±std error bar (`None`: no bar).
pub fn grouped_bars_png(
    path: &Path,
    title: &str,
    groups: &[String],
    series: &[String],
    values: &[Vec<Option<(f64, f64)>>],
) -> Result<()> {
    let (ng, ns) = (groups.len(), series.len());
    ensure!(
        ng > 0 && ns > 0 && values.len() == ns && values.iter().all(|v| v.len() == ng),
        "bar plot values must be {ns} series x {ng} groups"
    );
    let (left, top, plot_h, group_w, legend_w) = (64, 48, 300, 40 + 36 * ns as i32, 170);
    let w = (left + group_w * ng as i32 + legend_w) as u32;
    let h = (top + plot_h + 48) as u32;
    let y_of = |v: f64| top + plot_h - (v.clamp(0.0, 1.0) * plot_h as f64).round() as i32;
    let err = |e: &dyn std::fmt::Display| anyhow!("drawing {}: {e}", path.display());
    {
        let root = BitMapBackend::new(path, (w, h)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| err(&e))?;
        let font = |size: i32| ("sans-serif", size).into_font();
        let right = Pos::new(HPos::Right, VPos::Center);
        let centre = Pos::new(HPos::Center, VPos::Top);
        root.draw(&Text::new(
            title.to_string(),
            (left, 12),
            font(18).color(&BLACK),
        ))
        .map_err(|e| err(&e))?;
        let x_end = left + group_w * ng as i32;
        for tick in 0..=5 {
            let v = tick as f64 / 5.0;
            let y = y_of(v);
            root.draw(&PathElement::new(
                vec![(left, y), (x_end, y)],
                RGBColor(225, 225, 225),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Text::new(
                format!("{v:.1}"),
                (left - 8, y),
                font(13).color(&BLACK).pos(right),
            ))
            .map_err(|e| err(&e))?;
        }
        root.draw(&PathElement::new(
            vec![(left, top), (left, top + plot_h), (x_end, top + plot_h)],
            BLACK,
        ))
        .map_err(|e| err(&e))?;
        for (g, name) in groups.iter().enumerate() {
            let x0 = left + g as i32 * group_w + 20;
            for (s, row) in values.iter().enumerate() {
                let Some((mean, sd)) = row[g] else { continue };
                let (bx0, bx1) = (x0 + s as i32 * 36 + 3, x0 + s as i32 * 36 + 33);
                root.draw(&Rectangle::new(
                    [(bx0, y_of(mean)), (bx1, top + plot_h)],
                    PALETTE[s % PALETTE.len()].filled(),
                ))
                .map_err(|e| err(&e))?;
                if sd > 0.0 {
                    let xm = (bx0 + bx1) / 2;
                    let (ylo, yhi) = (y_of(mean - sd), y_of(mean + sd));
                    for seg in [
                        vec![(xm, ylo), (xm, yhi)],
                        vec![(xm - 6, ylo), (xm + 6, ylo)],
                        vec![(xm - 6, yhi), (xm + 6, yhi)],
                    ] {
                        root.draw(&PathElement::new(seg, BLACK.stroke_width(2)))
                            .map_err(|e| err(&e))?;
                    }
                }
            }
            root.draw(&Text::new(
                name.clone(),
                (left + g as i32 * group_w + group_w / 2, top + plot_h + 10),
                font(15).color(&BLACK).pos(centre),
            ))
            .map_err(|e| err(&e))?;
        }
        for (s, name) in series.iter().enumerate() {
            let y = top + 10 + s as i32 * 24;
            root.draw(&Rectangle::new(
                [(x_end + 20, y), (x_end + 36, y + 16)],
                PALETTE[s % PALETTE.len()].filled(),
            ))
            .map_err(|e| err(&e))?;
            root.draw(&Text::new(
                name.clone(),
                (x_end + 44, y + 1),
                font(14).color(&BLACK),
            ))
            .map_err(|e| err(&e))?;
        }
        root.present().map_err(|e| err(&e))?;
    }
    Ok(())
}
