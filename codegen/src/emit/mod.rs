//! From lowered nodes to one Rust module: the weight blob and the token
//! stream. Which buffer each step uses and where it lives is decided by
//! [`plan_memory`]; this module only renders that plan.

use std::collections::HashMap;

use proc_macro2::{Ident, TokenStream};
use quote::{ToTokens, format_ident, quote};

use crate::ir::{ModelFile, ValueShapes};
use crate::nodes::{Emit, Node, lit};
use crate::plan::{Buffer, Plan, Step, plan_memory};
use crate::{CodegenError, GenOptions, Generated, LayerReport, Report, WeightsSource};

pub(crate) mod int8;

/// Arena offsets are multiples of this many `f32` (64 bytes: a cache line,
/// and any SIMD width the kernels use).
pub const ARENA_ALIGN: usize = 16;
/// Tensors in the weight blob start at multiples of this many `f32`.
pub const WEIGHT_ALIGN: usize = 16;

/// The memory planner's view of one lowered node.
fn step_of(node: &Node) -> Step {
    let node = node.get();
    Step {
        name: node.name().to_owned(),
        inputs: node.inputs().into_iter().map(str::to_owned).collect(),
        output: node.output().to_owned(),
        output_len: node.output_len(),
        in_place: node.in_place(),
        scratch_len: node.scratch_len(),
    }
}

