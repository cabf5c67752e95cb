//! Weight files without Python: the Go JSON format and tinylm's safetensors format.

mod common;

use std::fs;

use common::{random_model, small_config, temp_dir};
use tinylm::tokenizer::{Tokenizer, WordTokenizer};
use tinylm::weights::go_json::parse_nested_list;
use tinylm::weights::{self, WeightsFormat};

fn words(n: usize) -> Tokenizer {
    Tokenizer::Word(WordTokenizer::new((0..n).map(|i| format!("w{i}")).collect()).unwrap())
}

#[test]
fn nested_lists_parse_to_shape_and_values() {
    let t = parse_nested_list("[[1, 2.5, -3e-2], [4, 5, 6]]").unwrap();
    assert_eq!(t.shape, vec![2, 3]);
    assert_eq!(t.data, vec![1.0, 2.5, -0.03, 4.0, 5.0, 6.0]);
    assert_eq!(parse_nested_list("[0.1]").unwrap().data, vec![0.1f32]);
}

#[test]
fn ragged_and_non_numeric_lists_are_errors() {
    for (text, needle) in [
        ("[[1, 2], [3]]", "ragged"),
        ("[[1, 2], 3]", "ragged"),
        ("[1, [2]]", "ragged"),
        ("[1, \"x\"]", "expected a number"),
        ("[1e39]", "out of range for float32"),
        ("[null]", "expected a number"),
    ] {
        let err = parse_nested_list(text).unwrap_err();
        assert!(err.contains(needle), "{text}: {err}");
    }
}

#[test]
fn random_floats_survive_the_go_format_bit_for_bit() {
    let model = random_model(small_config(false, false), 21);
    let dir = temp_dir("go-bits");
    let path = dir.join("m.json");
    weights::save(&path, &model, Some(&words(7)), WeightsFormat::GoJson).unwrap();
    let again = weights::load(&path).unwrap();
    let a: Vec<u32> = model.params().iter().map(|x| x.to_bits()).collect();
    let b: Vec<u32> = again.model.params().iter().map(|x| x.to_bits()).collect();
    assert_eq!(a, b);
}

#[test]
fn safetensors_round_trip_keeps_everything() {
    let model = random_model(small_config(true, true), 22);
    let dir = temp_dir("st-roundtrip");
    let path = dir.join("m.safetensors");
    let tok = words(7);
    weights::save(&path, &model, Some(&tok), WeightsFormat::Safetensors).unwrap();
    let again = weights::load(&path).unwrap();
    assert_eq!(again.format, WeightsFormat::Safetensors);
    assert_eq!(again.model.config, model.config);
    assert_eq!(again.model.params(), model.params());
    assert_eq!(again.tokenizer, Some(tok));
}

#[test]
fn go_format_refuses_what_it_cannot_hold() {
    let dir = temp_dir("go-refuse");
    let path = dir.join("m.json");
    let biased = random_model(small_config(true, false), 1);
    let err = weights::save(&path, &biased, Some(&words(7)), WeightsFormat::GoJson).unwrap_err();
    assert!(err.to_string().contains("attention biases"), "{err}");
    assert!(!path.exists());
}

#[test]
fn a_failed_save_leaves_the_old_file_and_no_temporary() {
    let dir = temp_dir("atomic");
    let path = dir.join("m.safetensors");
    let model = random_model(small_config(true, true), 2);
    weights::save(&path, &model, None, WeightsFormat::Safetensors).unwrap();
    let before = fs::read(&path).unwrap();
    let mut broken = model.clone();
    broken.params_mut()[3] = f32::NAN;
    assert!(weights::save(&path, &broken, None, WeightsFormat::Safetensors).is_err());
    assert_eq!(fs::read(&path).unwrap(), before);
    let names: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
}

