//! The model's hyper-parameters and the rules that make a configuration valid.
//!
//! Letters used for sizes throughout the crate: B batch, T sequence length, C d_model,
//! H n_heads, D = C / H head size, F d_ff, V vocab_size, P max_seq_len (position rows), L layers.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Largest accepted value of each size: a file or a call asking for more is an error,
/// never an attempt to allocate it.
pub const MAX_D_MODEL: usize = 1 << 16;
pub const MAX_D_FF: usize = 1 << 18;
pub const MAX_LAYERS: usize = 1 << 10;
pub const MAX_HEADS: usize = 1 << 10;
pub const MAX_VOCAB: usize = 1 << 22;
pub const MAX_SEQ_LEN: usize = 1 << 20;
/// At most 2^30 parameters (4 GiB of f32): far beyond a "tiny" model, far below a crash.
pub const MAX_PARAMETERS: usize = 1 << 30;

/// Hyper-parameters of a GPT-style decoder.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub vocab_size: usize,
    pub d_model: usize,
    pub n_layers: usize,
    pub n_heads: usize,
    /// Width of the feed-forward hidden layer (4 * d_model in GPT-2).
    pub d_ff: usize,
    /// Number of learned position rows: the longest sequence the model can see.
    pub max_seq_len: usize,
    /// Layer-norm epsilon.
    pub eps: f32,
    /// Whether the q, k, v and output projections have biases (GPT-2: yes; Go TinyLM: no).
    pub attn_bias: bool,
    /// Whether the output head reuses the token embedding (GPT-2: yes; Go TinyLM: no).
    pub tie_embeddings: bool,
}

fn check_range(name: &str, value: usize, max: usize) -> Result<()> {
    if value == 0 {
        return Err(Error::config(format!("{name} must be positive, got 0")));
    }
    if value > max {
        return Err(Error::config(format!(
            "{name} = {value} exceeds the limit of {max}"
        )));
    }
    Ok(())
}

impl Config {
    /// Checks every rule; the message names the field and the value.
    pub fn validate(&self) -> Result<()> {
        check_range("vocab_size", self.vocab_size, MAX_VOCAB)?;
        check_range("d_model", self.d_model, MAX_D_MODEL)?;
        check_range("n_layers", self.n_layers, MAX_LAYERS)?;
        check_range("n_heads", self.n_heads, MAX_HEADS)?;
        check_range("d_ff", self.d_ff, MAX_D_FF)?;
        check_range("max_seq_len", self.max_seq_len, MAX_SEQ_LEN)?;
        if !self.d_model.is_multiple_of(self.n_heads) {
            return Err(Error::config(format!(
                "n_heads = {} does not divide d_model = {}",
                self.n_heads, self.d_model
            )));
        }
        if !(self.eps.is_finite() && self.eps > 0.0) {
            return Err(Error::config(format!(
                "eps must be a positive finite number, got {}",
                self.eps
            )));
        }
        let n = self.parameter_count_u128();
        if n > MAX_PARAMETERS as u128 {
            return Err(Error::config(format!(
                "the model would have {n} parameters, more than the limit of {MAX_PARAMETERS}"
            )));
        }
        Ok(())
    }

    /// Head size D = C / H.
    pub fn head_dim(&self) -> usize {
        self.d_model / self.n_heads
    }

    /// Number of scalar parameters (computed in u128 so that absurd sizes cannot overflow).
    fn parameter_count_u128(&self) -> u128 {
        let (v, c, f, p, l) = (
            self.vocab_size as u128,
            self.d_model as u128,
            self.d_ff as u128,
            self.max_seq_len as u128,
            self.n_layers as u128,
        );
        let attn_bias = if self.attn_bias { 4 * c } else { 0 };
        let per_block = 2 * c + 4 * c * c + attn_bias + 2 * c + c * f + f + f * c + c;
        let head = if self.tie_embeddings { 0 } else { v * c };
        v * c + p * c + l * per_block + 2 * c + head
    }

    /// Number of scalar parameters. Only meaningful on a validated config.
    pub fn parameter_count(&self) -> usize {
        self.parameter_count_u128() as usize
    }

    /// The configuration of the Go TinyLM format: no attention biases, untied head, eps 1e-5.
    pub fn go_tinylm(
        vocab_size: usize,
        d_model: usize,
        n_layers: usize,
        n_heads: usize,
        d_ff: usize,
        max_seq_len: usize,
    ) -> Config {
        Config {
            vocab_size,
            d_model,
            n_layers,
            n_heads,
            d_ff,
            max_seq_len,
            eps: 1e-5,
            attn_bias: false,
            tie_embeddings: false,
        }
    }

    /// Whether the Go TinyLM JSON format can hold this model; if not, why.
    pub fn go_format_obstacle(&self) -> Option<String> {
        if self.attn_bias {
            return Some("the Go TinyLM format has no attention biases (attn_bias = true)".into());
        }
        if self.tie_embeddings {
            return Some(
                "the Go TinyLM format has no tied output head (tie_embeddings = true)".into(),
            );
        }
        if self.eps != 1e-5 {
            return Some(format!(
                "the Go TinyLM format always uses eps 1e-5, this model uses {}",
                self.eps
            ));
        }
        None
    }
}
