//! The int8 path end to end: a tiny quantized model, compiled by the build
//! script into int8 kernel calls, against the int8 oracle
//! (`derm_codegen::reference::int8`, run at build time) and against logits
//! committed below. Integer arithmetic is the same on every machine, so both
//! comparisons are bit for bit, and this test runs unchanged on x86_64 and
//! on aarch64 (under qemu in `scripts/test.sh`).

mod common;

#[allow(dead_code)]
mod tiny_int8 {
    include!(concat!(env!("OUT_DIR"), "/tiny_int8_model.rs"));
}

/// The inputs and oracle logits the build script wrote.
fn golden() -> (Vec<f32>, Vec<f32>) {
    common::split_golden(
        include_bytes!(concat!(env!("OUT_DIR"), "/tiny_int8_golden.bin")),
        tiny_int8::INPUT_LEN,
        tiny_int8::NUM_CLASSES,
    )
}

fn run_all() -> Vec<f32> {
    let (x, _) = golden();
    let mut arena = vec![0f32; tiny_int8::ARENA_LEN];
    let arena: &mut [f32; tiny_int8::ARENA_LEN] = arena.as_mut_slice().try_into().unwrap();
    x.chunks_exact(tiny_int8::INPUT_LEN)
        .flat_map(|input| tiny_int8::run(input.try_into().unwrap(), arena))
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// The compiled logits `got` equal, to the bit, the oracle's `want` and the committed
/// `expected` bits (printed as left when they differ).
fn assert_oracle_and_committed_bits(got: &[f32], want: &[f32], expected: &[u32], what: &str) {
    assert_eq!(
        bits(got),
        bits(want),
        "{what}: compiled kernels against the oracle"
    );
    assert_eq!(
        bits(got),
        expected,
        "{what}: logits differ from the committed ones (printed as left)"
    );
}

#[test]
fn tiny_int8_model_is_bit_exact_with_the_oracle() {
    let (_, want) = golden();
    assert_eq!(want.len(), 3 * tiny_int8::NUM_CLASSES);
    assert_eq!(bits(&run_all()), bits(&want));
    // It is an int8 module: the input is quantized first, every kernel is an int8 one.
    assert_eq!(tiny_int8::LAYERS[0].1, "int8::quantize");
    assert!(
        tiny_int8::LAYERS
            .iter()
            .all(|(_, k)| k.starts_with("int8::"))
    );
    assert!(tiny_int8::LAYERS.iter().any(|(_, k)| *k == "int8::add"));
    assert!(
        tiny_int8::LAYERS
            .iter()
            .any(|(_, k)| *k == "int8::squeeze_excite")
    );
}

/// The logits of the three golden inputs, as `f32` bits, pinned when the int8
/// kernels were written. A change here means the int8 arithmetic (or the
/// tiny model, or its quantization) changed: every machine must agree with it.
const EXPECTED_BITS: [u32; 3 * tiny_int8::NUM_CLASSES] = [
    1038080363, 1025253690, 3183645562, // smooth input, seed 4
    1042756404, 3166804731, 3183840469, // smooth input, seed 5
    1040450302, 3175221521, 3192261117, // uniform noise in [-2, 2)
];

#[test]
fn tiny_int8_logits_match_the_committed_bits() {
    let got = bits(&run_all());
    assert_eq!(
        got, EXPECTED_BITS,
        "int8 logits differ from the committed ones (printed as got)"
    );
}

#[test]
fn int8_run_does_not_depend_on_arena_contents() {
    let (x, _) = golden();
    let input: &[f32; tiny_int8::INPUT_LEN] = x[..tiny_int8::INPUT_LEN].try_into().unwrap();
    let mut arena = vec![f32::NAN; tiny_int8::ARENA_LEN];
    let arena: &mut [f32; tiny_int8::ARENA_LEN] = arena.as_mut_slice().try_into().unwrap();
    let a = tiny_int8::run(input, arena);
    tiny_int8::run(&[0.25; tiny_int8::INPUT_LEN], arena);
    let b = tiny_int8::run(input, arena);
    assert_eq!(bits(&a), bits(&b));
}

/// `(oracle logits, compiled logits)` of a tiny int8 fixture module (each generated module
/// is its own type, so a macro): the build script's golden inputs `$golden` through `$m`.
macro_rules! golden_and_run {
    ($m:ident, $golden:literal) => {{
        let (x, want) = common::split_golden(
            include_bytes!(concat!(env!("OUT_DIR"), $golden)),
            $m::INPUT_LEN,
            $m::NUM_CLASSES,
        );
        let mut arena = vec![0f32; $m::ARENA_LEN];
        let arena: &mut [f32; $m::ARENA_LEN] = arena.as_mut_slice().try_into().unwrap();
        let got: Vec<f32> = x
            .chunks_exact($m::INPUT_LEN)
            .flat_map(|input| $m::run(input.try_into().unwrap(), arena))
            .collect();
        (want, got)
    }};
}

#[allow(dead_code)]
mod tiny_int8_fhs {
    include!(concat!(env!("OUT_DIR"), "/tiny_int8_fhs_model.rs"));
}

/// The tiny model with every hardswish in `f32` (`quantization.float_hardswish`): its
/// oracle logits and its logits through the compiled kernels.
fn fhs_golden_and_run() -> (Vec<f32>, Vec<f32>) {
    golden_and_run!(tiny_int8_fhs, "/tiny_int8_fhs_golden.bin")
}

/// The float hardswish model's logits, pinned like [`EXPECTED_BITS`]: the epilogue's
/// `f32` steps are the same IEEE operations on every machine, so these bits are too.
const EXPECTED_FHS_BITS: [u32; 3 * tiny_int8_fhs::NUM_CLASSES] = [
    1038561938, 1025852816, 3183061908, // smooth input, seed 4
    1042699778, 3168506084, 3183856489, // smooth input, seed 5
    1040503612, 3175057649, 3192244296, // uniform noise in [-2, 2)
];

#[test]
fn float_hardswish_model_is_bit_exact_with_the_oracle_and_the_committed_bits() {
    let (want, got) = fhs_golden_and_run();
    assert_oracle_and_committed_bits(&got, &want, &EXPECTED_FHS_BITS, "float hardswish");
    // It differs from the table model: the float epilogue was really taken.
    assert_ne!(bits(&got), bits(&run_all()));
}

#[allow(dead_code)]
mod tiny_int8_pc {
    include!(concat!(env!("OUT_DIR"), "/tiny_int8_pc_model.rs"));
}

/// The float hardswish model with every depthwise input on a grid per channel
/// (`quantization.channel_scales`): its oracle logits and its logits through the compiled
/// kernels.
fn pc_golden_and_run() -> (Vec<f32>, Vec<f32>) {
    golden_and_run!(tiny_int8_pc, "/tiny_int8_pc_golden.bin")
}

/// The per-channel grid model's logits, pinned like [`EXPECTED_FHS_BITS`].
const EXPECTED_PC_BITS: [u32; 3 * tiny_int8_pc::NUM_CLASSES] = [
    1038813949, 1025696250, 3182903312, // smooth input, seed 4
    1042918119, 3168040560, 3184047658, // smooth input, seed 5
    1040216911, 3171760365, 3190370250, // uniform noise in [-2, 2)
];

#[test]
fn per_channel_grid_model_is_bit_exact_with_the_oracle_and_the_committed_bits() {
    let (want, got) = pc_golden_and_run();
    assert_oracle_and_committed_bits(&got, &want, &EXPECTED_PC_BITS, "per-channel grids");
    // It differs from the one-grid model: the per-channel scales were really applied.
    assert_ne!(bits(&got), bits(&fhs_golden_and_run().1));
}
