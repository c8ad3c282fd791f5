//! export -> codegen -> runtime: the generated Rust for four exported students (Small and
//! Large, paper and torchvision heads, BatchNorm with non-trivial statistics) matches the
//! tch eval logits within 1e-4 of each sample's logit range.

macro_rules! variant {
    ($m:ident) => {
        #[allow(dead_code, clippy::all)]
        mod $m {
            include!(concat!(env!("OUT_DIR"), "/", stringify!($m), ".rs"));
        }
    };
}
variant!(small_paper);
variant!(small_torchvision);
variant!(large_paper);
variant!(large_torchvision);

/// Tolerance relative to each sample's logit range (issue 3).
const TOL: f32 = 1e-4;

fn golden(name: &str) -> (Vec<f32>, Vec<f32>, usize) {
    let path = format!("{}/{name}.golden.safetensors", env!("OUT_DIR"));
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let f32s = |t: &str| -> (Vec<usize>, Vec<f32>) {
        let v = st.tensor(t).unwrap_or_else(|e| panic!("{path}: {t}: {e}"));
        let d = v
            .data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        (v.shape().to_vec(), d)
    };
    let (is, x) = f32s("input");
    let (ls, y) = f32s("logits");
    assert_eq!(is[0], ls[0]);
    (x, y, is[0])
}

fn check(name: &str, input_len: usize, classes: usize, mut run: impl FnMut(&[f32]) -> Vec<f32>) {
    let (x, y, n) = golden(name);
    assert_eq!(x.len(), n * input_len, "{name}: input size");
    assert_eq!(y.len(), n * classes, "{name}: classes");
    for i in 0..n {
        let got = run(&x[i * input_len..][..input_len]);
        let want = &y[i * classes..][..classes];
        let max = want.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = want.iter().copied().fold(f32::INFINITY, f32::min);
        let range = max - min;
        assert!(
            range > 1e-3,
            "{name} sample {i}: degenerate golden logits {want:?}"
        );
        let worst = got
            .iter()
            .zip(want)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            worst <= TOL * range,
            "{name} sample {i}: max |diff| {worst:e} > {TOL} x range {range}\n got  {got:?}\n want {want:?}"
        );
    }
}

macro_rules! parity_test {
    ($test:ident, $m:ident) => {
        #[test]
        fn $test() {
            let mut arena: Box<[f32; $m::ARENA_LEN]> = vec![0f32; $m::ARENA_LEN]
                .into_boxed_slice()
                .try_into()
                .unwrap();
            check(stringify!($m), $m::INPUT_LEN, $m::NUM_CLASSES, |x| {
                let input: &[f32; $m::INPUT_LEN] = x.try_into().unwrap();
                $m::run(input, &mut arena).to_vec()
            });
        }
    };
}
parity_test!(small_paper_matches_tch, small_paper);
parity_test!(small_torchvision_matches_tch, small_torchvision);
parity_test!(large_paper_matches_tch, large_paper);
parity_test!(large_torchvision_matches_tch, large_torchvision);

#[test]
fn generated_constants_describe_the_exports() {
    assert_eq!(small_paper::INPUT_LEN, 3 * 224 * 224);
    assert_eq!(
        small_paper::CLASS_NAMES,
        ["BCC", "BKL", "MEL", "NV", "unknown", "VASC"]
    );
    // Parameters after BatchNorm folding: trainable minus one of (gamma, beta) per channel.
    assert_eq!(small_paper::PARAMS, 924_414);
    // The torchvision head adds Linear(960 -> 1280) and widens the last Linear to 1280 inputs.
    assert_eq!(
        large_torchvision::PARAMS - large_paper::PARAMS,
        (960 * 1280 + 1280) + (1280 * 6 + 6) - (960 * 6 + 6)
    );
    assert_eq!(large_paper::MEAN, [0.7640, 0.5382, 0.5630]);
}
