//! Refusing weights that hold NaN or infinity, for every source format in one place.
//!
//! One non-finite weight turns every logit into NaN: greedy decoding then prints nothing or garbage and exits 0,
//! while sampling fails far from the cause. Every tensor the model keeps is checked once after loading (f32 and
//! f16 values, and the scales and offsets of M0E4 matrices; M0E4 codes are always finite by construction), and
//! the error names the tensor, the row and the column.

use super::tlite_format::named;
use super::{Model, Tensor, TensorData};
use crate::EngineError;
use rayon::prelude::*;
use std::path::Path;

/// Where the first non-finite value of a tensor sits, in words ("row 3, column 7").
fn position(t: &Tensor, index: usize) -> String {
    if t.shape.len() < 2 {
        format!("element {index}")
    } else {
        let cols = t.cols().max(1);
        format!("row {}, column {}", index / cols, index % cols)
    }
}

/// The first problem of one tensor, described.
fn first_problem(t: &Tensor) -> Option<String> {
    match &t.data {
        TensorData::F32(v) => v
            .iter()
            .position(|x| !x.is_finite())
            .map(|i| format!("holds {} at {}", v[i], position(t, i))),
        TensorData::F16(v) => v
            .iter()
            .position(|x| !x.is_finite())
            .map(|i| format!("holds {} at {}", v[i], position(t, i))),
        TensorData::M0e4(m) => {
            let group = m.group().len();
            let per_row = m.groups_per_row().max(1);
            [("scale", m.scales()), ("offset", m.offsets())]
                .into_iter()
                .find_map(|(what, v)| {
                    let i = v.iter().position(|x| !x.is_finite())?;
                    let (row, g) = (i / per_row, i % per_row);
                    Some(format!(
                        "has M0E4 {what} {} at row {row}, columns {}..{}",
                        v[i],
                        g * group,
                        (g + 1) * group - 1
                    ))
                })
        }
    }
}

/// Fails naming the first tensor (in the model's order), row and column holding NaN or infinity.
pub(crate) fn check_model(model: &Model, origin: &Path) -> Result<(), EngineError> {
    let tensors = named(&model.weights);
    let found = tensors
        .par_iter()
        .find_map_first(|(name, t)| first_problem(t).map(|p| (name, p)));
    match found {
        None => Ok(()),
        Some((name, problem)) => Err(EngineError::Model(format!(
            "{}: tensor `{name}` {problem}; weights must be finite (the file is damaged or was saved from a \
             diverged model)",
            origin.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use half::f16;

    fn matrix_f16(rows: usize, cols: usize) -> Tensor {
        let v = (0..rows * cols)
            .map(|i| f16::from_f32(i as f32 * 0.01))
            .collect();
        Tensor::f16(vec![rows, cols], v).unwrap()
    }

    #[test]
    fn names_row_and_column_of_an_f16_nan() {
        let mut t = matrix_f16(4, 6);
        if let TensorData::F16(v) = &mut t.data {
            v[2 * 6 + 5] = f16::NAN;
        }
        assert_eq!(first_problem(&t).unwrap(), "holds NaN at row 2, column 5");
    }

    #[test]
    fn names_the_element_of_an_f32_vector() {
        let t = Tensor::f32(vec![5], vec![1.0, 2.0, 3.0, f32::NEG_INFINITY, 0.0]).unwrap();
        assert_eq!(first_problem(&t).unwrap(), "holds -inf at element 3");
    }

    #[test]
    fn names_the_group_of_an_m0e4_offset() {
        let w: Vec<f32> = (0..2 * 64).map(|i| (i as f32 * 0.37).sin()).collect();
        let m = fp4::quantize_m0e4(&w, fp4::MatrixShape::new(2, 64), fp4::GroupSize::G32).unwrap();
        assert!(first_problem(&Tensor::m0e4(m.clone())).is_none());
        let (codes, scales, mut offsets) = m.into_parts();
        offsets[3] = f16::INFINITY;
        let m = fp4::M0e4Matrix::from_parts(
            fp4::MatrixShape::new(2, 64),
            fp4::GroupSize::G32,
            codes,
            scales,
            offsets,
        )
        .unwrap();
        assert_eq!(
            first_problem(&Tensor::m0e4(m)).unwrap(),
            "has M0E4 offset inf at row 1, columns 32..63"
        );
    }

    #[test]
    fn finite_tensors_pass() {
        assert!(first_problem(&matrix_f16(3, 3)).is_none());
    }
}
