//! Confusion-matrix PNGs (like the paper's Fig. 7 and `derm-train`'s): one per group and one
//! for the whole set. Cells are shaded by the row-normalized rate (recall along the diagonal)
//! and print the raw count; rows are true classes, columns predicted ones.
//!
//! Drawn with the `image` crate and a small built-in 5x7 bitmap font rather than `plotters`:
//! `plotters` renders text through fontconfig and system fonts, which would make pi-bench
//! need C libraries to build (for the Pi as well as the host) and fonts to run. The layout and
//! colours follow `derm-train`'s `plot::confusion_png`, so pictures from both compare at a
//! glance.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use image::{Rgb, RgbImage};

use crate::esfair::Score;

/// Glyph scale: each font pixel is a `SCALE x SCALE` square.
const SCALE: u32 = 2;
/// Horizontal advance of one character in pixels (5 columns + 1 space).
const ADVANCE: u32 = 6 * SCALE;
/// Height of a line of text in pixels (7 rows + 2 for descenders).
const LINE: u32 = 9 * SCALE;
/// Margin around everything.
const PAD: u32 = 12;
/// Labels and titles longer than this are cut (with `~`) so the picture stays a sane size.
const MAX_LABEL: usize = 16;
const MAX_TITLE: usize = 64;
/// More classes than this is not a confusion matrix anyone can read; refuse instead of
/// allocating a huge picture.
const MAX_CLASSES: usize = 64;

const WHITE: Rgb<u8> = Rgb([255, 255, 255]);
const BLACK: Rgb<u8> = Rgb([0, 0, 0]);
const GRID: Rgb<u8> = Rgb([200, 200, 200]);

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
    ensure!(
        nc <= MAX_CLASSES,
        "{nc} classes: too many to draw (at most {MAX_CLASSES})"
    );
    let names: Vec<String> = class_names.iter().map(|n| cut(n, MAX_LABEL)).collect();
    let title = cut(title, MAX_TITLE);
    let label_w = names.iter().map(|n| text_width(n)).max().unwrap_or(0);
    let widest_count = m.iter().flatten().max().copied().unwrap_or(0);
    let cell = 56
        .max(label_w + 8)
        .max(text_width(&widest_count.to_string()) + 8);
    let caption = "predicted (rows: true class)";
    let left = PAD + label_w + 8;
    let top = PAD + LINE + PAD;
    let grid = cell * nc as u32;
    let width = (left + grid + PAD)
        .max(2 * PAD + text_width(&title))
        .max(left + text_width(caption) + PAD);
    let height = top + grid + 8 + LINE + 8 + LINE + PAD;
    let mut img = RgbImage::from_pixel(width, height, WHITE);

    draw_text(&mut img, &title, PAD, PAD, BLACK);
    for (t, row) in m.iter().enumerate() {
        let total: usize = row.iter().sum();
        let y0 = top + t as u32 * cell;
        let name = &names[t];
        draw_text(
            &mut img,
            name,
            left - 8 - text_width(name),
            y0 + (cell - 7 * SCALE) / 2,
            BLACK,
        );
        for (p, &count) in row.iter().enumerate() {
            let rate = if total > 0 {
                count as f64 / total as f64
            } else {
                0.0
            };
            let x0 = left + p as u32 * cell;
            // White -> dark blue; text flips to white on dark cells.
            let shade = |lo: f64, hi: f64| (hi + (lo - hi) * rate).round() as u8;
            let fill = Rgb([shade(8.0, 255.0), shade(48.0, 255.0), shade(107.0, 255.0)]);
            fill_rect(&mut img, x0, y0, cell, cell, fill);
            outline(&mut img, x0, y0, cell, cell, GRID);
            let ink = if rate > 0.5 { WHITE } else { BLACK };
            let s = count.to_string();
            draw_text(
                &mut img,
                &s,
                x0 + (cell - text_width(&s)) / 2,
                y0 + (cell - 7 * SCALE) / 2,
                ink,
            );
        }
    }
    let yb = top + grid + 8;
    for (p, name) in names.iter().enumerate() {
        let x = left + p as u32 * cell + (cell - text_width(name)) / 2;
        draw_text(&mut img, name, x, yb, BLACK);
    }
    let cx = left + (grid.saturating_sub(text_width(caption))) / 2;
    draw_text(&mut img, caption, cx, yb + LINE + 8, BLACK);
    img.save_with_format(path, image::ImageFormat::Png)
        .with_context(|| format!("writing {}", path.display()))
}

