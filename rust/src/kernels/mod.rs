//! CPU kernels, one file per operation; in each file the forward function sits beside
//! its backward. Backward functions accumulate (`+=`) into gradient buffers.
//!
//! Letters: B batch, T time, C channels (d_model), H heads, D head size, F d_ff,
//! V vocabulary, N = B * T rows.

pub mod activation;
pub mod attention;
pub mod bf16;
pub mod cross_entropy;
pub mod embedding;
pub mod gelu;
pub mod layernorm;
pub mod matmul;
pub mod rmsnorm;
pub mod rope;
pub mod simd;
pub mod tiled;
pub mod vecmath;
