//! Safetensors storage for M0E4 models: a quantised model loads with zero re-processing.
//!
//! A matrix named `NAME` is stored as three tensors:
//!
//! | tensor | dtype | shape |
//! |---|---|---|
//! | `NAME.m0e4_codes` | U8 | `[rows, cols/2]` (the packed codes, byte-for-byte) |
//! | `NAME.m0e4_scales` | F16 | `[rows, cols/G]` |
//! | `NAME.m0e4_offsets` | F16 | `[rows, cols/G]` |
//!
//! Other tensors a model needs unquantised (norm weights, embeddings) are stored as plain F16
//! under their own names. The file's `__metadata__` holds `format = "m0e4"`,
//! `format_version = "1"` and `group_size` (one of 32, 64, 128, shared by every matrix).
//! Loading rejects a missing or different format or version, an unsupported group size, a
//! matrix whose shapes disagree with each other or with the group size, and any dtype other
//! than U8 codes and F16 tensors, each with an error naming the file and the tensor.

use crate::{Fp4Error, GroupSize, M0e4Matrix, MatrixShape};
use half::f16;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// `format` metadata value of M0E4 files.
pub const FORMAT_NAME: &str = "m0e4";
/// The only `format_version` this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Suffix of a matrix's packed codes tensor.
pub const CODES_SUFFIX: &str = ".m0e4_codes";
/// Suffix of a matrix's scales tensor.
pub const SCALES_SUFFIX: &str = ".m0e4_scales";
/// Suffix of a matrix's offsets tensor.
pub const OFFSETS_SUFFIX: &str = ".m0e4_offsets";

/// An unquantised F16 tensor of any shape.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseF16 {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub data: Vec<f16>,
}

/// A borrowed unquantised F16 tensor: `data_le` is its little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct DenseF16Ref<'a> {
    /// Dimensions, outermost first.
    pub shape: Vec<usize>,
    /// Row-major little-endian f16 bytes, ready to upload to a device.
    pub data_le: &'a [u8],
}

impl DenseF16Ref<'_> {
    /// Decodes into an owned tensor.
    pub fn to_dense(&self) -> DenseF16 {
        DenseF16 {
            shape: self.shape.clone(),
            data: f16_from_le(self.data_le),
        }
    }
}

/// A borrowed M0E4 matrix straight out of a file's bytes (for example a memory map): the parts
/// are exactly the bytes a GPU buffer needs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct M0e4MatrixRef<'a> {
    /// Rows and columns.
    pub shape: MatrixShape,
    /// Weights per group.
    pub group: GroupSize,
    /// Packed codes, `rows * cols/2` bytes.
    pub codes: &'a [u8],
    /// Scales as little-endian f16 bytes, `[rows][cols/G]`.
    pub scales_le: &'a [u8],
    /// Offsets as little-endian f16 bytes, `[rows][cols/G]`.
    pub offsets_le: &'a [u8],
}

impl M0e4MatrixRef<'_> {
    /// Copies into an owned [`M0e4Matrix`].
    pub fn to_matrix(&self) -> Result<M0e4Matrix, Fp4Error> {
        M0e4Matrix::from_parts(
            self.shape,
            self.group,
            self.codes.to_vec(),
            f16_from_le(self.scales_le),
            f16_from_le(self.offsets_le),
        )
    }
}

/// Every tensor of an M0E4 file, borrowed from its bytes.
#[derive(Debug, Clone, PartialEq)]
pub struct M0e4Tensors<'a> {
    /// The group size shared by every matrix.
    pub group: GroupSize,
    /// Quantised matrices by name.
    pub matrices: BTreeMap<String, M0e4MatrixRef<'a>>,
    /// Unquantised tensors by name.
    pub dense: BTreeMap<String, DenseF16Ref<'a>>,
}

/// Every tensor of an M0E4 file, owned.
#[derive(Debug, Clone, PartialEq)]
pub struct M0e4File {
    /// The group size shared by every matrix.
    pub group: GroupSize,
    /// Quantised matrices by name.
    pub matrices: BTreeMap<String, M0e4Matrix>,
    /// Unquantised tensors by name.
    pub dense: BTreeMap<String, DenseF16>,
}

