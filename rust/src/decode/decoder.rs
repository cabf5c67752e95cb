//! A model made ready for decoding: the model beside its block weights packed into panels
//! ([`PackedWeights`], as large as the parameters in the model's dtype), packed the first
//! time a step needs them.
//!
//! The model knows nothing of this copy. A [`Decoder`] borrows the model, so its
//! parameters cannot change while the copy is in use, and every generation of one decoder
//! shares one packing. Whoever keeps a model alive across changes to its parameters (the
//! Python binding) keeps a [`PackedCache`] beside it, lends it to each call's decoder
//! ([`Decoder::sharing`]), so that the weights are packed once per version of the
//! parameters, and replaces it with an empty one at every change.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use crate::error::Result;
use crate::model::Model;

use super::panels::PackedWeights;

/// How many times weights were packed in this process (see [`times_packed`]).
static TIMES_PACKED: AtomicU64 = AtomicU64::new(0);

/// How many times this process has packed weights for decoding, for tests that check a
/// model is packed once per version of its parameters and not once per generation.
pub fn times_packed() -> u64 {
    TIMES_PACKED.load(Ordering::Relaxed)
}

/// The packed weights of one version of one model's parameters, packed on first use;
/// empty until then.
#[derive(Default)]
pub struct PackedCache(OnceLock<PackedWeights>);

impl PackedCache {
    pub fn is_packed(&self) -> bool {
        self.0.get().is_some()
    }

    fn get_or_pack(&self, model: &Model) -> &PackedWeights {
        self.0.get_or_init(|| {
            TIMES_PACKED.fetch_add(1, Ordering::Relaxed);
            PackedWeights::new(model)
        })
    }
}

impl std::fmt::Debug for PackedCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.is_packed() { "packed" } else { "empty" };
        write!(f, "PackedCache({state})")
    }
}

/// A model and its weights packed for decoding: what [`super::DecodeState::push`],
/// [`super::batched::BatchState::step`], generation and beam search run on.
#[derive(Debug)]
pub struct Decoder<'m> {
    model: &'m Model,
    packed: Arc<PackedCache>,
}

impl<'m> Decoder<'m> {
    /// A decoder with its own packing, made when a step first needs it.
    pub fn new(model: &'m Model) -> Decoder<'m> {
        Decoder::sharing(model, Arc::default())
    }

    /// A decoder that packs into (or reads) `packed`, which must be empty or hold the
    /// packing of this model's current parameters.
    pub fn sharing(model: &'m Model, packed: Arc<PackedCache>) -> Decoder<'m> {
        Decoder { model, packed }
    }

    pub fn model(&self) -> &'m Model {
        self.model
    }

    /// Packs the weights now unless they are, with an error instead of an abort if the
    /// copy (as large as the parameters) does not fit in memory.
    pub fn prepare(&self) -> Result<()> {
        if !self.packed.is_packed() {
            crate::alloc::check_available(
                PackedWeights::bytes(self.model.params().len(), self.model.dtype()),
                "the weights packed for generation",
            )?;
        }
        self.packed();
        Ok(())
    }

    /// The packed weights, packed now if they are not yet (callers that may run out of
    /// memory call [`Decoder::prepare`] first).
    pub fn packed(&self) -> &PackedWeights {
        self.packed.get_or_pack(self.model)
    }
}
