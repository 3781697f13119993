//! Thin engine composing symshape, fp4, kvcache and clkernels into Llama-family generation.