/// Writes `<dir>/<prefix>confusion_all.png` and one `<dir>/<prefix>confusion_<group>.png`
/// per group with images (names reduced to letters, digits and `-`, made unique); returns the
/// paths written.
pub fn confusion_pngs(dir: &Path, prefix: &str, score: &Score) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let nc = score.classes.len();
    let mut all = vec![vec![0usize; nc]; nc];
    for g in &score.groups {
        for (row, grow) in all.iter_mut().zip(&g.confusion) {
            for (c, v) in row.iter_mut().zip(grow) {
                *c += v;
            }
        }
    }
    let mut used = HashSet::new();
    let mut out = Vec::new();
    let mut write = |stem: &str, title: &str, m: &[Vec<usize>]| -> Result<()> {
        let mut name = stem.to_owned();
        let mut k = 2;
        while !used.insert(name.clone()) {
            name = format!("{stem}_{k}");
            k += 1;
        }
        let p = dir.join(format!("{prefix}confusion_{name}.png"));
        confusion_png(&p, title, &score.classes, m)?;
        out.push(p);
        Ok(())
    };
    let title = format!(
        "all groups: n={}, acc={:.1}%",
        score.n,
        100.0 * score.accuracy
    );
    write("all", &title, &all)?;
    for g in score.groups.iter().filter(|g| g.n > 0) {
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
        let title = format!(
            "{}: n={}, acc={:.1}%",
            g.name,
            g.n,
            100.0 * g.accuracy.unwrap_or(0.0)
        );
        write(&safe, &title, &g.confusion)?;
    }
    Ok(out)
}

/// At most `max` characters, the last replaced by `~` when cut.
fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(max - 1).collect();
        t.push('~');
        t
    }
}

/// Width in pixels of `s` in the built-in font.
fn text_width(s: &str) -> u32 {
    (s.chars().count() as u32 * ADVANCE).saturating_sub(SCALE)
}

fn fill_rect(img: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32, c: Rgb<u8>) {
    for y in y0..(y0 + h).min(img.height()) {
        for x in x0..(x0 + w).min(img.width()) {
            img.put_pixel(x, y, c);
        }
    }
}

fn outline(img: &mut RgbImage, x0: u32, y0: u32, w: u32, h: u32, c: Rgb<u8>) {
    fill_rect(img, x0, y0, w, 1, c);
    fill_rect(img, x0, y0 + h - 1, w, 1, c);
    fill_rect(img, x0, y0, 1, h, c);
    fill_rect(img, x0 + w - 1, y0, 1, h, c);
}

/// Draws `s` with its cap-height box's top-left corner at `(x, y)`; pixels off the picture
/// are dropped.
fn draw_text(img: &mut RgbImage, s: &str, x: u32, y: u32, c: Rgb<u8>) {
    for (i, ch) in s.chars().enumerate() {
        let gx = x + i as u32 * ADVANCE;
        for (r, row) in glyph(ch).split('|').enumerate() {
            for (col, b) in row.bytes().enumerate() {
                if b == b'#' {
                    fill_rect(
                        img,
                        gx + col as u32 * SCALE,
                        y + r as u32 * SCALE,
                        SCALE,
                        SCALE,
                        c,
                    );
                }
            }
        }
    }
}

/// The glyph of `c`: rows of 5 columns separated by `|`, `#` inked; 7 rows, or 9 for letters
/// with descenders. Characters outside the table draw as a hollow box.
fn glyph(c: char) -> &'static str {
    FONT.iter()
        .find(|(k, _)| *k == c)
        .map_or("#####|#...#|#...#|#...#|#...#|#...#|#####", |(_, g)| g)
}

