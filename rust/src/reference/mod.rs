//! The reference path: the model written to be read, and the specification the fast
//! path is tested against.
//!
//! Plain Rust: no SIMD, no threads, no reused workspaces, nothing recomputed. Each
//! concept is one small file with its forward function beside its backward, the shapes in
//! the first comment, and the backward's comment quoting the forward line it
//! differentiates. Backward functions add (+=) into their gradients, so an input that
//! feeds several places needs no special case. [`model`] strings them together, over the
//! same flat parameter buffer and [`crate::params::ParamLayout`] as the fast path.
//!
//! Letters: B batch, T sequence, N = B T rows, C d_model, H heads, K key/value heads,
//! D head size, F d_ff, V vocab, P max_seq_len.

pub mod activation;
pub mod attention;
pub mod cross_entropy;
pub mod embedding;
pub mod layernorm;
pub mod linear;
pub mod model;
pub mod rmsnorm;
pub mod rope;
pub mod softmax;
pub mod trace;
