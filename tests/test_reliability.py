"""Reliability, round two: shared models never deadlock, fork is safe, impossible sizes
are errors, Ctrl-C always works, and every argument follows one strict rule.

Everything that could hang runs in a subprocess with a timeout, so a regression fails the
test instead of stopping the suite.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import tinylm
from conftest import default_sigint

ROOT = Path(__file__).resolve().parent.parent


def run_python(code: str, timeout: float, *args: str) -> subprocess.CompletedProcess[str]:
    """Runs ``code`` in a fresh interpreter; a hang fails with the timeout."""
    try:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"the child hung for {timeout} s:\n{exc.stdout}\n{exc.stderr}")


# ------------------------------------------------------------------------------ two threads

#: Each public call on one shared model, as the child script names it.
CALLS = {
    "generate": "m.generate([1, 2, 3], 40, temperature=0.8, seed=1)",
    "logits": "m.logits(x)",
    "loss": "m.loss(x[:, :-1], x[:, 1:])",
    "gradients": "m.gradients(x[:, :-1], x[:, 1:])",
    "train_step": "m._core.train_step(opt, x[:, :-1], x[:, 1:], 1e-4, 1.0)",
    "train": "tinylm.train(m, data, None, cfg, progress=False)",
    "load_state_dict": "m.load_state_dict(state)",
    "save": "m.save(os.path.join(tmp, f'm{i}.safetensors'))",
}

PAIR_SCRIPT = """
import os, sys, tempfile, threading
import numpy as np, tinylm
from tinylm import _core
first, second = sys.argv[1], sys.argv[2]
m = tinylm.Transformer.from_bundled("shakespeare")
x = np.random.default_rng(0).integers(0, 65, (16, 64))
data = np.random.default_rng(1).integers(0, 65, 4000)
cfg = tinylm.TrainConfig(steps=3, batch_size=8, eval_interval=100, warmup_steps=1)
opt = _core.AdamW(m._core, 0.9, 0.99, 1e-8, 0.1)
state = m.state_dict()
tmp = tempfile.mkdtemp()
calls = CALLS
errors = []
def work(name):
    try:
        for i in range(6):
            exec(calls[name], globals(), {"i": i})
    except BaseException as exc:
        errors.append(f"{name}: {exc!r}")
threads = [threading.Thread(target=work, args=(n,)) for n in (first, second)]
[t.start() for t in threads]
[t.join() for t in threads]
print("errors:", errors)
"""

PAIRS = list(itertools.combinations_with_replacement(sorted(CALLS), 2))


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=[f"{a}+{b}" for a, b in PAIRS])
def test_two_threads_sharing_a_model_never_deadlock(first: str, second: str):
    script = PAIR_SCRIPT.replace("calls = CALLS", f"calls = {CALLS!r}")
    result = run_python(script, 120, first, second)
    assert result.returncode == 0, result.stderr
    assert "errors: []" in result.stdout, result.stdout


def test_calls_on_different_models_run_side_by_side():
    # A long generation on one model does not hold up a call on another one.
    code = """
    import threading, time, tinylm
    a = tinylm.Transformer.from_bundled("shakespeare")
    b = tinylm.Transformer.from_bundled("shakespeare")
    t = threading.Thread(target=lambda: a.generate([1], 6000))
    t.start(); time.sleep(0.2)
    start = time.perf_counter(); b.logits([[1, 2, 3]]); took = time.perf_counter() - start
    t.join()
    print("took", took)
    """
    result = run_python(code, 120)
    assert result.returncode == 0, result.stderr
    assert float(result.stdout.split()[-1]) < 1.0, result.stdout


# ------------------------------------------------------------------------------ fork


def test_a_forked_child_works_after_the_parent_used_tinylm():
    code = """
    import multiprocessing as mp, numpy as np, tinylm
    model = tinylm.Transformer.from_bundled("shakespeare")
    tok = model.tokenizer
    model.logits(np.zeros((8, 64), dtype=np.int64))   # the pool's threads are running
    model.generate(tok.encode("ROMEO:"), 50)           # so is the decode helper

    def child(i):
        return (tok.encode("To be"), model.logits([[1, 2, 3]]).shape,
                len(model.generate(tok.encode("ROMEO:"), 30, temperature=0.8, seed=i)))

    with mp.get_context("fork").Pool(2) as pool:
        results = pool.map(child, range(4))
    print(results)
    """
    result = run_python(code, 120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("(1, 3, 65)") == 4, result.stdout


def test_a_forked_child_gives_the_parents_numbers():
    code = """
    import multiprocessing as mp, numpy as np, tinylm
    model = tinylm.Transformer.from_bundled("shakespeare")
    x = np.random.default_rng(0).integers(0, 65, (4, 64))
    here = model.logits(x)

    def logits_in_child():
        return model.logits(x)

    with mp.get_context("fork").Pool(1) as pool:
        there = pool.apply(logits_in_child)
    print(np.array_equal(here, there))
    """
    result = run_python(code, 120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "True"


# ------------------------------------------------------------------------------ Ctrl-C

LONG_GENERATE = """
import sys, tinylm
model = tinylm.Transformer.from_bundled("shakespeare")
print("ready", flush=True)
try:
    model.generate([1, 2, 3], 10**12, temperature=0.8, seed=1)
