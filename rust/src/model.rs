//! The GPT-style decoder: forward pass, loss and hand-written backward pass.
//!
//! ```text
//! x = token_embed[id] (+ pos_embed[t] with learned positions)
//! for each block:  x = x + W_o attn(rope(LN1(x) W_q), rope(LN1(x) W_k), LN1(x) W_v)
//!                  x = x + linear2(act(linear1(LN2(x))))   (act(gate(.)) * linear1(.) if gated)
//! logits = LN_f(x) lm_head^T
//! ```
//!
//! (rope only with rotary positions; LN a layer norm or RMSNorm; K key/value heads.)
//!
//! All parameters live in one flat buffer (see [`crate::params`]); the activations of a
//! forward pass live in a [`Workspace`] that is allocated once and reused, so a training
//! step allocates nothing of its own.

use crate::config::{Activation, Config, Position};
use crate::dropout::{site_attn, site_mlp, Dropout, SITE_EMBED};
use crate::error::{Error, Result};
use crate::kernels::activation::{
    activation_backward, activation_forward, gated_backward, gated_forward,
};
use crate::kernels::attention::{attention_backward, attention_forward, Heads};
use crate::kernels::bf16::{check_fits_bf16, round_to_bf16, Dtype};
use crate::kernels::cross_entropy::{cross_entropy_backward, cross_entropy_forward};
use crate::kernels::embedding::{embedding_backward, embedding_forward};
use crate::kernels::gelu::{gelu_backward, gelu_forward, gelu_from_tanh};
use crate::kernels::layernorm::{layernorm_backward, layernorm_forward, layernorm_recompute};
use crate::kernels::matmul::{linear_backward, linear_forward, matmul_in, MatMut, MatRef, Pieces};
use crate::kernels::rmsnorm::{rmsnorm_backward, rmsnorm_forward, rmsnorm_recompute};
use crate::kernels::rope::{rope_backward, rope_forward, RopeTable};
use crate::params::{BlockParams, NormParams, ParamLayout, Span};
use crate::reference::model as reference;
use crate::rng::Rng;

/// The largest workspace a call may ask for, in f32 values (16 GiB): a batch that needs more
/// is an error before anything is allocated.
pub const MAX_WORKSPACE_FLOATS: u128 = 1 << 32;

/// Which implementation runs a model's arithmetic. Both read the same parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Backend {
    /// Blocked, threaded, vectorised kernels and a key/value cache for generation.
    #[default]
    Fast,
    /// The plain path a learner reads ([`crate::reference`]), slowly; generation
    /// recomputes the whole window for each token.
    Reference,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Fast => "fast",
            Backend::Reference => "reference",
        }
    }

    pub fn from_name(name: &str) -> Result<Backend> {
        match name {
            "fast" => Ok(Backend::Fast),
            "reference" => Ok(Backend::Reference),
            other => Err(Error::value(format!(
                "unknown backend {other:?}: expected \"fast\" or \"reference\""
            ))),
        }
    }
}

/// A model: its configuration, the layout of its parameters, the parameters themselves,
/// the backend that runs them and the dtype generation stores its weights in.
#[derive(Debug, Clone)]
pub struct Model {
    pub config: Config,
    pub layout: ParamLayout,
    params: Vec<f32>,
    backend: Backend,
    dtype: Dtype,
}

/// Activations saved by the forward pass for the backward pass, and the backward pass's
/// scratch buffers; sized for a batch shape and reused while the shape fits.
#[derive(Debug, Default)]
pub struct Workspace {
    capacity_rows: usize,
    /// How this workspace's matrix products run (see [`Pieces`]).
    pub pieces: Pieces,
    /// Shape (B, T) of the last forward pass.
    pub batch: usize,
    pub seq_len: usize,
    ids: Vec<u32>,
    targets: Vec<u32>,
    /// (L + 1, N, C): residual[l] is the input of block l, residual[L] the last block's output.
    residual: Vec<f32>,
    /// (N, C): the output of the layer norm at hand (LN1 or LN2 of one layer), rebuilt
    /// from the saved mean and rstd when the backward pass needs it.
    ln_out: Vec<f32>,
    ln1_mean: Vec<f32>,
    ln1_rstd: Vec<f32>,
    /// (L, N, (H + 2K) D): q, k and v side by side, q and k rotated with RoPE.
    qkv: Vec<f32>,
    /// (L, B, H, T): log-sum-exp of each row of attention scores (see kernels::attention).
    att_lse: Vec<f32>,
    /// (L, N, C): attention output with heads side by side, before W_o.
    att_out: Vec<f32>,
    /// (L, N, C): the residual stream after the attention half of the block.
    resid_mid: Vec<f32>,
    ln2_mean: Vec<f32>,
    ln2_rstd: Vec<f32>,
    /// (L, N, F): the activation's input (the gate's, if gated), and tanh(u) inside the
    /// tanh GELU (see kernels::gelu; empty for the other activations).
    ff_pre: Vec<f32>,
    ff_tanh: Vec<f32>,
    /// (L, N, F): the up projection of a gated activation (empty otherwise).
    ff_up: Vec<f32>,
    /// (N, F): the activation's output in the layer at hand, rebuilt when needed.
    ff_act: Vec<f32>,
    /// cos and sin of the rotary angles of positions 0..T (with RoPE).
    rope: RopeTable,
    lnf: Vec<f32>,
    lnf_mean: Vec<f32>,
    lnf_rstd: Vec<f32>,
    /// (N, V)
    pub logits: Vec<f32>,
    /// Every activation of the last pass on the reference backend (the fields above then
    /// hold only ids, targets and logits).
    reference: Option<Box<reference::Activations>>,
    /// The dropout of the last forward pass (training only), which the backward replays.
    dropout: Option<Dropout>,
    probs: Vec<f32>,
    losses: Vec<f32>,
    // Backward scratch.
    d_resid: Vec<f32>,
    d_ln: Vec<f32>,
    d_qkv: Vec<f32>,
    d_att_out: Vec<f32>,
    /// (N, F): the gradient of the activation's output, then (in place) of its input (of
    /// the gate, if gated); d_up that of the up projection (gated only).
    d_ff: Vec<f32>,
    d_up: Vec<f32>,
    d_logits: Vec<f32>,
}

