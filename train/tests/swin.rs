//! The Swin V2-T teacher: torchvision's parameter count and names, and forward shapes at the
//! two input sizes the project uses.

use derm_train::models::swin_v2::{SwinV2, SwinV2Config, trainable_parameter_count};
use tch::nn::{self, ModuleT};
use tch::{Device, Kind, Tensor};

#[test]
fn swin_v2_t_matches_torchvision_parameter_count_and_names() {
    let vs = nn::VarStore::new(Device::Cpu);
    let _net = SwinV2::new(&vs.root(), SwinV2Config::swin_v2_t(1000)).unwrap();
    // sum(p.numel() for p in torchvision.models.swin_v2_t().parameters())
    assert_eq!(trainable_parameter_count(&vs), 28_351_570);

    let vars = vs.variables();
    for (key, shape) in [
        ("features.0.0.weight", vec![96, 3, 4, 4]),
        ("features.0.2.bias", vec![96]),
        ("features.1.0.attn.qkv.weight", vec![288, 96]),
        ("features.1.0.attn.logit_scale", vec![3, 1, 1]),
        ("features.1.0.attn.cpb_mlp.0.weight", vec![512, 2]),
        ("features.1.0.attn.cpb_mlp.2.weight", vec![3, 512]),
        (
            "features.1.0.attn.relative_coords_table",
            vec![1, 15, 15, 2],
        ),
        ("features.1.0.attn.relative_position_index", vec![4096]),
        ("features.1.1.mlp.3.weight", vec![96, 384]),
        ("features.2.reduction.weight", vec![192, 384]),
        ("features.2.norm.weight", vec![192]),
        ("features.5.5.norm2.weight", vec![384]),
        ("features.7.1.attn.proj.bias", vec![768]),
        ("norm.weight", vec![768]),
        ("head.weight", vec![1000, 768]),
    ] {
        let t = vars.get(key).unwrap_or_else(|| panic!("missing {key}"));
        assert_eq!(t.size(), shape, "{key}");
    }
    // Buffers are stored under torchvision's names but are not trained.
    assert!(!vars["features.1.0.attn.relative_position_index"].requires_grad());
    assert!(vars.keys().all(|k| !k.contains("cpb_mlp.2.bias")));
}

#[test]
fn swin_v2_t_forward_shapes_at_128_and_224() {
    tch::manual_seed(0);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SwinV2::new(&vs.root(), SwinV2Config::swin_v2_t(6)).unwrap();
    tch::no_grad(|| {
        for side in [128_i64, 224] {
            let x = Tensor::randn([2, 3, side, side], (Kind::Float, Device::Cpu));
            let y = net.forward_t(&x, false);
            assert_eq!(y.size(), [2, 6], "input {side}");
            assert!(bool::try_from(y.isfinite().all()).unwrap(), "input {side}");
        }
    });
    // A non-square input divisible by 32 also runs (one stage is shifted in one axis only).
    let cfg = net.config();
    cfg.check_input_size(96, 160).unwrap();
    assert!(cfg.check_input_size(100, 128).is_err());
    let y = tch::no_grad(|| {
        net.forward_t(
            &Tensor::randn([1, 3, 96, 160], (Kind::Float, Device::Cpu)),
            false,
        )
    });
    assert_eq!(y.size(), [1, 6]);
}

#[test]
fn swin_v2_eval_is_deterministic_and_train_mode_drops_paths() {
    tch::manual_seed(1);
    let vs = nn::VarStore::new(Device::Cpu);
    let net = SwinV2::new(&vs.root(), SwinV2Config::swin_v2_t(6)).unwrap();
    let x = Tensor::randn([4, 3, 64, 64], (Kind::Float, Device::Cpu));
    tch::no_grad(|| {
        let a = net.forward_t(&x, false);
        let b = net.forward_t(&x, false);
        assert_eq!(f64::try_from((&a - &b).abs().max()).unwrap(), 0.0);
        // Stochastic depth (p up to 0.2) makes training-mode outputs differ from eval.
        let t = net.forward_t(&x, true);
        assert!(f64::try_from((&a - &t).abs().max()).unwrap() > 0.0);
    });
}
