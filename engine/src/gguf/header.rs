//! Parsing and validating a GGUF header: magic, version, metadata, tensor infos, alignment and byte ranges.
//!
//! Every count and length read from the file is checked against the bytes that remain before anything is allocated
//! for it, so a corrupt or hostile header can neither panic the parser nor make it allocate more than the file's
//! own size. Errors name the field (the metadata key, the tensor) that is wrong.

use super::ggml_type::GgmlType;
use super::value::MetaValue;
use std::collections::HashMap;

/// Alignment of the data section and of tensor offsets when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Dimensions a ggml tensor has at most.
const MAX_DIMS: usize = 4;
/// Element count a tensor may have at most (2^40), as for configs.
const MAX_ELEMENTS: u64 = 1 << 40;
/// Array nesting GGUF readers accept (ggml writes none; a bound keeps recursion finite).
const MAX_ARRAY_DEPTH: usize = 4;

/// Where one tensor's data lies and how it is typed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Its name, e.g. `blk.0.attn_q.weight`.
    pub name: String,
    /// ggml's dimensions, innermost first: a `[rows, cols]` matrix is `[cols, rows]` here.
    pub dims: Vec<usize>,
    /// Element type.
    pub ggml_type: GgmlType,
    /// Byte offset of its data from the start of the file.
    pub start: usize,
    /// Byte length of its data.
    pub len: usize,
}

impl TensorInfo {
    /// Number of elements.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// The shape outermost first, as the rest of tlite writes shapes (`[rows, cols]`).
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed, validated GGUF header.
#[derive(Debug, Clone)]
pub struct Header {
    /// Format version (2 or 3).
    pub version: u32,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensor infos in file order.
    pub tensors: Vec<TensorInfo>,
    /// Alignment of the data section.
    pub alignment: usize,
    /// Offset of the data section from the start of the file.
    pub data_start: usize,
    meta_index: HashMap<String, usize>,
    tensor_index: HashMap<String, usize>,
}

impl Header {
    /// The value of metadata `key`.
    pub fn get(&self, key: &str) -> Option<&MetaValue> {
        self.meta_index.get(key).map(|&i| &self.metadata[i].1)
    }

    /// The tensor called `name`.
    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensor_index.get(name).map(|&i| &self.tensors[i])
    }
}

/// A little-endian reader over a byte slice that never reads past its end.
struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &dyn Fn() -> String) -> Result<&'a [u8], String> {
        if n > self.remaining() {
            return Err(format!(
                "{}: needs {n} bytes at offset {} but the file ends after {} more",
                what(),
                self.pos,
                self.remaining()
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], String> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count that announces `count` items of at least `min_item` bytes each: refused when the file is too short
    /// to hold them, which bounds every allocation by the file's size.
    fn count(&mut self, min_item: usize, what: &dyn Fn() -> String) -> Result<usize, String> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min_item.max(1)))
            .is_some_and(|bytes| bytes <= self.remaining());
        if !fits {
            return Err(format!(
                "{}: {n} announced, but only {} bytes remain in the file",
                what(),
                self.remaining()
            ));
        }
        Ok(n as usize)
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, String> {
        let len = self.count(1, &|| format!("{} (string length)", what()))?;
        let bytes = self.take(len, what)?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }
}

/// The smallest encoding of a value of GGUF type `ty` (to bound array counts before allocating).
fn min_size(ty: u32) -> usize {
    match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        _ => 8,
    }
}