/// A weight's gradient and, if it has one, its bias's (stored after it).
fn weight_and_bias_mut(
    buf: &mut [f32],
    w: Span,
    b: Option<Span>,
) -> (&mut [f32], Option<&mut [f32]>) {
    match b {
        Some(b) => {
            let (dw, db) = two_mut(buf, w, b);
            (dw, Some(db))
        }
        None => (w.of_mut(buf), None),
    }
}

/// Two disjoint mutable slices of one buffer.
fn two_mut(buf: &mut [f32], a: Span, b: Span) -> (&mut [f32], &mut [f32]) {
    let ((a0, al), (b0, bl)) = ((a.offset, a.len), (b.offset, b.len));
    if a0 < b0 {
        assert!(a0 + al <= b0, "overlapping gradient slices");
        let (lo, hi) = buf.split_at_mut(b0);
        (&mut lo[a0..a0 + al], &mut hi[..bl])
    } else {
        assert!(b0 + bl <= a0, "overlapping gradient slices");
        let (lo, hi) = buf.split_at_mut(a0);
        (&mut hi[..al], &mut lo[b0..b0 + bl])
    }
}

impl Workspace {
    pub fn new() -> Workspace {
        Workspace::default()
    }

    /// A workspace whose products run as `pieces` says.
    pub fn with_pieces(pieces: Pieces) -> Workspace {
        Workspace {
            pieces,
            ..Workspace::default()
        }
    }

    /// Number of f32 values a workspace for (B, T) holds; u128 so that absurd shapes
    /// cannot overflow.
    pub fn floats_needed(config: &Config, b: usize, t: usize) -> u128 {
        let (n, c, f, v, h, l) = (
            (b as u128) * (t as u128),
            config.d_model as u128,
            config.d_ff as u128,
            config.vocab_size as u128,
            config.n_heads as u128,
            config.n_layers as u128,
        );
        let w = c + 2 * config.kv_dim() as u128;
        // Per layer, besides ff_pre: ff_tanh (tanh GELU) or ff_up (gated).
        let second = if config.activation == Activation::GeluTanh || config.activation.is_gated() {
            1
        } else {
            0
        };
        let d_up = if config.activation.is_gated() { 1 } else { 0 };
        // residual, qkv, att_out, resid_mid; ff_pre (and ff_tanh or ff_up); 4 norm
        // statistics; lse.
        let per_layer = n * (c * 3 + w + f * (1 + second) + 4 + h);
        // the last residual, ln_out, lnf; its statistics; logits, probs; losses.
        let rest = n * (c * 3 + 2 + v * 2 + 1);
        // d_resid, d_ln, d_att_out, d_qkv; ff_act, d_ff (and d_up); d_logits.
        let scratch = n * (c * 3 + w + f * (2 + d_up) + v);
        l * per_layer + rest + scratch
    }

    /// Whether a (B, T) pass fits without allocating.
    pub(crate) fn fits(&self, b: usize, t: usize) -> bool {
        b * t <= self.capacity_rows
    }

    /// An error if the activations of a (B, T) pass are over the limit or more than the
    /// memory there is; it names the batch as given.
    pub(crate) fn check_room(config: &Config, b: usize, t: usize) -> Result<()> {
        let needed = Self::floats_needed(config, b, t);
        if needed > MAX_WORKSPACE_FLOATS {
            return Err(Error::value(format!(
                "a batch of {b} sequences of {t} tokens needs {} GiB of activations, more than the limit of {} GiB",
                (needed * 4) >> 30,
                (MAX_WORKSPACE_FLOATS * 4) >> 30
            )));
        }
        crate::alloc::check_available(
            needed * 4,
            &format!("the activations of a batch of {b} sequences of {t} tokens"),
        )
    }

