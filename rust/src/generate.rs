//! Autoregressive generation for one sequence.
//!
//! While the sequence fits in the context (P = max_seq_len), a key/value cache (see
//! [`crate::decode`]) makes a new token cost one matrix-vector product per weight matrix
//! instead of a forward pass over the whole sequence, and only the last position's logits
//! are computed. Past the context there are two ways on ([`Window`]):
//! - `Sliding`, as in nanoGPT: the model sees exactly the last P tokens. Their learned
//!   positions all shift with each new token, so every cached key and value would change,
//!   and each token costs one batched forward pass over the window.
//! - `Shift` (the default): when the cache is full, keep the last P/2 tokens, rebuild the
//!   cache from them at positions 0..P/2, and go on decoding from the cache. The model
//!   then sees between P/2 and P tokens; a token costs about two decode steps (one for it,
//!   one to rebuild) instead of a forward pass over P tokens.
//!
//! The reference backend has no cache: every token costs a forward pass over what the
//! window rule lets the model see.
//!
//! A [`Generation`] is resumable: it produces its ids a chunk at a time, keeping its cache
//! between chunks, so a caller can stream them, check for interruption between chunks, and
//! stop whenever it likes without losing what was produced.

use std::time::{Duration, Instant};

use crate::decode::{with_team, DecodeState, Decoder, Team, TWO_LANES_MIN_D_MODEL};
use crate::error::{Error, Result};
use crate::model::{Backend, Model, Workspace};
use crate::sample::{check_finite_logits, Sampler, SamplingParams};

/// What to generate and how to choose each token.
#[derive(Debug, Clone)]
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub sampling: SamplingParams,
    pub seed: u64,
    /// Generation ends right after one of these ids is emitted.
    pub stop: Vec<u32>,
    /// What the model sees past the context.
    pub window: Window,
}

/// How generation goes on once the sequence is longer than the context (see the module's
/// documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Window {
    /// Exactly the last P tokens, one forward pass over them per token.
    Sliding,
    /// The last P/2 to P tokens, from a cache rebuilt every P/2 tokens.
    #[default]
    Shift,
}

impl Window {
    pub fn from_name(name: &str) -> Result<Window> {
        match name {
            "sliding" => Ok(Window::Sliding),
            "shift" => Ok(Window::Shift),
            other => Err(Error::value(format!(
                "window must be \"shift\" or \"sliding\", got {other:?}"
            ))),
        }
    }
}

/// Generates up to `max_new_tokens` ids after `prompt`; returns only the new ids.
/// Generations on one [`Decoder`] share its packed weights.
pub fn generate(decoder: &Decoder, prompt: &[u32], opts: &GenerateOptions) -> Result<Vec<u32>> {
    let mut run = Generation::new(decoder.model(), prompt, opts.clone())?;
    let mut new_tokens = Vec::new();
    while !run.is_done() {
        new_tokens.extend(run.next_chunk(decoder, usize::MAX, None)?);
    }
    Ok(new_tokens)
}

/// Where a generation stands.
enum Phase {
    /// The prompt has not been fed yet.
    Start,
    /// The sequence fits in the context: the cache holds every position so far.
    InContext(Box<DecodeState>),
    /// Past the context (or on the reference backend): each token from a forward pass
    /// over the last P tokens (all of them while there are fewer).
    PastContext(Box<Workspace>),
    Done,
}

/// A generation under way: the sequence so far (at least its last P tokens), how many ids
/// it has produced, and how to choose and when to stop. It belongs to the model it was made
/// for; its cache is meaningless for any other parameters.
pub struct Generation {
    opts: GenerateOptions,
    sampler: Sampler,
    tokens: Vec<u32>,
    /// The last ids of the whole sequence, as many as the sampler's penalties look at.
    recent: Vec<u32>,
    produced: usize,
    phase: Phase,
}

