//! Runs the reference interpreter on a model's golden inputs and reports the
//! worst logit difference per sample, relative to the sample's logit range:
//!
//! `cargo run -p derm-codegen --example check_golden -- MODEL.safetensors [GOLDEN.safetensors]`
//!
//! The oracle between the exporting framework and the generated code: if
//! this passes and the runtime's parity test fails, the bug is in codegen or
//! the kernels; if this fails, the export and the IR disagree.

use anyhow::{Context, Result, bail};
use derm_codegen::{ir::ModelFile, reference};

fn read_f32(st: &safetensors::SafeTensors<'_>, name: &str) -> Result<(Vec<usize>, Vec<f32>)> {
    let t = st
        .tensor(name)
        .with_context(|| format!("tensor {name:?}"))?;
    let v = t
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Ok((t.shape().to_vec(), v))
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(model_path) = args.next() else {
        bail!("usage: check_golden MODEL.safetensors [GOLDEN.safetensors]");
    };
    let golden_path = args.next().unwrap_or_else(|| {
        let stem = model_path
            .strip_suffix(".safetensors")
            .unwrap_or(&model_path);
        format!("{stem}.golden.safetensors")
    });
    let model = ModelFile::read(&model_path)?;
    let bytes = std::fs::read(&golden_path).with_context(|| golden_path.clone())?;
    let st = safetensors::SafeTensors::deserialize(&bytes).with_context(|| golden_path.clone())?;
    let (xs, x) = read_f32(&st, "input")?;
    let (_, y) = read_f32(&st, "logits")?;
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