    /// Makes room for a (B, T) pass; allocates only when the shape does not fit.
    fn prepare(&mut self, config: &Config, b: usize, t: usize) -> Result<()> {
        let n = b * t;
        let att_len = n * config.n_heads;
        if n <= self.capacity_rows {
            self.batch = b;
            self.seq_len = t;
            return Ok(());
        }
        Self::check_room(config, b, t)?;
        let (c, f, v, l) = (
            config.d_model,
            config.d_ff,
            config.vocab_size,
            config.n_layers,
        );
        let w = c + 2 * config.kv_dim();
        let gated = config.activation.is_gated();
        let tanh_len = if config.activation == Activation::GeluTanh {
            l * n * f
        } else {
            0
        };
        let up_len = if gated { l * n * f } else { 0 };
        let zeros = |len: usize| vec![0.0f32; len];
        *self = Workspace {
            capacity_rows: n,
            pieces: self.pieces,
            batch: b,
            seq_len: t,
            ids: Vec::with_capacity(n),
            targets: Vec::with_capacity(n),
            residual: zeros((l + 1) * n * c),
            ln_out: zeros(n * c),
            ln1_mean: zeros(l * n),
            ln1_rstd: zeros(l * n),
            qkv: zeros(l * n * w),
            att_lse: zeros(l * att_len),
            att_out: zeros(l * n * c),
            resid_mid: zeros(l * n * c),
            ln2_mean: zeros(l * n),
            ln2_rstd: zeros(l * n),
            ff_pre: zeros(l * n * f),
            ff_tanh: zeros(tanh_len),
            ff_up: zeros(up_len),
            ff_act: zeros(n * f),
            rope: RopeTable::default(),
            lnf: zeros(n * c),
            lnf_mean: zeros(n),
            lnf_rstd: zeros(n),
            logits: zeros(n * v),
            probs: zeros(n * v),
            losses: zeros(n),
            d_resid: zeros(n * c),
            d_ln: zeros(n * c),
            d_qkv: zeros(n * w),
            d_att_out: zeros(n * c),
            d_ff: zeros(n * f),
            d_up: zeros(if gated { n * f } else { 0 }),
            d_logits: zeros(n * v),
            reference: None,
            dropout: None,
        };
        Ok(())
    }

    /// The logits of the last forward pass: (B, T, V).
    pub fn logits(&self, config: &Config) -> &[f32] {
        &self.logits[..self.batch * self.seq_len * config.vocab_size]
    }
}

/// Checks a batch of ids: (B, T) with 1 <= T <= max_seq_len and every id below V.
pub fn check_ids(config: &Config, ids: &[u32], b: usize, t: usize, what: &str) -> Result<()> {
    if b == 0 || t == 0 {
        return Err(Error::value(format!(
            "{what} must hold at least one token, got shape ({b}, {t})"
        )));
    }
    if t > config.max_seq_len {
        return Err(Error::value(format!(
            "{what} has {t} tokens per sequence, more than the model's context of {} (max_seq_len)",
            config.max_seq_len
        )));
    }
    if ids.len() != b * t {
        return Err(Error::shape(what, &[b, t], &[ids.len()]));
    }
    if let Some((i, &id)) = ids
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= config.vocab_size)
    {
        return Err(Error::value(format!(
            "{what}: token id {id} at position {} of sequence {} is out of range for vocab_size {}",
            i % t,
            i / t,
            config.vocab_size
        )));
    }
    Ok(())
}

impl Model {
    /// A new model with GPT-2's initialisation: weights normal(0, 0.02), the two projections
    /// that write into the residual stream (W_o, linear2) scaled by 1 / sqrt(2 L), biases
    /// zero, layer norms the identity. The same seed gives the same weights in every release.
    pub fn new(config: Config, seed: u64) -> Result<Model> {
        Model::new_on(config, seed, Backend::Fast)
    }

