//! GPT-2's byte-to-unicode mapping: each of the 256 bytes as one printable character, so
//! that byte strings can be written as text (`encoder.json`, `vocab.bpe`, HF
//! `tokenizer.json`). Printable Latin-1 bytes map to themselves; the other 68 bytes to
//! U+0100 onwards in byte order (the space 0x20 becomes 'Ġ' U+0120).

use std::sync::OnceLock;

struct Tables {
    to_char: [char; 256],
    to_byte: std::collections::HashMap<char, u8>,
}

fn tables() -> &'static Tables {
    static TABLES: OnceLock<Tables> = OnceLock::new();
    TABLES.get_or_init(|| {
        let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
        let mut to_char = ['\0'; 256];
        let mut extra = 0u32;
        for b in 0..=255u8 {
            to_char[b as usize] = if printable(b) {
                char::from(b)
            } else {
                extra += 1;
                char::from_u32(255 + extra).expect("U+0100..U+0143 are characters")
            };
        }
        let to_byte = (0..=255u8).map(|b| (to_char[b as usize], b)).collect();
        Tables { to_char, to_byte }
    })
}

/// The bytes in GPT-2's rank order: the printable ones first, then the rest
/// (the first 256 ranks of GPT-2's vocabulary).
pub fn gpt2_byte_order() -> Vec<u8> {
    let t = tables();
    let mut bytes: Vec<u8> = (0..=255u8).collect();
    bytes.sort_by_key(|&b| t.to_char[b as usize]);
    bytes
}

/// Bytes as GPT-2 text.
pub fn encode(bytes: &[u8]) -> String {
    let t = tables();
    bytes.iter().map(|&b| t.to_char[b as usize]).collect()
}

/// GPT-2 text back to bytes; `None` if a character is outside the mapping.
pub fn decode(text: &str) -> Option<Vec<u8>> {
    let t = tables();
    text.chars().map(|c| t.to_byte.get(&c).copied()).collect()
}
