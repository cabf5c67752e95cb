//! Byte-level BPE against OpenAI's real vocabularies, with tiktoken-rs (OpenAI's tiktoken
//! core, vendored) as the reference, and its asset files (a dev-dependency) as the data.

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;

use tinylm::tokenizer::bpe::formats::{gpt2_files, hf_json, tiktoken_file};
use tinylm::tokenizer::bpe::{
    merge, train, train_sources, Allowed, BpeTokenizer, Pattern, Progress, ReadOptions, Source,
    Utf8Stream, MARGIN,
};
use tinylm::tokenizer::Tokenizer;

/// tiktoken-rs's `assets/` folder in cargo's registry.
fn assets() -> PathBuf {
    let home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"));
    let src = home.join("registry/src");
    for registry in std::fs::read_dir(&src).expect("cargo's registry") {
        let registry = registry.unwrap().path();
        for krate in std::fs::read_dir(&registry).unwrap() {
            let krate = krate.unwrap().path();
            let name = krate.file_name().unwrap().to_string_lossy().to_string();
            if name.starts_with("tiktoken-rs-0.12.") && krate.join("assets").is_dir() {
                return krate.join("assets");
            }
        }
    }
    panic!("tiktoken-rs 0.12 is not unpacked under {}", src.display());
}

fn openai(name: &str) -> BpeTokenizer {
    let (file, pattern, specials): (&str, &str, &[(&str, u32)]) = match name {
        "r50k" => ("r50k_base.tiktoken", "gpt2", &[("<|endoftext|>", 50256)]),
        "cl100k" => (
            "cl100k_base.tiktoken",
            "gpt4",
            &[
                ("<|endoftext|>", 100257),
                ("<|fim_prefix|>", 100258),
                ("<|fim_middle|>", 100259),
                ("<|fim_suffix|>", 100260),
                ("<|endofprompt|>", 100276),
            ],
        ),
        "o200k" => (
            "o200k_base.tiktoken",
            "o200k",
            &[("<|endoftext|>", 199999), ("<|endofprompt|>", 200018)],
        ),
        _ => unreachable!(),
    };
    let tokens = tiktoken_file::read(&assets().join(file)).unwrap();
    let specials = specials
        .iter()
        .map(|&(n, id)| (n.to_string(), id))
        .collect();
    BpeTokenizer::new(tokens, specials, Pattern::new(pattern).unwrap()).unwrap()
}

fn reference(name: &str) -> tiktoken_rs::CoreBPE {
    match name {
        "r50k" => tiktoken_rs::r50k_base(),
        "cl100k" => tiktoken_rs::cl100k_base(),
        "o200k" => tiktoken_rs::o200k_base(),
        _ => unreachable!(),
    }
    .unwrap()
}

fn shakespeare() -> Option<String> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/data/tinyshakespeare.txt");
    match std::fs::read_to_string(&path) {
        Ok(text) => Some(text),
        Err(_) => {
            eprintln!("skipped: {} is absent", path.display());
            None
        }
    }
}

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Text from an alphabet of tricky characters: contractions, case, digits, whitespace
/// runs, CRLF, marks, CJK, emoji, letters of other scripts, the long s.
fn tricky_text(rng: &mut Rng, len: usize) -> String {
    const PARTS: &[&str] = &[
        "'",
        "s",
        "S",
        "t",
        "ll",
        "LL",
        "ve",
        "Re",
        "d",
        "m",
        "ſ",
        " ",
        "  ",
        "\t",
        "\n",
        "\r\n",
        "\r",
        "\u{a0}",
        "\u{3000}",
        "\u{2028}",
        "1",
        "23",
        "4567",
        "٣",
        "Ⅻ",
        "½",
        "a",
        "Z",
        "é",
        "e\u{301}",
        "\u{301}",
        "\u{20dd}",
        "ǅ",
        "ʰ",
        "中文",
        "日本語",
        "한",
        "😀",
        "👍🏽",
        "🇫🇷",
        "Ω",
        "ß",
        "İ",
        ".",
        ",",
        "!",
        "?",
        "--",
        "/",
        "//",
        "(",
        ")",
        "$",
        "€",
        "_",
        "\u{0}",
        "\u{7f}",
        "\u{200d}",
        "Hello",
        " world",
        "can't",
        "I'M",
        "we'Ve",
        "ǈ",
        "ᾈ",
    ];
    (0..len).map(|_| PARTS[rng.below(PARTS.len())]).collect()
}