impl Generation {
    /// Checks the prompt and options against the model; nothing is computed yet.
    pub fn new(model: &Model, prompt: &[u32], opts: GenerateOptions) -> Result<Generation> {
        let cfg = &model.config;
        check_prompt_and_stop(cfg.vocab_size, prompt, &opts.stop)?;
        opts.sampling.check_ids(cfg.vocab_size)?;
        let sampler = Sampler::new(opts.sampling.clone(), opts.seed)?;
        let recent = prompt[prompt.len().saturating_sub(sampler.history_len())..].to_vec();
        // Only the last P tokens of a long prompt can be seen.
        let window_start = prompt.len().saturating_sub(cfg.max_seq_len);
        let phase = if opts.max_new_tokens == 0 {
            Phase::Done
        } else {
            Phase::Start
        };
        Ok(Generation {
            opts,
            sampler,
            tokens: prompt[window_start..].to_vec(),
            recent,
            produced: 0,
            phase,
        })
    }

    /// True once the last id has been produced (max_new_tokens reached or a stop id).
    pub fn is_done(&self) -> bool {
        matches!(self.phase, Phase::Done)
    }

    /// Produces the next ids: at most `max_ids`, and no more once `budget` has passed
    /// (at least one id per call unless the generation is done; none once it is).
    pub fn next_chunk(
        &mut self,
        decoder: &Decoder,
        max_ids: usize,
        budget: Option<Duration>,
    ) -> Result<Vec<u32>> {
        let model = decoder.model();
        let mut chunk = Chunk {
            ids: Vec::new(),
            max_ids: max_ids.max(1),
            deadline: budget.map(|b| Instant::now() + b),
        };
        if matches!(self.phase, Phase::Start) && model.backend() == Backend::Reference {
            self.phase = Phase::PastContext(Box::new(Workspace::new()));
        }
        if matches!(self.phase, Phase::Start | Phase::InContext(_)) {
            let cfg = &model.config;
            let use_team = cfg.d_model >= TWO_LANES_MIN_D_MODEL && rayon::current_num_threads() > 1;
            if use_team {
                // The helper thread takes half of each product (when no other call is using it).
                with_team(|team| self.decode_in_context(decoder, team, &mut chunk))?;
            } else {
                self.decode_in_context(decoder, None, &mut chunk)?;
            }
        }
        if matches!(self.phase, Phase::PastContext(_)) {
            self.slide_past_context(model, &mut chunk)?;
        }
        Ok(chunk.ids)
    }

    /// Chooses the next id from the logits of the last position and appends it; returns
    /// whether generation goes on.
    fn emit(&mut self, logits: &[f32], chunk: &mut Chunk) -> Result<bool> {
        let produced = self.produced;
        if let Err(e) = check_finite_logits(logits, |_| format!("generated token {produced}")) {
            self.phase = Phase::Done;
            return Err(e);
        }
        let next = self.sampler.sample(logits, &self.recent);
        let history = self.sampler.history_len();
        if history > 0 {
            self.recent.push(next);
            if self.recent.len() > 2 * history {
                self.recent.drain(..self.recent.len() - history);
            }
        }
        crate::alloc::push(&mut self.tokens, next, "the generated ids")?;
        self.produced += 1;
        chunk.ids.push(next);
        let goes_on = self.produced < self.opts.max_new_tokens && !self.opts.stop.contains(&next);
        Ok(goes_on)
    }