fn f16_to_le(values: &[f16]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

fn f16_from_le(bytes: &[u8]) -> Vec<f16> {
    bytes
        .chunks_exact(2)
        .map(|b| f16::from_le_bytes([b[0], b[1]]))
        .collect()
}

fn bad(origin: &str, message: String) -> Fp4Error {
    Fp4Error::BadFile {
        path: origin.to_string(),
        message,
    }
}

fn st_err(origin: &str, e: impl std::fmt::Display) -> Fp4Error {
    Fp4Error::Safetensors {
        path: origin.to_string(),
        message: e.to_string(),
    }
}

/// Serialises matrices (all with the same group size) and unquantised F16 tensors (`(name,
/// shape, values)`) into the bytes of one safetensors file.
pub fn to_bytes(
    matrices: &[(&str, &M0e4Matrix)],
    dense: &[(&str, &[usize], &[f16])],
) -> Result<Vec<u8>, Fp4Error> {
    let origin = "<in-memory safetensors>";
    let group = match matrices.first() {
        Some((_, m)) => m.group(),
        None => GroupSize::default(),
    };
    // Owned byte buffers first, so the views below can borrow them.
    let mut owned: Vec<(String, Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    for (name, m) in matrices {
        if m.group() != group {
            return Err(bad(
                origin,
                format!(
                    "matrix `{name}` has group size {} but the file's group size is {group}",
                    m.group()
                ),
            ));
        }
        let MatrixShape { rows, cols } = m.shape();
        let gpr = m.groups_per_row();
        owned.push((
            format!("{name}{CODES_SUFFIX}"),
            Dtype::U8,
            vec![rows, cols / 2],
            m.codes().to_vec(),
        ));
        owned.push((
            format!("{name}{SCALES_SUFFIX}"),
            Dtype::F16,
            vec![rows, gpr],
            f16_to_le(m.scales()),
        ));
        owned.push((
            format!("{name}{OFFSETS_SUFFIX}"),
            Dtype::F16,
            vec![rows, gpr],
            f16_to_le(m.offsets()),
        ));
    }
    for (name, shape, data) in dense {
        if [CODES_SUFFIX, SCALES_SUFFIX, OFFSETS_SUFFIX]
            .iter()
            .any(|s| name.ends_with(s))
        {
            return Err(bad(
                origin,
                format!("dense tensor name `{name}` ends with a suffix reserved for M0E4 matrices"),
            ));
        }
        let Some(n) = shape.iter().try_fold(1usize, |a, &d| a.checked_mul(d)) else {
            return Err(bad(
                origin,
                format!("dense tensor `{name}`: shape {shape:?} overflows the address space"),
            ));
        };
        if n != data.len() {
            return Err(bad(
                origin,
                format!(
                    "dense tensor `{name}` has {} values but shape {shape:?} needs {n}",
                    data.len()
                ),
            ));
        }
        owned.push((
            name.to_string(),
            Dtype::F16,
            shape.to_vec(),
            f16_to_le(data),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    if let Some((dup, ..)) = owned.iter().find(|(n, ..)| !seen.insert(n.as_str())) {
        return Err(bad(origin, format!("tensor name `{dup}` is used twice")));
    }
    let mut views = Vec::with_capacity(owned.len());
    for (name, dtype, shape, data) in &owned {
        views.push((
            name.as_str(),
            TensorView::new(*dtype, shape.clone(), data).map_err(|e| st_err(origin, e))?,
        ));
    }
    let metadata = HashMap::from([
        ("format".to_string(), FORMAT_NAME.to_string()),
        ("format_version".to_string(), FORMAT_VERSION.to_string()),
        ("group_size".to_string(), group.len().to_string()),
    ]);
    safetensors::serialize(views, Some(metadata)).map_err(|e| st_err(origin, e))
}

/// Writes matrices and unquantised F16 tensors to one safetensors file at `path`; see [`to_bytes`].
pub fn write_tensors(
    path: &Path,
    matrices: &[(&str, &M0e4Matrix)],
    dense: &[(&str, &[usize], &[f16])],
) -> Result<(), Fp4Error> {
    let bytes = to_bytes(matrices, dense)?;
    std::fs::write(path, bytes).map_err(|source| Fp4Error::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Reads and checks a whole M0E4 file into owned tensors.
pub fn read_tensors(path: &Path) -> Result<M0e4File, Fp4Error> {
    let origin = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| Fp4Error::Io {
        path: origin.clone(),
        source,
    })?;
    let t = parse(&bytes, &origin)?;
    let mut matrices = BTreeMap::new();
    for (name, m) in t.matrices {
        matrices.insert(name, m.to_matrix()?);
    }
    let dense = t
        .dense
        .into_iter()
        .map(|(n, d)| (n, d.to_dense()))
        .collect();
    Ok(M0e4File {
        group: t.group,
        matrices,
        dense,
    })
}

fn expect_2d<'a>(
    origin: &str,
    name: &str,
    view: &'a TensorView<'_>,
    dtype: Dtype,
) -> Result<&'a [usize], Fp4Error> {
    if view.dtype() != dtype {
        return Err(bad(
            origin,
            format!(
                "tensor `{name}` has dtype {:?}, expected {dtype:?}",
                view.dtype()
            ),
        ));
    }
    if view.shape().len() != 2 {
        return Err(bad(
            origin,
            format!(
                "tensor `{name}` has shape {:?}, expected two dimensions",
                view.shape()
            ),
        ));
    }
    Ok(view.shape())
}

/// Checks the bytes of an M0E4 safetensors file and borrows every tensor from them; `origin`
/// names the file in errors.
pub fn parse<'a>(bytes: &'a [u8], origin: &str) -> Result<M0e4Tensors<'a>, Fp4Error> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| st_err(origin, e))?;
    let (_, header) = SafeTensors::read_metadata(bytes).map_err(|e| st_err(origin, e))?;
    let meta = header.metadata().as_ref().ok_or_else(|| {
        bad(
            origin,
            "not an M0E4 file: it has no __metadata__".to_string(),
        )
    })?;
    let get = |key: &str| {
        meta.get(key).ok_or_else(|| {
            bad(
                origin,
                format!("not an M0E4 file: __metadata__ has no `{key}`"),
            )
        })
    };
    let format = get("format")?;
    if format != FORMAT_NAME {
        return Err(bad(
            origin,
            format!("format is `{format}`, expected `{FORMAT_NAME}`"),
        ));
    }
    let version = get("format_version")?;
    if version.parse::<u32>().ok() != Some(FORMAT_VERSION) {
        return Err(bad(origin, format!("unsupported M0E4 format version `{version}`; this build reads version {FORMAT_VERSION}")));
    }
    let group_text = get("group_size")?;
    let group = group_text
        .parse::<usize>()
        .ok()
        .and_then(|g| GroupSize::try_from(g).ok())
        .ok_or_else(|| {
            bad(
                origin,
                format!("unsupported group size `{group_text}`; expected 32, 64 or 128"),
            )
        })?;

    let views: BTreeMap<String, TensorView<'a>> = st.tensors().into_iter().collect();
    let mut matrices = BTreeMap::new();
    let mut dense = BTreeMap::new();
    for (name, view) in &views {
        if let Some(base) = name.strip_suffix(CODES_SUFFIX) {
            let find = |suffix: &str| {
                let key = format!("{base}{suffix}");
                views.get(&key).map(|v| (key.clone(), v)).ok_or_else(|| {
                    bad(
                        origin,
                        format!("matrix `{base}` has codes but no `{key}` tensor"),
                    )
                })
            };
            let codes_shape = expect_2d(origin, name, view, Dtype::U8)?;
            // Two dimensions, checked by `expect_2d`. Safetensors checked the codes' byte count, but a zero
            // dimension lets the other one be anything, so the products are checked here.
            let rows = codes_shape[0];
            let cols = codes_shape[1]
                .checked_mul(2)
                .filter(|&c| rows.checked_mul(c).is_some())
                .ok_or_else(|| {
                    bad(
                        origin,
                        format!("matrix `{base}`: codes shape {codes_shape:?} is too large"),
                    )
                })?;
            let shape = MatrixShape::new(rows, cols);
            shape
                .check_groupable(group)
                .map_err(|e| bad(origin, format!("matrix `{base}`: {e}")))?;
            let want = [rows, cols / group.len()];
            let mut parts = Vec::new();
            for suffix in [SCALES_SUFFIX, OFFSETS_SUFFIX] {
                let (key, v) = find(suffix)?;
                let got = expect_2d(origin, &key, v, Dtype::F16)?;
                if got != want {
                    return Err(bad(
                        origin,
                        format!(
                            "tensor `{key}` has shape {got:?} but a {rows}x{cols} matrix with group size {group} needs {want:?}"
                        ),
                    ));
                }
                parts.push(v.data());
            }
            matrices.insert(
                base.to_string(),
                M0e4MatrixRef {
                    shape,
                    group,
                    codes: view.data(),
                    scales_le: parts[0],
                    offsets_le: parts[1],
                },
            );
        } else if let Some(base) = name
            .strip_suffix(SCALES_SUFFIX)
            .or_else(|| name.strip_suffix(OFFSETS_SUFFIX))
        {
            if !views.contains_key(&format!("{base}{CODES_SUFFIX}")) {
                return Err(bad(
                    origin,
                    format!("tensor `{name}` has no matching `{base}{CODES_SUFFIX}`"),
                ));
            }
        } else {
            if view.dtype() != Dtype::F16 {
                return Err(bad(
                    origin,
                    format!("tensor `{name}` has dtype {:?}; M0E4 files hold only U8 codes and F16 tensors", view.dtype()),
                ));
            }
            dense.insert(
                name.clone(),
                DenseF16Ref {
                    shape: view.shape().to_vec(),
                    data_le: view.data(),
                },
            );
        }
    }
    Ok(M0e4Tensors {
        group,
        matrices,
        dense,
    })
}
