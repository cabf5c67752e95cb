//! Tokenizers without Python.

use tinylm::tokenizer::{CharTokenizer, Tokenizer, WordTokenizer};

fn go_words() -> Tokenizer {
    let vocab = ["the", "cat", "sat", "on", "mat", "big", "dog", "ate", "END"];
    Tokenizer::Word(WordTokenizer::new(vocab.iter().map(|s| s.to_string()).collect()).unwrap())
}

#[test]
fn word_level_follows_the_go_rules() {
    let tok = go_words();
    assert_eq!(tok.encode(" the\tcat \n sat ").unwrap(), vec![0, 1, 2]);
    assert_eq!(tok.decode(&[0, 6, 8]).unwrap(), "the dog END");
    assert_eq!(
        tok.encode("the zebra").unwrap_err().to_string(),
        "word not in vocabulary: zebra"
    );
    assert!(tok.encode("The").is_err(), "case-sensitive");
    assert!(tok.encode(" \n").is_err(), "empty text");
    assert!(tok
        .decode(&[9])
        .unwrap_err()
        .to_string()
        .contains("outside the vocabulary"));
}

#[test]
fn char_level_round_trips_any_text_it_was_built_from() {
    let text = "First Citizen:\nBefore we proceed — any further, hear me speak. ✓";
    let tok = Tokenizer::Char(CharTokenizer::from_text(text).unwrap());
    let ids = tok.encode(text).unwrap();
    assert_eq!(ids.len(), text.chars().count());
    assert_eq!(tok.decode(&ids).unwrap(), text);
    let err = tok.encode("Z").unwrap_err().to_string();
    assert!(err.contains("'Z'") && err.contains("U+005A"), "{err}");
}

#[test]
fn json_round_trip() {
    for tok in [
        go_words(),
        Tokenizer::Char(CharTokenizer::from_text("abc\n").unwrap()),
    ] {
        let again = Tokenizer::from_json(&tok.to_json()).unwrap();
        assert_eq!(again, tok);
    }
}

#[test]
fn malformed_json_is_an_error() {
    for bad in [
        "",
        "{",
        "[]",
        r#"{"type":"word","vocab":["a","a"]}"#,
        r#"{"type":"char","vocab":["ab"]}"#,
        r#"{"type":"x","vocab":[]}"#,
    ] {
        assert!(Tokenizer::from_json(bad).is_err(), "{bad}");
    }
}
