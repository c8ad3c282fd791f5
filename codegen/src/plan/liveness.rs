//! Liveness: from lowered steps to buffers with lifetimes, then to offsets.
//!
//! Every value gets a buffer when it is produced, except the output of an
//! in-place kernel whose input dies at that step: it takes over the input's
//! buffer. A buffer lives from the step that first writes it to the last step
//! that reads it (the graph output to one past the last step, as the caller
//! reads it after the network ran). Kernel scratch lives for its step only.

use std::collections::HashMap;

use super::{Buffer, Plan, greedy_by_size};

/// One kernel call as the memory planner sees it: the values it reads and
/// writes and the memory it needs. Built from a lowered node; nothing here
/// depends on the kernel itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The op name (names the step's scratch buffer in reports).
    pub name: String,
    /// Values read, in argument order; each must be the graph input or an
    /// earlier step's output.
    pub inputs: Vec<String>,
    /// The value written.
    pub output: String,
    /// Element count of the output.
    pub output_len: usize,
    /// Whether the kernel transforms its first input in place (its output has
    /// that input's length).
    pub in_place: bool,
    /// Scratch elements the kernel needs during the call (0: none).
    pub scratch_len: usize,
}

/// Which buffers one step touches, as indices into [`MemoryPlan::buffers`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepBuffers {
    /// Buffers read, in the step's argument order. Empty for an in-place
    /// kernel that reuses its input's buffer: it reads and writes `output`.
    pub inputs: Vec<usize>,
    /// The buffer written.
    pub output: usize,
    /// For an in-place kernel whose input stays alive: the input's buffer, to
    /// copy into `output` before the kernel transforms `output`.
    pub copy_from: Option<usize>,
    /// The kernel's scratch buffer, if it needs one.
    pub scratch: Option<usize>,
}

/// Everything the code generator needs to place activations: the buffers
/// with their lifetimes, which buffers each step touches, and their offsets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemoryPlan {
    /// Every buffer with its size and lifetime, in creation order: the graph
    /// input first, then per step its output (unless reused in place) and
    /// then its scratch.
    pub buffers: Vec<Buffer>,
    /// What each buffer holds, parallel to `buffers`: the value first written
    /// to it, or `"<op name> (scratch)"`.
    pub names: Vec<String>,
    /// Per step, the buffers it touches.
    pub steps: Vec<StepBuffers>,
    /// The graph input's buffer.
    pub input: usize,
    /// The graph output's buffer (alive until after the last step).
    pub output: usize,
    /// Offsets of `buffers` ([`greedy_by_size`]), arena length and the
    /// peak-live bound.
    pub plan: Plan,
}