fn pieces_fast(p: &Pattern, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    p.split(text, |s| out.push(s.to_string())).unwrap();
    out
}

fn pieces_regex(p: &Pattern, text: &str) -> Vec<String> {
    let mut out = Vec::new();
    p.split_regex(text, |s| out.push(s.to_string())).unwrap();
    out
}

#[test]
fn hand_written_presplitters_equal_their_regexes() {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut texts: Vec<String> = (0..3000)
        .map(|k| tricky_text(&mut rng, 1 + k % 40))
        .collect();
    if let Some(text) = shakespeare() {
        texts.push(text);
    }
    for name in ["gpt2", "gpt4", "o200k"] {
        let p = Pattern::new(name).unwrap();
        assert_eq!(p.name(), Some(name));
        for text in &texts {
            assert_eq!(
                pieces_fast(&p, text),
                pieces_regex(&p, text),
                "{name} on {text:?}"
            );
        }
    }
}

#[test]
fn heap_merge_equals_tiktokens_linear_merge() {
    let tok = openai("cl100k");
    let rank = |s: &[u8]| tok.rank(s);
    let mut rng = Rng(7);
    for k in 0..400 {
        let text = match k % 4 {
            0 => "a".repeat(1 + rng.below(600)),
            1 => {
                let len = 1 + rng.below(200);
                tricky_text(&mut rng, len).replace(' ', "")
            }
            2 => "ab".repeat(1 + rng.below(300)),
            _ => (0..1 + rng.below(500))
                .map(|_| (b'a' + rng.below(4) as u8) as char)
                .collect(),
        };
        let bytes = text.as_bytes();
        assert_eq!(
            merge::merge_heap(bytes, rank),
            merge::merge_linear(bytes, rank),
            "{text:?}"
        );
    }
}

#[test]
fn known_vectors_of_gpt2_and_gpt4() {
    let gpt2 = openai("r50k");
    assert_eq!(
        gpt2.encode_ordinary("Hello world").unwrap(),
        vec![15496, 995]
    );
    assert_eq!(
        gpt2.encode_ordinary(" Hello world").unwrap(),
        vec![18435, 995]
    );
    let gpt4 = openai("cl100k");
    assert_eq!(
        gpt4.encode_ordinary("Hello world").unwrap(),
        vec![9906, 1917]
    );
    assert_eq!(
        gpt4.encode("<|endoftext|>", Allowed::All).unwrap(),
        vec![100257]
    );
}

#[test]
fn equals_tiktoken_on_shakespeare_and_tricky_text() {
    let mut rng = Rng(42);
    let mut texts: Vec<String> = (0..400)
        .map(|k| tricky_text(&mut rng, 1 + k % 60))
        .collect();
    if let Some(text) = shakespeare() {
        texts.push(text);
    }
    for name in ["r50k", "cl100k", "o200k"] {
        let ours = openai(name);
        let theirs = reference(name);
        for text in &texts {
            let ids = ours.encode_ordinary(text).unwrap();
            assert_eq!(ids, theirs.encode_ordinary(text), "{name} on {text:?}");
            assert_eq!(ours.decode(&ids, true).unwrap(), *text, "{name} round trip");
        }
        // Every special token, allowed, inside text.
        for (special, &id) in ours.specials() {
            let text = format!("a{special} b{special}");
            let ids = ours.encode(&text, Allowed::All).unwrap();
            assert_eq!(
                ids,
                theirs.encode_with_special_tokens(&text),
                "{name} {special}"
            );
            assert!(ids.contains(&id));
            let err = ours.encode(&text, Allowed::None).unwrap_err().to_string();
            assert!(err.contains(special.as_str()), "{err}");
            assert_eq!(
                ours.encode_ordinary(&text).unwrap(),
                theirs.encode_ordinary(&text)
            );
        }
    }
}

