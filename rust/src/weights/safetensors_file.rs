//! tinylm's own format: a safetensors file of float32 tensors named like the parameters
//! (see [`crate::params`]), with string metadata:
//! - `format` = `tinylm`, `format_version` = `1`;
//! - `config`: the [`Config`] as JSON;
//! - `tokenizer` (optional): the tokenizer's JSON.
//!
//! Checkpoints use the same format with more tensors (`optimizer.m.<name>`,
//! `optimizer.v.<name>`) and more metadata; a model loader ignores the `optimizer.` ones,
//! so a checkpoint is also a model file.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use safetensors::tensor::{Dtype, SafeTensors, TensorView};

use crate::config::Config;
use crate::error::{Error, Result};
use crate::model::{Backend, Model};
use crate::params::ParamLayout;
use crate::tokenizer::Tokenizer;

use super::check_finite;

pub const FORMAT_NAME: &str = "tinylm";
pub const FORMAT_VERSION: &str = "1";
/// Tensors under this prefix belong to the optimizer, not to the model.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";

/// One named float32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The contents of a safetensors file: float32 tensors and string metadata.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TensorFile {
    pub tensors: Vec<NamedTensor>,
    pub metadata: BTreeMap<String, String>,
}

impl TensorFile {
    /// Parses and checks a safetensors file: header, offsets, dtypes, finite values.
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<TensorFile> {
        let st = SafeTensors::deserialize(bytes).map_err(|e| {
            Error::format(
                path,
                format!("invalid safetensors file (and not JSON either): {e}"),
            )
        })?;
        let (_, header) = SafeTensors::read_metadata(bytes)
            .map_err(|e| Error::format(path, format!("invalid safetensors file: {e}")))?;
        let metadata: BTreeMap<String, String> = header
            .metadata()
            .as_ref()
            .map(|m| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        let mut tensors = Vec::with_capacity(st.len());
        for name in header.offset_keys() {
            let view = st
                .tensor(&name)
                .map_err(|e| Error::format(path, format!("tensor {name:?}: {e}")))?;
            if view.dtype() != Dtype::F32 {
                return Err(Error::format(
                    path,
                    format!(
                        "tensor {name:?} has dtype {:?}; tinylm reads only F32",
                        view.dtype()
                    ),
                ));
            }
            let data: Vec<f32> = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect();
            check_finite(path, &name, &data)?;
            tensors.push(NamedTensor {
                name,
                shape: view.shape().to_vec(),
                data,
            });
        }
        Ok(TensorFile { tensors, metadata })
    }

    /// The tensors and metadata of a model file.
    pub fn for_model(model: &Model, tokenizer: Option<&Tokenizer>) -> TensorFile {
        let tensors = model
            .layout
            .specs
            .iter()
            .map(|spec| NamedTensor {
                name: spec.name.clone(),
                shape: spec.shape.clone(),
                data: model.params()[spec.range()].to_vec(),
            })
            .collect();
        let mut metadata = BTreeMap::new();
        metadata.insert("format".into(), FORMAT_NAME.into());
        metadata.insert("format_version".into(), FORMAT_VERSION.into());
        metadata.insert(
            "config".into(),
            serde_json::to_string(&model.config).expect("a config always serialises"),
        );
        if let Some(tok) = tokenizer {
            metadata.insert("tokenizer".into(), tok.to_json());
        }
        TensorFile { tensors, metadata }
    }

    /// The safetensors bytes; `path` only names the file in errors.
    pub fn to_bytes(&self, path: &Path) -> Result<Vec<u8>> {
        let mut raw: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::with_capacity(self.tensors.len());
        for t in &self.tensors {
            check_finite(path, &t.name, &t.data).map_err(|_| {
                Error::NonFinite(format!(
                    "cannot save {}: tensor {:?} holds NaN or infinite values",
                    path.display(),
                    t.name
                ))
            })?;
            let bytes: Vec<u8> = t.data.iter().flat_map(|x| x.to_le_bytes()).collect();
            raw.push((t.name.clone(), t.shape.clone(), bytes));
        }
        let views = raw
            .iter()
            .map(|(name, shape, bytes)| {
                TensorView::new(Dtype::F32, shape.clone(), bytes)
                    .map(|v| (name.clone(), v))
                    .map_err(|e| Error::format(path, format!("tensor {name:?}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let metadata: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(metadata))
            .map_err(|e| Error::format(path, format!("cannot serialise: {e}")))
    }

    pub fn get(&self, name: &str) -> Option<&NamedTensor> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// The model (and tokenizer, if stored) held by a tinylm safetensors file, on the
/// reference backend, which runs every config ([`crate::weights::load_on`] moves it).
pub fn model_from_file(path: &Path, file: &TensorFile) -> Result<(Model, Option<Tokenizer>)> {
    match file.metadata.get("format").map(String::as_str) {
        Some(FORMAT_NAME) => {}
        Some(other) => {
            return Err(Error::format(
                path,
                format!("metadata \"format\" is {other:?}, expected \"{FORMAT_NAME}\""),
            ))
        }
        None => {
            return Err(Error::format(
                path,
                "not a tinylm model: the safetensors metadata has no \"format\": \"tinylm\" entry",
            ))
        }
    }
    if let Some(version) = file.metadata.get("format_version") {
        if version != FORMAT_VERSION {
            return Err(Error::format(
                path,
                format!("format_version {version:?} is not supported (this tinylm reads version {FORMAT_VERSION})"),
            ));
        }
    }
    let config_json = file
        .metadata
        .get("config")
        .ok_or_else(|| Error::format(path, "the metadata has no \"config\" entry"))?;
    let config: Config = serde_json::from_str(config_json)
        .map_err(|e| Error::format(path, format!("metadata \"config\" is invalid: {e}")))?;
    config.validate().map_err(|e| e.in_file(path))?;
    let tokenizer = match file.metadata.get("tokenizer") {
        Some(json) => Some(Tokenizer::from_json(json).map_err(|e| e.in_file(path))?),
        None => None,
    };
    if let Some(tok) = &tokenizer {
        if tok.vocab_size() != config.vocab_size {
            return Err(Error::format(
                path,
                format!(
                    "the tokenizer has {} tokens but the config says vocab_size = {}",
                    tok.vocab_size(),
                    config.vocab_size
                ),
            ));
        }
    }
    let layout = ParamLayout::new(&config);
    let params = params_from_tensors(path, file, &layout, "")?;
    let model =
        Model::from_params_on(config, params, Backend::Reference).map_err(|e| e.in_file(path))?;
    Ok((model, tokenizer))
}

/// Gathers the tensors `prefix + name` for every parameter into a flat buffer, checking
/// shapes; with an empty prefix, any tensor that is neither a parameter nor an optimizer
/// tensor is an error.
pub fn params_from_tensors(
    path: &Path,
    file: &TensorFile,
    layout: &ParamLayout,
    prefix: &str,
) -> Result<Vec<f32>> {
    if prefix.is_empty() {
        if let Some(extra) = file
            .tensors
            .iter()
            .find(|t| !t.name.starts_with(OPTIMIZER_PREFIX) && layout.get(&t.name).is_none())
        {
            return Err(Error::format(
                path,
                format!(
                    "unexpected tensor {:?}: the model's config has no such parameter",
                    extra.name
                ),
            ));
        }
    }
    // Every tensor is checked before the buffer is allocated, so a small file whose config
    // claims a huge model is an error, not an allocation of that model.
    let mut found = Vec::with_capacity(layout.specs.len());
    for spec in &layout.specs {
        let name = format!("{prefix}{}", spec.name);
        let tensor = file
            .get(&name)
            .ok_or_else(|| Error::format(path, format!("missing tensor {name:?}")))?;
        if tensor.shape != spec.shape {
            return Err(Error::format(
                path,
                format!(
                    "tensor {name:?} has shape {:?}, expected {:?}",
                    tensor.shape, spec.shape
                ),
            ));
        }
        found.push(tensor);
    }
    let mut params = crate::alloc::zeros(layout.total, "the parameters")?;
    for (spec, tensor) in layout.specs.iter().zip(found) {
        params[spec.range()].copy_from_slice(&tensor.data);
    }
    Ok(params)
}
