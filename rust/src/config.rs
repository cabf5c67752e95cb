//! The model's hyper-parameters and the rules that make a configuration valid.
//!
//! Letters used for sizes throughout the crate: B batch, T sequence length, C d_model,
//! H n_heads, K n_kv_heads, D = C / H head size, F d_ff, V vocab_size, P max_seq_len
//! (position rows), L layers.
//!
//! Fields added after the first release ([`Activation`], [`Norm`], `mlp_bias`,
//! [`Position`], `rope_theta`, `n_kv_heads`, `dropout`) have serde defaults with today's meaning, so a
//! file written before them still loads as the same GPT-2 style model.

use std::fmt;

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
    /// The feed-forward block's non-linearity (GPT-2: the tanh GELU).
    #[serde(default)]
    pub activation: Activation,
    /// Layer norm (GPT-2) or RMSNorm (Llama), for the two norms of a block and the last one.
    #[serde(default)]
    pub norm: Norm,
    /// Whether the feed-forward matrices have biases (GPT-2: yes; Llama: no).
    #[serde(default = "default_true")]
    pub mlp_bias: bool,
    /// Learned position rows (GPT-2) or rotary positions (Llama: no position table).
    #[serde(default)]
    pub position: Position,
    /// Base of the rotary frequencies (used with `position = rope`).
    #[serde(default = "default_rope_theta")]
    pub rope_theta: f32,
    /// Key/value heads for grouped-query attention: K heads of keys and values, each
    /// shared by H / K query heads. `None` means K = H (ordinary multi-head attention).
    #[serde(default)]
    pub n_kv_heads: Option<usize>,
    /// Dropout probability of training passes (nanoGPT's `dropout`), 0 <= p < 1: applied,
    /// inverted (kept values scaled by 1 / (1 - p)), to the embedding sum, to each block's
    /// attention probabilities (after the softmax) and to the output of its attention
    /// projection and feed-forward block. Inference and evaluation never drop (see
    /// [`crate::dropout`]).
    #[serde(default)]
    pub dropout: f32,
}

fn default_true() -> bool {
    true
}

fn default_rope_theta() -> f32 {
    10000.0
}

