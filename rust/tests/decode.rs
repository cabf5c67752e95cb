//! Generation one token at a time (key/value cache, packed weights, helper thread)
//! against the full forward pass.

mod common;

use common::random_model;
use tinylm::config::{Activation, Norm, Position};
use tinylm::decode::batched::BatchState;
use tinylm::decode::{with_team, DecodeState, Decoder, PackedCache, Team};
use tinylm::generate::{generate, GenerateOptions, Generation, Window};
use tinylm::model::Backend;
use tinylm::sample::{argmax, SamplingParams};
use tinylm::{Config, Model, Workspace};

/// Wide enough for the helper thread to take part, with widths that are not multiples of
/// the 64-column panels (C = 144, 3C = 432, F = 200) and three heads.
fn wide_config() -> Config {
    Config {
        vocab_size: 70,
        d_model: 144,
        n_layers: 2,
        n_heads: 3,
        d_ff: 200,
        max_seq_len: 40,
        eps: 1e-5,
        attn_bias: true,
        tie_embeddings: false,
        ..Config::default()
    }
}

/// Two lanes, but one head (the second lane has none) and a feed-forward width of 3.
fn one_head_config() -> Config {
    Config {
        n_heads: 1,
        d_model: 128,
        d_ff: 3,
        ..wide_config()
    }
}

/// A model with weights small enough that activations stay in a realistic range.
fn wide_model(seed: u64) -> Model {
    scaled_model(wide_config(), seed)
}

fn scaled_model(config: Config, seed: u64) -> Model {
    let mut model = random_model(config, seed);
    for p in model.params_mut().iter_mut() {
        *p *= 0.2;
    }
    model
}

/// The logits after each token of `ids`, decoded one token at a time.
fn decoded_logits(decoder: &Decoder, team: Option<&Team>, ids: &[u32]) -> Vec<Vec<f32>> {
    let mut state = DecodeState::new(decoder.model());
    ids.iter()
        .map(|&id| {
            state.push(decoder, team, id, true);
            state.logits.clone()
        })
        .collect()
}

