//! The Go TinyLM JSON weights format (see ../shared/seed/README.md).
//!
//! A flat JSON object; the Go loader reads `d_model`, `n_layers`, `n_heads`, `vocab` (words,
//! index = id) and `weights` (name -> nested list, row-major). Projections are stored
//! `[in][out]`, `lm_head.weight` is `[vocab][d_model]`, d_ff comes from the shapes and the
//! context from the rows of `pos_embed.weight`. There are no attention biases, the head is
//! not tied and eps is 1e-5.
//!
//! Unlike the Go loader, this one checks everything: types, ranges, shapes, ragged lists,
//! missing and unexpected weights, and numbers a float32 cannot hold. It also honours the
//! optional keys `max_seq_len` (must match the position rows), `d_ff` (must match the
//! shapes) and `eps`, which the Go program silently ignores.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;

use serde_json::value::RawValue;

use crate::config::{Config, MAX_D_MODEL, MAX_HEADS, MAX_LAYERS};
use crate::error::{Error, Result};
use crate::model::{Backend, Model};
use crate::params::ParamLayout;
use crate::tokenizer::{Tokenizer, WordTokenizer};

/// Deepest nesting accepted in a weight's lists (weights are vectors or matrices).
const MAX_DEPTH: usize = 8;

/// Values and shape of one nested JSON list.
#[derive(Debug, Clone, PartialEq)]
pub struct NestedList {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Parses a nested list of numbers (already known to be valid JSON) into row-major float32
/// values. Numbers are parsed straight from their text to the nearest float32.
pub fn parse_nested_list(text: &str) -> std::result::Result<NestedList, String> {
    let mut p = ListParser {
        s: text.as_bytes(),
        i: 0,
        shape: Vec::new(),
        ndim: None,
        data: Vec::new(),
        path: Vec::new(),
    };
    p.skip_ws();
    if p.peek() == Some(b'[') {
        p.list(0)?;
    } else {
        p.number(0)?;
    }
    p.skip_ws();
    if p.i != p.s.len() {
        return Err("unexpected text after the value".into());
    }
    Ok(NestedList {
        shape: p.shape.iter().map(|d| d.unwrap_or(0)).collect(),
        data: p.data,
    })
}

struct ListParser<'a> {
    s: &'a [u8],
    i: usize,
    /// Length of the lists at each depth, set when the first list there ends.
    shape: Vec<Option<usize>>,
    /// Depth at which numbers sit, set by the first number.
    ndim: Option<usize>,
    data: Vec<f32>,
    /// Indices leading to the current element, for messages.
    path: Vec<usize>,
}

