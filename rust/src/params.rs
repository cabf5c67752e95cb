//! Where each named parameter lives in the one flat buffer that holds them all: the one
//! place that maps the buffer to named tensors ([`ParamSpec`], for files and the bindings)
//! and to typed views ([`BlockParams`], for the model code).
//!
//! Parameters, gradients and the optimizer's moments all use this layout, so a training
//! step walks plain slices. Matrices are row-major; projections are `[in][out]` (used as
//! `x @ W`), embeddings and the output head are `[rows][C]`. Names and order for a GPT-2
//! style config are those of the first release (files written then still load); the
//! options add or drop tensors:
//!
//! | option | tensors |
//! |---|---|
//! | `position = rope` | no `pos_embed.weight` |
//! | `norm = rmsnorm` | no `.bias` of norm1, norm2, ln_f |
//! | `n_kv_heads = K` | `W_k`, `W_v` are `[C][K D]`, their biases `[K D]` |
//! | gated `activation` | `ff.gate.weight` `[C][F]` (and bias) before `ff.linear1` |
//! | `mlp_bias = false` | no `.bias` of ff.gate, ff.linear1, ff.linear2 |

use std::ops::Range;

use crate::config::{Config, Norm, Position};

/// One named tensor inside the flat buffer.
#[derive(Debug, Clone, PartialEq)]
pub struct ParamSpec {
    pub name: String,
    pub shape: Vec<usize>,
    pub offset: usize,
}

impl ParamSpec {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.len()
    }

    /// Matrices (and embeddings) get weight decay; vectors (norms, biases) do not.
    pub fn is_matrix(&self) -> bool {
        self.shape.len() == 2
    }
}

/// Where one tensor lives in the flat buffer (of parameters, or of gradients).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub offset: usize,
    pub len: usize,
}

impl Span {
    pub fn range(self) -> Range<usize> {
        self.offset..self.offset + self.len
    }

    /// This tensor's values in `buf`.
    pub fn of(self, buf: &[f32]) -> &[f32] {
        &buf[self.range()]
    }

    /// This tensor's values in `buf`, to change (a gradient, say).
    pub fn of_mut(self, buf: &mut [f32]) -> &mut [f32] {
        &mut buf[self.range()]
    }
}

/// A norm's scale (C), and its shift (C) for a layer norm.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NormParams {
    pub weight: Span,
    pub bias: Option<Span>,
}

/// The parameters of one block. K D is the key width (C without grouped-query attention).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BlockParams {
    pub ln1: NormParams,
    /// (C, C)
    pub w_q: Span,
    /// (C, K D)
    pub w_k: Span,
    /// (C, K D)
    pub w_v: Span,
    /// (C, C)
    pub w_o: Span,
    /// b_q, b_k, b_v, b_o, with attn_bias.
    pub b_q: Option<Span>,
    pub b_k: Option<Span>,
    pub b_v: Option<Span>,
    pub b_o: Option<Span>,
    pub ln2: NormParams,
    /// (C, F), with a gated activation.
    pub w_gate: Option<Span>,
    pub b_gate: Option<Span>,
    /// (C, F): `ff.linear1`.
    pub w_up: Span,
    pub b_up: Option<Span>,
    /// (F, C): `ff.linear2`.
    pub w_down: Span,
    pub b_down: Option<Span>,
}

/// The full layout: the list of named tensors and typed views for the model code.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
    pub total: usize,
    /// (V, C)
    pub token_embed: Span,
    /// (P, C), with learned positions.
    pub pos_embed: Option<Span>,
    pub blocks: Vec<BlockParams>,
    pub ln_f: NormParams,
    /// (V, C): the token embedding when tied.
    pub lm_head: Span,
}

struct Builder {
    specs: Vec<ParamSpec>,
    total: usize,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize]) -> Span {
        let offset = self.total;
        let spec = ParamSpec {
            name,
            shape: shape.to_vec(),
            offset,
        };
        let span = Span {
            offset,
            len: spec.len(),
        };
        self.total += span.len;
        self.specs.push(spec);
        span
    }

    /// A tensor that only some configs have.
    fn add_if(&mut self, present: bool, name: String, shape: &[usize]) -> Option<Span> {
        present.then(|| self.add(name, shape))
    }

    fn norm(&mut self, config: &Config, prefix: &str, c: usize) -> NormParams {
        NormParams {
            weight: self.add(format!("{prefix}.weight"), &[c]),
            bias: self.add_if(
                config.norm == Norm::LayerNorm,
                format!("{prefix}.bias"),
                &[c],
            ),
        }
    }
}

impl ParamLayout {
    pub fn new(config: &Config) -> ParamLayout {
        let (v, c, f, p) = (
            config.vocab_size,
            config.d_model,
            config.d_ff,
            config.max_seq_len,
        );
        let kd = config.kv_dim();
        let (attn_bias, mlp_bias) = (config.attn_bias, config.mlp_bias);
        let gated = config.activation.is_gated();
        let mut b = Builder {
            specs: Vec::new(),
            total: 0,
        };
        let token_embed = b.add("token_embed.weight".into(), &[v, c]);
        let pos_embed = b.add_if(
            config.position == Position::Learned,
            "pos_embed.weight".into(),
            &[p, c],
        );
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let pre = format!("blocks.{l}");
            let ln1 = b.norm(config, &format!("{pre}.norm1"), c);
            let w_q = b.add(format!("{pre}.attn.W_q.weight"), &[c, c]);
            let b_q = b.add_if(attn_bias, format!("{pre}.attn.W_q.bias"), &[c]);
            let w_k = b.add(format!("{pre}.attn.W_k.weight"), &[c, kd]);
            let b_k = b.add_if(attn_bias, format!("{pre}.attn.W_k.bias"), &[kd]);
            let w_v = b.add(format!("{pre}.attn.W_v.weight"), &[c, kd]);
            let b_v = b.add_if(attn_bias, format!("{pre}.attn.W_v.bias"), &[kd]);
            let w_o = b.add(format!("{pre}.attn.W_o.weight"), &[c, c]);
            let b_o = b.add_if(attn_bias, format!("{pre}.attn.W_o.bias"), &[c]);
            let ln2 = b.norm(config, &format!("{pre}.norm2"), c);
            let w_gate = b.add_if(gated, format!("{pre}.ff.gate.weight"), &[c, f]);
            let b_gate = b.add_if(gated && mlp_bias, format!("{pre}.ff.gate.bias"), &[f]);
            let w_up = b.add(format!("{pre}.ff.linear1.weight"), &[c, f]);
            let b_up = b.add_if(mlp_bias, format!("{pre}.ff.linear1.bias"), &[f]);
            let w_down = b.add(format!("{pre}.ff.linear2.weight"), &[f, c]);
            let b_down = b.add_if(mlp_bias, format!("{pre}.ff.linear2.bias"), &[c]);
            blocks.push(BlockParams {
                ln1,
                w_q,
                w_k,
                w_v,
                w_o,
                b_q,
                b_k,
                b_v,
                b_o,
                ln2,
                w_gate,
                b_gate,
                w_up,
                b_up,
                w_down,
                b_down,
            });
        }
        let ln_f = b.norm(config, "ln_f", c);
        let lm_head = if config.tie_embeddings {
            token_embed
        } else {
            b.add("lm_head.weight".into(), &[v, c])
        };
        ParamLayout {
            specs: b.specs,
            total: b.total,
            token_embed,
            pos_embed,
            blocks,
            ln_f,
            lm_head,
        }
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }
}
