//! The Go TinyLM's reference values, from its seed weights in `../shared` (beside the
//! repository; see the README's "Test data"). Without them these tests are reported as
//! *ignored*, with the reason, so that the count of passed tests is true: the decision is
//! taken at run time, which `#[ignore]` cannot do, by a libtest-compatible harness
//! (libtest-mimic; `harness = false` in Cargo.toml), so filters and `--list` work as usual.

mod common;

use std::path::Path;
use std::process::ExitCode;

use common::{seed_weights_path, temp_dir};
use libtest_mimic::{Arguments, Completion, Trial};
use tinylm::weights::{self, WeightsFormat};
use tinylm::Workspace;

fn main() -> ExitCode {
    let tests = vec![
        needs_seed("go_reference_logits_and_loss", go_reference_logits_and_loss),
        needs_seed("go_json_round_trip_is_exact", go_json_round_trip_is_exact),
    ];
    libtest_mimic::run(&Arguments::from_args(), tests).exit_code()
}

/// A test of the Go seed file, ignored (with the reason) when the file is absent.
fn needs_seed(name: &str, test: fn(&Path)) -> Trial {
    Trial::ignorable_test(name, move || {
        let path = seed_weights_path();
        if !path.exists() {
            return Ok(Completion::ignored_with(format!(
                "{} is absent (../shared beside the repository, or TINYLM_SHARED)",
                path.display()
            )));
        }
        test(&path);
        Ok(Completion::Completed)
    })
}

fn close(a: f64, b: f64, rel: f64) -> bool {
    (a - b).abs() <= rel * b.abs().max(1e-3)
}

fn go_reference_logits_and_loss(path: &Path) {
    let loaded = weights::load(path).unwrap();
    let model = loaded.model;
    let mut ws = Workspace::new();
    model.forward(&mut ws, &[0, 1], 1, 2).unwrap();
    let logits = ws.logits(&model.config);
    let v = model.config.vocab_size;
    let expected_row0 = [
        (0, 0.3577351046779953),
        (1, 0.7154702093559906),
        (2, 1.0732053140339857),
        (v - 1, 3.2196159421019575),
    ];
    for (i, want) in expected_row0 {
        assert!(
            close(logits[i] as f64, want, 1e-5),
            "row 0 logit {i}: {} vs {want}",
            logits[i]
        );
    }
    let expected_row1 = [
        (0, 0.0973442097341306),
        (1, 0.1946884194682612),
        (v - 1, 0.8760978876071754),
    ];
    for (i, want) in expected_row1 {
        assert!(
            close(logits[v + i] as f64, want, 1e-5),
            "row 1 logit {i}: {} vs {want}",
            logits[v + i]
        );
    }
    let loss = model
        .loss(&mut ws, &[0, 1, 2, 3, 4], &[1, 2, 3, 4, 8], 1, 5)
        .unwrap();
    assert!(close(loss as f64, 2.3959804603732877, 1e-6), "loss {loss}");
}

fn go_json_round_trip_is_exact(seed: &Path) {
    let loaded = weights::load(seed).unwrap();
    assert_eq!(loaded.format, WeightsFormat::GoJson);
    let dir = temp_dir("go-roundtrip");
    let path = dir.join("out.json");
    weights::save(
        &path,
        &loaded.model,
        loaded.tokenizer.as_ref(),
        WeightsFormat::GoJson,
    )
    .unwrap();
    let again = weights::load(&path).unwrap();
    assert_eq!(again.model.params(), loaded.model.params());
    assert_eq!(again.model.config, loaded.model.config);
    assert_eq!(again.tokenizer, loaded.tokenizer);
}