impl ListParser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    fn skip_ws(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.i += 1;
        }
    }

    fn where_(&self) -> String {
        if self.path.is_empty() {
            "the top level".into()
        } else {
            let idx: Vec<String> = self.path.iter().map(|i| i.to_string()).collect();
            format!("[{}]", idx.join("]["))
        }
    }

    fn list(&mut self, depth: usize) -> std::result::Result<(), String> {
        if depth >= MAX_DEPTH {
            return Err(format!("lists nested deeper than {MAX_DEPTH} levels"));
        }
        if let Some(nd) = self.ndim {
            if depth >= nd {
                return Err(format!(
                    "ragged nested list: found a list at {} where a number was expected",
                    self.where_()
                ));
            }
        }
        self.i += 1; // '['
        if self.shape.len() == depth {
            self.shape.push(None);
        }
        let mut count = 0;
        self.skip_ws();
        if self.peek() == Some(b']') {
            self.i += 1;
        } else {
            loop {
                self.skip_ws();
                self.path.push(count);
                if self.peek() == Some(b'[') {
                    self.list(depth + 1)?;
                } else {
                    self.number(depth + 1)?;
                }
                self.path.pop();
                count += 1;
                self.skip_ws();
                match self.peek() {
                    Some(b',') => self.i += 1,
                    Some(b']') => {
                        self.i += 1;
                        break;
                    }
                    _ => return Err(format!("malformed list at {}", self.where_())),
                }
            }
        }
        if count == 0 && self.ndim.is_none() {
            self.ndim = Some(depth + 1);
        }
        match self.shape[depth] {
            None => {
                self.shape[depth] = Some(count);
                Ok(())
            }
            Some(expected) if expected == count => Ok(()),
            Some(expected) => Err(format!(
                "ragged nested list: the list at {} has {count} entries, the first list at that depth has {expected}",
                self.where_()
            )),
        }
    }

    fn number(&mut self, depth: usize) -> std::result::Result<(), String> {
        match self.ndim {
            None => self.ndim = Some(depth),
            Some(nd) if nd != depth => {
                return Err(format!(
                    "ragged nested list: found a number at {} where a list was expected",
                    self.where_()
                ))
            }
            Some(_) => {}
        }
        let start = self.i;
        while matches!(
            self.peek(),
            Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E')
        ) {
            self.i += 1;
        }
        let token = std::str::from_utf8(&self.s[start..self.i]).unwrap_or("");
        if token.is_empty() {
            let found: String =
                String::from_utf8_lossy(&self.s[start..self.s.len().min(start + 12)]).into_owned();
            return Err(format!(
                "expected a number at {}, found {found:?}",
                self.where_()
            ));
        }
        let value: f32 = token
            .parse()
            .map_err(|_| format!("invalid number {token:?} at {}", self.where_()))?;
        if !value.is_finite() {
            return Err(format!(
                "the number {token} at {} is out of range for float32",
                self.where_()
            ));
        }
        self.data.push(value);
        Ok(())
    }
}

fn short(raw: &RawValue) -> String {
    let text = raw.get();
    if text.len() > 40 {
        format!(
            "{}...",
            &text[..text.char_indices().nth(37).map(|(i, _)| i).unwrap_or(37)]
        )
    } else {
        text.to_string()
    }
}

/// Whether (line, column), 1-based as serde_json counts, is the last byte of `bytes`: an
/// error there means the text stopped early (a number cut short is not reported as EOF).
fn ends_at(bytes: &[u8], line: usize, column: usize) -> bool {
    let text = bytes.trim_ascii_end();
    let last_line = text.iter().filter(|&&b| b == b'\n').count() + 1;
    let last_column = text.len() - text.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    (line, column) == (last_line, last_column)
}

/// A required positive integer field of at most `max`.
fn int_field(
    path: &Path,
    top: &HashMap<String, &RawValue>,
    name: &str,
    max: usize,
) -> Result<usize> {
    let raw = top
        .get(name)
        .ok_or_else(|| Error::format(path, format!("missing field {name:?}")))?;
    let value: u64 = serde_json::from_str(raw.get()).map_err(|_| {
        Error::format(
            path,
            format!(
                "field {name:?} must be a positive integer, found {}",
                short(raw)
            ),
        )
    })?;
    if value == 0 || value > max as u64 {
        return Err(Error::format(
            path,
            format!("field {name:?} = {value} is out of range (1 to {max})"),
        ));
    }
    Ok(value as usize)
}

