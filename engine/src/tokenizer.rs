//! Tokenisation through the tokenizers crate, plus the llama2.c tokenizer.bin format.
