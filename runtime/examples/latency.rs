//! Times `run` on a fixed input N times (`latency N`, default 2000) and
//! prints the fastest run, the 10th percentile and the median, in ms.
//!
//! On a shared machine the fastest runs are the least disturbed by other
//! work, so comparing two builds (f32 and int8, or before and after a kernel
//! change) by their fastest runs, alternating them a few times, is steadier
//! than comparing means. Criterion (`cargo bench -p derm-runtime --bench
//! model`) stays the reference on a quiet machine.
//!
//! `cargo run --release -p derm-runtime --example latency -- 3000`, with
//! `DERM_MODEL=...` for another model.

mod common;

use derm_runtime::{Arena, MODEL_NAME, run};
use std::time::Instant;

fn main() {
    let reps: usize = match std::env::args().nth(1).map(|s| s.parse()) {
        None => 2000,
        Some(Ok(n)) if n > 0 => n,
        _ => {
            eprintln!("usage: latency [N > 0]");
            std::process::exit(2);
        }
    };
    let input = common::fixed_input();
    let mut arena = Box::new(Arena::new());
    let mut ms = Vec::with_capacity(reps);
    let mut checksum = 0.0f32;
    for _ in 0..reps {
        let t = Instant::now();
        checksum += run(std::hint::black_box(&input), &mut arena)[0];
        ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    ms.sort_by(f64::total_cmp);
    println!(
        "{MODEL_NAME}: fastest {:.3} ms, p10 {:.3} ms, median {:.3} ms over {reps} runs (checksum {checksum})",
        ms[0],
        ms[reps / 10],
        ms[reps / 2]
    );
}