#[test]
fn only_allowed_special_tokens_are_encoded() {
    let tok = openai("cl100k");
    let allowed: HashSet<String> = ["<|endoftext|>".to_string()].into();
    let ids = tok
        .encode("x<|endoftext|>", Allowed::Only(&allowed))
        .unwrap();
    assert_eq!(ids.last(), Some(&100257));
    let err = tok
        .encode("x<|fim_prefix|>", Allowed::Only(&allowed))
        .unwrap_err();
    assert!(err.to_string().contains("<|fim_prefix|>"));
    let unknown: HashSet<String> = ["<|nope|>".to_string()].into();
    assert!(tok.encode("x", Allowed::Only(&unknown)).is_err());
}

#[test]
fn gpt2_files_give_r50k() {
    let dir = assets();
    let tok = gpt2_files::load(
        &dir.join("encoder.json"),
        &dir.join("vocab.bpe"),
        Pattern::new("gpt2").unwrap(),
    )
    .unwrap();
    assert_eq!(tok, openai("r50k"));
}

#[test]
fn decode_replaces_or_refuses_cut_characters_and_streams_them_whole() {
    let tok = openai("cl100k");
    let text = "héllo 😀 中文 👍🏽 done";
    let ids = tok.encode_ordinary(text).unwrap();
    // Single bytes of the emoji: a cut character.
    let cut = [tok.rank(&[0xF0]).unwrap(), tok.rank(&[0x9F]).unwrap()];
    assert_eq!(
        tok.decode(&cut, false).unwrap(),
        String::from_utf8_lossy(&[0xF0, 0x9F])
    );
    assert!(tok.decode(&cut, true).is_err());
    assert!(tok
        .decode(&[100_261], false)
        .unwrap_err()
        .to_string()
        .contains("unused"));
    assert!(tok.decode(&[u32::MAX], false).is_err());
    // Streaming byte-level ids: each chunk is whole characters; together, the text.
    let byte_ids: Vec<u32> = text.bytes().map(|b| tok.rank(&[b]).unwrap()).collect();
    for stream_ids in [&ids, &byte_ids] {
        let mut stream = Utf8Stream::new();
        let mut joined = String::new();
        for &id in stream_ids.iter() {
            let chunk = stream.push(tok.token_bytes(id).unwrap());
            joined.push_str(&chunk);
        }
        joined.push_str(&stream.finish());
        assert_eq!(joined, text);
    }
    // Arbitrary bytes: the stream equals the lossy decode of the whole.
    let mut rng = Rng(3);
    for _ in 0..300 {
        let bytes: Vec<u8> = (0..rng.below(30)).map(|_| rng.below(256) as u8).collect();
        let mut stream = Utf8Stream::new();
        let mut joined = String::new();
        for chunk in bytes.chunks(1 + rng.below(3)) {
            joined.push_str(&stream.push(chunk));
        }
        joined.push_str(&stream.finish());
        assert_eq!(joined, String::from_utf8_lossy(&bytes), "{bytes:?}");
    }
}

fn small_corpus() -> String {
    "the cat sat on the mat. the cat ate the rat! 1234 55 ÷ naïve café cafe\n\n  the end\t"
        .repeat(3)
}

