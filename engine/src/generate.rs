//! The generation loop: prefill in chunks, decode, stream tokens, stop.
