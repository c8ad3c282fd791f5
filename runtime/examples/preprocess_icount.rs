//! Runs the embedded model's input preprocessing ([`preprocess_input`]: centre crop,
//! antialiased bilinear resize, normalization) `N` times on each of the four image sizes of
//! the latency protocol (600x450, 1024x768, 640x480, 200x150), for counting executed
//! instructions per image under qemu: `scripts/icount.sh preprocess` takes the difference
//! between N = 11 and N = 1 and divides by 40.

use derm_runtime::{INPUT_LEN, Image, preprocess_input};

/// The latency protocol's image sizes (pi-bench's `SIZES`).
const SIZES: [(usize, usize); 4] = [(600, 450), (1024, 768), (640, 480), (200, 150)];

fn main() {
    let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: preprocess_icount N");
            std::process::exit(2);
        }
    };
    // Fixed pseudo-random pixels (an LCG): the count must not depend on anything else.
    let mut state = 12_345u32;
    let images: Vec<(usize, usize, Vec<u8>)> = SIZES
        .iter()
        .map(|&(w, h)| {
            let px = (0..w * h * 3)
                .map(|_| {
                    state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                    (state >> 24) as u8
                })
                .collect();
            (w, h, px)
        })
        .collect();
    let mut input = Box::new([0f32; INPUT_LEN]);
    for _ in 0..n {
        for (w, h, px) in &images {
            let image = Image::new(*w, *h, px).expect("a valid image");
            preprocess_input(image, &mut input).expect("preprocessing");
        }
    }
    // FNV-1a over the bits of each image's values, from one more pass outside the counted
    // difference: the same on every target, since the preprocessing rounds identically
    // everywhere (run it natively and under qemu to check).
    let mut hash = 0xcbf2_9ce4_8422_2325u64;
    for (w, h, px) in &images {
        let image = Image::new(*w, *h, px).expect("a valid image");
        preprocess_input(image, &mut input).expect("preprocessing");
        for v in input.iter() {
            hash = (hash ^ u64::from(v.to_bits())).wrapping_mul(0x0100_0000_01b3);
        }
    }
    // Printing keeps the results (and so the work) observable.
    println!("{hash:016x}");
}
