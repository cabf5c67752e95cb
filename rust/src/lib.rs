//! tinylm: a tiny GPT-style language model from first principles.
//!
//! The crate is plain Rust: CPU kernels with their backward passes ([`kernels`]), the
//! model ([`model`]), the optimizers ([`optim`]), sampling and generation ([`sample`],
//! [`generate`]), tokenizers ([`tokenizer`]) and weight files ([`weights`]). The Python
//! bindings live in one module, `python`, compiled only with the `python` feature.

pub mod alloc;
pub mod batch;
pub mod beam;
pub mod config;
pub mod decode;
pub mod dropout;
pub mod error;
pub mod generate;
pub mod generate_many;
pub mod kernels;
pub mod model;
pub mod optim;
pub mod params;
pub mod reference;
pub mod rng;
pub mod sample;
pub mod score;
pub mod threads;
pub mod tokenizer;
pub mod weights;

#[cfg(feature = "python")]
mod python;

pub use config::Config;
pub use error::{Error, Result};
pub use model::{Model, Workspace};