fn value(c: &mut Cursor<'_>, ty: u32, key: &str, depth: usize) -> Result<MetaValue, String> {
    let what = || format!("metadata `{key}`");
    Ok(match ty {
        0 => MetaValue::Uint(u64::from(c.array::<1>(&what)?[0])),
        1 => MetaValue::Int(i64::from(c.array::<1>(&what)?[0] as i8)),
        2 => MetaValue::Uint(u64::from(u16::from_le_bytes(c.array(&what)?))),
        3 => MetaValue::Int(i64::from(i16::from_le_bytes(c.array(&what)?))),
        4 => MetaValue::Uint(u64::from(c.u32(&what)?)),
        5 => MetaValue::Int(i64::from(i32::from_le_bytes(c.array(&what)?))),
        6 => MetaValue::Float(f64::from(f32::from_le_bytes(c.array(&what)?))),
        7 => match c.array::<1>(&what)?[0] {
            0 => MetaValue::Bool(false),
            1 => MetaValue::Bool(true),
            b => {
                return Err(format!(
                    "metadata `{key}`: boolean byte {b} is neither 0 nor 1"
                ))
            }
        },
        8 => MetaValue::Str(c.string(&what)?),
        9 => {
            if depth >= MAX_ARRAY_DEPTH {
                return Err(format!(
                    "metadata `{key}`: arrays nested deeper than {MAX_ARRAY_DEPTH}"
                ));
            }
            let elem = c.u32(&|| format!("metadata `{key}` (array element type)"))?;
            if !(0..=12).contains(&elem) {
                return Err(format!(
                    "metadata `{key}`: array element type {elem} is not a GGUF type (0-12)"
                ));
            }
            let n = c.count(min_size(elem), &|| {
                format!("metadata `{key}` (array length)")
            })?;
            let mut items = Vec::with_capacity(n);
            for _ in 0..n {
                items.push(value(c, elem, key, depth + 1)?);
            }
            MetaValue::Array(items)
        }
        10 => MetaValue::Uint(c.u64(&what)?),
        11 => MetaValue::Int(i64::from_le_bytes(c.array(&what)?)),
        12 => MetaValue::Float(f64::from_le_bytes(c.array(&what)?)),
        other => {
            return Err(format!(
                "metadata `{key}`: value type {other} is not a GGUF type (0-12)"
            ))
        }
    })
}

