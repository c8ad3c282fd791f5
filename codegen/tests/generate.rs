//! Code generation: plan soundness on real graphs, emitted code structure,
//! and errors for models no kernel can run.

use derm_codegen::ir::{Conv2d, ModelFile, Op};
use derm_codegen::plan::{Buffer, Plan, find_overlap};
use derm_codegen::synthetic::{DEFAULT_CLASSES, SyntheticSpec};
use derm_codegen::{ARENA_ALIGN, CodegenError, GenOptions, generate};

fn small() -> ModelFile {
    SyntheticSpec::mobilenet_v3_small(&DEFAULT_CLASSES, 9)
        .build()
        .unwrap()
}

fn check_plan(model: &ModelFile, fuse: bool) -> derm_codegen::Report {
    let opts = GenOptions {
        fuse_residual: fuse,
        ..GenOptions::default()
    };
    let g = generate(model, &opts).unwrap();
    let r = g.report;
    let bufs: Vec<Buffer> = r.buffers.iter().map(|(_, b, _)| *b).collect();
    let plan = Plan {
        offsets: r.buffers.iter().map(|(_, _, o)| *o).collect(),
        total: r.arena_len,
        peak_live: r.peak_live_len,
    };
    assert_eq!(find_overlap(&bufs, &plan), None, "live buffers overlap");
    for (name, b, o) in &r.buffers {
        assert!(o + b.size <= r.arena_len, "{name} runs past the arena");
        assert_eq!(o % ARENA_ALIGN, 0, "{name} misaligned");
    }
    assert!(r.arena_len >= r.peak_live_len);
    r
}

#[test]
fn small_plan_never_overlaps_and_is_near_the_lower_bound() {
    let r = check_plan(&small(), true);
    // Input (3x224x224) and stem output (16x112x112) are alive together:
    // the bound is at least their sum.
    assert!(r.peak_live_len >= 3 * 224 * 224 + 16 * 112 * 112);
    // Greedy by size reaches the bound on a chain-shaped network.
    assert_eq!(r.arena_len, r.peak_live_len, "{r:?}");
    check_plan(&small(), false);
}

#[test]
fn residual_adds_fuse_into_pointwise() {
    let m = small();
    let adds = m
        .graph
        .ops
        .iter()
        .filter(|o| matches!(o, Op::Add(_)))
        .count();
    assert_eq!(adds, 6);
    let fused = check_plan(&m, true);
    let unfused = check_plan(&m, false);
    assert_eq!(fused.layers.len() + adds, unfused.layers.len());
    assert!(fused.layers.iter().all(|l| l.kernel != "add"));
    assert_eq!(
        unfused.layers.iter().filter(|l| l.kernel == "add").count(),
        adds
    );
}

#[test]
fn small_counts_match_the_architecture() {
    let r = check_plan(&small(), true);
    let kinds = |k: &str| r.layers.iter().filter(|l| l.kernel == k).count();
    assert_eq!(kinds("conv_stem"), 1);
    assert_eq!(kinds("depthwise"), 11);
    // Blocks 1 and 4-8 (maps of 56x56 and 14x14 pixels) scale their projection's weights,
    // blocks 9-11 (7x7 against 96 outputs) their map.
    assert_eq!(kinds("squeeze_excite_weights"), 6);
    assert_eq!(kinds("squeeze_excite"), 3);
    assert_eq!(kinds("linear"), 1);
    // torchvision mobilenet_v3_small features: ~56 M MACs at 224x224.
    assert!((54_000_000..62_000_000).contains(&r.macs), "{}", r.macs);
}

#[test]
fn emitted_code_has_the_constants_and_runtime_path() {
    let m = SyntheticSpec::tiny(2).build().unwrap();
    let opts = GenOptions {
        runtime_path: "crate".into(),
        ..GenOptions::default()
    };
    let g = generate(&m, &opts).unwrap();
    for c in [
        "pub const ARENA_LEN",
        "pub const INPUT_LEN: usize = 3072",
        "pub const NUM_CLASSES: usize = 3",
        "pub const CLASS_NAMES",
        "pub const INPUT_H: usize = 32",
        "pub const MEAN",
        "pub const STD",
        "pub const PARAMS",
        "pub const MACS",
        "crate::kernels::pointwise(",
        "include_bytes!",
    ] {
        assert!(g.code.contains(c), "missing {c:?}");
    }
    assert!(!g.code.contains("derm_runtime"));
    assert_eq!(g.weights.len() % 4, 0);
    let bad = GenOptions {
        runtime_path: "not a path".into(),
        ..GenOptions::default()
    };
    assert!(matches!(generate(&m, &bad), Err(CodegenError::Option(_))));
}

#[test]
fn unsupported_conv_is_named() {
    let mut m = SyntheticSpec::tiny(2).build().unwrap();
    // Turn the second conv (1x1 expand) into a 3x3 dense conv: valid IR,
    // but no kernel implements a dense 3x3 conv inside the network.
    let idx = m
        .graph
        .ops
        .iter()
        .position(|o| matches!(o, Op::Conv2d(c) if c.kernel == [1, 1]))
        .unwrap();
    let Op::Conv2d(Conv2d {
        name,
        weight,
        in_channels,
        out_channels,
        kernel,
        padding,
        ..
    }) = &mut m.graph.ops[idx]
    else {
        unreachable!()
    };
    *kernel = [3, 3];
    *padding = [1, 1];
    let (name, weight, ci, co) = (name.clone(), weight.clone(), *in_channels, *out_channels);
    let t = derm_codegen::ir::Tensor::from_f32(vec![co, ci, 3, 3], &vec![0.1; co * ci * 9]);
    m.graph.tensors.get_mut(&weight).unwrap().shape = t.shape.clone();
    m.tensors.insert(weight, t);
    m.validate().unwrap();
    let e = generate(&m, &GenOptions::default()).unwrap_err();
    assert!(matches!(e, CodegenError::Unsupported { .. }), "{e}");
    assert!(e.to_string().contains(&name), "{e}");
}

#[test]
fn run_hands_an_f32_input_to_the_stem_without_copying() {
    let m = SyntheticSpec::tiny(2).build().unwrap();
    let g = generate(&m, &GenOptions::default()).unwrap();
    let run = &g.code[g.code.find("pub fn run(").expect("a run function")..];
    let run = &run[..run.find("\n}").expect("run's end")];
    assert!(
        run.contains("forward_from(arena, ::core::option::Option::Some(&input[..]))"),
        "{run}"
    );
    assert!(!run.contains("copy_from_slice"), "{run}");
    // Only the stem reads the model input, so only it takes `input`.
    assert_eq!(
        g.code
            .matches("input: ::core::option::Option<&[f32]>")
            .count(),
        2,
        "the stem layer and forward_from"
    );
}