/// Loads a Go TinyLM JSON file: the model and its word-level tokenizer.
pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<(Model, Tokenizer)> {
    // Editors on some systems start UTF-8 files with a byte-order mark; JSON has none.
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    let top: HashMap<String, &RawValue> = serde_json::from_slice(bytes).map_err(|e| {
        let what = if e.is_eof() || ends_at(bytes, e.line(), e.column()) {
            "truncated JSON"
        } else {
            "invalid JSON"
        };
        Error::format(path, format!("{what}: {e}"))
    })?;
    let d_model = int_field(path, &top, "d_model", MAX_D_MODEL)?;
    let n_layers = int_field(path, &top, "n_layers", MAX_LAYERS)?;
    let n_heads = int_field(path, &top, "n_heads", MAX_HEADS)?;
    let vocab_raw = top
        .get("vocab")
        .ok_or_else(|| Error::format(path, "missing field \"vocab\""))?;
    let vocab: Vec<String> = serde_json::from_str(vocab_raw.get()).map_err(|e| {
        Error::format(
            path,
            format!("field \"vocab\" must be a list of strings: {e}"),
        )
    })?;
    let tokenizer = WordTokenizer::new(vocab).map_err(|e| e.in_file(path))?;
    let weights_raw = top
        .get("weights")
        .ok_or_else(|| Error::format(path, "missing field \"weights\""))?;
    let weights: HashMap<String, &RawValue> =
        serde_json::from_str(weights_raw.get()).map_err(|e| {
            Error::format(
                path,
                format!("field \"weights\" must be an object mapping names to nested lists: {e}"),
            )
        })?;
    let parse = |name: &str| -> Result<NestedList> {
        let raw = weights
            .get(name)
            .ok_or_else(|| Error::format(path, format!("missing weight {name:?}")))?;
        parse_nested_list(raw.get())
            .map_err(|e| Error::format(path, format!("weight {name:?}: {e}")))
    };
    // The two sizes the file does not state: context (position rows) and d_ff.
    let pos = parse("pos_embed.weight")?;
    let ff1 = parse("blocks.0.ff.linear1.weight")?;
    let max_seq_len = match pos.shape.as_slice() {
        [p, c] if *c == d_model && *p > 0 => *p,
        found => {
            return Err(Error::format(
                path,
                format!("weight \"pos_embed.weight\" must have shape [positions, {d_model}], found {found:?}"),
            ))
        }
    };
    let d_ff = match ff1.shape.as_slice() {
        [c, f] if *c == d_model && *f > 0 => *f,
        found => {
            return Err(Error::format(
                path,
                format!("weight \"blocks.0.ff.linear1.weight\" must have shape [{d_model}, d_ff], found {found:?}"),
            ))
        }
    };
    let mut config = Config::go_tinylm(
        tokenizer.vocab().len(),
        d_model,
        n_layers,
        n_heads,
        d_ff,
        max_seq_len,
    );
    if let Some(raw) = top.get("eps") {
        let eps: f64 = serde_json::from_str(raw.get()).map_err(|_| {
            Error::format(
                path,
                format!("field \"eps\" must be a number, found {}", short(raw)),
            )
        })?;
        config.eps = eps as f32;
    }
    for (key, actual) in [("max_seq_len", max_seq_len), ("d_ff", d_ff)] {
        if let Some(raw) = top.get(key) {
            let stated: u64 = serde_json::from_str(raw.get()).map_err(|_| {
                Error::format(
                    path,
                    format!(
                        "field {key:?} must be a positive integer, found {}",
                        short(raw)
                    ),
                )
            })?;
            if stated != actual as u64 {
                return Err(Error::format(
                    path,
                    format!("field {key:?} = {stated} disagrees with the weights' shapes, which give {actual}"),
                ));
            }
        }
    }
    config.validate().map_err(|e| e.in_file(path))?;
    let layout = ParamLayout::new(&config);
    let mut unexpected: Vec<&str> = weights
        .keys()
        .map(String::as_str)
        .filter(|name| layout.get(name).is_none())
        .collect();
    if !unexpected.is_empty() {
        unexpected.sort_unstable();
        return Err(Error::format(
            path,
            format!(
                "unexpected weight {:?} (a model with n_layers = {n_layers} has no such tensor)",
                unexpected[0]
            ),
        ));
    }
    // Each number takes at least two bytes of text ("0,"): a file too small for the model
    // its shapes describe is an error before that model is allocated.
    if layout.total as u128 * 2 > bytes.len() as u128 {
        return Err(Error::format(
            path,
            format!(
                "the file ({} bytes) is too small to hold the {} parameters its sizes describe",
                bytes.len(),
                layout.total
            ),
        ));
    }
    let mut params = crate::alloc::zeros(layout.total, "the parameters")?;
    for spec in &layout.specs {
        let tensor = match spec.name.as_str() {
            "pos_embed.weight" => pos.clone(),
            "blocks.0.ff.linear1.weight" => ff1.clone(),
            name => parse(name)?,
        };
        if tensor.shape != spec.shape {
            let hint = match spec.name.as_str() {
                "token_embed.weight" | "lm_head.weight" => {
                    format!(" (the vocab has {} words)", config.vocab_size)
                }
                _ => String::new(),
            };
            return Err(Error::format(
                path,
                format!(
                    "weight {:?} has shape {:?}, expected {:?}{hint}",
                    spec.name, tensor.shape, spec.shape
                ),
            ));
        }
        params[spec.range()].copy_from_slice(&tensor.data);
    }
    let model =
        Model::from_params_on(config, params, Backend::Reference).map_err(|e| e.in_file(path))?;
    Ok((model, Tokenizer::Word(tokenizer)))
}

