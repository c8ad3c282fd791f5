//! Writes a seeded synthetic MobileNetV3-Small (random weights, paper head,
//! 6 classes) and its golden vectors from the reference interpreter:
//!
//! `cargo run --release -p derm-codegen --example synthetic_model -- models/default.safetensors [SEED]`
//!
//! writes `models/default.safetensors` and `models/default.golden.safetensors`.
//! `-- OUT.safetensors [SEED] --spec tiny` writes the tiny synthetic model
//! (`SyntheticSpec::tiny`, 32x32, every op kind) and its golden vectors instead.
//! `-- --tiny DIR` writes the tiny synthetic model, its int8 versions (`tiny_int8.*`, and
//! `tiny_int8_fhs.*` with every hardswish in `f32`, `tiny_int8_pc.*` with per-channel grids
//! on the depthwise inputs) and their
//! graph JSON (fuzzer seeds).

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use derm_codegen::reference;
use derm_codegen::synthetic::{DEFAULT_CLASSES, SplitMix64, SyntheticSpec};

/// Golden samples: few, as the parity test also runs under qemu.
const SAMPLES: usize = 2;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let Some(out) = args.next() else {
        bail!("usage: synthetic_model OUT.safetensors [SEED] [--spec small|tiny]");
    };
    if out == "--tiny" {
        // Seed files for the fuzzer: the tiny model and its graph JSON alone.
        let dir = args.next().context("usage: synthetic_model --tiny DIR")?;
        let m = SyntheticSpec::tiny(1).build()?;
        use derm_codegen::synthetic::{int8_channel_grids_of, int8_float_hardswish_of, int8_of};
        let seeds = [
            ("tiny", m.clone()),
            // Its int8 version: seeds that reach the quantized validation paths.
            ("tiny_int8", int8_of(&m, 8)?),
            // With every hardswish in f32 (version 3, `quantization.float_hardswish`): the
            // same tensors, another graph.
            ("tiny_int8_fhs", int8_float_hardswish_of(&m, 8)?),
            // With the depthwise inputs on per-channel grids (version 4,
            // `quantization.channel_scales`).
            ("tiny_int8_pc", int8_channel_grids_of(&m, 8)?),
        ];
        for (name, model) in seeds {
            model.write(format!("{dir}/{name}.safetensors"))?;
            std::fs::write(
                format!("{dir}/{name}.json"),
                serde_json::to_string(&model.graph)?,
            )?;
        }
        return Ok(());
    }
    let mut seed = 2026;
    let mut tiny = false;
    while let Some(arg) = args.next() {
        if arg == "--spec" {
            tiny = match args.next().as_deref() {
                Some("small") => false,
                Some("tiny") => true,
                other => bail!("--spec {other:?}: expected small or tiny"),
            };
        } else {
            seed = arg.parse().with_context(|| format!("SEED {arg:?}"))?;
        }
    }
    let spec = if tiny {
        SyntheticSpec::tiny(seed)
    } else {
        SyntheticSpec::mobilenet_v3_small(&DEFAULT_CLASSES, seed)
    };
    let model = spec.build()?;
    model.write(&out)?;

    let n_in: usize = model.graph.input.shape.iter().product();
    let mut rng = SplitMix64(seed ^ 0xD1B5_4A32_D192_ED03);
    let mut inputs = Vec::with_capacity(SAMPLES * n_in);
    let mut logits = Vec::new();
    for _ in 0..SAMPLES {
        // Normalized pixels with mean = std = 0.5 span [-1, 1].
        let x: Vec<f32> = (0..n_in).map(|_| rng.uniform()).collect();
        logits.extend(reference::logits(&model, &x)?);
        inputs.extend(x);
    }
    let golden = golden_path(&out);
    let [_, c, h, w] = model.graph.input.shape;
    write_golden(
        &golden,
        &inputs,
        [SAMPLES, c, h, w],
        &logits,
        model.num_classes(),
    )?;
    println!("wrote {out} and {golden} (seed {seed}, {SAMPLES} golden samples)");
    Ok(())
}

fn golden_path(model: &str) -> String {
    let stem = model.strip_suffix(".safetensors").unwrap_or(model);
    format!("{stem}.golden.safetensors")
}

fn write_golden(path: &str, x: &[f32], xs: [usize; 4], y: &[f32], classes: usize) -> Result<()> {
    use safetensors::tensor::TensorView;
    let xb: Vec<u8> = x.iter().flat_map(|v| v.to_le_bytes()).collect();
    let yb: Vec<u8> = y.iter().flat_map(|v| v.to_le_bytes()).collect();
    let views = [
        (
            "input",
            TensorView::new(safetensors::Dtype::F32, xs.to_vec(), &xb)?,
        ),
        (
            "logits",
            TensorView::new(safetensors::Dtype::F32, vec![xs[0], classes], &yb)?,
        ),
    ];
    let meta = HashMap::from([(
        "source".to_owned(),
        "derm_codegen::reference interpreter (synthetic model)".to_owned(),
    )]);
    let bytes = safetensors::serialize(views, Some(meta))?;
    std::fs::write(path, bytes).with_context(|| format!("writing {path}"))?;
    Ok(())
}