/// Runs `f` with the process's helper thread, waiting while another test holds it.
fn with_helper<R>(f: impl Fn(&Team) -> R) -> R {
    for _ in 0..2000 {
        if let Some(result) = with_team(|team| team.map(&f)) {
            return result;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    panic!("the helper thread stayed busy for 10 s");
}

#[test]
fn decoded_logits_match_the_forward_pass() {
    for config in [wide_config(), one_head_config()] {
        let model = scaled_model(config.clone(), 5);
        let decoder = Decoder::new(&model);
        let ids: Vec<u32> = (0..40).map(|i| (i * 17 % 70) as u32).collect();
        let decoded = with_helper(|team| decoded_logits(&decoder, Some(team), &ids));
        let v = model.config.vocab_size;
        let mut ws = Workspace::new();
        model.forward(&mut ws, &ids, 1, ids.len()).unwrap();
        let full = ws.logits(&model.config);
        for (t, got) in decoded.iter().enumerate() {
            let want = &full[t * v..(t + 1) * v];
            let scale = want.iter().fold(0.0f32, |m, x| m.max(x.abs()));
            let err = got
                .iter()
                .zip(want)
                .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
            assert!(
                err <= 1e-4 * scale,
                "{config:?}, position {t}: error {err}, scale {scale}"
            );
        }
    }
}

#[test]
fn the_helper_thread_changes_no_bit_of_the_logits() {
    let model = wide_model(6);
    let decoder = Decoder::new(&model);
    let ids: Vec<u32> = (0..40).map(|i| (i * 29 % 70) as u32).collect();
    let bits =
        |rows: Vec<Vec<f32>>| -> Vec<u32> { rows.iter().flatten().map(|x| x.to_bits()).collect() };
    let alone = bits(decoded_logits(&decoder, None, &ids));
    let shared = bits(with_helper(|team| {
        decoded_logits(&decoder, Some(team), &ids)
    }));
    assert_eq!(alone, shared);
}

/// Asserts that `generated` (after `prompt`, within the context) is the argmax of the
/// full forward pass's logits at every step.
fn assert_greedy_follows_the_forward_pass(model: &Model, prompt: &[u32], generated: &[u32]) {
    let v = model.config.vocab_size;
    let mut seq = prompt.to_vec();
    let mut ws = Workspace::new();
    for (i, &tok) in generated.iter().enumerate() {
        model.forward(&mut ws, &seq, 1, seq.len()).unwrap();
        let last = &ws.logits(&model.config)[(seq.len() - 1) * v..];
        assert_eq!(argmax(last) as u32, tok, "generated token {i}");
        seq.push(tok);
    }
}

#[test]
fn a_decoder_made_after_a_change_to_the_parameters_decodes_the_new_ones() {
    let opts = GenerateOptions {
        max_new_tokens: 30, // within the context of 40
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Default::default(),
    };
    let mut model = wide_model(7);
    let before = generate(&Decoder::new(&model), &[1, 2], &opts).unwrap();
    assert_greedy_follows_the_forward_pass(&model, &[1, 2], &before);
    model.params_mut().copy_from_slice(wide_model(8).params());
    let after = generate(&Decoder::new(&model), &[1, 2], &opts).unwrap();
    assert_greedy_follows_the_forward_pass(&model, &[1, 2], &after);
    assert_ne!(
        before, after,
        "the two parameter sets should generate differently"
    );
}

#[test]
fn decoders_sharing_a_cache_pack_the_weights_once() {
    let model = wide_model(11);
    let opts = GenerateOptions {
        max_new_tokens: 5,
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Default::default(),
    };
    let cache = std::sync::Arc::new(PackedCache::default());
    let first = Decoder::sharing(&model, cache.clone());
    assert!(
        !cache.is_packed(),
        "a decoder packs when a step first needs it"
    );
    let ids = generate(&first, &[1], &opts).unwrap();
    assert!(cache.is_packed());
    let second = Decoder::sharing(&model, cache.clone());
    assert!(std::ptr::eq(first.packed(), second.packed()));
    assert_eq!(generate(&second, &[1], &opts).unwrap(), ids);
    // The reference backend has no cache to decode with: it packs nothing.
    let on_reference = model.clone().on_backend(Backend::Reference).unwrap();
    let cache = std::sync::Arc::new(PackedCache::default());
    generate(&Decoder::sharing(&on_reference, cache.clone()), &[1], &opts).unwrap();
    assert!(!cache.is_packed());
}

#[test]
fn generation_in_chunks_gives_the_ids_of_one_call_in_and_past_the_context() {
    let model = wide_model(9);
    let opts = GenerateOptions {
        // 40 positions of context: the cache fills, then the window slides.
        max_new_tokens: 90,
        sampling: SamplingParams::simple(0.9, Some(20), None),
        seed: 5,
        stop: vec![],
        window: Default::default(),
    };
    for window in [Window::Shift, Window::Sliding] {
        let opts = GenerateOptions {
            window,
            ..opts.clone()
        };
        chunked_generation_equals_one_call(&model, &opts);
    }
}

fn chunked_generation_equals_one_call(model: &Model, opts: &GenerateOptions) {
    let decoder = Decoder::new(model);
    let whole = generate(&decoder, &[3, 1, 4], opts).unwrap();
    assert_eq!(whole.len(), 90);
    for chunk in [1, 3, 7, 64] {
        let mut run = Generation::new(model, &[3, 1, 4], opts.clone()).unwrap();
        let mut ids = Vec::new();
        while !run.is_done() {
            let got = run.next_chunk(&decoder, chunk, None).unwrap();
            assert!(!got.is_empty() && got.len() <= chunk);
            ids.extend(got);
        }
        assert_eq!(ids, whole, "chunks of {chunk}, {:?}", opts.window);
        assert!(run.next_chunk(&decoder, chunk, None).unwrap().is_empty());
    }
}

#[test]
fn a_stop_id_ends_a_chunked_generation_right_after_it() {
    let model = wide_model(10);
    let decoder = Decoder::new(&model);
    let mut opts = GenerateOptions {
        max_new_tokens: 50,
        sampling: SamplingParams::default(),
        seed: 0,
        stop: vec![],
        window: Default::default(),
    };
    let free = generate(&decoder, &[1], &opts).unwrap();
    opts.stop = vec![free[4]];
    let first = free.iter().position(|&t| t == free[4]).unwrap();
    let mut run = Generation::new(&model, &[1], opts).unwrap();
    let mut ids = Vec::new();
    while !run.is_done() {
        ids.extend(run.next_chunk(&decoder, 2, None).unwrap());
    }
    assert_eq!(ids, free[..=first]);
}

/// Llama's block at two-lane width: RMSNorm, RoPE, SwiGLU, no biases, 2 key/value heads
/// for 4 query heads.
fn llama_config() -> Config {
    Config {
        d_model: 128,
        n_heads: 4,
        n_kv_heads: Some(2),
        d_ff: 96,
        attn_bias: false,
        mlp_bias: false,
        activation: Activation::SwiGlu,
        norm: Norm::RmsNorm,
        position: Position::Rope,
        ..wide_config()
    }
}

/// One lane only (narrower than two lanes need) and a vocabulary below one head split.
fn narrow_config() -> Config {
    Config {
        d_model: 48,
        n_heads: 2,
        d_ff: 70,
        vocab_size: 13,
        ..wide_config()
    }
}

/// Feeds 6 sequences of different lengths through one batch, a step at a time (rows
/// dropping out as their sequences end, so steps have 6, 5, ..., 1 rows: four-row tiles
/// and single rows), and returns each sequence's logits per position.
fn batched_logits(decoder: &Decoder, team: Option<&Team>, seqs: &[Vec<u32>]) -> Vec<Vec<Vec<f32>>> {
    let v = decoder.model().config.vocab_size;
    let mut state = BatchState::new(decoder.model(), seqs.len()).unwrap();
    let mut out = vec![Vec::new(); seqs.len()];
    let longest = seqs.iter().map(Vec::len).max().unwrap();
    for t in 0..longest {
        let rows: Vec<usize> = (0..seqs.len()).filter(|&s| seqs[s].len() > t).collect();
        let tokens: Vec<u32> = rows.iter().map(|&s| seqs[s][t]).collect();
        state.step(decoder, team, &rows, &tokens);
        for (i, &s) in rows.iter().enumerate() {
            out[s].push(state.logits[i * v..][..v].to_vec());
        }
    }
    out
}

#[test]
fn a_batch_step_gives_every_row_the_bits_of_decoding_it_alone() {
    for config in [
        wide_config(),
        one_head_config(),
        llama_config(),
        narrow_config(),
    ] {
        let model = scaled_model(config.clone(), 9);
        let decoder = Decoder::new(&model);
        let v = config.vocab_size as u32;
        let seqs: Vec<Vec<u32>> = (0..6)
            .map(|s| {
                (0..(40 - 6 * s))
                    .map(|i| (i * 7 + s * 11) as u32 % v)
                    .collect()
            })
            .collect();
        let alone: Vec<_> = seqs
            .iter()
            .map(|ids| decoded_logits(&decoder, None, ids))
            .collect();
        assert_eq!(batched_logits(&decoder, None, &seqs), alone, "{config:?}");
        let shared = with_helper(|team| batched_logits(&decoder, Some(team), &seqs));
        assert_eq!(shared, alone, "{config:?}, with the helper thread");
    }
}

#[test]
fn a_copy_into_a_sequence_sharing_a_start_copies_the_rest_to_the_same_bits() {
    for config in [wide_config(), llama_config()] {
        let model = scaled_model(config.clone(), 10);
        let decoder = Decoder::new(&model);
        let v = config.vocab_size;
        let (parent, other): (Vec<u32>, Vec<u32>) = (vec![1, 2, 3, 4, 5, 6], vec![1, 2, 3, 9]);
        let mut state = BatchState::new(&model, 2).unwrap();
        for (s, ids) in [&parent, &other].into_iter().enumerate() {
            for &tok in ids {
                state.step(&decoder, None, &[s], &[tok]);
            }
        }
        // Sequence 1 shares 3 positions with sequence 0; the copy writes the other 3.
        state.copy_sequence(&model, None, (0, 1), 3);
        assert_eq!(state.len(1), parent.len());
        state.step(&decoder, None, &[0, 1], &[7, 8]);
        for (row, next) in [7, 8].into_iter().enumerate() {
            let mut alone = parent.clone();
            alone.push(next);
            let want = decoded_logits(&decoder, None, &alone);
            let got = &state.logits[row * v..][..v];
            assert_eq!(got, &want[want.len() - 1][..], "{config:?}, next id {next}");
        }
    }
}

/// A model in bfloat16 decodes from 2-byte weights; a float32 model holding the same
/// rounded values decodes from 4-byte ones. Widening a bfloat16 is exact and the products
/// keep their order, so one sequence and a batch give the same bits either way, with and
/// without the helper thread.
#[test]
fn bfloat16_weights_decode_to_the_bits_of_the_same_values_in_float32() {
    use tinylm::kernels::bf16::Dtype;
    for config in [wide_config(), llama_config(), narrow_config()] {
        let mut half = scaled_model(config.clone(), 12);
        half.set_dtype(Dtype::Bf16).unwrap();
        assert!(half.params().iter().all(|p| p.to_bits() & 0xffff == 0));
        let full = Model::from_params(config.clone(), half.params().to_vec()).unwrap();
        assert_eq!(full.dtype(), Dtype::F32);
        let (dec_half, dec_full) = (Decoder::new(&half), Decoder::new(&full));
        // The panels and the head are stored in 2 bytes a weight, not 4.
        let bytes = |dec: &Decoder| dec.packed().matrix_bytes(dec.model());
        assert_eq!(2 * bytes(&dec_half), bytes(&dec_full), "{config:?}");
        let v = config.vocab_size as u32;
        let seqs: Vec<Vec<u32>> = (0..3)
            .map(|s| {
                (0..(20 - 5 * s))
                    .map(|i| (i * 5 + s * 3) as u32 % v)
                    .collect()
            })
            .collect();
        for ids in &seqs {
            let want = decoded_logits(&dec_full, None, ids);
            assert_eq!(decoded_logits(&dec_half, None, ids), want, "{config:?}");
            let shared = with_helper(|team| decoded_logits(&dec_half, Some(team), ids));
            assert_eq!(shared, want, "{config:?}, with the helper thread");
        }
        assert_eq!(
            batched_logits(&dec_half, None, &seqs),
            batched_logits(&dec_full, None, &seqs),
            "{config:?}, batched"
        );
    }
}

/// Every training step refuses a bfloat16 model and leaves its parameters as they were;
/// back in float32 the same steps run.
#[test]
fn a_bfloat16_model_refuses_to_train() {
    use tinylm::batch::BatchRunner;
    use tinylm::kernels::bf16::Dtype;
    use tinylm::optim::{AdamW, AdamWConfig};
    let mut model = scaled_model(narrow_config(), 13);
    model.set_dtype(Dtype::Bf16).unwrap();
    let before = model.params().to_vec();
    let (ids, targets) = ([1u32, 2, 3, 4], [2u32, 3, 4, 5]);
    let mut opt = AdamW::new(AdamWConfig::default(), &model.layout).unwrap();
    let mut runner = BatchRunner::new();
    let refusals = [
        runner
            .sgd_step(&mut model, &ids, &targets, 1, 4, 0.1)
            .map(|_| ()),
        runner
            .train_step(&mut model, &mut opt, &ids, &targets, 1, 4, 1, 0.1, None)
            .map(|_| ()),
        runner
            .backward(&model, &ids, &targets, 1, 4, 1.0, false)
            .and_then(|_| runner.adamw_step(&mut model, &mut opt, 0.1))
            .map(|_| ()),
    ];
    for refusal in refusals {
        let err = refusal.unwrap_err().to_string();
        assert!(err.contains("bfloat16") && err.contains("float32"), "{err}");
    }
    assert_eq!(model.params(), &before[..]);
    model.set_dtype(Dtype::F32).unwrap();
    runner
        .sgd_step(&mut model, &ids, &targets, 1, 4, 0.1)
        .unwrap();
    assert_ne!(model.params(), &before[..]);
}

/// A parameter too large for bfloat16 would round to infinity: set_dtype names it and
/// changes nothing.
#[test]
fn a_parameter_beyond_bfloat16_is_refused() {
    use tinylm::kernels::bf16::Dtype;
    let mut model = scaled_model(narrow_config(), 14);
    let name = model.layout.specs[1].name.clone();
    let at = model.layout.specs[1].range().start + 2;
    model.params_mut()[at] = 3.3999e38;
    let before = model.params().to_vec();
    let err = model.set_dtype(Dtype::Bf16).unwrap_err().to_string();
    assert!(err.contains(&name) && err.contains("flat index 2"), "{err}");
    assert_eq!(model.params(), &before[..]);
    assert_eq!(model.dtype(), Dtype::F32);
}
