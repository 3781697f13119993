//! Symbolic tensor shapes and a provably safe memory plan, for dynamic-shape inference.