/// Parses and validates the header of a GGUF file whose full contents are `bytes`.
///
/// Checks: the magic, version 2 or 3 (version 1 used 32-bit counts and is refused, as llama.cpp does; a
/// byte-swapped version means a big-endian file, also refused), every count and string length against the bytes
/// left, unique keys and tensor names, `general.alignment` (a power of two), 1-4 positive dimensions per tensor,
/// a known ggml type whose block divides the innermost dimension, and each tensor's data: aligned, inside the
/// file, not overlapping another tensor's.
pub fn parse(bytes: &[u8]) -> Result<Header, String> {
    let mut c = Cursor { bytes, pos: 0 };
    let magic = c.array::<4>(&|| "magic".to_string())?;
    if &magic != b"GGUF" {
        return Err(format!(
            "not a GGUF file: it starts with {magic:02x?}, not \"GGUF\""
        ));
    }
    let version = c.u32(&|| "version".to_string())?;
    match version {
        2 | 3 => {}
        1 => {
            return Err(
                "GGUF version 1 is not supported (re-convert the model; versions 2 and 3 are)"
                    .into(),
            )
        }
        v if v.swap_bytes() == 2 || v.swap_bytes() == 3 => {
            return Err("big-endian GGUF files are not supported".into())
        }
        v => return Err(format!("GGUF version {v} is not supported (2 and 3 are)")),
    }
    // A tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes; a key-value pair 8 + 4.
    let n_tensors = c.u64(&|| "tensor count".to_string())?;
    let n_kv = c.u64(&|| "metadata count".to_string())?;
    let plausible = |n: u64, min: usize| {
        usize::try_from(n)
            .ok()
            .and_then(|n| n.checked_mul(min))
            .is_some_and(|b| b <= bytes.len())
    };
    if !plausible(n_tensors, 24) {
        return Err(format!(
            "tensor count {n_tensors} cannot fit in a file of {} bytes",
            bytes.len()
        ));
    }
    if !plausible(n_kv, 12) {
        return Err(format!(
            "metadata count {n_kv} cannot fit in a file of {} bytes",
            bytes.len()
        ));
    }

    let mut metadata = Vec::with_capacity(n_kv as usize);
    let mut meta_index = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv as usize {
        let key = c.string(&|| format!("metadata key #{i}"))?;
        let ty = c.u32(&|| format!("metadata `{key}` (value type)"))?;
        let v = value(&mut c, ty, &key, 0)?;
        if meta_index.insert(key.clone(), metadata.len()).is_some() {
            return Err(format!("metadata key `{key}` appears twice"));
        }
        metadata.push((key, v));
    }
    let alignment = match metadata
        .get(
            meta_index
                .get("general.alignment")
                .copied()
                .unwrap_or(usize::MAX),
        )
        .map(|kv| &kv.1)
    {
        None => DEFAULT_ALIGNMENT,
        Some(v) => match v.as_u64().and_then(|a| usize::try_from(a).ok()) {
            Some(a) if a.is_power_of_two() && a <= 1 << 20 => a,
            _ => {
                return Err(format!(
                    "metadata `general.alignment` is {v}; it must be a power of two up to 1 MiB"
                ))
            }
        },
    };

    let mut raw = Vec::with_capacity(n_tensors as usize);
    let mut tensor_index = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors as usize {
        let name = c.string(&|| format!("tensor #{i} name"))?;
        let what = |field: &str| format!("tensor `{name}` {field}");
        let n_dims = c.u32(&|| what("(dimension count)"))? as usize;
        if !(1..=MAX_DIMS).contains(&n_dims) {
            return Err(format!(
                "tensor `{name}` has {n_dims} dimensions (1 to {MAX_DIMS} allowed)"
            ));
        }
        let mut dims = Vec::with_capacity(n_dims);
        for d in 0..n_dims {
            dims.push(c.u64(&|| what(&format!("(dimension {d})")))?);
        }
        let type_id = c.u32(&|| what("(type)"))?;
        let offset = c.u64(&|| what("(offset)"))?;
        if tensor_index.insert(name.clone(), raw.len()).is_some() {
            return Err(format!("tensor name `{name}` appears twice"));
        }
        let ggml_type = GgmlType::from_id(type_id).ok_or_else(|| {
            format!("tensor `{name}` has ggml type id {type_id}, which ggml does not define")
        })?;
        if dims.contains(&0) {
            return Err(format!("tensor `{name}` has a zero dimension: {dims:?}"));
        }
        let elements = dims
            .iter()
            .try_fold(1u64, |a, &d| a.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| {
                format!("tensor `{name}` dimensions {dims:?} exceed {MAX_ELEMENTS} elements")
            })?;
        let dims: Vec<usize> = dims.iter().map(|&d| d as usize).collect();
        let row = dims[0];
        let row_bytes = ggml_type.row_bytes(row).ok_or_else(|| {
            format!(
                "tensor `{name}`: its rows of {row} elements are not whole {ggml_type} blocks of {}",
                ggml_type.block_len()
            )
        })?;
        let len = row_bytes
            .checked_mul(elements as usize / row)
            .ok_or_else(|| format!("tensor `{name}`: byte size overflows"))?;
        raw.push((name, dims, ggml_type, offset, len));
    }
    let data_start = c.pos.next_multiple_of(alignment);
    if data_start > bytes.len() && !raw.is_empty() {
        return Err(format!(
            "the data section would start at offset {data_start}, past the end of the file ({} bytes)",
            bytes.len()
        ));
    }
    let data_len = bytes.len().saturating_sub(data_start);

    let mut tensors = Vec::with_capacity(raw.len());
    for (name, dims, ggml_type, offset, len) in raw {
        let offset = usize::try_from(offset).unwrap_or(usize::MAX);
        if !offset.is_multiple_of(alignment) {
            return Err(format!(
                "tensor `{name}`: data offset {offset} is not a multiple of the alignment {alignment}"
            ));
        }
        if offset.checked_add(len).is_none_or(|end| end > data_len) {
            return Err(format!(
                "tensor `{name}`: its {len} bytes at data offset {offset} run past the end of the file \
                 (the data section holds {data_len} bytes)"
            ));
        }
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            start: data_start + offset,
            len,
        });
    }
    let mut by_start: Vec<&TensorInfo> = tensors.iter().filter(|t| t.len > 0).collect();
    by_start.sort_by_key(|t| t.start);
    for pair in by_start.windows(2) {
        if pair[0].start + pair[0].len > pair[1].start {
            return Err(format!(
                "tensors `{}` and `{}` overlap in the file",
                pair[0].name, pair[1].name
            ));
        }
    }
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_start,
        meta_index,
        tensor_index,
    })
}