/// Plans the memory of `steps` run in order: `input` is the graph input
/// (name, length in `f32`), `output` the value the caller reads after the
/// last step, `align` the offset alignment in `f32` elements.
///
/// Pure and deterministic: the same steps give the same buffers in the same
/// order and the same offsets.
///
/// # Panics
///
/// If a step reads a value that is neither the graph input nor an earlier
/// step's output, if `output` is no such value, or if an in-place step has no
/// input. Lowered nodes of a validated graph never do.
pub fn plan_memory(input: (&str, usize), steps: &[Step], output: &str, align: usize) -> MemoryPlan {
    let (input_name, input_len) = input;
    let n = steps.len();
    // The last step reading each value. The graph output is read by the
    // caller after the network ran: step `n`.
    let mut last_use: HashMap<&str, usize> = HashMap::new();
    for (i, step) in steps.iter().enumerate() {
        for v in &step.inputs {
            last_use.insert(v, i);
        }
    }
    last_use.insert(output, n);
    let mut buffers = vec![Buffer {
        size: input_len,
        first: 0,
        last: 0,
    }];
    let mut names = vec![input_name.to_owned()];
    // The buffer currently holding each value.
    let mut of_value: HashMap<&str, usize> = HashMap::from([(input_name, 0)]);
    let buffer_of = |of_value: &HashMap<&str, usize>, v: &str| -> usize {
        *of_value
            .get(v)
            .unwrap_or_else(|| panic!("value {v:?} is read before it is written"))
    };
    let mut planned = Vec::with_capacity(n);
    for (i, step) in steps.iter().enumerate() {
        let inputs: Vec<usize> = step
            .inputs
            .iter()
            .map(|v| buffer_of(&of_value, v))
            .collect();
        for &b in &inputs {
            buffers[b].last = buffers[b].last.max(i);
        }
        // An in-place kernel overwrites its input. That is free when nothing
        // reads the input afterwards: the output takes over the input's
        // buffer and no memory or copy is spent.
        let reuse = step.in_place && {
            let first = step
                .inputs
                .first()
                .unwrap_or_else(|| panic!("in-place step {:?} has no input", step.name));
            last_use.get(first.as_str()) == Some(&i)
        };
        let mut copy_from = None;
        let out = if reuse {
            inputs[0]
        } else {
            // A later step (a residual add reading a squeeze-excite's input,
            // say) or the caller still needs the input: the output gets a
            // fresh buffer, and an in-place kernel first copies its input
            // there and transforms the copy.
            if step.in_place {
                copy_from = Some(inputs[0]);
            }
            buffers.push(Buffer {
                size: step.output_len,
                first: i,
                last: i,
            });
            names.push(step.output.clone());
            buffers.len() - 1
        };
        of_value.insert(&step.output, out);
        let scratch = (step.scratch_len > 0).then(|| {
            buffers.push(Buffer {
                size: step.scratch_len,
                first: i,
                last: i,
            });
            names.push(format!("{} (scratch)", step.name));
            buffers.len() - 1
        });
        planned.push(StepBuffers {
            // Reusing: the input is the output buffer, so the kernel gets no
            // separate input (a shared and a mutable borrow of one buffer).
            inputs: if reuse { vec![] } else { inputs },
            output: out,
            copy_from,
            scratch,
        });
    }
    let output = buffer_of(&of_value, output);
    buffers[output].last = n;
    let plan = greedy_by_size(&buffers, align);
    MemoryPlan {
        buffers,
        names,
        steps: planned,
        input: 0,
        output,
        plan,
    }
}

#[cfg(test)]
mod tests {
    use super::super::find_overlap;
    use super::*;

    fn step(name: &str, inputs: &[&str], output: &str, output_len: usize) -> Step {
        Step {
            name: name.into(),
            inputs: inputs.iter().map(|s| (*s).to_owned()).collect(),
            output: output.into(),
            output_len,
            in_place: false,
            scratch_len: 0,
        }
    }

    fn in_place(name: &str, input: &str, output: &str, len: usize) -> Step {
        Step {
            in_place: true,
            ..step(name, &[input], output, len)
        }
    }

    fn b(size: usize, first: usize, last: usize) -> Buffer {
        Buffer { size, first, last }
    }

    #[test]
    fn chain_reuses_memory_like_ping_pong() {
        let steps = [
            step("c0", &["x"], "a", 50),
            step("c1", &["a"], "b", 100),
            step("c2", &["b"], "c", 10),
        ];
        let m = plan_memory(("x", 100), &steps, "c", 1);
        assert_eq!(
            m.buffers,
            [b(100, 0, 0), b(50, 0, 1), b(100, 1, 2), b(10, 2, 3)]
        );
        assert_eq!(m.names, ["x", "a", "b", "c"]);
        let touched: Vec<(Vec<usize>, usize)> = m
            .steps
            .iter()
            .map(|s| (s.inputs.clone(), s.output))
            .collect();
        assert_eq!(touched, [(vec![0], 1), (vec![1], 2), (vec![2], 3)]);
        assert!(
            m.steps
                .iter()
                .all(|s| s.copy_from.is_none() && s.scratch.is_none())
        );
        assert_eq!((m.input, m.output), (0, 3));
        // Input and `b` never live together: they share memory.
        assert_eq!(m.plan.offsets[0], m.plan.offsets[2]);
        assert_eq!(find_overlap(&m.buffers, &m.plan), None);
        assert_eq!((m.plan.total, m.plan.peak_live), (150, 150));
    }

