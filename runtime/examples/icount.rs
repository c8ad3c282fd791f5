//! Runs the embedded model `N` times on a fixed input (`icount N`), for
//! counting executed instructions per image under qemu: `scripts/icount.sh`
//! takes the difference between N = 11 and N = 1.

use derm_runtime::{Arena, INPUT_LEN, run};

fn main() {
    let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: icount N");
            std::process::exit(2);
        }
    };
    // A fixed, normalized-range input (values in [-1, 1)).
    let input: Vec<f32> = (0..INPUT_LEN)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    let Ok(input) = <&[f32; INPUT_LEN]>::try_from(input.as_slice()) else {
        unreachable!("the vector has INPUT_LEN values")
    };
    let mut arena = Box::new(Arena::new());
    let mut checksum = 0.0f32;
    for _ in 0..n {
        checksum += run(input, &mut arena).iter().sum::<f32>();
    }
    // Printing keeps the results (and so the work) observable.
    println!("{checksum}");
}
