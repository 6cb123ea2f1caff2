//! The planner's layout pass: which values stay NHWC.
//!
//! The int8 conv kernels compute in NHWC while ONNX tensors are NCHW, so a conv transposes its
//! input and output unless the planner keeps the value NHWC. A *region* is a set of values that
//! can all be NHWC at once: it grows from a conv's output through the steps that do not care
//! about the layout (elementwise ops, per-tensor QuantizeLinear/DequantizeLinear, MaxPool on
//! codes) to the consumers that read NHWC (convs, global pools). A region is kept NHWC only if
//! every value in it is made and read that way; a graph input or output, a constant, or any
//! other reader (Reshape, a per-channel op, ...) leaves the whole region NCHW, as before.
//!
//! Inside a region a value has the NHWC shape `[N, H, W, C]`. An elementwise operand from
//! outside the region is admitted when its bytes are the same in both layouts (at most one of
//! C, H and W above 1: a squeeze-excitation scale `[N, C, 1, 1]`, a scalar); that step then
//! reads its shape channels-last.

use std::collections::{HashMap, HashSet};

use super::ops::LayoutRole;
use super::Step;

/// Whether a tensor of this (static, NCHW) shape has the same bytes in NHWC: at most one of the
/// dims after the batch is above 1 (unknown dims count as above 1). Ranks below 4 broadcast
/// from the right, as a constant `[C, 1, 1]` does.
pub(crate) fn same_bytes_in_nhwc(shape: &[Option<usize>]) -> bool {
    if shape.len() > 4 {
        return false;
    }
    let mut padded = vec![Some(1); 4 - shape.len()];
    padded.extend_from_slice(shape);
    padded[1..].iter().filter(|d| **d != Some(1)).count() <= 1
}

/// What a step does with the layout, as far as this pass is concerned.
enum Role {
    /// A quantized conv reading its activation at this step input.
    Conv { x: usize },
    /// Elementwise: `operands` are the step inputs that are data; the output has their shape.
    /// `reads_outside`: an operand may stay NCHW-shaped outside the region when its bytes are
    /// the same in both layouts (the step reads its shape channels-last); without it, every
    /// operand is in the region, since the output takes its shape from them.
    Elementwise {
        operands: Vec<usize>,
        reads_outside: bool,
    },
    /// Reads NHWC at input 0, writes `[N, C, 1, 1]`.
    GlobalPool,
    /// Needs NCHW.
    Fixed,
}

fn role(s: &mut Step, scalar_const: &dyn Fn(usize) -> bool) -> Role {
    if let Some(l) = s.kernel.conv_layout() {
        return Role::Conv { x: l.x };
    }
    match s.kernel.layout_role() {
        Some(LayoutRole::Binary { operands, .. }) => {
            return Role::Elementwise {
                operands: operands.iter().flatten().copied().collect(),
                reads_outside: true,
            }
        }
        Some(LayoutRole::GlobalPool(_)) => return Role::GlobalPool,
        // Its output's shape follows its input's, pooled: an elementwise step to the region.
        Some(LayoutRole::Pool(_)) => {
            return Role::Elementwise {
                operands: vec![0],
                reads_outside: false,
            }
        }
        None => {}
    }
    // Per-tensor QuantizeLinear / DequantizeLinear: elementwise in the data input.
    if matches!(s.kind.as_str(), "QuantizeLinear" | "DequantizeLinear")
        && s.outputs.len() == 1
        && s.inputs.iter().skip(1).flatten().all(|&k| scalar_const(k))
        && s.inputs.first().is_some_and(Option::is_some)
    {
        return Role::Elementwise {
            operands: vec![0],
            reads_outside: false,
        };
    }
    Role::Fixed
}

