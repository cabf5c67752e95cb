//! GPT-2 `encoder.json` + `vocab.bpe` (the input split at its first NUL byte): errors,
//! never crashes; what loads encodes and decodes back.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tinylm::tokenizer::bpe::formats::gpt2_files;
use tinylm::tokenizer::bpe::{BpeTokenizer, Pattern};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (encoder, merges) = text.split_once('\0').unwrap_or((&text, ""));
    let Ok((tokens, specials)) = gpt2_files::parse(encoder, merges) else { return };
    let Ok(tok) = BpeTokenizer::new(tokens, specials, Pattern::new("gpt2").unwrap()) else {
        return;
    };
    let ids = tok.encode_ordinary(&text).expect("the gpt2 pattern never fails");
    assert_eq!(tok.decode(&ids, true).expect("valid ids"), text);
    if let Ok((enc, bpe)) = gpt2_files::to_strings(&tok) {
        let (tokens, specials) = gpt2_files::parse(&enc, &bpe).expect("own output parses");
        assert_eq!(tokens, tok.tokens());
        assert_eq!(&specials, tok.specials());
    }
});
