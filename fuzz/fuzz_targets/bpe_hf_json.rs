//! Hugging Face tokenizer.json: errors, never crashes; what loads encodes and decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinylm::tokenizer::bpe::formats::hf_json;
use tinylm::tokenizer::bpe::{Allowed, BpeTokenizer, Pattern};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok((tokens, specials, regex)) = hf_json::parse(&text) else { return };
    let Ok(pattern) = Pattern::from_regex(&regex) else { return };
    let Ok(tok) = BpeTokenizer::new(tokens, specials, pattern) else { return };
    if let Ok(ids) = tok.encode(&text, Allowed::All) {
        let _ = tok.decode(&ids, false);
    }
    if let Ok(json) = hf_json::to_string(&tok) {
        let (tokens, specials, _) = hf_json::parse(&json).expect("own output parses");
        assert_eq!(tokens, tok.tokens());
        assert_eq!(&specials, tok.specials());
    }
});