/// minbpe's trainer, recounting every pair each merge: the reference for the fast one.
fn minbpe_reference(text: &str, vocab_size: usize) -> Vec<Vec<u8>> {
    let p = Pattern::new("gpt4").unwrap();
    let mut chunks: Vec<Vec<u32>> = Vec::new();
    p.split_regex(text, |s| chunks.push(s.bytes().map(u32::from).collect()))
        .unwrap();
    let mut vocab: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    while vocab.len() < vocab_size {
        let mut stats: BTreeMap<(u32, u32), i64> = BTreeMap::new();
        for c in &chunks {
            for w in c.windows(2) {
                *stats.entry((w[0], w[1])).or_default() += 1;
            }
        }
        // Most frequent; ties to the smallest pair (the BTreeMap's first).
        let Some((&pair, _)) = stats.iter().rev().max_by_key(|&(_, &c)| c) else {
            break;
        };
        let bytes = [
            vocab[pair.0 as usize].clone(),
            vocab[pair.1 as usize].clone(),
        ]
        .concat();
        let id = match vocab.iter().position(|v| *v == bytes) {
            Some(existing) => existing as u32,
            None => {
                vocab.push(bytes);
                vocab.len() as u32 - 1
            }
        };
        for c in &mut chunks {
            let mut out = Vec::new();
            let mut i = 0;
            while i < c.len() {
                if i + 1 < c.len() && (c[i], c[i + 1]) == pair {
                    out.push(id);
                    i += 2;
                } else {
                    out.push(c[i]);
                    i += 1;
                }
            }
            *c = out;
        }
    }
    vocab
}

#[test]
fn training_equals_minbpe_merge_for_merge() {
    let mut rng = Rng(5);
    let text = small_corpus() + &tricky_text(&mut rng, 2000);
    let trained = train(&[text.as_str()], 600, Pattern::new("gpt4").unwrap(), &[]).unwrap();
    assert!(!trained.exhausted);
    assert_eq!(
        trained.tokenizer.tokens(),
        minbpe_reference(&text, 600).as_slice()
    );
    let ids = trained.tokenizer.encode_ordinary(&text).unwrap();
    assert_eq!(trained.tokenizer.decode(&ids, true).unwrap(), text);
}

#[test]
fn training_limits_are_clear() {
    let p = || Pattern::new("gpt4").unwrap();
    let specials = vec!["<|endoftext|>".to_string()];
    let err = train(&["abc"], 256, p(), &specials)
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab_size 256"), "{err}");
    let trained = train(&["abab"], 1000, p(), &specials).unwrap();
    assert!(trained.exhausted);
    assert_eq!(trained.tokenizer.vocab_size(), 256 + 2 + 1);
    assert_eq!(trained.tokenizer.specials()["<|endoftext|>"], 258);
}

