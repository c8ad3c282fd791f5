//! Int8 models: from the [`QuantPlan`] of a quantized file to one Rust module
//! calling `kernels::int8`, with the same public items as a float module
//! (`ARENA_LEN`, `forward`, `run`, ...), so the runtime's API does not change.
//!
//! - The memory plan counts **bytes**: the int8 model input, int8
//!   activations, `i32` squeeze-excite scratch and the `f32` logits, each at a
//!   64-byte aligned offset. The `f32` input never enters the arena: the
//!   network's first step, its quantization, happens as it is written
//!   (`input_values` for a preprocessed row, `run` for a whole input). The
//!   arena stays an array of `f32` words (`ARENA_LEN = bytes / 4`, rounded
//!   up) and every layer takes typed views of its buffers (`&mut [i8]`,
//!   `&mut [i32]`, `&mut [f32]`) through `bytemuck`, which never fails here:
//!   offsets are multiples of 64 bytes.
//! - The int8 weights are one byte blob (`&[i8]`, tensors at 64-byte
//!   offsets), in the kernels' layouts. Per-channel constants (biases with the
//!   input zero point folded in where no padding exists, multipliers, shifts,
//!   lookup tables, logit scales) are `static` arrays in each layer function.
//! - Residual adds are not fused into the pointwise kernel: an int8 add
//!   rescales both inputs, which the pointwise epilogue does not do.
//!
//! Every integer constant comes from [`QuantPlan`]; nothing is re-derived
//! here, so the generated code and `reference::int8` cannot drift apart.

use proc_macro2::{Literal, TokenStream};
use quote::{ToTokens, format_ident, quote};

use super::{InputForm, Module, model_params, sanitize, split_arena};
use crate::ir::{Conv2d, ModelFile, Op, ValueShapes};
use crate::nodes::{depthwise_layout, lit, stem_layout};
use crate::plan::{Buffer, Plan, Step, plan_memory};
use crate::quant::{AddPlan, ConvOutput, ConvPlan, Multiplier, OpPlan, QuantPlan, SePlan};
use crate::{CodegenError, GenOptions, Generated, LayerReport, Report};

/// Arena offsets and weight tensors start at multiples of this many bytes.
const ALIGN_BYTES: usize = 64;

/// The element type of a planned buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ty {
    F32,
    I8,
    I32,
}

impl Ty {
    fn size(self) -> usize {
        match self {
            Ty::I8 => 1,
            Ty::F32 | Ty::I32 => 4,
        }
    }
}

/// What one step computes, with the constants it needs.
enum Call<'a> {
    Stem {
        c: &'a Conv2d,
        shape: [usize; 4],
        p: &'a ConvPlan,
    },
    Depthwise {
        c: &'a Conv2d,
        shape: [usize; 4],
        p: &'a ConvPlan,
    },
    Pointwise {
        c: &'a Conv2d,
        pixels: usize,
        p: &'a ConvPlan,
    },
    Linear {
        k: usize,
        n: usize,
        p: &'a ConvPlan,
    },
    SqueezeExcite {
        pixels: usize,
        c: usize,
        q: usize,
        p: &'a SePlan,
    },
    Add(&'a AddPlan),
    Pool {
        pixels: usize,
        p: &'a crate::quant::PoolPlan,
    },
}

/// One kernel call of the int8 module.
struct Node<'a> {
    name: String,
    kernel: &'static str,
    step: Step,
    out_ty: Ty,
    macs: u64,
    call: Call<'a>,
}

fn unsupported(op: &str, reason: impl Into<String>) -> CodegenError {
    CodegenError::Unsupported {
        op: op.to_owned(),
        reason: reason.into(),
    }
}

