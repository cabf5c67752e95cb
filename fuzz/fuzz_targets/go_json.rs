//! The Go TinyLM JSON loader on arbitrary bytes: an error or a model, never a crash.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok((model, tokenizer)) = tinylm::weights::go_json::from_bytes(Path::new("fuzz.json"), data) {
        // A model that loads must also run and save.
        assert_eq!(model.params().len(), model.layout.total);
        assert_eq!(tokenizer.vocab_size(), model.config.vocab_size);
        if model.layout.total < 1 << 16 {
            let mut ws = tinylm::Workspace::new();
            let t = model.config.max_seq_len.min(4);
            let ids = vec![0u32; t];
            model.forward(&mut ws, &ids, 1, t).expect("a loaded model runs");
            let _ = tinylm::weights::go_json::to_string(&model, Some(&tokenizer));
        }
    }
});