#[test]
fn files_round_trip_through_every_format() {
    let trained = train(
        &[small_corpus().as_str()],
        320,
        Pattern::new("gpt2").unwrap(),
        &["<|endoftext|>".to_string()],
    )
    .unwrap();
    let tok = trained.tokenizer;
    let dir = std::env::temp_dir().join(format!("tinylm-bpe-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();

    let ranks = dir.join("t.tiktoken");
    tiktoken_file::write(&ranks, &tok).unwrap();
    let back = BpeTokenizer::new(
        tiktoken_file::read(&ranks).unwrap(),
        tok.specials().clone(),
        tok.pattern().clone(),
    )
    .unwrap();
    assert_eq!(back, tok);

    let (enc, bpe) = (dir.join("encoder.json"), dir.join("vocab.bpe"));
    gpt2_files::write(&enc, &bpe, &tok).unwrap();
    assert_eq!(
        gpt2_files::load(&enc, &bpe, tok.pattern().clone()).unwrap(),
        tok
    );

    let hf = dir.join("tokenizer.json");
    hf_json::write(&hf, &tok).unwrap();
    assert_eq!(hf_json::load(&hf).unwrap(), tok);

    let wrapped = Tokenizer::Bpe(Box::new(tok));
    assert_eq!(Tokenizer::from_json(&wrapped.to_json()).unwrap(), wrapped);
    assert_eq!(wrapped.kind(), "bpe");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn malformed_rank_files_name_the_problem() {
    let cases: &[(&str, &str)] = &[
        ("IQ== 0\nIg== 0\n", "rank 0 appears twice"),
        ("IQ== 0\nIQ== 1\n", "already on line 1"),
        ("IQ== 0\nIg== 2\n", "rank 1 is missing"),
        ("IQ= 0\n", "not base64"),
        ("I*== 0\n", "not a base64 character"),
        ("IQ==\n", "expected"),
        ("IQ== -1\n", "not a non-negative integer"),
        ("IQ== 99999999999\n", "above the limit"),
        ("", "no tokens"),
    ];
    for (text, expected) in cases {
        let err = tiktoken_file::parse(text).unwrap_err();
        assert!(err.contains(expected), "{text:?}: {err}");
    }
    // A rank file without every byte cannot be a byte-level tokenizer.
    let tokens = tiktoken_file::parse("IQ== 0\n").unwrap();
    let err =
        BpeTokenizer::new(tokens, BTreeMap::new(), Pattern::new("gpt2").unwrap()).unwrap_err();
    assert!(err.to_string().contains("byte 0x00"), "{err}");
}

#[test]
fn malformed_gpt2_and_hf_files_name_the_file_and_the_problem() {
    let dir = std::env::temp_dir().join(format!("tinylm-bpe-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let trained = train(
        &[small_corpus().as_str()],
        300,
        Pattern::new("gpt2").unwrap(),
        &[],
    )
    .unwrap();
    let (enc, bpe) = (dir.join("encoder.json"), dir.join("vocab.bpe"));
    gpt2_files::write(&enc, &bpe, &trained.tokenizer).unwrap();
    let p = || Pattern::new("gpt2").unwrap();

    std::fs::write(&bpe, "#version: 0.2\nĠt zzz\n").unwrap();
    let err = gpt2_files::load(&enc, &bpe, p()).unwrap_err().to_string();
    assert!(
        err.contains("encoder.json") && err.contains("\"zzz\""),
        "{err}"
    );
    std::fs::write(&bpe, "#version: 0.2\na b c\n").unwrap();
    let err = gpt2_files::load(&enc, &bpe, p()).unwrap_err().to_string();
    assert!(err.contains("vocab.bpe") && err.contains("line 2"), "{err}");
    std::fs::write(&enc, "{\"a\": 0,").unwrap();
    let err = gpt2_files::load(&enc, &bpe, p()).unwrap_err().to_string();
    assert!(
        err.contains("encoder.json") && err.contains("JSON"),
        "{err}"
    );

    let hf = dir.join("tokenizer.json");
    hf_json::write(&hf, &trained.tokenizer).unwrap();
    let good = std::fs::read_to_string(&hf).unwrap();
    for (bad, expected) in [
        (good[..good.len() / 2].to_string(), "not valid JSON"),
        ("[1, 2]".to_string(), "no \"model\""),
        (good.replace("\"BPE\"", "\"WordPiece\""), "WordPiece"),
        (
            good.replace("(?!\\\\S)", "(?!\\\\S"),
            "invalid pre-split regex",
        ),
    ] {
        std::fs::write(&hf, bad).unwrap();
        let err = hf_json::load(&hf).unwrap_err().to_string();
        assert!(
            err.contains("tokenizer.json") && err.contains(expected),
            "{expected}: {err}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn an_invalid_user_regex_is_a_tokenizer_error() {
    let err = Pattern::new("(unclosed").unwrap_err();
    assert!(matches!(err, tinylm::Error::Tokenizer(_)));
    assert!(err.to_string().contains("invalid pre-split regex"));
}

#[test]
fn encode_batch_equals_encode() {
    let tok = openai("r50k");
    let mut rng = Rng(11);
    let texts: Vec<String> = (0..50).map(|_| tricky_text(&mut rng, 30)).collect();
    let batch = tok.encode_batch(&texts, Allowed::None).unwrap();
    for (t, ids) in texts.iter().zip(&batch) {
        assert_eq!(*ids, tok.encode_ordinary(t).unwrap());
    }
}

/// A text for chunked reading: tricky characters, runs longer than a chunk (spaces,
/// digits, letters, CJK), and contractions and CRLF placed everywhere.
fn chunk_test_text(rng: &mut Rng) -> String {
    let mut text = String::new();
    for round in 0..6 {
        text += &tricky_text(rng, 1500);
        text += &[" ", "7", "x", "中", "\r\n", "😀"][round].repeat(3 * MARGIN + rng.below(99));
        text += "don't I'LL we've ſ";
    }
    text
}

fn train_file(path: &std::path::Path, size: usize, read: ReadOptions, p: &Pattern) -> BpeTokenizer {
    train_sources(
        &[Source::File(path)],
        size,
        p.clone(),
        &[],
        read,
        &mut |_| Ok(()),
    )
    .unwrap()
    .tokenizer
}

#[test]
fn training_on_a_file_read_in_chunks_equals_training_on_its_text() {
    let dir = std::env::temp_dir().join(format!("tinylm-bpe-files-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut rng = Rng(11);
    let text = chunk_test_text(&mut rng);
    let path = dir.join("corpus.txt");
    std::fs::write(&path, &text).unwrap();
    // The named patterns, and a user regex that looks behind and anchors at the start.
    let patterns = [
        Pattern::new("gpt2").unwrap(),
        Pattern::new("gpt4").unwrap(),
        Pattern::new("o200k").unwrap(),
        Pattern::new(r"^\s+|(?<=\s)\p{L}+|\p{L}+|\p{N}{1,2}|[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+")
            .unwrap(),
    ];
    // Enough merges to use up the text's pairs: every distinct piece becomes a token,
    // so a piece counted differently would show.
    let size = 6000;
    for p in &patterns {
        let whole = train(&[text.as_str()], size, p.clone(), &[]).unwrap();
        for chunk_bytes in [1, 1000, MARGIN + 1, 3 * MARGIN + 17, 1 << 20] {
            let read = ReadOptions {
                chunk_bytes,
                max_bytes: None,
            };
            assert!(
                train_file(&path, size, read, p) == whole.tokenizer,
                "pattern {:?}, chunks of {chunk_bytes} bytes",
                p.source()
            );
        }
        // A prefix cut inside a character keeps the whole characters before the cut.
        let cut = text.char_indices().nth(text.chars().count() / 2).unwrap().0 + 1;
        assert!(!text.is_char_boundary(cut));
        let prefix = &text[..(0..cut).rev().find(|&i| text.is_char_boundary(i)).unwrap()];
        let read = ReadOptions {
            chunk_bytes: 5000,
            max_bytes: Some(cut as u64),
        };
        let head = train(&[prefix], size, p.clone(), &[]).unwrap();
        assert!(
            train_file(&path, size, read, p) == head.tokenizer,
            "{:?}",
            p.source()
        );
    }
    // Files and texts together are the list of their texts.
    let p = Pattern::new("gpt4").unwrap();
    let both = train_sources(
        &[Source::Text("hello there"), Source::File(&path)],
        1000,
        p.clone(),
        &[],
        ReadOptions::default(),
        &mut |_| Ok(()),
    )
    .unwrap();
    let texts = train(&["hello there", text.as_str()], 1000, p, &[]).unwrap();
    assert_eq!(both.merges, texts.merges);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn training_reports_its_progress_and_stops_when_told_to() {
    let dir = std::env::temp_dir().join(format!("tinylm-bpe-progress-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("corpus.txt");
    let text = chunk_test_text(&mut Rng(3));
    std::fs::write(&path, &text).unwrap();
    let read = ReadOptions {
        chunk_bytes: 10_000,
        max_bytes: None,
    };
    let mut seen = Vec::new();
    train_sources(
        &[Source::File(&path)],
        700,
        Pattern::new("gpt4").unwrap(),
        &[],
        read,
        &mut |p| {
            seen.push(p);
            Ok(())
        },
    )
    .unwrap();
    let total = text.len() as u64;
    let counting: Vec<u64> = seen
        .iter()
        .filter_map(|p| match *p {
            Progress::Counting { done, total: t } => Some(done).filter(|_| t == total),
            _ => None,
        })
        .collect();
    assert!(counting.len() > 3, "{counting:?}");
    assert!(counting.windows(2).all(|w| w[0] <= w[1]));
    assert_eq!(*counting.last().unwrap(), total);
    let merging: Vec<Progress> = seen
        .iter()
        .copied()
        .filter(|p| matches!(p, Progress::Merging { .. }))
        .collect();
    assert_eq!(merging.len(), 700 - 256);
    assert_eq!(
        merging.last(),
        Some(&Progress::Merging {
            done: 444,
            total: 444
        })
    );

    // Running out of pairs ends with a report whose total is what was made.
    let mut last = None;
    let out = train_sources(
        &[Source::Text("abab")],
        1000,
        Pattern::new("gpt4").unwrap(),
        &[],
        read,
        &mut |p| {
            last = Some(p);
            Ok(())
        },
    )
    .unwrap();
    assert!(out.exhausted);
    assert_eq!(last, Some(Progress::Merging { done: 2, total: 2 }));

    // An error from the callback (a Ctrl-C) stops training and comes back.
    let err = train_sources(
        &[Source::File(&path)],
        700,
        Pattern::new("gpt4").unwrap(),
        &[],
        read,
        &mut |p| match p {
            Progress::Merging { done: 10, .. } => Err(tinylm::Error::value("stopped")),
            _ => Ok(()),
        },
    )
    .unwrap_err();
    assert_eq!(err.to_string(), "stopped");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_training_files_are_errors_naming_the_file() {
    let dir = std::env::temp_dir().join(format!("tinylm-bpe-badfiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let good = dir.join("good.txt");
    std::fs::write(&good, "fine text").unwrap();
    let invalid = dir.join("latin1.txt");
    let mut bytes = "x".repeat(5000).into_bytes();
    bytes.push(0xff);
    std::fs::write(&invalid, &bytes).unwrap();
    let cut = dir.join("cut.txt");
    std::fs::write(&cut, &"é".as_bytes()[..1]).unwrap();
    let missing = dir.join("missing.txt");
    let cases: Vec<(PathBuf, &str)> = vec![
        (missing.clone(), "missing.txt: no such file"),
        (dir.clone(), "is a directory"),
        (PathBuf::from("/dev/zero"), "/dev/zero: not a regular file"),
        (
            invalid,
            "latin1.txt: not UTF-8 text (invalid byte 0xff at offset 5000)",
        ),
        (
            cut,
            "cut.txt: not UTF-8 text (it ends inside a character, at offset 0)",
        ),
        (PathBuf::new(), "empty"),
    ];
    for (path, expected) in cases {
        let read = ReadOptions {
            chunk_bytes: 1000,
            max_bytes: None,
        };
        // The good file first: every path is checked before any text is read.
        let mut reads = 0;
        let err = train_sources(
            &[Source::File(&good), Source::File(&path)],
            300,
            Pattern::new("gpt4").unwrap(),
            &[],
            read,
            &mut |p| {
                reads += matches!(p, Progress::Counting { done, .. } if done > 0) as usize;
                Ok(())
            },
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains(expected), "{expected}: {err}");
        if !expected.contains("UTF-8") {
            assert_eq!(reads, 0, "{expected}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