/// Declares a config option: an enum with its names in files (snake case), a parser whose
/// error names the field and the choices, and `Display`.
macro_rules! config_option {
    ($(#[$doc:meta])* $name:ident, $field:literal, default $default:ident = $default_text:literal,
     $($(#[$vdoc:meta])* $variant:ident = $text:literal),+ $(,)?) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub enum $name {
            #[default]
            $default,
            $($(#[$vdoc])* $variant),+
        }

        impl $name {
            /// Every value, the default first.
            pub const ALL: &[$name] = &[$name::$default, $($name::$variant),+];

            /// The value's name in files and on the command line.
            pub fn name(self) -> &'static str {
                match self {
                    $name::$default => $default_text,
                    $($name::$variant => $text),+
                }
            }
        }

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(text: String) -> std::result::Result<$name, String> {
                $name::ALL.iter().copied().find(|v| v.name() == text).ok_or_else(|| {
                    let names: Vec<&str> = $name::ALL.iter().map(|v| v.name()).collect();
                    format!(
                        "unknown {} {text:?}: expected one of {}",
                        $field,
                        names.join(", ")
                    )
                })
            }
        }

        impl From<$name> for String {
            fn from(value: $name) -> String {
                value.name().to_string()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.name())
            }
        }
    };
}

config_option! {
    /// The feed-forward non-linearity. The gated ones (GLU variants) have a third matrix:
    /// hidden = act(x W_gate) * (x W_up), with `d_ff` the hidden width.
    Activation, "activation", default GeluTanh = "gelu_tanh",
    /// Exact GELU: x * Phi(x), with the normal distribution's erf.
    Gelu = "gelu",
    Relu = "relu",
    /// Squared ReLU: max(0, x)^2.
    Relu2 = "relu2",
    /// SiLU (swish): x * sigmoid(x).
    Silu = "silu",
    /// Gated SiLU (Llama).
    SwiGlu = "swiglu",
    /// Gated exact GELU.
    GeGlu = "geglu",
}

config_option! {
    /// The normalisation before attention, before the feed-forward block and before the head.
    Norm, "norm", default LayerNorm = "layernorm",
    /// x / rms(x) * weight, no mean and no bias (Llama).
    RmsNorm = "rmsnorm",
}

config_option! {
    /// How the model knows where a token is.
    Position, "position", default Learned = "learned",
    /// Rotary embedding of q and k (pairs of adjacent dimensions, as llama2.c).
    Rope = "rope",
}

impl Activation {
    /// Whether the feed-forward block has a gate matrix beside the up one.
    pub fn is_gated(self) -> bool {
        matches!(self, Activation::SwiGlu | Activation::GeGlu)
    }
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
        let kv_heads = self.kv_heads();
        check_range("n_kv_heads", kv_heads, MAX_HEADS)?;
        if !self.n_heads.is_multiple_of(kv_heads) {
            return Err(Error::config(format!(
                "n_kv_heads = {kv_heads} does not divide n_heads = {}",
                self.n_heads
            )));
        }
        if self.position == Position::Rope {
            if !self.head_dim().is_multiple_of(2) {
                return Err(Error::config(format!(
                    "position = rope rotates pairs of dimensions, so the head size d_model / n_heads must be even, got {}",
                    self.head_dim()
                )));
            }
            if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
                return Err(Error::config(format!(
                    "rope_theta must be a finite number above 1, got {}",
                    self.rope_theta
                )));
            }
        }
        if !(self.dropout >= 0.0 && self.dropout < 1.0) {
            return Err(Error::config(format!(
                "dropout must be a probability in [0, 1), got {}",
                self.dropout
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

    /// Key/value heads K (H unless grouped-query attention is asked for).
    pub fn kv_heads(&self) -> usize {
        self.n_kv_heads.unwrap_or(self.n_heads)
    }

    /// Width of the keys (and of the values): K * D.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads() * self.head_dim()
    }

    /// Number of scalar parameters (computed in u128 so that absurd sizes cannot overflow).
    /// Must agree with [`crate::params::ParamLayout`], which a test checks.
    fn parameter_count_u128(&self) -> u128 {
        let (v, c, f, p, l) = (
            self.vocab_size as u128,
            self.d_model as u128,
            self.d_ff as u128,
            self.max_seq_len as u128,
            self.n_layers as u128,
        );
        // Before validation n_heads may be 0; the count only has to be an upper bound then.
        let kv = (self.kv_heads() as u128 * (self.d_model / self.n_heads.max(1)) as u128).min(c);
        let norm = if self.norm == Norm::LayerNorm {
            2 * c
        } else {
            c
        };
        let attn = 2 * c * c + 2 * c * kv + if self.attn_bias { 2 * c + 2 * kv } else { 0 };
        let ff_in = if self.activation.is_gated() { 2 } else { 1 };
        let ff = ff_in * c * f + f * c + if self.mlp_bias { ff_in * f + c } else { 0 };
        let per_block = 2 * norm + attn + ff;
        let pos = if self.position == Position::Learned {
            p * c
        } else {
            0
        };
        let head = if self.tie_embeddings { 0 } else { v * c };
        v * c + pos + l * per_block + norm + head
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
            ..Config::default()
        }
    }

    /// Whether the Go TinyLM JSON format can hold this model; if not, why.
    pub fn go_format_obstacle(&self) -> Option<String> {
        if let Some((field, value)) = self.non_default_options().first() {
            return Some(format!(
                "the Go TinyLM format holds only GPT-2 style blocks, this model has {field} = {value}"
            ));
        }
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

    /// The block options that differ from GPT-2's (field name, value), in field order.
    pub fn non_default_options(&self) -> Vec<(&'static str, String)> {
        let mut found = Vec::new();
        if self.activation != Activation::default() {
            found.push(("activation", self.activation.to_string()));
        }
        if self.norm != Norm::default() {
            found.push(("norm", self.norm.to_string()));
        }
        if !self.mlp_bias {
            found.push(("mlp_bias", "false".to_string()));
        }
        if self.position != Position::default() {
            found.push(("position", self.position.to_string()));
        }
        if self.kv_heads() != self.n_heads {
            found.push(("n_kv_heads", self.kv_heads().to_string()));
        }
        found
    }
}

/// A small GPT-2 style model (the Python `Config`'s defaults with V = 65): a base for
/// struct-update syntax, `Config { d_model: 32, ..Config::default() }`.
impl Default for Config {
    fn default() -> Config {
        Config {
            vocab_size: 65,
            d_model: 128,
            n_layers: 4,
            n_heads: 4,
            d_ff: 512,
            max_seq_len: 64,
            eps: 1e-5,
            attn_bias: true,
            tie_embeddings: true,
            activation: Activation::default(),
            norm: Norm::default(),
            mlp_bias: true,
            position: Position::default(),
            rope_theta: default_rope_theta(),
            n_kv_heads: None,
            dropout: 0.0,
        }
    }
}
