//! Many sequences generated side by side: one step feeds one token to every sequence
//! still going, reading each weight matrix once for all of them ([`BatchState`]).
//!
//! Sequence i samples with the seed `seed + i` (wrapping) and follows every rule of a
//! single [`crate::generate::Generation`] (sampler chain, stop ids, the shifted window
//! past the context), so it gives the ids that generating it alone with that seed gives,
//! up to the rounding of the batched products. Identical prompts are fed once and their
//! caches copied. One sequence alone, the reference backend and the sliding window (which
//! have no batched step) generate the sequences one after the other instead.

use std::time::Instant;

use crate::decode::batched::BatchState;
use crate::decode::{with_team, Decoder, Team, TWO_LANES_MIN_D_MODEL};
use crate::error::{Error, Result};
use crate::generate::{GenerateOptions, Generation, Window};
use crate::model::Backend;
use crate::sample::{check_finite_logits, Sampler};

/// One sequence of a batch.
struct Sequence {
    sampler: Sampler,
    /// The tokens in its cache, then the one to feed next.
    window: Vec<u32>,
    recent: Vec<u32>,
    new: Vec<u32>,
    logits: Vec<f32>,
    done: bool,
}

/// A batch generation under way, run a chunk at a time like a [`Generation`].
pub struct BatchGeneration {
    opts: GenerateOptions,
    state: Option<BatchState>,
    sequences: Vec<Sequence>,
    /// Without a batched step: one generation per sequence.
    alone: Option<Vec<(Generation, Vec<u32>)>>,
    started: bool,
}

impl BatchGeneration {
    /// `samples` sequences for each prompt, in order: prompt 0's samples, then prompt 1's.
    pub fn new(
        decoder: &Decoder,
        prompts: &[Vec<u32>],
        samples: usize,
        opts: GenerateOptions,
    ) -> Result<Self> {
        let model = decoder.model();
        if prompts.is_empty() {
            return Err(Error::value("no prompts: give at least one"));
        }
        if samples == 0 {
            return Err(Error::value("samples must be at least 1"));
        }
        // A batch keeps every sequence's cache in the context; one prompt alone may be
        // longer (its generation keeps the last P ids, as a single generation does).
        let context = model.config.max_seq_len;
        if prompts.len() * samples > 1 {
            if let Some((i, prompt)) = prompts.iter().enumerate().find(|(_, p)| p.len() > context) {
                return Err(Error::value(format!(
                    "prompt {i} has {} ids, more than the context of {context} (max_seq_len): \
                     every prompt of a batch must fit; pass its last {context} ids \
                     (prompt[-{context}:]) to keep what the model sees",
                    prompt.len()
                )));
            }
        }
        // Each prompt checked once, as a single generation checks it.
        for (i, prompt) in prompts.iter().enumerate() {
            Generation::new(model, prompt, opts.clone())
                .map_err(|e| Error::value(format!("prompt {i}: {e}")))?;
        }
        let prompts: Vec<&Vec<u32>> = prompts
            .iter()
            .flat_map(|p| std::iter::repeat_n(p, samples))
            .collect();
        if prompts.len() == 1
            || model.backend() == Backend::Reference
            || opts.window == Window::Sliding
        {
            // Sequence i is generation i alone, with seed + i.
            let singles = prompts
                .iter()
                .enumerate()
                .map(|(i, prompt)| {
                    let seeded = GenerateOptions {
                        seed: opts.seed.wrapping_add(i as u64),
                        ..opts.clone()
                    };
                    Ok((Generation::new(model, prompt, seeded)?, Vec::new()))
                })
                .collect::<Result<Vec<_>>>()?;
            return Ok(BatchGeneration {
                opts,
                state: None,
                sequences: Vec::new(),
                alone: Some(singles),
                started: false,
            });
        }
        let mut sequences = Vec::with_capacity(prompts.len());
        for (i, prompt) in prompts.iter().enumerate() {
            let sampler = Sampler::new(opts.sampling.clone(), opts.seed.wrapping_add(i as u64))?;
            let history = sampler.history_len();
            sequences.push(Sequence {
                window: prompt.to_vec(),
                recent: prompt[prompt.len().saturating_sub(history)..].to_vec(),
                sampler,
                new: Vec::new(),
                logits: Vec::new(),
                done: opts.max_new_tokens == 0,
            });
        }
        decoder.prepare()?;
        Ok(BatchGeneration {
            state: Some(BatchState::new(model, prompts.len())?),
            opts,
            sequences,
            alone: None,
            started: false,
        })
    }

    pub fn is_done(&self) -> bool {
        match &self.alone {
            Some(singles) => singles.iter().all(|(run, _)| run.is_done()),
            None => self.sequences.iter().all(|s| s.done),
        }
    }