/// Marks the NHWC regions (see the module documentation). `out_slots` are the graph outputs,
/// `scalar_const(slot)` says whether a slot is a constant with one element, and
/// `static_shape(slot)` gives what is known of a value's shape. Returns the labels of the
/// steps whose values were kept NHWC beyond conv → conv (for `run --verbose`). Without
/// `beyond_convs`, only conv → conv values stay NHWC.
pub(crate) fn keep_nhwc(
    steps: &mut [Step],
    out_slots: &HashSet<usize>,
    scalar_const: &dyn Fn(usize) -> bool,
    static_shape: &dyn Fn(usize) -> Option<Vec<Option<usize>>>,
    beyond_convs: bool,
) -> Vec<String> {
    let roles: Vec<Role> = steps
        .iter_mut()
        .map(|s| match role(s, scalar_const) {
            Role::Conv { x } => Role::Conv { x },
            _ if !beyond_convs => Role::Fixed,
            r => r,
        })
        .collect();
    let mut consumers: HashMap<usize, Vec<(usize, usize)>> = HashMap::new();
    let mut producer: HashMap<usize, usize> = HashMap::new();
    for (k, s) in steps.iter().enumerate() {
        for (pos, slot) in s.inputs.iter().enumerate() {
            if let Some(slot) = slot {
                consumers.entry(*slot).or_default().push((k, pos));
            }
        }
        for slot in s.outputs.iter().flatten() {
            producer.insert(*slot, k);
        }
    }
    let mut seen: HashSet<usize> = HashSet::new();
    let mut regions: Vec<(HashSet<usize>, HashSet<usize>)> = Vec::new();
    for (p, r) in roles.iter().enumerate() {
        if !matches!(r, Role::Conv { .. }) || steps[p].outputs.len() != 1 {
            continue;
        }
        let Some(start) = steps[p].outputs[0] else {
            continue;
        };
        if seen.contains(&start) {
            continue;
        }
        // Grow the region: values, and the steps that touch them.
        let mut values: HashSet<usize> = HashSet::new();
        let mut touched: HashSet<usize> = HashSet::new();
        let mut queue = vec![start];
        let mut ok = true;
        values.insert(start);
        while let Some(v) = queue.pop() {
            if out_slots.contains(&v) {
                ok = false;
                break;
            }
            let add = |u: usize, values: &mut HashSet<usize>, queue: &mut Vec<usize>| {
                if values.insert(u) {
                    queue.push(u);
                }
            };
            // An elementwise step's operands join the region unless their bytes are the same
            // in both layouts.
            let pull_operands = |k: usize,
                                 operands: &[usize],
                                 reads_outside: bool,
                                 values: &mut HashSet<usize>,
                                 queue: &mut Vec<usize>| {
                for u in operands.iter().filter_map(|&pos| steps[k].inputs[pos]) {
                    if !(reads_outside && admitted_outside(u, values, static_shape)) {
                        add(u, values, queue);
                    }
                }
            };
            // Its producer makes it NHWC.
            match producer.get(&v).map(|&k| (k, &roles[k])) {
                Some((k, Role::Conv { .. })) if steps[k].outputs.len() == 1 => {
                    touched.insert(k);
                }
                Some((
                    k,
                    Role::Elementwise {
                        operands,
                        reads_outside,
                    },
                )) => {
                    touched.insert(k);
                    pull_operands(k, operands, *reads_outside, &mut values, &mut queue);
                }
                _ => {
                    ok = false;
                    break;
                }
            }
            // Every reader takes it NHWC.
            for &(k, pos) in consumers.get(&v).map_or(&[][..], |c| &c[..]) {
                match &roles[k] {
                    Role::Conv { x } if *x == pos => {
                        touched.insert(k);
                    }
                    Role::GlobalPool if pos == 0 => {
                        touched.insert(k);
                    }
                    Role::Elementwise {
                        operands,
                        reads_outside,
                    } if operands.contains(&pos) => {
                        touched.insert(k);
                        match steps[k].outputs.first() {
                            Some(Some(o)) if steps[k].outputs.len() == 1 => {
                                add(*o, &mut values, &mut queue)
                            }
                            _ => {
                                ok = false;
                                break;
                            }
                        }
                        pull_operands(k, operands, *reads_outside, &mut values, &mut queue);
                    }
                    _ => {
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                break;
            }
        }
        seen.extend(values.iter().copied());
        if ok {
            regions.push((values, touched));
        }
    }
    let mut report = Vec::new();
    for (values, touched) in regions {
        let mut beyond_convs = false;
        for &k in &touched {
            let ins: Vec<Option<usize>> = steps[k].inputs.clone();
            let outs: Vec<Option<usize>> = steps[k].outputs.clone();
            let s = &mut steps[k];
            if let Some(l) = s.kernel.conv_layout() {
                // A conv may border two regions (input in one, output in another): each
                // region sets only its own side.
                if ins
                    .get(l.x)
                    .copied()
                    .flatten()
                    .is_some_and(|v| values.contains(&v))
                {
                    l.in_nhwc = true;
                }
                if outs.iter().flatten().any(|v| values.contains(v)) {
                    l.out_nhwc = true;
                }
                continue;
            }
            beyond_convs = true;
            match s.kernel.layout_role() {
                Some(LayoutRole::Binary { operands, nhwc }) => {
                    // Operands outside the region (and constants) are read channels-last.
                    let mut permute = [false; 2];
                    for (i, o) in operands.iter().enumerate() {
                        permute[i] = o
                            .and_then(|pos| ins.get(pos).copied().flatten())
                            .is_none_or(|v| !values.contains(&v));
                    }
                    *nhwc = Some(permute);
                }
                Some(LayoutRole::GlobalPool(nhwc) | LayoutRole::Pool(nhwc)) => *nhwc = true,
                None => {}
            }
        }
        if beyond_convs {
            let mut labels: Vec<&str> = touched.iter().map(|&k| steps[k].label.as_str()).collect();
            labels.sort_unstable();
            report.push(labels.join(", "));
        }
    }
    report
}

/// An operand that may stay outside a region: its bytes are the same in both layouts.
fn admitted_outside(
    u: usize,
    region: &HashSet<usize>,
    static_shape: &dyn Fn(usize) -> Option<Vec<Option<usize>>>,
) -> bool {
    !region.contains(&u) && static_shape(u).is_some_and(|s| same_bytes_in_nhwc(&s))
}

#[cfg(test)]
mod tests {
    use super::same_bytes_in_nhwc;

    #[test]
    fn layout_invariant_shapes() {
        let s = |v: &[Option<usize>]| same_bytes_in_nhwc(v);
        assert!(s(&[None, Some(64), Some(1), Some(1)]));
        assert!(s(&[Some(2), Some(1), Some(8), Some(1)]));
        assert!(s(&[Some(64), Some(1), Some(1)]));
        assert!(s(&[]));
        assert!(!s(&[None, Some(64), Some(8), Some(8)]));
        assert!(!s(&[None, None, Some(1), None]));
        assert!(!s(&[Some(1); 5]));
    }
}
