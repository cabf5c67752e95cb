//! Where each named parameter lives in the one flat buffer that holds them all.
//!
//! Parameters, gradients and the optimizer's moments all use this layout, so a training
//! step walks plain slices. Matrices are row-major and stored the way the Go TinyLM format
//! stores them: projections are [in][out] (used as `x @ W`), embeddings and the output
//! head are [rows][C].

use std::ops::Range;

use crate::config::Config;

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

/// Offsets of the parameters of one block.
#[derive(Debug, Clone)]
pub struct BlockOffsets {
    pub norm1_weight: usize,
    pub norm1_bias: usize,
    /// W_q, W_k, W_v, W_o: each [C][C].
    pub attn_weight: [usize; 4],
    /// b_q, b_k, b_v, b_o: each [C], present only with attn_bias.
    pub attn_bias: Option<[usize; 4]>,
    pub norm2_weight: usize,
    pub norm2_bias: usize,
    /// [C][F]
    pub ff1_weight: usize,
    /// [F]
    pub ff1_bias: usize,
    /// [F][C]
    pub ff2_weight: usize,
    /// [C]
    pub ff2_bias: usize,
}

/// The full layout: the list of named tensors and direct offsets for the model code.
#[derive(Debug, Clone)]
pub struct ParamLayout {
    pub specs: Vec<ParamSpec>,
    pub total: usize,
    pub token_embed: usize,
    pub pos_embed: usize,
    pub blocks: Vec<BlockOffsets>,
    pub ln_f_weight: usize,
    pub ln_f_bias: usize,
    /// Offset of the [V][C] output head: the token embedding when tied.
    pub lm_head: usize,
}

struct Builder {
    specs: Vec<ParamSpec>,
    total: usize,
}

impl Builder {
    fn add(&mut self, name: String, shape: &[usize]) -> usize {
        let offset = self.total;
        let spec = ParamSpec {
            name,
            shape: shape.to_vec(),
            offset,
        };
        self.total += spec.len();
        self.specs.push(spec);
        offset
    }
}

const ATTN_NAMES: [&str; 4] = ["W_q", "W_k", "W_v", "W_o"];

impl ParamLayout {
    pub fn new(config: &Config) -> ParamLayout {
        let (v, c, f, p) = (
            config.vocab_size,
            config.d_model,
            config.d_ff,
            config.max_seq_len,
        );
        let mut b = Builder {
            specs: Vec::new(),
            total: 0,
        };
        let token_embed = b.add("token_embed.weight".into(), &[v, c]);
        let pos_embed = b.add("pos_embed.weight".into(), &[p, c]);
        let mut blocks = Vec::with_capacity(config.n_layers);
        for l in 0..config.n_layers {
            let pre = format!("blocks.{l}");
            let norm1_weight = b.add(format!("{pre}.norm1.weight"), &[c]);
            let norm1_bias = b.add(format!("{pre}.norm1.bias"), &[c]);
            let mut attn_weight = [0; 4];
            let mut attn_bias = [0; 4];
            for (i, name) in ATTN_NAMES.iter().enumerate() {
                attn_weight[i] = b.add(format!("{pre}.attn.{name}.weight"), &[c, c]);
                if config.attn_bias {
                    attn_bias[i] = b.add(format!("{pre}.attn.{name}.bias"), &[c]);
                }
            }
            let norm2_weight = b.add(format!("{pre}.norm2.weight"), &[c]);
            let norm2_bias = b.add(format!("{pre}.norm2.bias"), &[c]);
            let ff1_weight = b.add(format!("{pre}.ff.linear1.weight"), &[c, f]);
            let ff1_bias = b.add(format!("{pre}.ff.linear1.bias"), &[f]);
            let ff2_weight = b.add(format!("{pre}.ff.linear2.weight"), &[f, c]);
            let ff2_bias = b.add(format!("{pre}.ff.linear2.bias"), &[c]);
            blocks.push(BlockOffsets {
                norm1_weight,
                norm1_bias,
                attn_weight,
                attn_bias: config.attn_bias.then_some(attn_bias),
                norm2_weight,
                norm2_bias,
                ff1_weight,
                ff1_bias,
                ff2_weight,
                ff2_bias,
            });
        }
        let ln_f_weight = b.add("ln_f.weight".into(), &[c]);
        let ln_f_bias = b.add("ln_f.bias".into(), &[c]);
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
            ln_f_weight,
            ln_f_bias,
            lm_head,
        }
    }

    pub fn get(&self, name: &str) -> Option<&ParamSpec> {
        self.specs.iter().find(|s| s.name == name)
    }
}