    /// [`Model::new`] on the given backend.
    pub fn new_on(config: Config, seed: u64, backend: Backend) -> Result<Model> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        let mut params = crate::alloc::zeros(layout.total, "the parameters")?;
        let mut rng = Rng::new(seed);
        let proj_std = 0.02 / (2.0 * config.n_layers as f64).sqrt();
        for spec in &layout.specs {
            let slot = &mut params[spec.range()];
            let name = spec.name.as_str();
            if name.ends_with("norm1.weight")
                || name.ends_with("norm2.weight")
                || name == "ln_f.weight"
            {
                slot.fill(1.0);
            } else if spec.is_matrix() {
                let std = if name.ends_with("attn.W_o.weight") || name.ends_with("linear2.weight") {
                    proj_std
                } else {
                    0.02
                };
                for x in slot.iter_mut() {
                    *x = (rng.next_normal() * std) as f32;
                }
            }
        }
        Ok(Model {
            config,
            layout,
            params,
            backend,
            dtype: Dtype::F32,
        })
    }

    /// A model from a configuration and a flat parameter buffer in [`ParamLayout`] order.
    pub fn from_params(config: Config, params: Vec<f32>) -> Result<Model> {
        Model::from_params_on(config, params, Backend::Fast)
    }

    /// [`Model::from_params`] on the given backend.
    pub fn from_params_on(config: Config, params: Vec<f32>, backend: Backend) -> Result<Model> {
        config.validate()?;
        let layout = ParamLayout::new(&config);
        if params.len() != layout.total {
            return Err(Error::shape("parameters", &[layout.total], &[params.len()]));
        }
        Ok(Model {
            config,
            layout,
            params,
            backend,
            dtype: Dtype::F32,
        })
    }

    /// The same parameters on another backend, if it runs this config.
    pub fn on_backend(mut self, backend: Backend) -> Result<Model> {
        self.backend = backend;
        Ok(self)
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How generation stores the weights (float32 unless [`Model::set_dtype`] said otherwise).
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Stores the weights for generation in `dtype`. For bfloat16 every parameter is rounded
    /// to the nearest bfloat16 (and stays a float32 here), so that the forward pass and
    /// generation compute with the same values; going back to float32 keeps the rounded
    /// values. Called again with bfloat16 after the parameters changed, it rounds them again.
    /// A parameter too large for bfloat16 is an error naming it ([`Model::check_dtype`]),
    /// and changes nothing.
    pub fn set_dtype(&mut self, dtype: Dtype) -> Result<()> {
        self.check_dtype(dtype)?;
        if dtype == Dtype::Bf16 {
            for p in &mut self.params {
                *p = round_to_bf16(*p);
            }
        }
        self.dtype = dtype;
        Ok(())
    }

    /// An error unless every parameter can be stored in `dtype`: bfloat16 has float32's
    /// range, but not its largest values, which would round to infinity.
    pub fn check_dtype(&self, dtype: Dtype) -> Result<()> {
        if dtype == Dtype::Bf16 {
            for spec in &self.layout.specs {
                check_fits_bf16(&spec.name, &self.params[spec.range()])?;
            }
        }
        Ok(())
    }

    /// An error unless the parameters may be trained: a bfloat16 model's updates would be
    /// rounded away, so it trains only after going back to float32.
    pub fn check_trainable(&self) -> Result<()> {
        match self.dtype {
            Dtype::F32 => Ok(()),
            Dtype::Bf16 => Err(Error::value(
                "this model's weights are bfloat16, and an update smaller than half a \
                 bfloat16 step would be rounded away: set its dtype to float32 to train it",
            )),
        }
    }

    /// What the reference path reads: the config, the layout and the parameters.
    pub fn weights(&self) -> reference::Weights<'_> {
        reference::Weights {
            config: &self.config,
            layout: &self.layout,
            params: &self.params,
        }
    }

    /// Every parameter, in [`ParamLayout`] order.
    pub fn params(&self) -> &[f32] {
        &self.params
    }

    /// Every parameter, to change.
    pub fn params_mut(&mut self) -> &mut [f32] {
        &mut self.params
    }

    /// The attention heads: H query heads and K key/value heads of size D.
    pub fn heads(&self) -> Heads {
        Heads {
            h: self.config.n_heads,
            kv: self.config.kv_heads(),
            d: self.config.head_dim(),
        }
    }

    fn p(&self, span: Span) -> &[f32] {
        span.of(&self.params)
    }

    /// Layer norm or RMSNorm of x (N, C), as the config says; mean is unused by RMSNorm.
    fn norm_forward(
        &self,
        p: NormParams,
        out: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        x: &[f32],
    ) {
        let (c, eps, weight) = (self.config.d_model, self.config.eps, self.p(p.weight));
        match p.bias {
            Some(bias) => layernorm_forward(out, mean, rstd, x, weight, self.p(bias), c, eps),
            None => rmsnorm_forward(out, rstd, x, weight, c, eps),
        }
    }

    /// The output of [`Model::norm_forward`] again, from its input and statistics.
    fn norm_recompute(
        &self,
        p: NormParams,
        out: &mut [f32],
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let (c, weight) = (self.config.d_model, self.p(p.weight));
        match p.bias {
            Some(bias) => layernorm_recompute(out, x, mean, rstd, weight, self.p(bias), c),
            None => rmsnorm_recompute(out, x, rstd, weight, c),
        }
    }

    /// The backward pass of [`Model::norm_forward`]: dx and the norm's gradients added to.
    #[allow(clippy::too_many_arguments)]
    fn norm_backward(
        &self,
        p: NormParams,
        grads: &mut [f32],
        dx: &mut [f32],
        dout: &[f32],
        x: &[f32],
        mean: &[f32],
        rstd: &[f32],
    ) {
        let (c, weight) = (self.config.d_model, self.p(p.weight));
        match p.bias {
            Some(bias) => {
                let (dw, db) = two_mut(grads, p.weight, bias);
                layernorm_backward(dx, dw, db, dout, x, weight, mean, rstd, c);
            }
            None => rmsnorm_backward(dx, p.weight.of_mut(grads), dout, x, weight, rstd, c),
        }
    }

    /// Runs the forward pass on ids (B, T), leaving the logits (B, T, V) in the workspace.
    pub fn forward(&self, ws: &mut Workspace, ids: &[u32], b: usize, t: usize) -> Result<()> {
        self.forward_train(ws, ids, b, t, None)
    }

    /// The forward pass of training: as [`Model::forward`], with `dropout`'s masks.
    pub fn forward_train(
        &self,
        ws: &mut Workspace,
        ids: &[u32],
        b: usize,
        t: usize,
        dropout: Option<Dropout>,
    ) -> Result<()> {
        check_ids(&self.config, ids, b, t, "input ids")?;
        if self.backend == Backend::Reference {
            ws.dropout = dropout;
            return self.forward_reference(ws, ids, b, t);
        }
        ws.prepare(&self.config, b, t)?;
        ws.dropout = dropout; // after prepare, which may rebuild the workspace
        ws.ids.clear();
        ws.ids.extend_from_slice(ids);
        self.forward_prepared(ws);
        Ok(())
    }

    /// The reference path's forward pass, its activations kept in the workspace.
    fn forward_reference(&self, ws: &mut Workspace, ids: &[u32], b: usize, t: usize) -> Result<()> {
        crate::alloc::check_available(
            reference::floats_needed(&self.config, b, t) * 4,
            "the reference path's activations",
        )?;
        let acts = reference::forward_train(self.weights(), ids, b, t, ws.dropout);
        ws.capacity_rows = 0; // the fast path's buffers are not sized for this shape
        (ws.batch, ws.seq_len) = (b, t);
        ws.ids.clear();
        ws.ids.extend_from_slice(ids);
        ws.targets.clear();
        ws.logits.clone_from(&acts.logits);
        ws.reference = Some(Box::new(acts));
        Ok(())
    }

    fn forward_prepared(&self, ws: &mut Workspace) {
        let cfg = &self.config;
        let (b, t) = (ws.batch, ws.seq_len);
        let (n, c, f, v, h) = (b * t, cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads);
        let lay = &self.layout;
        let (nc, nf) = (n * c, n * f);
        let att_len = n * h;
        let pieces = ws.pieces;
        let heads = self.heads();
        let (w, kd) = (heads.width(), cfg.kv_dim());
        if cfg.position == Position::Rope {
            ws.rope.ensure(t, heads.d, cfg.rope_theta);
        }

        embedding_forward(
            &mut ws.residual[..nc],
            &ws.ids,
            self.p(lay.token_embed),
            lay.pos_embed.map(|pe| self.p(pe)),
            t,
            c,
        );
        let dropout = ws.dropout;
        if let Some(d) = dropout {
            d.apply(&mut ws.residual[..nc], SITE_EMBED, c);
        }
        for (l, blk) in lay.blocks.iter().enumerate() {
            let (before, after) = ws.residual.split_at_mut((l + 1) * nc);
            let x = &before[l * nc..];
            let ln1 = &mut ws.ln_out[..nc];
            self.norm_forward(
                blk.ln1,
                ln1,
                &mut ws.ln1_mean[l * n..][..n],
                &mut ws.ln1_rstd[l * n..][..n],
                x,
            );
            // q, k, v = ln1 @ W_q, ln1 @ W_k, ln1 @ W_v, written side by side into
            // (N, C + 2 K D), then q and k rotated in place with RoPE.
            let qkv = &mut ws.qkv[l * n * w..][..n * w];
            for (weight, (col, width)) in qkv_parts(blk, c, kd) {
                matmul_in(
                    pieces,
                    MatMut::strided(&mut qkv[col..], n, width, w, 1),
                    MatRef::new(ln1, n, c),
                    MatRef::new(self.p(weight), c, width),
                    false,
                );
            }
            if let [Some(b_q), Some(b_k), Some(b_v)] = [blk.b_q, blk.b_k, blk.b_v] {
                for row in qkv.chunks_exact_mut(w) {
                    for (bias, (col, width)) in [b_q, b_k, b_v].into_iter().zip(qkv_cols(c, kd)) {
                        for (o, bv) in row[col..col + width].iter_mut().zip(self.p(bias)) {
                            *o += bv;
                        }
                    }
                }
            }
            if cfg.position == Position::Rope {
                rope_forward(qkv, w, c + kd, t, &ws.rope);
            }
            let att_out = &mut ws.att_out[l * nc..][..nc];
            attention_forward(
                att_out,
                &mut ws.att_lse[l * att_len..][..att_len],
                qkv,
                t,
                heads,
                dropout.map(|d| d.attention(l, t, h)),
            );
            // resid_mid = x + att_out @ W_o + b_o
            let resid_mid = &mut ws.resid_mid[l * nc..][..nc];
            linear_forward(
                resid_mid,
                att_out,
                MatRef::new(self.p(blk.w_o), c, c),
                blk.b_o.map(|b_o| self.p(b_o)),
                n,
                pieces,
            );
            if let Some(d) = dropout {
                d.apply(resid_mid, site_attn(l), c);
            }
            add_in_place(resid_mid, x);
            let ln2 = &mut ws.ln_out[..nc];
            self.norm_forward(
                blk.ln2,
                ln2,
                &mut ws.ln2_mean[l * n..][..n],
                &mut ws.ln2_rstd[l * n..][..n],
                resid_mid,
            );
            // ff_pre = ln2 @ W_up + b_up; gated: ff_pre = ln2 @ W_gate + b_gate and
            // ff_up = ln2 @ W_up + b_up.
            let ff_pre = &mut ws.ff_pre[l * nf..][..nf];
            let (w_pre, b_pre) = match blk.w_gate {
                Some(w_gate) => (w_gate, blk.b_gate),
                None => (blk.w_up, blk.b_up),
            };
            linear_forward(
                ff_pre,
                ln2,
                MatRef::new(self.p(w_pre), c, f),
                b_pre.map(|b| self.p(b)),
                n,
                pieces,
            );
            if blk.w_gate.is_some() {
                linear_forward(
                    &mut ws.ff_up[l * nf..][..nf],
                    ln2,
                    MatRef::new(self.p(blk.w_up), c, f),
                    blk.b_up.map(|b| self.p(b)),
                    n,
                    pieces,
                );
            }
            let ff_act = &mut ws.ff_act[..nf];
            match cfg.activation {
                Activation::GeluTanh => {
                    gelu_forward(ff_act, &mut ws.ff_tanh[l * nf..][..nf], ff_pre)
                }
                gated if gated.is_gated() => {
                    gated_forward(gated, ff_act, ff_pre, &ws.ff_up[l * nf..][..nf])
                }
                other => activation_forward(other, ff_act, ff_pre),
            }
            // x_next = resid_mid + ff_act @ W2 + b2
            let x_next = &mut after[..nc];
            linear_forward(
                x_next,
                ff_act,
                MatRef::new(self.p(blk.w_down), f, c),
                blk.b_down.map(|b| self.p(b)),
                n,
                pieces,
            );
            if let Some(d) = dropout {
                d.apply(x_next, site_mlp(l), c);
            }
            add_in_place(x_next, resid_mid);
        }
        let n_layers = cfg.n_layers;
        self.norm_forward(
            lay.ln_f,
            &mut ws.lnf[..nc],
            &mut ws.lnf_mean[..n],
            &mut ws.lnf_rstd[..n],
            &ws.residual[n_layers * nc..][..nc],
        );
        // logits = lnf @ lm_head^T, lm_head being (V, C).
        linear_forward(
            &mut ws.logits[..n * v],
            &ws.lnf[..nc],
            MatRef::new(self.p(lay.lm_head), v, c).t(),
            None,
            n,
            pieces,
        );
    }

    /// Forward pass and mean cross-entropy of the logits against `targets` (B, T).
    pub fn loss(
        &self,
        ws: &mut Workspace,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
    ) -> Result<f32> {
        let sum = self.loss_sum(ws, ids, targets, b, t)?;
        Ok((sum / (b * t) as f64) as f32)
    }

    /// Forward pass and the sum (not the mean) of the per-token cross-entropies, in f64.
    pub fn loss_sum(
        &self,
        ws: &mut Workspace,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
    ) -> Result<f64> {
        self.loss_sum_train(ws, ids, targets, b, t, None)
    }

    /// [`Model::loss_sum`] of a training pass, with `dropout`'s masks.
    pub fn loss_sum_train(
        &self,
        ws: &mut Workspace,
        ids: &[u32],
        targets: &[u32],
        b: usize,
        t: usize,
        dropout: Option<Dropout>,
    ) -> Result<f64> {
        check_ids(&self.config, targets, b, t, "targets")?;
        self.forward_train(ws, ids, b, t, dropout)?;
        ws.targets.clear();
        ws.targets.extend_from_slice(targets);
        if let Some(acts) = ws
            .reference
            .as_mut()
            .filter(|_| self.backend == Backend::Reference)
        {
            return Ok(reference::loss(acts, targets));
        }
        let (n, v) = (b * t, self.config.vocab_size);
        cross_entropy_forward(
            &mut ws.losses[..n],
            &mut ws.probs[..n * v],
            &ws.logits[..n * v],
            &ws.targets,
            v,
        );
        Ok(ws.losses[..n].iter().map(|&x| x as f64).sum())
    }

    /// Gradient of the mean loss of the last [`Model::loss`] call, added into `grads`
    /// (laid out like the parameters).
    pub fn backward(&self, ws: &mut Workspace, grads: &mut [f32]) -> Result<()> {
        let n = ws.batch * ws.seq_len;
        self.backward_scaled(ws, grads, 1.0 / n.max(1) as f32)
    }

    /// Gradient of `dloss` times the summed loss of the last [`Model::loss`] call, added into
    /// `grads`. With dloss = 1 / N this is the gradient of a mean over N tokens, which may
    /// span several workspaces (see [`crate::batch`]).
    pub fn backward_scaled(&self, ws: &mut Workspace, grads: &mut [f32], dloss: f32) -> Result<()> {
        if ws.targets.len() != ws.batch * ws.seq_len || ws.ids.len() != ws.targets.len() {
            return Err(Error::value(
                "backward needs a loss computed on this workspace first",
            ));
        }
        if grads.len() != self.layout.total {
            return Err(Error::shape(
                "gradient buffer",
                &[self.layout.total],
                &[grads.len()],
            ));
        }
        if self.backend == Backend::Reference {
            let acts = ws.reference.as_ref().ok_or_else(|| {
                Error::value("backward needs a loss computed on this workspace first")
            })?;
            reference::backward(self.weights(), acts, dloss, grads);
            return Ok(());
        }
        let cfg = &self.config;
        let (b, t) = (ws.batch, ws.seq_len);
        let (n, c, f, v, h) = (b * t, cfg.d_model, cfg.d_ff, cfg.vocab_size, cfg.n_heads);
        let (nc, nf) = (n * c, n * f);
        let att_len = n * h;
        let lay = &self.layout;
        let pieces = ws.pieces;
        let heads = self.heads();
        let (w, kd) = (heads.width(), cfg.kv_dim());
        let dropout = ws.dropout;

        // Loss -> logits.
        let d_logits = &mut ws.d_logits[..n * v];
        d_logits.fill(0.0);
        cross_entropy_backward(d_logits, &ws.probs[..n * v], &ws.targets, dloss, v);

        // logits = lnf @ lm_head^T: d_lnf = d_logits @ lm_head, d_lm_head += d_logits^T @ lnf.
        let d_ln = &mut ws.d_ln[..nc];
        d_ln.fill(0.0);
        linear_backward(
            Some(d_ln),
            MatMut::strided(lay.lm_head.of_mut(grads), c, v, 1, c),
            None,
            d_logits,
            &ws.lnf[..nc],
            MatRef::new(self.p(lay.lm_head), v, c).t(),
            n,
            pieces,
        );
        let d_resid = &mut ws.d_resid[..nc];
        d_resid.fill(0.0);
        self.norm_backward(
            lay.ln_f,
            grads,
            d_resid,
            d_ln,
            &ws.residual[cfg.n_layers * nc..][..nc],
            &ws.lnf_mean[..n],
            &ws.lnf_rstd[..n],
        );

        for (l, blk) in lay.blocks.iter().enumerate().rev() {
            let x = &ws.residual[l * nc..][..nc];
            let resid_mid = &ws.resid_mid[l * nc..][..nc];
            // x_next = resid_mid + ff_act @ W2 + b2: d_resid flows to resid_mid unchanged.
            let d_ff = &mut ws.d_ff[..nf];
            d_ff.fill(0.0);
            let ff_pre = &ws.ff_pre[l * nf..][..nf];
            let ff_tanh = ws.ff_tanh.get(l * nf..(l + 1) * nf).unwrap_or(&[]);
            let ff_up = ws.ff_up.get(l * nf..(l + 1) * nf).unwrap_or(&[]);
            let ff_act = &mut ws.ff_act[..nf];
            match cfg.activation {
                Activation::GeluTanh => gelu_from_tanh(ff_act, ff_pre, ff_tanh),
                gated if gated.is_gated() => gated_forward(gated, ff_act, ff_pre, ff_up),
                other => activation_forward(other, ff_act, ff_pre),
            }
            // The branch's gradient (with dropout in d_ln, free until the norm below).
            let d_branch = branch_gradient(dropout, site_mlp(l), d_resid, d_ln, c);
            {
                let (dw, db) = weight_and_bias_mut(grads, blk.w_down, blk.b_down);
                linear_backward(
                    Some(d_ff),
                    MatMut::new(dw, f, c),
                    db,
                    d_branch,
                    ff_act,
                    MatRef::new(self.p(blk.w_down), f, c),
                    n,
                    pieces,
                );
            }
            let d_up = &mut ws.d_up[..];
            match cfg.activation {
                Activation::GeluTanh => gelu_backward(d_ff, ff_pre, ff_tanh),
                gated if gated.is_gated() => gated_backward(gated, d_ff, d_up, ff_pre, ff_up),
                other => activation_backward(other, d_ff, ff_pre),
            }
            d_ln.fill(0.0);
            let ln2 = &mut ws.ln_out[..nc];
            self.norm_recompute(
                blk.ln2,
                ln2,
                resid_mid,
                &ws.ln2_mean[l * n..][..n],
                &ws.ln2_rstd[l * n..][..n],
            );
            // ff_pre = ln2 @ W + b (W = W_gate if gated, else W_up), ff_up = ln2 @ W_up + b_up.
            let parts = match blk.w_gate {
                Some(w_gate) => [
                    Some((w_gate, blk.b_gate, &*d_ff)),
                    Some((blk.w_up, blk.b_up, &d_up[..nf])),
                ],
                None => [Some((blk.w_up, blk.b_up, &*d_ff)), None],
            };
            for (weight, bias, d_out) in parts.into_iter().flatten() {
                let (dw, db) = weight_and_bias_mut(grads, weight, bias);
                linear_backward(
                    Some(d_ln),
                    MatMut::new(dw, c, f),
                    db,
                    d_out,
                    ln2,
                    MatRef::new(self.p(weight), c, f),
                    n,
                    pieces,
                );
            }
            self.norm_backward(
                blk.ln2,
                grads,
                d_resid,
                d_ln,
                resid_mid,
                &ws.ln2_mean[l * n..][..n],
                &ws.ln2_rstd[l * n..][..n],
            );
            // resid_mid = x + drop(att_out @ W_o + b_o).
            let d_att_out = &mut ws.d_att_out[..nc];
            d_att_out.fill(0.0);
            let d_branch = branch_gradient(dropout, site_attn(l), d_resid, d_ln, c);
            {
                let w_o = MatRef::new(self.p(blk.w_o), c, c);
                let att_out = &ws.att_out[l * nc..][..nc];
                match blk.b_o {
                    Some(b_o) => {
                        let (dw, db) = two_mut(grads, blk.w_o, b_o);
                        linear_backward(
                            Some(d_att_out),
                            MatMut::new(dw, c, c),
                            Some(db),
                            d_branch,
                            att_out,
                            w_o,
                            n,
                            pieces,
                        );
                    }
                    None => {
                        let dw = blk.w_o.of_mut(grads);
                        linear_backward(
                            Some(d_att_out),
                            MatMut::new(dw, c, c),
                            None,
                            d_branch,
                            att_out,
                            w_o,
                            n,
                            pieces,
                        );
                    }
                }
            }
            let d_qkv = &mut ws.d_qkv[..n * w];
            d_qkv.fill(0.0);
            let qkv = &ws.qkv[l * n * w..][..n * w];
            attention_backward(
                d_qkv,
                d_att_out,
                qkv,
                &ws.att_lse[l * att_len..][..att_len],
                t,
                heads,
                dropout.map(|d| d.attention(l, t, h)),
            );
            // q = rope(q_lin), k = rope(k_lin): the gradients rotated back, in place.
            if cfg.position == Position::Rope {
                rope_backward(d_qkv, w, c + kd, t, &ws.rope);
            }
            // q = ln1 @ W_q + b_q (likewise k, v): d_ln1 = sum_i d_i @ W_i^T, dW_i += ln1^T @ d_i.
            d_ln.fill(0.0);
            let ln1 = &mut ws.ln_out[..nc];
            self.norm_recompute(
                blk.ln1,
                ln1,
                x,
                &ws.ln1_mean[l * n..][..n],
                &ws.ln1_rstd[l * n..][..n],
            );
            let ln1 = &*ln1;
            let biases = [blk.b_q, blk.b_k, blk.b_v];
            for ((weight, (col, width)), bias) in qkv_parts(blk, c, kd).into_iter().zip(biases) {
                let d_i = MatRef::strided(&d_qkv[col..], n, width, w, 1);
                let w_i = MatRef::new(self.p(weight), c, width);
                matmul_in(pieces, MatMut::new(d_ln, n, c), d_i, w_i.t(), true);
                matmul_in(
                    pieces,
                    MatMut::new(weight.of_mut(grads), c, width),
                    MatRef::new(ln1, n, c).t(),
                    d_i,
                    true,
                );
                if let Some(bias) = bias {
                    let db = bias.of_mut(grads);
                    for row in d_qkv.chunks_exact(w) {
                        for (g, d) in db.iter_mut().zip(&row[col..col + width]) {
                            *g += d;
                        }
                    }
                }
            }
            self.norm_backward(
                blk.ln1,
                grads,
                d_resid,
                d_ln,
                x,
                &ws.ln1_mean[l * n..][..n],
                &ws.ln1_rstd[l * n..][..n],
            );
        }
        // x = drop(token_embed[id] + pos_embed[t]).
        if let Some(d) = dropout {
            d.apply(d_resid, SITE_EMBED, c);
        }
        let (dwte, dwpe) = weight_and_bias_mut(grads, lay.token_embed, lay.pos_embed);
        embedding_backward(dwte, dwpe, d_resid, &ws.ids, t, c);
        Ok(())
    }
}

/// Where q, k and v sit in a row of the projections (C + 2 K D wide): (first column, width).
fn qkv_cols(c: usize, kd: usize) -> [(usize, usize); 3] {
    [(0, c), (c, kd), (c + kd, kd)]
}

/// The q, k and v projections' weights and where their outputs sit in a row.
fn qkv_parts(blk: &BlockParams, c: usize, kd: usize) -> [(Span, (usize, usize)); 3] {
    let [q, k, v] = qkv_cols(c, kd);
    [(blk.w_q, q), (blk.w_k, k), (blk.w_v, v)]
}

fn add_in_place(acc: &mut [f32], x: &[f32]) {
    for (a, b) in acc.iter_mut().zip(x) {
        *a += b;
    }
}

/// The gradient of a residual branch behind dropout: d_out times `site`'s mask, written to
/// `scratch`; without dropout, d_out itself.
fn branch_gradient<'a>(
    dropout: Option<Dropout>,
    site: u64,
    d_out: &'a [f32],
    scratch: &'a mut [f32],
    c: usize,
) -> &'a [f32] {
    match dropout {
        Some(d) => {
            scratch.copy_from_slice(d_out);
            d.apply(scratch, site, c);
            scratch
        }
        None => d_out,
    }
}
