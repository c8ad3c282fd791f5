//! What the examples and the model bench share.

use derm_runtime::INPUT_LEN;

/// The fixed, normalized-range input (values in `[-1, 1)`) that the
/// instruction counts (`icount`), the timings (`latency`) and the model
/// bench all run, so that their numbers describe the same work.
pub fn fixed_input() -> Box<[f32; INPUT_LEN]> {
    let input: Vec<f32> = (0..INPUT_LEN)
        .map(|i| ((i * 7919) % 1000) as f32 / 500.0 - 1.0)
        .collect();
    match input.into_boxed_slice().try_into() {
        Ok(input) => input,
        Err(_) => unreachable!("the vector has INPUT_LEN values"),
    }
}