except KeyboardInterrupt:
    print("interrupted", flush=True)
    sys.exit(3)
"""


def _interrupt_after_ready(cmd: list[str], wait: float = 1.0) -> tuple[float, str, int]:
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=default_sigint,
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(wait)
        sent = time.perf_counter()
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=30)
        return time.perf_counter() - sent, out, proc.returncode
    finally:
        proc.kill()


def test_sigint_interrupts_a_long_generate_within_half_a_second():
    delay, out, code = _interrupt_after_ready([sys.executable, "-c", LONG_GENERATE])
    assert code == 3 and "interrupted" in out
    assert delay < 0.5, f"KeyboardInterrupt came {delay:.2f} s after SIGINT"


def test_sigint_interrupts_a_stream_and_keeps_what_was_produced():
    code = """
    import sys, tinylm
    model = tinylm.Transformer.from_bundled("shakespeare")
    got = []
    print("ready", flush=True)
    try:
        for i in model.stream_ids([1, 2, 3], 10**12, temperature=0.8, seed=1):
            got.append(i)
    except KeyboardInterrupt:
        print("kept", len(got), flush=True)
    """
    delay, out, _ = _interrupt_after_ready([sys.executable, "-c", textwrap.dedent(code)])
    kept = int(out.split("kept")[1])
    assert kept > 50  # a second's worth of ids, hundreds per second at least
    assert delay < 0.5


@pytest.mark.parametrize(
    "call",
    [
        "model.beam_search([1, 2, 3], 10**9, num_beams=4)",
        'model.score("ROMEO: But soft, what light through yonder window breaks? " * 20000)',
    ],
    ids=["beam_search", "score"],
)
def test_sigint_interrupts_a_long_search_or_score(call: str):
    code = f"""
    import tinylm
    model = tinylm.Transformer.from_bundled("shakespeare")
    model.score("warm up the NumPy API")
    print("ready", flush=True)
    try:
        {call}
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    """
    delay, out, _ = _interrupt_after_ready([sys.executable, "-c", textwrap.dedent(code)])
    assert "interrupted" in out
    assert delay < 0.5, f"KeyboardInterrupt came {delay:.2f} s after SIGINT"


def test_sigint_during_the_first_call_that_returns_an_array_is_a_keyboard_interrupt():
    # NumPy's C API used to be looked up on the first array made, and that lookup failed
    # with a panic when a Ctrl-C was pending.
    code = """
    import tinylm
    model = tinylm.Transformer.from_bundled("shakespeare")
    text = "ROMEO: But soft, what light through yonder window breaks? " * 2000
    print("ready", flush=True)
    try:
        model.score(text)
        import time; time.sleep(5)
    except KeyboardInterrupt:
        print("interrupted", flush=True)
    except BaseException as exc:
        print("other", type(exc).__name__, exc, flush=True)
    """
    _, out, _ = _interrupt_after_ready([sys.executable, "-c", textwrap.dedent(code)], wait=0.2)
    assert "interrupted" in out, out


def test_a_fifo_as_weights_is_an_error_not_a_hang(tmp_path: Path):
    fifo = tmp_path / "weights.fifo"
    os.mkfifo(fifo)
    code = """
    import sys, tinylm
    try:
        tinylm.Transformer.load(sys.argv[1])
    except tinylm.FormatError as exc:
        print("error:", exc)
    """
    result = run_python(code, 30, str(fifo))
    assert "not a regular file" in result.stdout, result.stderr


def test_a_fifo_as_a_tokenizer_file_is_an_error_not_a_hang(tmp_path: Path):
    fifo = tmp_path / "tokenizer.fifo"
    os.mkfifo(fifo)
    code = """
    import sys, tinylm
    for read in (tinylm.Tokenizer.load, tinylm.Tokenizer.from_hf_json,
                 tinylm.Tokenizer.from_tiktoken):
        try:
            read(sys.argv[1])
        except tinylm.FormatError as exc:
            print("error:", exc)
    """
    result = run_python(code, 30, str(fifo))
    assert result.stdout.count("not a regular file") == 3, result.stdout + result.stderr


def test_a_tokenizer_file_that_is_not_one_is_an_error_naming_it(tmp_path: Path):
    latin1 = tmp_path / "latin1.json"
    latin1.write_bytes(b'{"kind": "char", "chars": "caf\xe9"}')
    with pytest.raises(tinylm.FormatError, match=r"latin1\.json: not UTF-8 text .*offset 30"):
        tinylm.Tokenizer.load(latin1)
    broken = tmp_path / "broken.json"
    broken.write_text('{"kind": ')
    with pytest.raises(tinylm.TokenizerError, match=r"broken\.json: "):
        tinylm.Tokenizer.load(broken)


def test_saving_onto_a_fifo_is_refused_and_leaves_it(tmp_path: Path):
    fifo = tmp_path / "out.fifo"
    os.mkfifo(fifo)
    model = tinylm.Transformer.from_bundled("shakespeare")
    with pytest.raises(OSError, match="not a regular file"):
        model.save(fifo)  # the core's atomic write
    with pytest.raises(OSError, match="not a regular file"):
        model.tokenizer.save(fifo)  # the Python one
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)


def test_saving_through_a_symlink_replaces_its_target_and_keeps_the_link(tmp_path: Path):
    model = tinylm.Transformer.from_bundled("shakespeare")
    for name, save in (("m.safetensors", model.save), ("t.json", model.tokenizer.save)):
        target, link = tmp_path / f"target-{name}", tmp_path / name
        target.write_text("old")
        link.symlink_to(target)
        save(link)
        assert link.is_symlink() and target.read_bytes() != b"old"
    assert tinylm.Transformer.load(tmp_path / "m.safetensors").num_parameters == (
        model.num_parameters
    )


# ------------------------------------------------------------------------------ devices


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom"])
def test_a_device_as_weights_is_an_error(device: str):
    if not os.path.exists(device):
        pytest.skip(f"{device} does not exist here")
    with pytest.raises(tinylm.FormatError, match="not a regular file"):
        tinylm.Transformer.load(device)
    with pytest.raises(tinylm.FormatError, match="not a regular file"):
        tinylm._core.detect_format(device)
    with pytest.raises(tinylm.FormatError, match="not a regular file"):
        tinylm.Tokenizer.load(device)
    with pytest.raises(tinylm.FormatError, match="not a regular file"):
        tinylm.Tokenizer.from_gpt2_files(device, device)


def test_a_device_as_training_data_is_an_error(tmp_path: Path):
    if not os.path.exists("/dev/zero"):
        pytest.skip("/dev/zero does not exist here")
    result = subprocess.run(
        [sys.executable, "-m", "tinylm", "train", "--data", "/dev/zero", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "not a regular file" in result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------------------------------------ impossible sizes

HUGE = {
    "vocab_size": 65,
    "d_model": 4096,
    "n_layers": 15,
    "n_heads": 8,
    "d_ff": 1,
    "max_seq_len": 64,
    "eps": 1e-5,
    "attn_bias": True,
    "tie_embeddings": True,
}  # 1.007e9 parameters (the limit is 2^30), 4.03 GB of float32


def tiny_safetensors_claiming_a_huge_model() -> bytes:
    header = {
        "__metadata__": {"format": "tinylm", "config": json.dumps(HUGE)},
        "ln_f.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    }
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + b"\0" * 8


def go_json_claiming_a_huge_model() -> bytes:
    c, p = 4096, 1
    doc = {
        "d_model": c,
        "n_layers": 15,
        "n_heads": 8,
        "vocab": ["a", "b"],
        "weights": {
            "pos_embed.weight": [[0.0] * c for _ in range(p)],
            "blocks.0.ff.linear1.weight": [[0.0] for _ in range(c)],
        },
    }
    return json.dumps(doc).encode()


UNDER_4_GIB = """
import resource, sys
resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))
import numpy as np, tinylm
try:
    WORK
