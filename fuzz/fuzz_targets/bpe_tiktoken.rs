//! `.tiktoken` rank files: errors, never crashes; what loads encodes, decodes back and
//! writes back the same.
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use tinylm::tokenizer::bpe::formats::tiktoken_file;
use tinylm::tokenizer::bpe::{BpeTokenizer, Pattern};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(tokens) = tiktoken_file::parse(&text) else { return };
    let Ok(tok) = BpeTokenizer::new(tokens, BTreeMap::new(), Pattern::new("gpt4").unwrap()) else {
        return;
    };
    let ids = tok.encode_ordinary(&text).expect("the gpt4 pattern never fails");
    assert_eq!(tok.decode(&ids, true).expect("valid ids"), text);
    let again = tiktoken_file::parse(&tiktoken_file::to_string(&tok)).expect("own output parses");
    assert_eq!(again, tok.tokens());
});