    #[test]
    fn in_place_step_whose_input_dies_reuses_its_buffer() {
        let steps = [
            step("conv", &["x"], "a", 40),
            in_place("se", "a", "b", 40),
            step("pw", &["b"], "c", 8),
        ];
        let m = plan_memory(("x", 12), &steps, "c", 1);
        // No buffer for `b`: it is `a`'s, alive until `pw` reads it.
        assert_eq!(m.buffers, [b(12, 0, 0), b(40, 0, 2), b(8, 2, 3)]);
        assert_eq!(m.names, ["x", "a", "c"]);
        assert_eq!(
            m.steps[1],
            StepBuffers {
                inputs: vec![],
                output: 1,
                copy_from: None,
                scratch: None
            }
        );
        assert_eq!(m.steps[2].inputs, [1]);
        assert_eq!(find_overlap(&m.buffers, &m.plan), None);
    }

    #[test]
    fn in_place_step_whose_input_stays_alive_copies_it() {
        // Squeeze-excite on `a`, whose value also feeds the residual add.
        let steps = [
            step("conv", &["x"], "a", 40),
            in_place("se", "a", "b", 40),
            step("add", &["b", "a"], "c", 40),
        ];
        let m = plan_memory(("x", 40), &steps, "c", 1);
        assert_eq!(
            m.buffers,
            [b(40, 0, 0), b(40, 0, 2), b(40, 1, 2), b(40, 2, 3)]
        );
        assert_eq!(m.names, ["x", "a", "b", "c"]);
        assert_eq!(
            m.steps[1],
            StepBuffers {
                inputs: vec![1],
                output: 2,
                copy_from: Some(1),
                scratch: None
            }
        );
        assert_eq!(m.steps[2].inputs, [2, 1]);
        // Copy source and destination are alive together: disjoint memory.
        assert_eq!(find_overlap(&m.buffers, &m.plan), None);
    }

    #[test]
    fn in_place_step_never_overwrites_the_graph_output() {
        // `a` is the graph output: the caller reads it after the last step.
        let steps = [step("conv", &["x"], "a", 6), in_place("se", "a", "b", 6)];
        let m = plan_memory(("x", 6), &steps, "a", 1);
        assert_eq!(m.steps[1].copy_from, Some(1));
        assert_eq!(m.steps[1].output, 2);
        assert_eq!((m.output, m.buffers[1].last), (1, 2));
    }

    #[test]
    fn scratch_lives_only_during_its_step() {
        let steps = [
            Step {
                scratch_len: 30,
                ..step("dw", &["x"], "a", 20)
            },
            Step {
                scratch_len: 5,
                ..in_place("se", "a", "b", 20)
            },
            step("pw", &["b"], "c", 10),
        ];
        let m = plan_memory(("x", 20), &steps, "c", 1);
        assert_eq!(
            m.buffers,
            [
                b(20, 0, 0),
                b(20, 0, 2),
                b(30, 0, 0),
                b(5, 1, 1),
                b(10, 2, 3)
            ]
        );
        assert_eq!(m.names, ["x", "a", "dw (scratch)", "se (scratch)", "c"]);
        assert_eq!(m.steps[0].scratch, Some(2));
        assert_eq!(m.steps[1].scratch, Some(3));
        assert_eq!(m.steps[2].scratch, None);
        // The first scratch is dead after step 0: `c` may take its memory.
        assert_eq!(find_overlap(&m.buffers, &m.plan), None);
        assert_eq!(m.plan.total, 70);
    }

    #[test]
    fn graph_output_stays_alive_to_the_end() {
        // The output is produced early; later steps must not overwrite it.
        let steps = [
            step("head", &["x"], "logits", 4),
            step("other", &["x"], "y", 100),
            step("more", &["y"], "z", 100),
        ];
        let m = plan_memory(("x", 8), &steps, "logits", 1);
        assert_eq!(m.output, 1);
        assert_eq!(m.buffers[1], b(4, 0, 3));
        assert_eq!(find_overlap(&m.buffers, &m.plan), None);
    }