except (tinylm.TinyLMError, MemoryError) as exc:
    print(type(exc).__name__, exc)
"""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("huge.safetensors", tiny_safetensors_claiming_a_huge_model, "missing tensor"),
        ("huge.json", go_json_claiming_a_huge_model, "too small to hold"),
    ],
)
def test_a_tiny_file_claiming_a_huge_model_is_an_error_before_allocating(
    tmp_path: Path, name, content, message
):
    path = tmp_path / name
    path.write_bytes(content())
    result = run_python(
        UNDER_4_GIB.replace("WORK", "tinylm.Transformer.load(sys.argv[1])"), 60, str(path)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "FormatError" in result.stdout and message in result.stdout, result.stdout


def test_a_model_too_big_for_memory_is_a_memory_error_naming_it():
    # 4.03 GB of parameters, under the 2^30-parameter limit. A 4 GiB address space holds
    # them if the interpreter itself takes less than 260 MB, so the limit here is 3 GiB.
    work = (
        "tinylm.Transformer(tinylm.Config(vocab_size=65, d_model=4096, n_layers=15, "
        "n_heads=8, d_ff=1, max_seq_len=64))"
    )
    under_3_gib = UNDER_4_GIB.replace("(4 << 30, 4 << 30)", "(3 << 30, 3 << 30)")
    result = run_python(under_3_gib.replace("WORK", work), 60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("MemoryError"), result.stdout
    assert "the parameters" in result.stdout


def test_a_batch_too_big_for_memory_is_a_memory_error_naming_it():
    # 7.8 GiB of activations: under the 16 GiB limit, over what 4 GiB of address space holds.
    work = "tinylm.Transformer.from_bundled('shakespeare').logits(np.zeros((4800, 64), np.int64))"
    result = run_python(UNDER_4_GIB.replace("WORK", work), 60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("MemoryError"), result.stdout
    assert "activations" in result.stdout


@pytest.mark.parametrize("call", ["logits", "loss"])
def test_a_batch_over_the_activation_limit_is_named_whole(call):
    # loss splits its batch into shards; the error still names the batch it was given.
    model = tinylm.Transformer.from_bundled("shakespeare")
    ids = np.zeros((300_000, 64), np.int64)
    args = (ids,) if call == "logits" else (ids, ids)
    with pytest.raises(ValueError, match="a batch of 300000 sequences of 64 tokens needs 684 GiB"):
        getattr(model, call)(*args)


def test_a_sparse_8_gib_file_is_an_error_without_reading_it(tmp_path: Path):
    path = tmp_path / "sparse.safetensors"
    with open(path, "wb") as f:
        f.truncate(8 << 30)  # all zeros, no disk used
    result = run_python(
        UNDER_4_GIB.replace("WORK", "tinylm.Transformer.load(sys.argv[1])"), 60, str(path)
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith("FormatError"), result.stdout
    assert "invalid safetensors file" in result.stdout


# ------------------------------------------------------------------------------ one strict rule


@pytest.fixture(scope="module")
def model() -> tinylm.Transformer:
    return tinylm.Transformer.from_bundled("shakespeare")


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda m: m.generate([1.9, 2.7], 3), TypeError, "ids must hold int token ids"),
        (lambda m: m.generate("12", 3), TypeError, "ids must be a sequence of int"),
        (lambda m: m.generate(np.array([1.0, 2.0]), 3), TypeError, "ids must hold integers"),
        (lambda m: m.generate([1, 2], 3.0), TypeError, "max_new_tokens must be an int"),
        (lambda m: m.generate([1, 2], 3, stop="10"), TypeError, "stop strings are matched"),
        (lambda m: m.generate([1, 2], 3, stop=[1.5]), TypeError, "stop must hold int"),
        (lambda m: m.generate([1, 2], 3, top_k=2.5), TypeError, "top_k must be an int"),
        (lambda m: m.generate([1, 2], 3, top_k=float("nan")), TypeError, "top_k must be an int"),
        (lambda m: m.generate([1, 2], 3, temperature="hot"), TypeError, "temperature must be"),
        (lambda m: m.tokenizer.decode([1.9, 2.7]), TypeError, "ids must hold int token ids"),
        (lambda m: m.tokenizer.decode("12"), TypeError, "ids must be a sequence of int"),
        (
            lambda m: tinylm.train(m, [1.5] * 200, None, tinylm.TrainConfig(steps=1)),
            TypeError,
            "training data must hold integer token ids",
        ),
        (
            lambda m: tinylm.train(m, ["1"] * 200, None, tinylm.TrainConfig(steps=1)),
            TypeError,
            "training data must hold integer token ids",
        ),
        (lambda m: m.logits([[1.5, 2.0]]), TypeError, "must be integers"),
    ],
)
def test_non_integers_are_type_errors_naming_the_argument(model, call, error, message):
    with pytest.raises(error, match=message):
        call(model)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (
            lambda m: m.generate([2**63], 3),
            "token id 9223372036854775808 at position 0 is out of range",
        ),
        (lambda m: m.generate([1], 2**64), "max_new_tokens must be between 0 and"),
        (lambda m: m.generate([1], 3, top_k=10**30), "top_k must be between 1 and"),
        (lambda m: m.tokenizer.decode([2**70]), "is out of range"),
        (lambda m: m.generate([1], -1), "max_new_tokens must be between 0 and"),
        (lambda m: m.generate([1], 3, top_p=1.5), r"top_p must be in \(0, 1\]"),
        (
            lambda m: m.generate([1], 3, temperature=float("inf")),
            "temperature must be >= 0 and finite",
        ),
        (lambda m: m.generate(np.array([[1, 2]]), 3), "ids must be 1-D"),
        (lambda m: m.save(""), "the path is empty"),
        (lambda m: m.stream("RO", 3, stop=""), "stop strings must not be empty"),
    ],
)
def test_out_of_range_values_are_value_errors_naming_the_argument(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_a_dict_is_needed_by_load_state_dict(model):
    with pytest.raises(TypeError, match="state_dict"):
        model.load_state_dict({"ln_f.weight": {"not": "an array"}})
    with pytest.raises(TypeError, match="needs a mapping"):
        model.load_state_dict([("ln_f.weight", np.ones(128, np.float32))])


def test_a_float64_value_beyond_float32_is_named_as_itself_by_load_state_dict():
    model = tinylm.Transformer(tinylm.Config(vocab_size=8, d_model=8, n_layers=1, n_heads=2))
    before = model.state_dict()
    state = {k: v.astype(np.float64) for k, v in before.items()}
    state["ln_f.weight"][3] = -1e39
    message = r"state_dict\['ln_f.weight'\] holds -1e\+39 at flat index 3, beyond float32's"
    with pytest.raises(ValueError, match=message):
        model.load_state_dict(state)
    after = model.state_dict()
    assert all(np.array_equal(before[k], after[k]) for k in before)


def test_word_level_wants_a_list_not_a_string():
    with pytest.raises(TypeError, match=r"vocab must be a list of words.*text\.split\(\)"):
        tinylm.Tokenizer.word_level("a b")


# ------------------------------------------------------------------------------ non-finite


@pytest.fixture(scope="module")
def huge_weights_model() -> tinylm.Transformer:
    m = tinylm.Transformer.from_bundled("shakespeare")
    state = {k: np.full_like(v, 3e38) for k, v in m.state_dict().items()}
    m.load_state_dict(state)  # finite, so accepted
    return m


def test_non_finite_logits_raise_in_logits(huge_weights_model):
    with pytest.raises(tinylm.NonFiniteError, match="non-finite value"):
        huge_weights_model.logits([[1, 2, 3]])


def test_non_finite_logits_raise_in_loss(huge_weights_model):
    with pytest.raises(tinylm.NonFiniteError, match="the loss is"):
        huge_weights_model.loss([[1, 2, 3]], [[2, 3, 4]])


def test_non_finite_logits_raise_in_generate(huge_weights_model):
    with pytest.raises(tinylm.NonFiniteError, match="at generated token 0"):
        huge_weights_model.generate([1, 2, 3], 5)


# ------------------------------------------------------------------------------ streaming


def test_streamed_ids_are_the_generated_ids(model):
    ids = model.tokenizer.encode("ROMEO:")
    full = model.generate(ids, 300, temperature=0.8, top_k=20, seed=7)
    assert ids + list(model.stream_ids(ids, 300, temperature=0.8, top_k=20, seed=7)) == full


def test_streamed_text_joins_to_the_generated_text(model):
    text = model.generate_text("ROMEO:", 300, temperature=0.8, seed=3)
    pieces = list(model.stream("ROMEO:", 300, temperature=0.8, seed=3))
    assert "ROMEO:" + "".join(pieces) == text


def test_a_stop_string_ends_the_text_right_after_it_even_across_tokens(model):
    full = model.generate_text("ROMEO:", 300, temperature=0.8, seed=3)
    stop = full[20:23]  # three characters: three tokens of this character model
    cut = model.generate_text("ROMEO:", 300, temperature=0.8, seed=3, stop=stop)
    assert cut == full[: full.index(stop, len("ROMEO:")) + len(stop)]


def test_a_generation_refuses_to_go_on_after_the_model_changed(model):
    m = tinylm.Transformer.from_bundled("shakespeare")
    stream = m.stream_ids([1, 2, 3], 10**6)
    next(stream)
    m.load_state_dict(m.state_dict())
    with pytest.raises(ValueError, match="changed"):
        for _ in stream:
            pass


# ------------------------------------------------------------------------------ checkpoints


def _checkpoint_with(tmp_path: Path, edit) -> Path:
    """A real checkpoint whose train_state metadata went through ``edit``."""
    from tinylm import _core

    tok = tinylm.Tokenizer.char_level("abcdefgh ")
    model = tinylm.Transformer(
        tinylm.Config(vocab_size=tok.vocab_size, d_model=8, n_layers=1, n_heads=2, max_seq_len=8),
        tokenizer=tok,
    )
    data = np.array(tok.encode("abcdefgh " * 40))
    out = tmp_path / "run"
    tinylm.train(
        model,
        data,
        None,
        tinylm.TrainConfig(steps=2, batch_size=2),
        out_dir=out,
        progress=False,
        data_info={"sha256": "0" * 64, "val_fraction": 0.1},
    )
    path = out / "ckpt.safetensors"
    core, opt, tk, meta = _core.Model.load_checkpoint(str(path))
    state = json.loads(meta["train_state"])
    edit(state)
    meta["train_state"] = json.dumps(state)
    core.save_checkpoint(str(path), opt, tk, meta)
    return path


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda s: s["train_config"].update(future_knob=1), "unknown setting(s) future_knob"),
        (lambda s: s["data"].pop("sha256"), "must record the training data's sha256"),
        (lambda s: s["train_config"].update(steps=-5), "train_config is invalid"),
    ],
    ids=["unknown_key", "no_sha256", "bad_value"],
)
def test_a_checkpoint_from_elsewhere_is_a_one_line_error_on_resume(tmp_path, edit, message):
    path = _checkpoint_with(tmp_path, edit)
    text = tmp_path / "data.txt"
    text.write_text("abcdefgh " * 40)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tinylm",
            "train",
            "--data",
            str(text),
            "--out",
            str(path.parent),
            "--resume",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