#[test]
fn loader_errors_name_the_problem() {
    let dir = temp_dir("errors");
    let cases: [(&str, &[u8], &str); 6] = [
        ("empty.json", b"", "empty"),
        (
            "trunc.json",
            b"{\"d_model\": 4, \"n_layers\"",
            "truncated JSON",
        ),
        (
            "noweights.json",
            b"{\"d_model\": 4, \"n_layers\": 1, \"n_heads\": 2, \"vocab\": [\"a\"]}",
            "missing field \"weights\"",
        ),
        (
            "badtype.json",
            b"{\"d_model\": \"4\", \"n_layers\": 1, \"n_heads\": 2}",
            "\"d_model\" must be a positive integer",
        ),
        (
            "huge.json",
            b"{\"d_model\": 1000000000, \"n_layers\": 1, \"n_heads\": 2}",
            "out of range",
        ),
        (
            "st.safetensors",
            &[
                8, 0, 0, 0, 0, 0, 0, 0, b'{', b'}', b' ', b' ', b' ', b' ', b' ', b' ',
            ],
            "safetensors",
        ),
    ];
    for (name, bytes, needle) in cases {
        let path = dir.join(name);
        fs::write(&path, bytes).unwrap();
        let err = weights::load(&path).unwrap_err().to_string();
        assert!(err.contains(needle) && err.contains(name), "{name}: {err}");
    }
    let err = weights::load(&dir.join("absent.json"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no such file"), "{err}");
    let err = weights::load(&dir).unwrap_err().to_string();
    assert!(err.contains("directory"), "{err}");
}

#[test]
fn a_safetensors_file_with_bytes_past_what_its_header_promises_is_refused() {
    let dir = std::env::temp_dir().join(format!("tinylm-trailing-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("m.safetensors");
    let model = tinylm::Model::new(tinylm::Config::go_tinylm(5, 4, 1, 2, 4, 3), 0).unwrap();
    tinylm::weights::save(
        &path,
        &model,
        None,
        tinylm::weights::WeightsFormat::Safetensors,
    )
    .unwrap();
    assert!(tinylm::weights::load(&path).is_ok());
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.extend_from_slice(b"trailing");
    std::fs::write(&path, &bytes).unwrap();
    let err = tinylm::weights::load(&path).unwrap_err().to_string();
    assert!(err.contains("its header describes"), "{err}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[cfg(unix)]
#[test]
fn a_device_is_not_read_as_weights() {
    let err = tinylm::weights::load(std::path::Path::new("/dev/zero"))
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a regular file"), "{err}");
}

#[test]
fn extra_metadata_is_stored_and_tinylms_own_keys_or_go_json_are_refused() {
    use std::collections::BTreeMap;
    use tinylm::weights::safetensors_file::TensorFile;

    let dir = temp_dir("extra-metadata");
    let path = dir.join("m.safetensors");
    let model = random_model(small_config(true, true), 3);
    let extra = BTreeMap::from([("stop_ids".to_string(), "[7]".to_string())]);
    weights::save_with_metadata(&path, &model, None, WeightsFormat::Safetensors, &extra).unwrap();
    let file = TensorFile::from_bytes(&path, &fs::read(&path).unwrap()).unwrap();
    assert_eq!(
        file.metadata.get("stop_ids").map(String::as_str),
        Some("[7]")
    );
    assert_eq!(weights::load(&path).unwrap().model.params(), model.params());

    let own = BTreeMap::from([("config".to_string(), "{}".to_string())]);
    let err = weights::save_with_metadata(&path, &model, None, WeightsFormat::Safetensors, &own)
        .unwrap_err();
    assert!(
        err.to_string().contains("\"config\" is tinylm's own"),
        "{err}"
    );
    let go = dir.join("m.json");
    let err =
        weights::save_with_metadata(&go, &model, Some(&words(7)), WeightsFormat::GoJson, &extra)
            .unwrap_err();
    assert!(err.to_string().contains("holds no metadata"), "{err}");
    assert!(!go.exists());
}
