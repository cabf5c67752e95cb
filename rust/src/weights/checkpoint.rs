//! Training checkpoints: a tinylm model file plus the AdamW moments (`optimizer.m.<name>`,
//! `optimizer.v.<name>`), the optimizer's settings and step count (metadata `optimizer`),
//! and whatever the training loop wants to keep (other metadata entries).
//! A checkpoint loads as a model too: model loaders skip the `optimizer.` tensors.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::safetensors_file::{
    model_from_file, params_from_tensors, NamedTensor, TensorFile, OPTIMIZER_PREFIX,
};
use super::{check_tokenizer_fits, read_file, write_atomic, LoadedModel, WeightsFormat};
use crate::error::{Error, Result};
use crate::model::{Backend, Model};
use crate::optim::{AdamW, AdamWConfig};
use crate::tokenizer::Tokenizer;

/// Metadata keys the checkpoint itself uses; the caller's entries may not replace them.
const RESERVED_KEYS: [&str; 5] = [
    "format",
    "format_version",
    "config",
    "tokenizer",
    "optimizer",
];

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptimizerMeta {
    step: u64,
    beta1: f32,
    beta2: f32,
    eps: f32,
    weight_decay: f32,
}

/// Writes a checkpoint atomically.
pub fn save_checkpoint(
    path: &Path,
    model: &Model,
    tokenizer: Option<&Tokenizer>,
    optimizer: &AdamW,
    extra: &BTreeMap<String, String>,
) -> Result<()> {
    check_tokenizer_fits(model, tokenizer)?;
    let mut file = TensorFile::for_model(model, tokenizer);
    for (key, value) in extra {
        if RESERVED_KEYS.contains(&key.as_str()) {
            return Err(Error::value(format!(
                "checkpoint metadata key {key:?} is reserved"
            )));
        }
        file.metadata.insert(key.clone(), value.clone());
    }
    let c = optimizer.config;
    let meta = OptimizerMeta {
        step: optimizer.step,
        beta1: c.beta1,
        beta2: c.beta2,
        eps: c.eps,
        weight_decay: c.weight_decay,
    };
    file.metadata.insert(
        "optimizer".into(),
        serde_json::to_string(&meta).expect("optimizer metadata serialises"),
    );
    for (moment, values) in [("m", &optimizer.m), ("v", &optimizer.v)] {
        for spec in &model.layout.specs {
            file.tensors.push(NamedTensor {
                name: format!("{OPTIMIZER_PREFIX}{moment}.{}", spec.name),
                shape: spec.shape.clone(),
                data: values[spec.range()].to_vec(),
            });
        }
    }
    write_atomic(path, &file.to_bytes(path)?)
}

/// Reads a checkpoint: the model, its optimizer and the caller's metadata entries.
pub fn load_checkpoint(path: &Path) -> Result<(LoadedModel, AdamW, BTreeMap<String, String>)> {
    load_checkpoint_on(path, Backend::Fast)
}

/// [`load_checkpoint`], the model on the given backend.
pub fn load_checkpoint_on(
    path: &Path,
    backend: Backend,
) -> Result<(LoadedModel, AdamW, BTreeMap<String, String>)> {
    let bytes = read_file(path)?;
    let file = TensorFile::from_bytes(path, &bytes)?;
    let (model, tokenizer) = model_from_file(path, &file)?;
    let model = super::onto_backend(model, backend, path)?;
    let meta_json = file.metadata.get("optimizer").ok_or_else(|| {
        Error::format(
            path,
            "not a checkpoint: the metadata has no \"optimizer\" entry",
        )
    })?;
    let meta: OptimizerMeta = serde_json::from_str(meta_json)
        .map_err(|e| Error::format(path, format!("metadata \"optimizer\" is invalid: {e}")))?;
    let config = AdamWConfig {
        beta1: meta.beta1,
        beta2: meta.beta2,
        eps: meta.eps,
        weight_decay: meta.weight_decay,
    };
    let mut optimizer = AdamW::new(config, &model.layout).map_err(|e| e.in_file(path))?;
    let m = params_from_tensors(path, &file, &model.layout, &format!("{OPTIMIZER_PREFIX}m."))?;
    let v = params_from_tensors(path, &file, &model.layout, &format!("{OPTIMIZER_PREFIX}v."))?;
    if let Some(i) = v.iter().position(|&x| x < 0.0) {
        return Err(Error::format(
            path,
            format!("optimizer second moment is negative at flat index {i}"),
        ));
    }
    optimizer.set_state(m, v, meta.step)?;
    let extra = file
        .metadata
        .into_iter()
        .filter(|(k, _)| !RESERVED_KEYS.contains(&k.as_str()))
        .collect();
    Ok((
        LoadedModel {
            model,
            tokenizer,
            format: WeightsFormat::Safetensors,
        },
        optimizer,
        extra,
    ))
}
