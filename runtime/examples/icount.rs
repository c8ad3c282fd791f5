//! Runs the embedded model `N` times on a fixed input (`icount N`), for
//! counting executed instructions per image under qemu: `scripts/icount.sh`
//! takes the difference between N = 11 and N = 1.

mod common;

use derm_runtime::{Arena, run};

fn main() {
    let n: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        Some(Ok(n)) => n,
        _ => {
            eprintln!("usage: icount N");
            std::process::exit(2);
        }
    };
    let input = common::fixed_input();
    let mut arena = Box::new(Arena::new());
    let mut checksum = 0.0f32;
    for _ in 0..n {
        checksum += run(&input, &mut arena).iter().sum::<f32>();
    }
    // Printing keeps the results (and so the work) observable.
    println!("{checksum}");
}