fn write_row(out: &mut String, row: &[f32]) {
    out.push('[');
    for (i, x) in row.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        // Debug prints the shortest text that parses back to the same float32.
        let _ = write!(out, "{x:?}");
    }
    out.push(']');
}

/// The Go TinyLM JSON text of a model; refused when the format cannot express it.
pub fn to_string(model: &Model, tokenizer: Option<&Tokenizer>) -> Result<String> {
    let cfg = &model.config;
    if let Some(why) = cfg.go_format_obstacle() {
        return Err(Error::value(format!(
            "cannot save in the Go TinyLM format: {why}"
        )));
    }
    let vocab = match tokenizer {
        Some(Tokenizer::Word(t)) => t.vocab(),
        Some(other) => {
            return Err(Error::value(format!(
                "cannot save in the Go TinyLM format: it holds a word-level vocabulary, this model has a {}-level tokenizer",
                other.kind()
            )))
        }
        None => {
            return Err(Error::value(
                "cannot save in the Go TinyLM format: it needs the model's word-level vocabulary, and this model has no tokenizer",
            ))
        }
    };
    if vocab.len() != cfg.vocab_size {
        return Err(Error::value(format!(
            "cannot save: the tokenizer has {} words but the model's vocab_size is {}",
            vocab.len(),
            cfg.vocab_size
        )));
    }
    let mut out = String::new();
    let _ = writeln!(out, "{{");
    let _ = writeln!(out, "    \"d_model\": {},", cfg.d_model);
    let _ = writeln!(out, "    \"n_layers\": {},", cfg.n_layers);
    let _ = writeln!(out, "    \"n_heads\": {},", cfg.n_heads);
    let words: Vec<String> = vocab
        .iter()
        .map(|w| serde_json::to_string(w).expect("strings serialise"))
        .collect();
    let _ = writeln!(out, "    \"vocab\": [{}],", words.join(", "));
    let _ = writeln!(out, "    \"weights\": {{");
    let specs = &model.layout.specs;
    for (i, spec) in specs.iter().enumerate() {
        let values = &model.params()[spec.range()];
        let _ = write!(
            out,
            "        {}: ",
            serde_json::to_string(&spec.name).expect("names serialise")
        );
        if spec.shape.len() == 2 {
            out.push_str("[\n");
            let cols = spec.shape[1];
            for (r, row) in values.chunks_exact(cols).enumerate() {
                out.push_str("            ");
                write_row(&mut out, row);
                out.push_str(if r + 1 < spec.shape[0] { ",\n" } else { "\n" });
            }
            out.push_str("        ]");
        } else {
            write_row(&mut out, values);
        }
        out.push_str(if i + 1 < specs.len() { ",\n" } else { "\n" });
    }
    let _ = writeln!(out, "    }}");
    let _ = writeln!(out, "}}");
    Ok(out)
}
