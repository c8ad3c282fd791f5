//! Classify one photo with the embedded model:
//!
//! `cargo run --release -p derm-runtime --example classify -- photo.ppm`
//!
//! Reads a binary PPM (P6, 8-bit; convert with `convert photo.jpg photo.ppm`
//! or `ffmpeg -i photo.jpg photo.ppm`); without an argument it classifies a
//! generated gradient image. Shows the whole integration: a static arena,
//! an `Image` over the caller's pixels, `classify`, and the class table.

use std::sync::Mutex;

use derm_runtime::{Arena, CLASS_NAMES, Image, classify};

/// One arena for the program, in static memory rather than on the stack.
static ARENA: Mutex<Arena> = Mutex::new(Arena::new());

/// Parses a binary PPM: `P6 <w> <h> <maxval 255>` then RGB bytes.
fn read_ppm(bytes: &[u8]) -> Result<(usize, usize, &[u8]), String> {
    let mut fields = Vec::new();
    let mut pos = 0;
    while fields.len() < 4 {
        while pos < bytes.len() && bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if bytes.get(pos) == Some(&b'#') {
            while pos < bytes.len() && bytes[pos] != b'\n' {
                pos += 1;
            }
            continue;
        }
        let start = pos;
        while pos < bytes.len() && !bytes[pos].is_ascii_whitespace() {
            pos += 1;
        }
        if start == pos {
            return Err("truncated PPM header".into());
        }
        fields.push(std::str::from_utf8(&bytes[start..pos]).map_err(|e| e.to_string())?);
    }
    if fields[0] != "P6" || fields[3] != "255" {
        return Err(format!(
            "only 8-bit binary PPM (P6, maxval 255) is supported, got {fields:?}"
        ));
    }
    let w: usize = fields[1].parse().map_err(|e| format!("width: {e}"))?;
    let h: usize = fields[2].parse().map_err(|e| format!("height: {e}"))?;
    let data = bytes.get(pos + 1..).ok_or("no pixel data")?;
    let n = w
        .checked_mul(h)
        .and_then(|p| p.checked_mul(3))
        .ok_or("image too large")?;
    let data = data
        .get(..n)
        .ok_or_else(|| format!("expected {n} pixel bytes, got {}", data.len()))?;
    Ok((w, h, data))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let file;
    let generated;
    let (w, h, pixels) = match std::env::args().nth(1) {
        Some(path) => {
            file = std::fs::read(&path).map_err(|e| format!("{path}: {e}"))?;
            read_ppm(&file).map_err(|e| format!("{path}: {e}"))?
        }
        None => {
            let (w, h) = (600, 450);
            generated = (0..w * h * 3)
                .map(|i| ((i / 3) % w * 255 / w) as u8)
                .collect::<Vec<u8>>();
            (w, h, &generated[..])
        }
    };
    let image = Image::new(w, h, pixels)?;
    let mut arena = ARENA.lock().map_err(|_| "arena lock poisoned")?;
    let p = classify(image, &mut arena)?;
    println!(
        "{w}x{h}: {} ({:.1}%)",
        p.name,
        100.0 * p.probabilities[p.class]
    );
    for (name, prob) in CLASS_NAMES.iter().zip(&p.probabilities) {
        println!("  {name:>10} {:6.2}%", 100.0 * prob);
    }
    Ok(())
}
