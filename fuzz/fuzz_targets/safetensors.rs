//! tinylm's safetensors loader on arbitrary bytes: an error or a model, never a crash.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use tinylm::weights::safetensors_file::{model_from_file, TensorFile};

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    if let Ok(file) = TensorFile::from_bytes(path, data) {
        if let Ok((model, tokenizer)) = model_from_file(path, &file) {
            assert_eq!(model.params().len(), model.layout.total);
            if let Some(tok) = &tokenizer {
                assert_eq!(tok.vocab_size(), model.config.vocab_size);
            }
        }
    }
});