/// A signed integer as tokens (a negative literal is `-` and a positive one).
fn int(v: i64) -> TokenStream {
    let a = Literal::u64_unsuffixed(v.unsigned_abs());
    if v < 0 { quote!(-#a) } else { quote!(#a) }
}

fn ints<T: Copy + Into<i64>>(v: &[T]) -> Vec<TokenStream> {
    v.iter().map(|&x| int(x.into())).collect()
}

/// The name of the int8 copy of the model input.
fn quantized_input(g: &crate::ir::Graph) -> String {
    format!("{}:int8", g.input.name)
}

/// `bias[j] - x_zero_point * sum_i w[j][i]`: the pointwise and linear
/// kernels then sum `w * x` directly. Exact: with `x = 0` this is the
/// oracle's accumulator, which the plan proved fits `i32`.
fn fold_zero_point(p: &ConvPlan, k: usize) -> Vec<i32> {
    p.bias
        .iter()
        .enumerate()
        .map(|(j, &b)| {
            let s: i64 = p.weight[j * k..(j + 1) * k]
                .iter()
                .map(|&w| i64::from(w))
                .sum();
            (i64::from(b) - i64::from(p.x_zero_point) * s) as i32
        })
        .collect()
}

/// Lowers the graph to int8 kernel calls, one per op. They read the int8
/// copy of the model input; the quantization that makes it is written with
/// the input (`input_values`, `run`), not a step of the memory plan.
fn lower<'a>(
    model: &'a ModelFile,
    shapes: &ValueShapes,
    plan: &'a QuantPlan,
) -> Result<Vec<Node<'a>>, CodegenError> {
    let g = &model.graph;
    let q_in = quantized_input(g);
    let mut nodes = Vec::with_capacity(g.ops.len());
    // Reads of the model input are reads of its int8 copy.
    let src = |v: &str| -> String {
        if v == g.input.name {
            q_in.clone()
        } else {
            v.to_owned()
        }
    };
    for (op, p) in g.ops.iter().zip(&plan.ops) {
        let name = op.name();
        let ys = &shapes[op.output()];
        let out_len: usize = ys.iter().product();
        let is_output = op.output() == g.output;
        let mismatch = || unsupported(name, "the quantization plan does not match the op");
        let (kernel, call, macs, in_place, scratch) = match (op, p) {
            (Op::Conv2d(c), OpPlan::Conv(cp)) => {
                let xs = &shapes[&c.input];
                if is_output {
                    return Err(unsupported(
                        name,
                        "an int8 graph output must be a linear layer (its logits are f32)",
                    ));
                }
                let square = c.stride[0] == c.stride[1] && c.padding[0] == c.padding[1];
                let shape = [xs[1], xs[2], ys[1], ys[2]];
                let macs = (out_len * c.in_channels / c.groups * c.kernel[0] * c.kernel[1]) as u64;
                if c.input == g.input.name {
                    if c.groups != 1 || !square {
                        return Err(unsupported(
                            name,
                            "the stem conv needs groups 1 and equal strides and paddings",
                        ));
                    }
                    (
                        "int8::conv_stem",
                        Call::Stem { c, shape, p: cp },
                        macs,
                        false,
                        0,
                    )
                } else if c.kernel == [1, 1]
                    && c.stride == [1, 1]
                    && c.padding == [0, 0]
                    && c.groups == 1
                {
                    let pixels = ys[1] * ys[2];
                    let call = Call::Pointwise { c, pixels, p: cp };
                    ("int8::pointwise", call, macs, false, 0)
                } else if c.groups == c.in_channels
                    && c.groups == c.out_channels
                    && c.kernel[0] == c.kernel[1]
                    && square
                {
                    let call = Call::Depthwise { c, shape, p: cp };
                    ("int8::depthwise", call, macs, false, 0)
                } else {
                    return Err(unsupported(
                        name,
                        format!(
                            "no int8 kernel for a conv with kernel {:?}, stride {:?}, groups {}: \
                             supported are the model-input conv, 1x1 stride-1 dense convs and \
                             square depthwise convs",
                            c.kernel, c.stride, c.groups
                        ),
                    ));
                }
            }
            (Op::Linear(l), OpPlan::Conv(cp)) => {
                let call = Call::Linear {
                    k: l.in_features,
                    n: l.out_features,
                    p: cp,
                };
                let kernel = if is_output {
                    "int8::linear_logits"
                } else {
                    "int8::linear"
                };
                let macs = (l.in_features * l.out_features) as u64;
                (kernel, call, macs, false, 0)
            }
            (Op::SqueezeExcite(s), OpPlan::SqueezeExcite(sp)) => {
                let xs = &shapes[&s.input];
                let (c, q, pixels) = (s.channels, s.squeeze_channels, xs[1] * xs[2]);
                let call = Call::SqueezeExcite {
                    pixels,
                    c,
                    q,
                    p: sp,
                };
                let macs = (2 * c * q + 2 * pixels * c) as u64;
                // pooled (c), hidden (q) and gates (c), as i32.
                ("int8::squeeze_excite", call, macs, true, 4 * (2 * c + q))
            }
            (Op::Add(_), OpPlan::Add(ap)) => ("int8::add", Call::Add(ap), out_len as u64, false, 0),
            (Op::GlobalAvgPool(p_op), OpPlan::Pool(pp)) => {
                let xs = &shapes[&p_op.input];
                let pixels = xs[1] * xs[2];
                let call = Call::Pool { pixels, p: pp };
                (
                    "int8::global_avg_pool",
                    call,
                    (pixels * xs[0]) as u64,
                    false,
                    0,
                )
            }
            _ => return Err(mismatch()),
        };
        let out_ty = if is_output { Ty::F32 } else { Ty::I8 };
        nodes.push(Node {
            name: name.to_owned(),
            kernel,
            step: Step {
                name: name.to_owned(),
                inputs: op.inputs().into_iter().map(src).collect(),
                output: op.output().to_owned(),
                output_len: out_len * out_ty.size(),
                in_place,
                scratch_len: scratch,
            },
            out_ty,
            macs,
            call,
        });
    }
    Ok(nodes)
}

