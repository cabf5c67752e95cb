//! Config options: files written before them load with today's meaning, the default
//! layout is the first release's, bad values are clear errors, and the fast path refuses
//! what it cannot run.

use tinylm::config::{Activation, Norm, Position};
use tinylm::params::ParamLayout;
use tinylm::{Config, Model};

/// A config without the option fields, as files written before them hold it.
const OLD_CONFIG: &str = r#"{"vocab_size": 7, "d_model": 6, "n_layers": 1, "n_heads": 3, "d_ff": 10,
    "max_seq_len": 5, "eps": 1e-5, "attn_bias": true, "tie_embeddings": false}"#;

fn config_from(json: &str) -> Result<Config, String> {
    let config: Config = serde_json::from_str(json).map_err(|e| e.to_string())?;
    config.validate().map_err(|e| e.to_string())?;
    Ok(config)
}

fn with(field: &str, value: &str) -> String {
    OLD_CONFIG.replace('}', &format!(", \"{field}\": {value}}}"))
}

#[test]
fn a_config_written_before_the_options_loads_as_gpt2() {
    let config = config_from(OLD_CONFIG).unwrap();
    assert_eq!(config.activation, Activation::GeluTanh);
    assert_eq!(config.norm, Norm::LayerNorm);
    assert!(config.mlp_bias);
    assert_eq!(config.position, Position::Learned);
    assert_eq!(config.rope_theta, 10000.0);
    assert_eq!(config.kv_heads(), config.n_heads);
    assert!(config.non_default_options().is_empty());
}

#[test]
fn the_default_layout_is_the_first_releases() {
    let layout = ParamLayout::new(&config_from(OLD_CONFIG).unwrap());
    let (c, f) = (6, 10);
    let want: Vec<(&str, Vec<usize>)> = vec![
        ("token_embed.weight", vec![7, c]),
        ("pos_embed.weight", vec![5, c]),
        ("blocks.0.norm1.weight", vec![c]),
        ("blocks.0.norm1.bias", vec![c]),
        ("blocks.0.attn.W_q.weight", vec![c, c]),
        ("blocks.0.attn.W_q.bias", vec![c]),
        ("blocks.0.attn.W_k.weight", vec![c, c]),
        ("blocks.0.attn.W_k.bias", vec![c]),
        ("blocks.0.attn.W_v.weight", vec![c, c]),
        ("blocks.0.attn.W_v.bias", vec![c]),
        ("blocks.0.attn.W_o.weight", vec![c, c]),
        ("blocks.0.attn.W_o.bias", vec![c]),
        ("blocks.0.norm2.weight", vec![c]),
        ("blocks.0.norm2.bias", vec![c]),
        ("blocks.0.ff.linear1.weight", vec![c, f]),
        ("blocks.0.ff.linear1.bias", vec![f]),
        ("blocks.0.ff.linear2.weight", vec![f, c]),
        ("blocks.0.ff.linear2.bias", vec![c]),
        ("ln_f.weight", vec![c]),
        ("ln_f.bias", vec![c]),
        ("lm_head.weight", vec![7, c]),
    ];
    let got: Vec<(&str, Vec<usize>)> = layout
        .specs
        .iter()
        .map(|s| (s.name.as_str(), s.shape.clone()))
        .collect();
    assert_eq!(got, want);
    let mut offset = 0;
    for spec in &layout.specs {
        assert_eq!(
            spec.offset, offset,
            "{} is not right after the one before",
            spec.name
        );
        offset += spec.len();
    }
    assert_eq!(layout.total, offset);
}

