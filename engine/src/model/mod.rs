//! Model configuration and weights: Hugging Face folders, llama2.c checkpoints, tlite quantised folders.
