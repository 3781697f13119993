//! M0E4 4-bit weight format: quantiser, GPU packing layout, reference dequantiser and matvec.