#[test]
fn the_options_add_and_drop_the_tensors_they_name() {
    let config = Config {
        activation: Activation::SwiGlu,
        norm: Norm::RmsNorm,
        mlp_bias: false,
        position: Position::Rope,
        n_kv_heads: Some(1),
        ..config_from(OLD_CONFIG).unwrap()
    };
    config.validate().unwrap();
    let layout = ParamLayout::new(&config);
    let names: Vec<&str> = layout.specs.iter().map(|s| s.name.as_str()).collect();
    assert!(!names.contains(&"pos_embed.weight"));
    assert!(!names
        .iter()
        .any(|n| n.contains("norm") && n.ends_with(".bias")));
    assert!(!names
        .iter()
        .any(|n| n.contains(".ff.") && n.ends_with(".bias")));
    assert!(!names.contains(&"ln_f.bias"));
    assert_eq!(
        layout.get("blocks.0.ff.gate.weight").unwrap().shape,
        [6, 10]
    );
    // One key/value head of size D = 2.
    assert_eq!(
        layout.get("blocks.0.attn.W_k.weight").unwrap().shape,
        [6, 2]
    );
    assert_eq!(layout.get("blocks.0.attn.W_v.bias").unwrap().shape, [2]);
}

#[test]
fn parameter_count_agrees_with_the_layout_for_every_option() {
    let base = config_from(OLD_CONFIG).unwrap();
    for &activation in Activation::ALL {
        for &norm in Norm::ALL {
            for &position in Position::ALL {
                for (mlp_bias, attn_bias, tie) in [(true, true, true), (false, false, false)] {
                    for n_kv_heads in [None, Some(1)] {
                        let config = Config {
                            activation,
                            norm,
                            position,
                            mlp_bias,
                            attn_bias,
                            tie_embeddings: tie,
                            n_kv_heads,
                            ..base.clone()
                        };
                        assert_eq!(
                            config.parameter_count(),
                            ParamLayout::new(&config).total,
                            "{config:?}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn option_values_round_trip_through_json() {
    let config = Config {
        activation: Activation::GeGlu,
        norm: Norm::RmsNorm,
        position: Position::Rope,
        rope_theta: 500.0,
        n_kv_heads: Some(1),
        ..config_from(OLD_CONFIG).unwrap()
    };
    let json = serde_json::to_string(&config).unwrap();
    assert!(json.contains(r#""activation":"geglu""#), "{json}");
    assert_eq!(config_from(&json).unwrap(), config);
}

#[test]
fn bad_option_values_are_errors_that_name_them() {
    let cases = [
        (
            with("activation", "\"tanh\""),
            "unknown activation \"tanh\"",
        ),
        (with("norm", "\"batchnorm\""), "unknown norm"),
        (with("position", "\"alibi\""), "unknown position"),
        (
            with("n_kv_heads", "2"),
            "n_kv_heads = 2 does not divide n_heads = 3",
        ),
        (with("n_kv_heads", "0"), "n_kv_heads must be positive"),
        (
            with("position", "\"rope\"").replace("\"n_heads\": 3", "\"n_heads\": 2"),
            "head size d_model / n_heads must be even, got 3",
        ),
        (
            with("rope_theta", "-1")
                .replace("\"eps\"", "\"position\": \"rope\", \"eps\"")
                .replace("\"d_model\": 6", "\"d_model\": 12"),
            "rope_theta",
        ),
        (with("colour", "1"), "unknown field `colour`"),
    ];
    for (json, want) in cases {
        let err = config_from(&json).unwrap_err();
        assert!(err.contains(want), "{json}: {err}");
    }
    // The choices are listed.
    let err = config_from(&with("activation", "\"tanh\"")).unwrap_err();
    assert!(
        err.contains("gelu_tanh, gelu, relu, relu2, silu, swiglu, geglu"),
        "{err}"
    );
}

#[test]
fn the_fast_backend_runs_every_option() {
    let base = config_from(OLD_CONFIG).unwrap();
    let configs = [
        Config {
            activation: Activation::SwiGlu,
            ..base.clone()
        },
        Config {
            position: Position::Rope,
            d_model: 12,
            ..base.clone()
        },
        Config {
            n_kv_heads: Some(1),
            ..base.clone()
        },
    ];
    for config in configs {
        let model = Model::new(config.clone(), 0).unwrap();
        assert_eq!(model.backend(), tinylm::model::Backend::Fast);
        let mut ws = tinylm::Workspace::new();
        let loss = model.loss(&mut ws, &[1, 2, 3], &[2, 3, 4], 1, 3).unwrap();
        assert!(loss.is_finite(), "{config:?}");
    }
}
