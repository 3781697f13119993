//! A view bound to a buffer: either a sub-region of its own, or the whole buffer plus an element offset.

use crate::layout::KvView;
use crate::storage::KvStorage;

/// What a kernel argument receives for one view of one buffer.
///
/// OpenCL sub-buffers must start at the device's base-address alignment; a step's write view at position `p` starts
/// at byte `p * head_dim * dtype_bytes`, which is often not aligned. So the binding is one of two forms, and a kernel
/// takes `(buffer, offset_elems)` in both: `0` for a sub-region, the view's offset otherwise.
pub enum KvBinding<'a, S: KvStorage> {
    /// The backend made a sub-region starting at the view's first element; `view.offset_elems` is 0.
    SubRegion {
        /// The sub-region.
        region: S::Region,
        /// The view, relative to the sub-region.
        view: KvView,
    },
    /// The whole buffer; the kernel applies `view.offset_elems` itself.
    Offset {
        /// The whole per-layer buffer.
        buffer: &'a S::Buffer,
        /// The view, relative to the buffer.
        view: KvView,
    },
}

impl<S: KvStorage> KvBinding<'_, S> {
    /// The view as the kernel must index it.
    pub fn view(&self) -> &KvView {
        match self {
            KvBinding::SubRegion { view, .. } | KvBinding::Offset { view, .. } => view,
        }
    }

    /// Whether the backend made a sub-region.
    pub fn is_sub_region(&self) -> bool {
        matches!(self, KvBinding::SubRegion { .. })
    }
}

impl<S: KvStorage> std::fmt::Debug for KvBinding<'_, S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KvBinding::SubRegion { view, .. } => f
                .debug_struct("KvBinding::SubRegion")
                .field("view", view)
                .finish_non_exhaustive(),
            KvBinding::Offset { view, .. } => f
                .debug_struct("KvBinding::Offset")
                .field("view", view)
                .finish_non_exhaustive(),
        }
    }
}
