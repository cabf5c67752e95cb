//! Tokenizer JSON, encode and decode on arbitrary input: errors, never crashes, and what
//! encodes decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinylm::tokenizer::{CharTokenizer, Tokenizer};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    // As a tokenizer description.
    if let Ok(tok) = Tokenizer::from_json(&text) {
        let _ = tok.encode(&text);
        let ids: Vec<u32> = data.iter().map(|&b| b as u32).collect();
        let _ = tok.decode(&ids);
        assert_eq!(Tokenizer::from_json(&tok.to_json()).as_ref(), Ok(&tok));
    }
    // As text: a character tokenizer built from it round-trips it.
    if let Ok(chars) = CharTokenizer::from_text(&text) {
        let tok = Tokenizer::Char(chars);
        let ids = tok.encode(&text).expect("its own text encodes");
        assert_eq!(tok.decode(&ids).expect("its own ids decode"), text);
    }
});