/// Appends `values` to the blob at the next aligned position.
fn push_weights(blob: &mut Vec<i8>, values: &[i8]) -> TokenStream {
    let start = blob.len().div_ceil(ALIGN_BYTES) * ALIGN_BYTES;
    blob.resize(start, 0);
    blob.extend_from_slice(values);
    let (a, b) = (lit(start), lit(blob.len()));
    quote!(&w[#a..#b])
}

/// `static` arrays of a per-channel requantization: `MULT`, `SHIFT`.
fn mult_statics(prefix: &str, m: &[Multiplier]) -> (TokenStream, TokenStream, TokenStream) {
    let n = lit(m.len());
    let (mn, sn) = (
        format_ident!("{}MULT", prefix),
        format_ident!("{}SHIFT", prefix),
    );
    let mults = ints(&m.iter().map(|x| x.m).collect::<Vec<_>>());
    let shifts: Vec<Literal> = m
        .iter()
        .map(|x| Literal::u8_unsuffixed(x.shift as u8))
        .collect();
    (
        quote! {
            static #mn: [i32; #n] = [#(#mults),*];
            static #sn: [u8; #n] = [#(#shifts),*];
        },
        quote!(&#mn),
        quote!(&#sn),
    )
}

fn mult_value(rt: &TokenStream, m: Multiplier) -> TokenStream {
    let (mm, s) = (int(i64::from(m.m)), Literal::u8_unsuffixed(m.shift as u8));
    quote!(#rt::kernels::int8::Mult { m: #mm, shift: #s })
}

/// The statics and the `Epilogue` expression of a conv/linear output that is int8.
fn epilogue(rt: &TokenStream, o: &ConvOutput) -> (TokenStream, TokenStream) {
    let (mut statics, e, mult) = match o {
        ConvOutput::Requant {
            mult,
            zero_point,
            min,
        } => {
            let (statics, m, s) = mult_statics("", mult);
            let (z, min) = (int(i64::from(*zero_point)), int(i64::from(*min)));
            (
                statics,
                quote!(#rt::kernels::int8::Epilogue::requant(#m, #s, #z, #min)),
                mult,
            )
        }
        ConvOutput::Hardswish {
            mult,
            pre_zero_point,
            table,
        } => {
            let (mut statics, m, s) = mult_statics("", mult);
            let t = ints(&table[..]);
            statics.extend(quote!(static TABLE: [i8; 256] = [#(#t),*];));
            let z = int(i64::from(*pre_zero_point));
            (
                statics,
                quote!(#rt::kernels::int8::Epilogue::hardswish(#m, #s, #z, &TABLE)),
                mult,
            )
        }
        ConvOutput::FloatHardswish {
            scale,
            inv_scale,
            zero_point,
        } => {
            let n = lit(scale.len());
            let v: Vec<Literal> = scale.iter().map(|v| Literal::f32_suffixed(*v)).collect();
            let inv: Vec<Literal> = inv_scale
                .iter()
                .map(|v| Literal::f32_suffixed(*v))
                .collect();
            let z = int(i64::from(*zero_point));
            return (
                quote!(
                    static SCALE: [f32; #n] = [#(#v),*];
                    static INV_SCALE: [f32; #n] = [#(#inv),*];
                ),
                quote!(#rt::kernels::int8::Epilogue::float_hardswish(&SCALE, &INV_SCALE, #z)),
            );
        }
        // Lowering sends the logits to `linear_logits`; no int8 epilogue.
        ConvOutput::Logits { .. } => return (TokenStream::new(), TokenStream::new()),
    };
    // Every shift above 31: the second form of the shifts (`31 - s`), which lets the
    // requantization run in 32-bit lanes without converting the shifts on every row.
    if mult.iter().all(|m| m.shift > 31) {
        let n = lit(mult.len());
        let t = ints(&mult.iter().map(|m| 31 - m.shift as i32).collect::<Vec<_>>());
        statics.extend(quote!(static HIGH_SHIFT: [i32; #n] = [#(#t),*];));
        (statics, quote!(#e.with_high_shifts(&HIGH_SHIFT)))
    } else {
        (statics, e)
    }
}

fn bias_static(name: &str, b: &[i32]) -> TokenStream {
    let (id, n, v) = (format_ident!("{}", name), lit(b.len()), ints(b));
    quote!(static #id: [i32; #n] = [#(#v),*];)
}

/// The statics and the kernel call of one node.
fn render(
    rt: &TokenStream,
    node: &Node<'_>,
    inputs: &[TokenStream],
    out: &TokenStream,
    scratch: &TokenStream,
    blob: &mut Vec<i8>,
) -> TokenStream {
    let k8 = quote!(#rt::kernels::int8);
    match &node.call {
        Call::Stem { c, shape, p } => {
            let [ih, iw, oh, ow] = shape.map(lit);
            let (cin, cout, kh, kw) = (c.in_channels, c.out_channels, c.kernel[0], c.kernel[1]);
            let w = push_weights(blob, &stem_layout(&p.weight, cout, cin, kh, kw));
            let (statics, e) = epilogue(rt, &p.output);
            let bias = bias_static("BIAS", &p.bias);
            let (cin, cout, kh, kw) = (lit(cin), lit(cout), lit(kh), lit(kw));
            let (stride, pad) = (lit(c.stride[0]), lit(c.padding[0]));
            let (x, z) = (&inputs[0], int(i64::from(p.x_zero_point)));
            quote! {
                #statics
                #bias
                const SHAPE: #k8::ConvShape = #k8::ConvShape {
                    ih: #ih, iw: #iw, cin: #cin, cout: #cout, kh: #kh, kw: #kw,
                    stride: #stride, pad: #pad, oh: #oh, ow: #ow,
                };
                #k8::conv_stem(#x, SHAPE, #z, #w, &BIAS, #e, #out);
            }
        }
        Call::Depthwise { c, shape, p } => {
            let [ih, iw, oh, ow] = shape.map(lit);
            let w = push_weights(
                blob,
                &depthwise_layout(&p.weight, c.out_channels, c.kernel[0]),
            );
            let (statics, e) = epilogue(rt, &p.output);
            let bias = bias_static("BIAS", &p.bias);
            let (ch, k) = (lit(c.out_channels), lit(c.kernel[0]));
            let (stride, pad) = (lit(c.stride[0]), lit(c.padding[0]));
            let (x, z) = (&inputs[0], int(i64::from(p.x_zero_point)));
            quote! {
                #statics
                #bias
                const SHAPE: #k8::DepthwiseShape = #k8::DepthwiseShape {
                    ih: #ih, iw: #iw, c: #ch, k: #k, stride: #stride, pad: #pad, oh: #oh, ow: #ow,
                };
                #k8::depthwise(#x, SHAPE, #z, #w, &BIAS, #e, #out);
            }
        }
        Call::Pointwise { c, pixels, p } => {
            let w = push_weights(blob, &p.weight);
            let (statics, e) = epilogue(rt, &p.output);
            let bias = bias_static("BIAS", &fold_zero_point(p, c.in_channels));
            let (px, k, n) = (lit(*pixels), lit(c.in_channels), lit(c.out_channels));
            let x = &inputs[0];
            quote! {
                #statics
                #bias
                const SHAPE: #k8::PointwiseShape = #k8::PointwiseShape { pixels: #px, k: #k, n: #n };
                #k8::pointwise(#x, SHAPE, #w, &BIAS, #e, #out);
            }
        }
        Call::Linear { k, n, p } => {
            let w = push_weights(blob, &p.weight);
            let bias = bias_static("BIAS", &fold_zero_point(p, *k));
            let x = &inputs[0];
            let kk = lit(*k);
            if let ConvOutput::Logits { scale } = &p.output {
                let nn = lit(*n);
                let s: Vec<Literal> = scale.iter().map(|v| Literal::f32_suffixed(*v)).collect();
                quote! {
                    #bias
                    static SCALE: [f32; #nn] = [#(#s),*];
                    #k8::linear_logits(#x, #kk, #w, &BIAS, &SCALE, #out);
                }
            } else {
                let (statics, e) = epilogue(rt, &p.output);
                quote! {
                    #statics
                    #bias
                    #k8::linear(#x, #kk, #w, &BIAS, #e, #out);
                }
            }
        }
        Call::SqueezeExcite { pixels, c, q, p } => {
            let w1 = push_weights(blob, &p.fc1_weight);
            let w2 = push_weights(blob, &p.fc2_weight);
            let b1 = bias_static("FC1_BIAS", &p.fc1_bias);
            let b2 = bias_static("FC2_BIAS", &p.fc2_bias);
            let (m1, fc1_mult, fc1_shift) = mult_statics("FC1_", &p.fc1_mult);
            let (m2, gate_mult, gate_shift) = mult_statics("GATE_", &p.gate_mult);
            let (px, cc, qq) = (lit(*pixels), lit(*c), lit(*q));
            let (zx, zp, zh, zo) = (
                int(i64::from(p.x_zero_point)),
                int(i64::from(p.pooled_zero_point)),
                int(i64::from(p.hidden_zero_point)),
                int(i64::from(p.out_zero_point)),
            );
            let (pool_mult, out_mult) = (mult_value(rt, p.pool_mult), mult_value(rt, p.out_mult));
            quote! {
                #b1
                #b2
                #m1
                #m2
                const SHAPE: #k8::SeShape = #k8::SeShape { pixels: #px, c: #cc, squeeze: #qq };
                let params = #k8::SeParams {
                    x_zero_point: #zx,
                    pool_mult: #pool_mult,
                    pooled_zero_point: #zp,
                    fc1_weight: #w1,
                    fc1_bias: &FC1_BIAS,
                    fc1_mult: #fc1_mult,
                    fc1_shift: #fc1_shift,
                    hidden_zero_point: #zh,
                    fc2_weight: #w2,
                    fc2_bias: &FC2_BIAS,
                    gate_mult: #gate_mult,
                    gate_shift: #gate_shift,
                    out_mult: #out_mult,
                    out_zero_point: #zo,
                };
                #k8::squeeze_excite(#out, SHAPE, &params, #scratch);
            }
        }
        Call::Add(p) => {
            let [za, zb] = p.zero_points.map(|z| int(i64::from(z)));
            let [ma, mb] = p.mults.map(|m| mult_value(rt, m));
            let (mo, zo) = (mult_value(rt, p.out_mult), int(i64::from(p.out_zero_point)));
            let (a, b) = (&inputs[0], &inputs[1]);
            quote! {
                static PARAMS: #k8::AddParams = #k8::AddParams {
                    zero_points: [#za, #zb],
                    mults: [#ma, #mb],
                    out_mult: #mo,
                    out_zero_point: #zo,
                };
                #k8::add(#a, #b, &PARAMS, #out);
            }
        }
        Call::Pool { pixels, p } => {
            let (px, zx) = (lit(*pixels), int(i64::from(p.x_zero_point)));
            let (m, zo) = (mult_value(rt, p.mult), int(i64::from(p.out_zero_point)));
            let x = &inputs[0];
            quote!(#k8::global_avg_pool(#x, #px, #zx, #m, #zo, #out);)
        }
    }
}

/// The word (`f32`) view of a byte plan: offsets are multiples of 64 bytes,
/// so each buffer's words are its own.
fn word_plan(plan: &Plan, buffers: &[Buffer]) -> (Plan, Vec<Buffer>) {
    (
        Plan {
            offsets: plan.offsets.iter().map(|o| o / 4).collect(),
            total: plan.total.div_ceil(4),
            peak_live: plan.peak_live.div_ceil(4),
        },
        buffers
            .iter()
            .map(|b| Buffer {
                size: b.size.div_ceil(4),
                ..*b
            })
            .collect(),
    )
}

/// Generates the module of a quantized model (`plan` from [`QuantPlan::new`]).
pub(crate) fn generate(
    model: &ModelFile,
    shapes: &ValueShapes,
    qplan: &QuantPlan,
    opts: &GenOptions,
) -> Result<Generated, CodegenError> {
    let g = &model.graph;
    let rt = super::runtime_path(opts)?;
    let nodes = lower(model, shapes, qplan)?;
    let steps: Vec<Step> = nodes.iter().map(|n| n.step.clone()).collect();
    let input_len: usize = shapes[&g.input.name].iter().product();
    // The plan starts at the int8 input: the f32 input is the caller's, quantized as it is
    // written (`input_values`, `run`), so it never takes arena space.
    let q_in = quantized_input(g);
    let live = plan_memory((&q_in, input_len), &steps, &g.output, ALIGN_BYTES);
    let (words, word_buffers) = word_plan(&live.plan, &live.buffers);
    // The element type of every buffer: the input is int8, scratch i32, the rest what its
    // step writes.
    let mut ty = vec![Ty::I8; live.buffers.len()];
    for (node, sb) in nodes.iter().zip(&live.steps) {
        ty[sb.output] = node.out_ty;
        if let Some(s) = sb.scratch {
            ty[s] = Ty::I32;
        }
    }

    let mut blob: Vec<i8> = Vec::new();
    let mut layer_fns = TokenStream::new();
    let mut calls = TokenStream::new();
    // The quantization is the first layer of the report and of `LAYERS`; the layer
    // functions are numbered by their place there.
    let mut layers = vec![LayerReport {
        name: q_in.clone(),
        kernel: "int8::quantize",
        output_len: input_len,
        macs: 0,
    }];
    for (i, (node, sb)) in (1usize..).zip(nodes.iter().zip(&live.steps)) {
        let mut wanted: Vec<usize> = sb.inputs.clone();
        wanted.push(sb.output);
        wanted.extend(sb.scratch);
        wanted.extend(sb.copy_from);
        let (split, names) = split_arena(&words, &word_buffers, &wanted);
        let mut views = TokenStream::new();
        let mut seen: Vec<usize> = wanted.clone();
        seen.sort_unstable();
        seen.dedup();
        for b in seen {
            let n = &names[&b];
            let bytes = live.buffers[b].size;
            views.extend(match ty[b] {
                Ty::I8 => {
                    let len = lit(bytes);
                    quote!(let #n: &mut [i8] = &mut #rt::__codegen::bytemuck::cast_slice_mut::<f32, i8>(#n)[..#len];)
                }
                Ty::I32 => {
                    let len = lit(bytes / 4);
                    quote!(let #n: &mut [i32] = &mut #rt::__codegen::bytemuck::cast_slice_mut::<f32, i32>(#n)[..#len];)
                }
                Ty::F32 => {
                    let len = lit(bytes / 4);
                    quote!(let #n: &mut [f32] = &mut #n[..#len];)
                }
            });
        }
        let inputs: Vec<TokenStream> = sb
            .inputs
            .iter()
            .map(|b| {
                let n = &names[b];
                quote!(&*#n)
            })
            .collect();
        let out = names[&sb.output].to_token_stream();
        let copy = sb.copy_from.map(|b| {
            let src = &names[&b];
            quote!(#out.copy_from_slice(#src);)
        });
        let scratch = sb
            .scratch
            .map(|b| names[&b].to_token_stream())
            .unwrap_or_default();
        let before = blob.len();
        let body = render(&rt, node, &inputs, &out, &scratch, &mut blob);
        let w_param = if blob.len() == before {
            format_ident!("_w")
        } else {
            format_ident!("w")
        };
        let fn_name = format_ident!("layer_{}_{}", i, sanitize(&node.name));
        let doc = format!(
            "`{}` ({}): {} MACs, output {} bytes at arena byte offset {}.",
            node.name,
            node.kernel,
            node.macs,
            live.buffers[sb.output].size,
            live.plan.offsets[sb.output]
        );
        layer_fns.extend(quote! {
            #[doc = #doc]
            #[inline(never)]
            fn #fn_name(arena: &mut [f32; ARENA_LEN], #w_param: &[i8]) {
                #split
                #views
                #copy
                #body
            }
        });
        calls.extend(quote!(#fn_name(arena, w);));
        layers.push(LayerReport {
            name: node.name.clone(),
            kernel: node.kernel,
            output_len: node.step.output_len / node.out_ty.size(),
            macs: node.macs,
        });
    }

    let blob_bytes: Vec<u8> = blob.iter().map(|&v| v as u8).collect();
    let code = Module {
        rt: &rt,
        arena_doc: format!(
            "Arena length in `f32` words ({} bytes): the static memory plan of every activation \
             and kernel scratch buffer of this int8 model, counted in bytes (the int8 input, \
             int8 activations, `i32` scratch, `f32` logits; the `f32` input is quantized as it \
             is written and never stored). The peak-live lower bound is {} words \
             (`PEAK_LIVE_LEN`).",
            words.total * 4,
            words.peak_live
        ),
        arena_len: words.total,
        peak_live_len: words.peak_live,
        input_offset: words.offsets[live.input],
        output_offset: words.offsets[live.output],
        input: InputForm::I8 {
            inv_scale: qplan.input_inv_scale,
            zero_point: qplan.input.zero_point,
        },
        weight_ty: quote!(i8),
        weights_len: blob_bytes.len(),
        weights_len_doc: "Length of the embedded int8 weights in bytes.",
        forward_doc: "Runs the network on the int8 input stored at \
                      `arena[INPUT_OFFSET..]` (`INPUT_LEN` bytes, written through \
                      [`input_mut`] and [`input_values`]), leaving the `f32` logits at \
                      `arena[OUTPUT_OFFSET..][..NUM_CLASSES]`.",
        header: format!("an int8 model with {} ops", g.ops.len()),
        layer_fns,
        calls,
    }
    .render(model, &layers, &blob_bytes, opts)?;
    let params = model_params(model).unwrap_or(0);
    let macs = layers.iter().map(|l| l.macs).sum();
    Ok(Generated {
        code,
        weights: blob_bytes,
        report: Report {
            arena_len: words.total,
            peak_live_len: words.peak_live,
            params,
            macs,
            layers,
            buffers: live
                .names
                .iter()
                .zip(&word_buffers)
                .zip(&words.offsets)
                .map(|((n, b), &o)| (n.clone(), *b, o))
                .collect(),
        },
    })
}