/// A plain 5x7 font drawn for this module: printable ASCII except a few symbols.
const FONT: &[(char, &str)] = &[
    (' ', "....."),
    ('!', "..#..|..#..|..#..|..#..|..#..|.....|..#.."),
    ('"', ".#.#.|.#.#.|....."),
    ('#', ".#.#.|.#.#.|#####|.#.#.|#####|.#.#.|.#.#."),
    ('%', "##...|##..#|...#.|..#..|.#...|#..##|...##"),
    ('&', ".##..|#..#.|#.#..|.#...|#.#.#|#..#.|.##.#"),
    ('\'', "..#..|..#..|....."),
    ('(', "...#.|..#..|.#...|.#...|.#...|..#..|...#."),
    (')', ".#...|..#..|...#.|...#.|...#.|..#..|.#..."),
    ('*', ".....|..#..|#.#.#|.###.|#.#.#|..#..|....."),
    ('+', ".....|..#..|..#..|#####|..#..|..#..|....."),
    (',', ".....|.....|.....|.....|.....|.##..|..#..|.#..."),
    ('-', ".....|.....|.....|#####|.....|.....|....."),
    ('.', ".....|.....|.....|.....|.....|.##..|.##.."),
    ('/', ".....|....#|...#.|..#..|.#...|#....|....."),
    ('0', ".###.|#...#|#..##|#.#.#|##..#|#...#|.###."),
    ('1', "..#..|.##..|..#..|..#..|..#..|..#..|.###."),
    ('2', ".###.|#...#|....#|...#.|..#..|.#...|#####"),
    ('3', "#####|...#.|..#..|...#.|....#|#...#|.###."),
    ('4', "...#.|..##.|.#.#.|#..#.|#####|...#.|...#."),
    ('5', "#####|#....|####.|....#|....#|#...#|.###."),
    ('6', "..##.|.#...|#....|####.|#...#|#...#|.###."),
    ('7', "#####|....#|...#.|..#..|.#...|.#...|.#..."),
    ('8', ".###.|#...#|#...#|.###.|#...#|#...#|.###."),
    ('9', ".###.|#...#|#...#|.####|....#|...#.|.##.."),
    (':', ".....|.##..|.##..|.....|.##..|.##..|....."),
    (';', ".....|.##..|.##..|.....|.##..|..#..|.#..."),
    ('<', "...#.|..#..|.#...|#....|.#...|..#..|...#."),
    ('=', ".....|.....|#####|.....|#####|.....|....."),
    ('>', ".#...|..#..|...#.|....#|...#.|..#..|.#..."),
    ('?', ".###.|#...#|....#|...#.|..#..|.....|..#.."),
    ('A', ".###.|#...#|#...#|#####|#...#|#...#|#...#"),
    ('B', "####.|#...#|#...#|####.|#...#|#...#|####."),
    ('C', ".###.|#...#|#....|#....|#....|#...#|.###."),
    ('D', "####.|#...#|#...#|#...#|#...#|#...#|####."),
    ('E', "#####|#....|#....|####.|#....|#....|#####"),
    ('F', "#####|#....|#....|####.|#....|#....|#...."),
    ('G', ".###.|#...#|#....|#.###|#...#|#...#|.####"),
    ('H', "#...#|#...#|#...#|#####|#...#|#...#|#...#"),
    ('I', ".###.|..#..|..#..|..#..|..#..|..#..|.###."),
    ('J', "..###|...#.|...#.|...#.|...#.|#..#.|.##.."),
    ('K', "#...#|#..#.|#.#..|##...|#.#..|#..#.|#...#"),
    ('L', "#....|#....|#....|#....|#....|#....|#####"),
    ('M', "#...#|##.##|#.#.#|#.#.#|#...#|#...#|#...#"),
    ('N', "#...#|#...#|##..#|#.#.#|#..##|#...#|#...#"),
    ('O', ".###.|#...#|#...#|#...#|#...#|#...#|.###."),
    ('P', "####.|#...#|#...#|####.|#....|#....|#...."),
    ('Q', ".###.|#...#|#...#|#...#|#.#.#|#..#.|.##.#"),
    ('R', "####.|#...#|#...#|####.|#.#..|#..#.|#...#"),
    ('S', ".####|#....|#....|.###.|....#|....#|####."),
    ('T', "#####|..#..|..#..|..#..|..#..|..#..|..#.."),
    ('U', "#...#|#...#|#...#|#...#|#...#|#...#|.###."),
    ('V', "#...#|#...#|#...#|#...#|#...#|.#.#.|..#.."),
    ('W', "#...#|#...#|#...#|#.#.#|#.#.#|#.#.#|.#.#."),
    ('X', "#...#|#...#|.#.#.|..#..|.#.#.|#...#|#...#"),
    ('Y', "#...#|#...#|.#.#.|..#..|..#..|..#..|..#.."),
    ('Z', "#####|....#|...#.|..#..|.#...|#....|#####"),
    ('[', ".###.|.#...|.#...|.#...|.#...|.#...|.###."),
    (']', ".###.|...#.|...#.|...#.|...#.|...#.|.###."),
    ('_', ".....|.....|.....|.....|.....|.....|#####"),
    ('a', ".....|.....|.###.|....#|.####|#...#|.####"),
    ('b', "#....|#....|#.##.|##..#|#...#|#...#|####."),
    ('c', ".....|.....|.###.|#....|#....|#...#|.###."),
    ('d', "....#|....#|.##.#|#..##|#...#|#...#|.####"),
    ('e', ".....|.....|.###.|#...#|#####|#....|.###."),
    ('f', "..##.|.#..#|.#...|###..|.#...|.#...|.#..."),
    ('g', ".....|.....|.####|#...#|#...#|.####|....#|#...#|.###."),
    ('h', "#....|#....|#.##.|##..#|#...#|#...#|#...#"),
    ('i', "..#..|.....|.##..|..#..|..#..|..#..|.###."),
    ('j', "...#.|.....|..##.|...#.|...#.|...#.|...#.|#..#.|.##.."),
    ('k', "#....|#....|#..#.|#.#..|##...|#.#..|#..#."),
    ('l', ".##..|..#..|..#..|..#..|..#..|..#..|.###."),
    ('m', ".....|.....|##.#.|#.#.#|#.#.#|#.#.#|#.#.#"),
    ('n', ".....|.....|#.##.|##..#|#...#|#...#|#...#"),
    ('o', ".....|.....|.###.|#...#|#...#|#...#|.###."),
    ('p', ".....|.....|####.|#...#|#...#|####.|#....|#....|#...."),
    ('q', ".....|.....|.####|#...#|#...#|.####|....#|....#|....#"),
    ('r', ".....|.....|#.##.|##..#|#....|#....|#...."),
    ('s', ".....|.....|.####|#....|.###.|....#|####."),
    ('t', ".#...|.#...|###..|.#...|.#...|.#..#|..##."),
    ('u', ".....|.....|#...#|#...#|#...#|#..##|.##.#"),
    ('v', ".....|.....|#...#|#...#|#...#|.#.#.|..#.."),
    ('w', ".....|.....|#...#|#...#|#.#.#|#.#.#|.#.#."),
    ('x', ".....|.....|#...#|.#.#.|..#..|.#.#.|#...#"),
    ('y', ".....|.....|#...#|#...#|#...#|.####|....#|#...#|.###."),
    ('z', ".....|.....|#####|...#.|..#..|.#...|#####"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn font_rows_are_five_wide_and_seven_or_nine_tall() {
        for (c, g) in FONT {
            let rows: Vec<&str> = g.split('|').collect();
            assert!(
                rows.len() <= 9 && rows.iter().all(|r| r.len() == 5),
                "{c:?}: {g}"
            );
            assert!(
                rows.iter()
                    .all(|r| r.bytes().all(|b| b == b'#' || b == b'.')),
                "{c:?}"
            );
        }
        let mut chars: Vec<char> = FONT.iter().map(|(c, _)| *c).collect();
        chars.sort_unstable();
        chars.dedup();
        assert_eq!(chars.len(), FONT.len(), "a character is listed twice");
    }

    #[test]
    fn draws_a_matrix_and_rejects_bad_shapes() {
        let dir = std::env::temp_dir().join(format!("pi-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let names: Vec<String> = ["BCC", "unknown", "a-very-long-class-name-indeed"]
            .map(String::from)
            .to_vec();
        let m = vec![vec![5, 0, 1], vec![2, 12345, 0], vec![0, 0, 0]];
        let p = dir.join("m.png");
        confusion_png(&p, "test: n=19, acc=99.9% (µ ✓)", &names, &m).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        assert!(img.width() > 200 && img.height() > 200);
        // The diagonal cell of the full row is dark blue, an empty row's cells white.
        assert!(img.pixels().any(|p| *p == Rgb([8, 48, 107])));
        assert!(confusion_png(&p, "x", &names, &m[..2]).is_err());
        assert!(confusion_png(&p, "x", &[], &[]).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