    /// Runs until every sequence is done or `deadline` has passed.
    pub fn run_until(&mut self, decoder: &Decoder, deadline: Instant) -> Result<()> {
        if let Some(singles) = &mut self.alone {
            for (run, ids) in singles.iter_mut() {
                while !run.is_done() {
                    ids.extend(run.next_chunk(
                        decoder,
                        usize::MAX,
                        Some(deadline.saturating_duration_since(Instant::now())),
                    )?);
                    if Instant::now() >= deadline {
                        return Ok(());
                    }
                }
            }
            return Ok(());
        }
        let cfg = &decoder.model().config;
        if cfg.d_model >= TWO_LANES_MIN_D_MODEL && rayon::current_num_threads() > 1 {
            // The helper thread runs the second lane (when no other call is using it).
            with_team(|team| self.run_steps(decoder, team, deadline))
        } else {
            self.run_steps(decoder, None, deadline)
        }
    }

    fn run_steps(
        &mut self,
        decoder: &Decoder,
        team: Option<&Team>,
        deadline: Instant,
    ) -> Result<()> {
        if !self.started {
            self.prefill(decoder, team);
            self.started = true;
        }
        while !self.is_done() && Instant::now() < deadline {
            self.step(decoder, team)?;
        }
        Ok(())
    }

    /// The new ids of every sequence.
    pub fn into_ids(self) -> Vec<Vec<u32>> {
        match self.alone {
            Some(singles) => singles.into_iter().map(|(_, ids)| ids).collect(),
            None => self.sequences.into_iter().map(|s| s.new).collect(),
        }
    }

    /// Feeds every prompt, position by position; a prompt equal to an earlier one gets a
    /// copy of that one's cache instead.
    fn prefill(&mut self, decoder: &Decoder, team: Option<&Team>) {
        let model = decoder.model();
        let state = self.state.as_mut().expect("batched");
        let v = model.config.vocab_size;
        let b = self.sequences.len();
        let first_of: Vec<usize> = (0..b)
            .map(|i| {
                (0..i)
                    .find(|&j| self.sequences[j].window == self.sequences[i].window)
                    .unwrap_or(i)
            })
            .collect();
        let longest = self
            .sequences
            .iter()
            .map(|s| s.window.len())
            .max()
            .unwrap_or(0);
        for t in 0..longest {
            let rows: Vec<usize> = (0..b)
                .filter(|&i| first_of[i] == i && self.sequences[i].window.len() > t)
                .collect();
            let tokens: Vec<u32> = rows.iter().map(|&i| self.sequences[i].window[t]).collect();
            state.step(decoder, team, &rows, &tokens);
            for (k, &i) in rows.iter().enumerate() {
                if self.sequences[i].window.len() == t + 1 {
                    self.sequences[i].logits = state.logits[k * v..][..v].to_vec();
                }
            }
        }
        for (i, &first) in first_of.iter().enumerate() {
            if first != i {
                state.copy_sequence(model, team, (first, i), 0);
                self.sequences[i].logits = self.sequences[first].logits.clone();
            }
        }
    }

    /// Chooses a token for every sequence still going and feeds them all in one step.
    fn step(&mut self, decoder: &Decoder, team: Option<&Team>) -> Result<()> {
        let state = self.state.as_mut().expect("batched");
        let cfg = &decoder.model().config;
        let (p, v) = (cfg.max_seq_len, cfg.vocab_size);
        let mut rows = Vec::new();
        let mut tokens = Vec::new();
        for (i, seq) in self.sequences.iter_mut().enumerate() {
            if seq.done {
                continue;
            }
            let produced = seq.new.len();
            check_finite_logits(&seq.logits, |_| {
                format!("generated token {produced} of sequence {i}")
            })?;
            let next = seq.sampler.sample(&seq.logits, &seq.recent);
            let history = seq.sampler.history_len();
            if history > 0 {
                seq.recent.push(next);
                if seq.recent.len() > 2 * history {
                    seq.recent.drain(..seq.recent.len() - history);
                }
            }
            seq.new.push(next);
            seq.window.push(next);
            if seq.new.len() >= self.opts.max_new_tokens || self.opts.stop.contains(&next) {
                seq.done = true;
                continue;
            }
            if state.len(i) == p {
                // Shift: the last P/2 tokens (the new one included) at positions 0..
                let keep = (p / 2).max(1);
                seq.window.drain(..seq.window.len() - keep);
                state.clear(i);
                for &tok in &seq.window[..keep - 1] {
                    state.step(decoder, team, &[i], &[tok]);
                }
            }
            rows.push(i);
            tokens.push(next);
        }
        if rows.is_empty() {
            return Ok(());
        }
        state.step(decoder, team, &rows, &tokens);
        for (k, &i) in rows.iter().enumerate() {
            self.sequences[i]
                .logits
                .copy_from_slice(&state.logits[k * v..][..v]);
        }
        Ok(())
    }
}