    #[test]
    fn random_steps_never_overlap_and_read_what_they_expect() {
        let mut s = 2026u64;
        let mut next = |m: usize| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (s >> 33) as usize % m
        };
        let mut steps: Vec<Step> = Vec::new();
        let mut lens: HashMap<String, usize> = HashMap::from([("v0".to_owned(), 64)]);
        let mut values = vec!["v0".to_owned()];
        for i in 0..200 {
            // Read recent values, so some die soon and others stay alive.
            let recent = values.len().min(6);
            let output = format!("v{}", i + 1);
            let first = values[values.len() - 1 - next(recent)].clone();
            let st = if next(3) == 0 {
                Step {
                    name: format!("op{i}"),
                    output_len: lens[&first],
                    inputs: vec![first],
                    output: output.clone(),
                    in_place: true,
                    scratch_len: if next(2) == 0 { 0 } else { 1 + next(50) },
                }
            } else {
                let mut inputs = vec![first];
                if next(2) == 0 {
                    inputs.push(values[values.len() - 1 - next(recent)].clone());
                }
                Step {
                    name: format!("op{i}"),
                    inputs,
                    output: output.clone(),
                    output_len: 1 + next(300),
                    in_place: false,
                    scratch_len: if next(3) == 0 { 1 + next(100) } else { 0 },
                }
            };
            lens.insert(output.clone(), st.output_len);
            values.push(output);
            steps.push(st);
        }
        let last = values.last().unwrap().clone();
        let align = [1, 4, 16][next(3)];
        let m = plan_memory(("v0", 64), &steps, &last, align);
        assert_eq!(find_overlap(&m.buffers, &m.plan), None);
        assert!(m.plan.total >= m.plan.peak_live);
        assert!(m.plan.offsets.iter().all(|o| o % align == 0));
        assert_eq!(m.buffers[m.output].last, steps.len());
        // Replay: every buffer a step touches is alive at that step and holds
        // the value the step expects, so with disjoint live buffers no value
        // is overwritten before its last read.
        let alive = |b: usize, i: usize| m.buffers[b].first <= i && i <= m.buffers[b].last;
        let mut holds: Vec<Option<&str>> = vec![None; m.buffers.len()];
        holds[m.input] = Some("v0");
        let (mut reused, mut copied) = (0, 0);
        for (i, (st, sb)) in steps.iter().zip(&m.steps).enumerate() {
            if st.in_place && sb.copy_from.is_none() {
                reused += 1;
                assert!(sb.inputs.is_empty());
                assert_eq!(holds[sb.output], Some(st.inputs[0].as_str()));
            } else {
                assert_eq!(sb.inputs.len(), st.inputs.len());
                for (v, &b) in st.inputs.iter().zip(&sb.inputs) {
                    assert!(alive(b, i), "step {i} reads dead buffer {b}");
                    assert_eq!(holds[b], Some(v.as_str()), "step {i}");
                }
                if st.in_place {
                    copied += 1;
                    assert_eq!(sb.copy_from, Some(sb.inputs[0]));
                    assert_ne!(sb.output, sb.inputs[0]);
                }
            }
            assert!(alive(sb.output, i));
            assert!(m.buffers[sb.output].size >= st.output_len);
            if let Some(sc) = sb.scratch {
                assert_eq!(m.buffers[sc], b(st.scratch_len, i, i));
            }
            assert_eq!(sb.scratch.is_some(), st.scratch_len > 0);
            holds[sb.output] = Some(st.output.as_str());
        }
        assert_eq!(holds[m.output], Some(last.as_str()));
        // The sequence exercises both in-place paths.
        assert!(reused > 0 && copied > 0, "{reused} {copied}");
    }

    #[test]
    #[should_panic(expected = "read before it is written")]
    fn unknown_value_panics() {
        plan_memory(("x", 1), &[step("s", &["y"], "z", 1)], "z", 1);
    }
}
