//! Runs the reference interpreter on a model's golden inputs and reports the
//! worst logit difference per sample, relative to the sample's logit range:
//!
//! `cargo run -p derm-codegen --example check_golden -- MODEL.safetensors [GOLDEN.safetensors]`
//!
//! The oracle between the exporting framework and the generated code: if
//! this passes and the runtime's parity test fails, the bug is in codegen or
//! the kernels; if this fails, the export and the IR disagree.

use anyhow::{Result, bail};
use derm_codegen::golden::Golden;
use derm_codegen::{ir::ModelFile, reference};

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(model_path) = args.next() else {
        bail!("usage: check_golden MODEL.safetensors [GOLDEN.safetensors]");
    };
    let golden_path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| Golden::path_for(model_path.as_ref()));
    let model = ModelFile::read(&model_path)?;
    let golden = Golden::read(&golden_path)?;
    golden.check(&model)?;
    let (xs, x, y) = (golden.input_shape, &golden.inputs, &golden.logits);
    let n_in: usize = xs[1..].iter().product();
    let c = model.num_classes();
    let mut worst: f32 = 0.0;
    for (i, (input, want)) in x.chunks_exact(n_in).zip(y.chunks_exact(c)).enumerate() {
        let got = reference::logits(&model, input)?;
        let range = want.iter().copied().fold(f32::MIN, f32::max)
            - want.iter().copied().fold(f32::MAX, f32::min);
        let diff = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let rel = diff / range.max(f32::MIN_POSITIVE);
        worst = worst.max(rel);
        println!("sample {i}: max |diff| {diff:e}, logit range {range:e}, relative {rel:e}");
        println!("  reference {got:?}\n  golden    {want:?}");
    }
    println!("worst relative difference: {worst:e} (parity bound 1e-4)");
    Ok(())
}