/// Binds disjoint arena ranges to names with successive `split_at_mut`s;
/// offsets are constants, so every check folds away.
fn split_arena(
    plan: &Plan,
    buffers: &[Buffer],
    wanted: &[usize],
) -> (TokenStream, HashMap<usize, Ident>) {
    let mut ids: Vec<usize> = wanted.to_vec();
    ids.sort_by_key(|&b| plan.offsets[b]);
    ids.dedup();
    let mut out = quote!(let rest: &mut [f32] = arena;);
    let mut names = HashMap::new();
    let mut pos = 0;
    for (k, &b) in ids.iter().enumerate() {
        let gap = plan.offsets[b] - pos;
        if gap > 0 {
            let gap = lit(gap);
            out.extend(quote!(let (_, rest) = rest.split_at_mut(#gap);));
        }
        let name = format_ident!("b{}", b);
        let len = lit(buffers[b].size);
        if k + 1 == ids.len() {
            out.extend(quote!(let (#name, _) = rest.split_at_mut(#len);));
        } else {
            out.extend(quote!(let (#name, rest) = rest.split_at_mut(#len);));
        }
        pos = plan.offsets[b] + buffers[b].size;
        names.insert(b, name);
    }
    (out, names)
}

/// Appends `values` to the blob at the next aligned position.
fn push_weights(blob: &mut Vec<f32>, values: &[f32]) -> (usize, usize) {
    let start = blob.len().div_ceil(WEIGHT_ALIGN) * WEIGHT_ALIGN;
    blob.resize(start, 0.0);
    blob.extend_from_slice(values);
    (start, blob.len())
}

pub(crate) fn generate(
    model: &ModelFile,
    shapes: &ValueShapes,
    nodes: &[Node],
    opts: &GenOptions,
) -> Result<Generated, CodegenError> {
    let g = &model.graph;
    let rt = runtime_path(opts)?;
    let steps: Vec<Step> = nodes.iter().map(step_of).collect();
    let input_len: usize = shapes[&g.input.name].iter().product();
    let live = plan_memory((&g.input.name, input_len), &steps, &g.output, ARENA_ALIGN);
    let plan = &live.plan;

    // `run` hands its input straight to the layers that read it, instead of copying it into
    // the arena first, unless a layer writes into the input's buffer (in place, or as a
    // copy's destination): a caller's input is never written.
    let direct = live
        .steps
        .iter()
        .all(|s| s.output != live.input && s.copy_from != Some(live.input));
    let mut blob: Vec<f32> = Vec::new();
    let mut layer_fns = TokenStream::new();
    let mut calls = TokenStream::new();
    let mut layers = Vec::new();
    for (i, (node, step)) in nodes.iter().zip(&live.steps).enumerate() {
        let node = node.get();
        let weights = node.weights(model)?;
        let weight_exprs: Vec<TokenStream> = weights
            .iter()
            .map(|w| {
                let (a, b) = push_weights(&mut blob, w);
                let (a, b) = (lit(a), lit(b));
                quote!(&w[#a..#b])
            })
            .collect();
        let mut wanted: Vec<usize> = step.inputs.clone();
        wanted.push(step.output);
        wanted.extend(step.scratch);
        wanted.extend(step.copy_from);
        let (split, names) = split_arena(plan, &live.buffers, &wanted);
        let reads_input = direct && step.inputs.contains(&live.input);
        let inputs: Vec<TokenStream> = step
            .inputs
            .iter()
            .map(|b| {
                let n = &names[b];
                if reads_input && *b == live.input {
                    quote!(input.unwrap_or(&*#n))
                } else {
                    quote!(&*#n)
                }
            })
            .collect();
        let out = &names[&step.output];
        let copy = step.copy_from.map(|b| {
            let src = &names[&b];
            quote!(#out.copy_from_slice(#src);)
        });
        let scratch = step
            .scratch
            .map(|b| names[&b].to_token_stream())
            .unwrap_or_default();
        let call = node.emit(&Emit {
            rt: &rt,
            inputs,
            output: quote!(#out),
            scratch,
            weights: weight_exprs,
        });
        let w_param = if weights.is_empty() {
            format_ident!("_w")
        } else {
            format_ident!("w")
        };
        let fn_name = format_ident!("layer_{}_{}", i, sanitize(node.name()));
        let doc = format!(
            "`{}` ({}): {} MACs, output {} values at arena offset {}.",
            node.name(),
            node.kernel(),
            node.macs(),
            node.output_len(),
            plan.offsets[step.output]
        );
        // A layer that reads the model input takes `run`'s input too (see `direct`).
        let (input_param, input_arg, input_doc) = if reads_input {
            (
                quote!(, input: ::core::option::Option<&[f32]>),
                quote!(, input),
                quote!(#[doc = ""] #[doc = "Reads the model input from `input` if given, else from the arena."]),
            )
        } else {
            Default::default()
        };
        layer_fns.extend(quote! {
            #[doc = #doc]
            #input_doc
            #[inline(never)]
            fn #fn_name(arena: &mut [f32; ARENA_LEN], #w_param: &[f32] #input_param) {
                #split
                #copy
                #call
            }
        });
        calls.extend(quote!(#fn_name(arena, w #input_arg);));
        layers.push(LayerReport {
            name: node.name().to_owned(),
            kernel: node.kernel(),
            output_len: node.output_len(),
            macs: node.macs(),
        });
    }

    let blob_bytes: Vec<u8> = blob.iter().flat_map(|v| v.to_le_bytes()).collect();
    let params = model_params(model).unwrap_or(0);
    let macs: u64 = layers.iter().map(|l| l.macs).sum();
    let code = Module {
        rt: &rt,
        arena_doc: format!(
            "Arena length in `f32` ({} bytes): the static memory plan of every activation and \
             kernel scratch buffer. The peak-live lower bound is {} (`PEAK_LIVE_LEN`).",
            plan.total * 4,
            plan.peak_live
        ),
        arena_len: plan.total,
        peak_live_len: plan.peak_live,
        input_offset: plan.offsets[live.input],
        output_offset: plan.offsets[live.output],
        input: if direct {
            InputForm::F32Direct
        } else {
            InputForm::F32
        },
        weight_ty: quote!(f32),
        weights_len: blob.len(),
        weights_len_doc: "Length of the embedded weights in `f32`, packed for the kernels.",
        forward_doc: "Runs the network on the input stored at `arena[INPUT_OFFSET..][..INPUT_LEN]`, \
                      leaving the logits at `arena[OUTPUT_OFFSET..][..NUM_CLASSES]`.",
        header: format!("a model with {} ops", g.ops.len()),
        layer_fns,
        calls,
    }
    .render(model, &layers, &blob_bytes, opts)?;
    Ok(Generated {
        code,
        weights: blob_bytes,
        report: Report {
            arena_len: plan.total,
            peak_live_len: plan.peak_live,
            params,
            macs,
            layers,
            buffers: live
                .names
                .iter()
                .zip(&live.buffers)
                .zip(&plan.offsets)
                .map(|((n, b), &o)| (n.clone(), *b, o))
                .collect(),
        },
    })
}

/// The runtime crate's path in the generated code (`GenOptions::runtime_path`).
pub(super) fn runtime_path(opts: &GenOptions) -> Result<TokenStream, CodegenError> {
    Ok(syn::parse_str::<syn::Path>(&opts.runtime_path)
        .map_err(|e| CodegenError::Option(format!("runtime path {:?}: {e}", opts.runtime_path)))?
        .to_token_stream())
}

/// How a generated module keeps its input in the arena.
pub(super) enum InputForm {
    /// The normalized `f32` input itself.
    F32,
    /// The normalized `f32` input itself, which `run` does not copy: it passes its input to
    /// the layers that read it (their functions take `input: Option<&[f32]>`, and `forward`
    /// passes `None`: the input in the arena).
    F32Direct,
    /// Its int8 quantization (`kernels::int8::quantize_one` with these
    /// parameters), written straight by the caller: the `f32` image never
    /// takes arena space.
    I8 {
        /// `1 / scale` of the input.
        inv_scale: f32,
        /// The input's zero point.
        zero_point: i32,
    },
}

impl InputForm {
    /// The items that store input values (`InputElem`, `input_values`,
    /// `input_mut`) and `run`'s statement that stores a whole `f32` input.
    fn tokens(&self, rt: &TokenStream) -> (TokenStream, TokenStream) {
        let input_mut_doc = "The model input region of the arena, for writing a preprocessed \
                             image into (the values through [`input_values`]).";
        match *self {
            InputForm::F32 | InputForm::F32Direct => (
                quote! {
                    /// The element type of the model input in the arena.
                    pub type InputElem = f32;

                    /// Normalized input values as the arena stores them: themselves
                    /// (`out` as long as `v`).
                    #[inline(always)]
                    pub fn input_values(v: &[f32], out: &mut [f32]) {
                        out.copy_from_slice(v);
                    }

                    #[doc = #input_mut_doc]
                    pub fn input_mut(arena: &mut [f32; ARENA_LEN]) -> &mut [f32] {
                        &mut arena[INPUT_OFFSET..INPUT_OFFSET + INPUT_LEN]
                    }
                },
                quote!(input_mut(arena).copy_from_slice(input);),
            ),
            InputForm::I8 {
                inv_scale,
                zero_point,
            } => {
                let inv = proc_macro2::Literal::f32_suffixed(inv_scale);
                let z_abs = proc_macro2::Literal::u32_unsuffixed(zero_point.unsigned_abs());
                let z = if zero_point < 0 {
                    quote!(-#z_abs)
                } else {
                    quote!(#z_abs)
                };
                (
                    quote! {
                        /// `1 / scale` of the int8 model input.
                        pub const INPUT_INV_SCALE: f32 = #inv;
                        /// Zero point of the int8 model input.
                        pub const INPUT_ZERO_POINT: i32 = #z;

                        /// The element type of the model input in the arena: the network's
                        /// first step is the quantization of its `f32` input, done as the
                        /// input is written, so the `f32` image never takes arena space.
                        pub type InputElem = i8;

                        /// Normalized input values as the arena stores them: quantized
                        /// exactly as [`run`] quantizes a whole input (`out` as long as `v`).
                        #[inline(always)]
                        pub fn input_values(v: &[f32], out: &mut [i8]) {
                            #rt::kernels::int8::quantize(v, INPUT_INV_SCALE, INPUT_ZERO_POINT, out)
                        }

                        #[doc = #input_mut_doc]
                        pub fn input_mut(arena: &mut [f32; ARENA_LEN]) -> &mut [i8] {
                            &mut #rt::__codegen::bytemuck::cast_slice_mut::<f32, i8>(
                                &mut arena[INPUT_OFFSET..],
                            )[..INPUT_LEN]
                        }
                    },
                    quote! {
                        #rt::kernels::int8::quantize(
                            input,
                            INPUT_INV_SCALE,
                            INPUT_ZERO_POINT,
                            input_mut(arena),
                        );
                    },
                )
            }
        }
    }
}

/// What a generated module's float and int8 forms differ in; [`Module::render`]
/// writes everything else (constants, the aligned weight blob, `forward`,
/// `logits`, `input_mut`, `run`) once for both.
pub(super) struct Module<'a> {
    /// The runtime crate's path.
    pub rt: &'a TokenStream,
    /// Doc of `ARENA_LEN`.
    pub arena_doc: String,
    /// `ARENA_LEN`, in `f32` words.
    pub arena_len: usize,
    /// `PEAK_LIVE_LEN`, in `f32` words.
    pub peak_live_len: usize,
    /// `INPUT_OFFSET`, in `f32` words.
    pub input_offset: usize,
    /// `OUTPUT_OFFSET`, in `f32` words.
    pub output_offset: usize,
    /// How the network input is stored in the arena.
    pub input: InputForm,
    /// The element type `weights()` returns (`f32` or `i8`).
    pub weight_ty: TokenStream,
    /// `WEIGHTS_LEN`, in elements of `weight_ty`.
    pub weights_len: usize,
    /// Doc of `WEIGHTS_LEN`.
    pub weights_len_doc: &'static str,
    /// Doc of `forward`.
    pub forward_doc: &'static str,
    /// What the `@generated` header says the module was made from.
    pub header: String,
    /// One function per layer.
    pub layer_fns: TokenStream,
    /// The calls of those functions, in order, inside `forward`.
    pub calls: TokenStream,
}

impl Module<'_> {
    /// The module's source text: the items of both forms around the layer
    /// functions, pretty-printed under an `@generated` header.
    pub(super) fn render(
        self,
        model: &ModelFile,
        layers: &[LayerReport],
        blob: &[u8],
        opts: &GenOptions,
    ) -> Result<String, CodegenError> {
        let Module {
            rt,
            arena_doc,
            arena_len,
            peak_live_len,
            input_offset,
            output_offset,
            input,
            weight_ty,
            weights_len,
            weights_len_doc,
            forward_doc,
            header,
            layer_fns,
            calls,
        } = self;
        let include = match &opts.weights {
            WeightsSource::OutDir(file) => {
                let f = format!("/{file}");
                quote!(::core::include_bytes!(
                    ::core::concat!(::core::env!("OUT_DIR"), #f)
                ))
            }
            WeightsSource::Path(p) => quote!(::core::include_bytes!(#p)),
        };
        let common = CommonItems::new(model, layers)?.tokens();
        let (arena_len, peak) = (lit(arena_len), lit(peak_live_len));
        let (input_off, output_off) = (lit(input_offset), lit(output_offset));
        let (weights_len, blob_len) = (lit(weights_len), lit(blob.len()));
        let n_layers = lit(layers.len());
        let layer_names = layers.iter().map(|l| {
            let (name, kernel) = (&l.name, l.kernel);
            quote!((#name, #kernel))
        });
        let weights_doc = format!("The embedded weights as `{weight_ty}`, without copying.");
        let (input_items, write_input) = input.tokens(rt);
        // `run` and `forward`: with a direct input both go through `forward_from`, which
        // hands the input (or `None`: the arena's) to the layers that read it.
        let (run_body, forward_fns) = if matches!(input, InputForm::F32Direct) {
            (
                quote! {
                    forward_from(arena, ::core::option::Option::Some(&input[..]));
                    logits(arena)
                },
                quote! {
                    #[doc = #forward_doc]
                    pub fn forward(arena: &mut [f32; ARENA_LEN]) {
                        forward_from(arena, ::core::option::Option::None);
                    }

                    /// [`forward`] with the model input read from `input` when given (`run`'s
                    /// input, not copied), else from the arena.
                    fn forward_from(arena: &mut [f32; ARENA_LEN], input: ::core::option::Option<&[f32]>) {
                        let w = weights();
                        #calls
                    }
                },
            )
        } else {
            (
                quote! {
                    #write_input
                    forward(arena);
                    logits(arena)
                },
                quote! {
                    #[doc = #forward_doc]
                    pub fn forward(arena: &mut [f32; ARENA_LEN]) {
                        let w = weights();
                        #calls
                    }
                },
            )
        };
        let tokens = quote! {
            #[cfg(target_endian = "big")]
            ::core::compile_error!("the embedded weights are little-endian");

            #[doc = #arena_doc]
            pub const ARENA_LEN: usize = #arena_len;
            /// The most `f32` words alive at once: no memory plan can be smaller than this.
            pub const PEAK_LIVE_LEN: usize = #peak;
            #common
            /// Where the model input lives in the arena (in `f32` words).
            pub const INPUT_OFFSET: usize = #input_off;
            /// Where the logits live in the arena after [`forward`] (in `f32` words).
            pub const OUTPUT_OFFSET: usize = #output_off;
            #[doc = #weights_len_doc]
            pub const WEIGHTS_LEN: usize = #weights_len;
            /// Every layer in execution order: (model op name, kernel).
            pub const LAYERS: [(&str, &str); #n_layers] = [#(#layer_names),*];

            /// 64-byte alignment for the embedded weights, so they are read in place.
            #[repr(C, align(64))]
            struct AlignedBlob<T: ?Sized>(T);

            static WEIGHT_BYTES: AlignedBlob<[u8; #blob_len]> = AlignedBlob(*#include);

            #[doc = #weights_doc]
            #[inline(always)]
            fn weights() -> &'static [#weight_ty] {
                #rt::__codegen::bytemuck::cast_slice::<u8, #weight_ty>(&WEIGHT_BYTES.0)
            }

            #layer_fns

            #forward_fns

            /// The logits left in the arena by [`forward`].
            pub fn logits(arena: &[f32; ARENA_LEN]) -> [f32; NUM_CLASSES] {
                let mut out = [0f32; NUM_CLASSES];
                out.copy_from_slice(&arena[OUTPUT_OFFSET..OUTPUT_OFFSET + NUM_CLASSES]);
                out
            }

            #input_items

            /// Runs the network on `input` (planar CHW, normalized) and returns the logits.
            pub fn run(input: &[f32; INPUT_LEN], arena: &mut [f32; ARENA_LEN]) -> [f32; NUM_CLASSES] {
                #run_body
            }
        };
        let file: syn::File =
            syn::parse2(tokens).map_err(|e| CodegenError::Format(e.to_string()))?;
        Ok(format!(
            "// @generated by derm-codegen {} from {header}; do not edit.\n{}",
            env!("CARGO_PKG_VERSION"),
            prettyplease::unparse(&file)
        ))
    }
}

/// The constants every generated module has, float or int8: input shape,
/// classes, normalization, parameter and MAC counts.
pub(super) struct CommonItems {
    tokens: TokenStream,
}

impl CommonItems {
    pub(super) fn new(model: &ModelFile, layers: &[LayerReport]) -> Result<Self, CodegenError> {
        let g = &model.graph;
        let [_, c, h, wd] = g.input.shape;
        let (input_len, input_h, input_w) = (lit(c * h * wd), lit(h), lit(wd));
        let num_classes = lit(g.classes.len());
        let classes = &g.classes;
        let c_classes = classes
            .iter()
            .map(|c| {
                std::ffi::CString::new(c.as_str())
                    .map(|s| proc_macro2::Literal::c_string(&s))
                    .map_err(|_| {
                        CodegenError::Option(format!("class name {c:?} contains a NUL byte"))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let [m0, m1, m2] = g.preprocess.mean;
        let [s0, s1, s2] = g.preprocess.std;
        let centre_crop = g.preprocess.crop == crate::ir::Crop::Centre;
        // Counted from the file: packing pads panels with zeros.
        let params = lit(model_params(model).unwrap_or(0));
        let macs = proc_macro2::Literal::u64_unsuffixed(layers.iter().map(|l| l.macs).sum::<u64>());
        let tokens = quote! {
            /// Length of the model input (`3 * INPUT_H * INPUT_W`, planar CHW).
            pub const INPUT_LEN: usize = #input_len;
            /// Input height in pixels.
            pub const INPUT_H: usize = #input_h;
            /// Input width in pixels.
            pub const INPUT_W: usize = #input_w;
            /// Number of classes (logits).
            pub const NUM_CLASSES: usize = #num_classes;
            /// Class names in logit order.
            pub const CLASS_NAMES: [&str; NUM_CLASSES] = [#(#classes),*];
            /// Class names as C strings, for the C ABI.
            pub const CLASS_NAMES_C: [&::core::ffi::CStr; NUM_CLASSES] = [#(#c_classes),*];
            /// Per-channel (R, G, B) mean of the input normalization, on the 0..1 scale.
            pub const MEAN: [f32; 3] = [#m0, #m1, #m2];
            /// Per-channel (R, G, B) standard deviation of the input normalization.
            pub const STD: [f32; 3] = [#s0, #s1, #s2];
            /// Whether a photo is centre-cropped to the input's aspect ratio before the resize
            /// (`false`: resized whole).
            pub const CENTRE_CROP: bool = #centre_crop;
            /// Number of model parameters.
            pub const PARAMS: usize = #params;
            /// Multiply-accumulates per inference.
            pub const MACS: u64 = #macs;
        };
        Ok(Self { tokens })
    }

    pub(super) fn tokens(self) -> TokenStream {
        self.tokens
    }
}

/// Parameters stored in the model file for the ops (weights and biases).
fn model_params(model: &ModelFile) -> Option<usize> {
    let mut n = 0usize;
    for op in &model.graph.ops {
        for t in op.tensor_names() {
            n += model.tensors.get(t)?.numel()?;
        }
    }
    Some(n)
}

/// A Rust identifier fragment from an op name.
fn sanitize(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect();
    if s.is_empty() { "op".into() } else { s }
}