    /// Feeds the prompt (on the first call), then one decode step per new token while the
    /// sequence fits in the context.
    fn decode_in_context(
        &mut self,
        decoder: &Decoder,
        team: Option<&Team>,
        chunk: &mut Chunk,
    ) -> Result<()> {
        let model = decoder.model();
        let context = model.config.max_seq_len;
        let mut state = match std::mem::replace(&mut self.phase, Phase::Done) {
            Phase::InContext(state) => state,
            _ => {
                decoder.prepare()?;
                crate::alloc::check_available(
                    DecodeState::cache_bytes(&model.config),
                    "the key/value cache",
                )?;
                let mut state = Box::new(DecodeState::new(model));
                let prompt_len = self.tokens.len();
                for (i, &tok) in self.tokens.iter().enumerate() {
                    state.push(decoder, team, tok, i + 1 == prompt_len);
                }
                state
            }
        };
        loop {
            if !self.emit(&state.logits, chunk)? {
                return Ok(());
            }
            if state.len() == context && self.opts.window == Window::Sliding {
                self.phase = Phase::PastContext(Box::new(Workspace::new()));
                return Ok(());
            }
            feed_newest(decoder, team, &mut state, &mut self.tokens);
            if chunk.is_full() {
                self.phase = Phase::InContext(state);
                return Ok(());
            }
        }
    }

    /// Each new token from a forward pass over the last P tokens (or fewer, on the
    /// reference backend before the context is full).
    fn slide_past_context(&mut self, model: &Model, chunk: &mut Chunk) -> Result<()> {
        let (p, v) = (model.config.max_seq_len, model.config.vocab_size);
        let Phase::PastContext(mut ws) = std::mem::replace(&mut self.phase, Phase::Done) else {
            return Ok(());
        };
        loop {
            if chunk.is_full() {
                self.phase = Phase::PastContext(ws);
                return Ok(());
            }
            if self.tokens.len() > 2 * p {
                self.tokens.drain(..self.tokens.len() - p);
            }
            let t = self.tokens.len().min(p);
            model.forward(&mut ws, &self.tokens[self.tokens.len() - t..], 1, t)?;
            if !self.emit(&ws.logits(&model.config)[(t - 1) * v..], chunk)? {
                return Ok(());
            }
            if self.opts.window == Window::Shift && self.tokens.len() == p + 1 {
                // The shift rule without a cache (the reference backend).
                self.tokens.drain(..self.tokens.len() - (p / 2).max(1));
            }
        }
    }
}

/// A prompt must hold at least one id, and it and the stop ids must be below V.
pub(crate) fn check_prompt_and_stop(vocab_size: usize, prompt: &[u32], stop: &[u32]) -> Result<()> {
    if prompt.is_empty() {
        return Err(Error::value(
            "the prompt is empty: generation needs at least one token",
        ));
    }
    if let Some((i, &bad)) = prompt
        .iter()
        .enumerate()
        .find(|(_, &id)| id as usize >= vocab_size)
    {
        return Err(Error::value(format!(
            "prompt: token id {bad} at position {i} is out of range for vocab_size {vocab_size}"
        )));
    }
    if let Some(&bad) = stop.iter().find(|&&id| id as usize >= vocab_size) {
        return Err(Error::value(format!(
            "stop token id {bad} is out of range for vocab_size {vocab_size}"
        )));
    }
    Ok(())
}

/// Feeds the newest id of `window` (the ids in `state`'s cache, then that one) into the
/// cache, computing its logits. A full cache shifts first: the last P/2 ids of `window`
/// (the newest included) are kept and fed again at positions 0.. (see the module's
/// documentation).
pub(crate) fn feed_newest(
    decoder: &Decoder,
    team: Option<&Team>,
    state: &mut DecodeState,
    window: &mut Vec<u32>,
) {
    let context = decoder.model().config.max_seq_len;
    if state.len() < context {
        let newest = *window.last().expect("the newest id is in the window");
        state.push(decoder, team, newest, true);
        return;
    }
    let keep = (context / 2).max(1);
    window.drain(..window.len() - keep);
    state.clear();
    for (i, &tok) in window.iter().enumerate() {
        state.push(decoder, team, tok, i + 1 == keep);
    }
}

/// The ids of one call of [`Generation::next_chunk`] and when it must return.
struct Chunk {
    ids: Vec<u32>,
    max_ids: usize,
    deadline: Option<Instant>,
}

impl Chunk {
    fn is_full(&self) -> bool {
        self.ids.len() >= self.max_ids || self.deadline.is_some_and(|d| Instant::now() >= d)
    }
}
