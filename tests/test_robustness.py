"""Nothing lost, nothing shared by accident: interrupted saves and runs, threads, memory,
determinism, and panics."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest

import tinylm
from tinylm import _core


def test_a_panic_in_the_core_is_a_tinylm_error_not_a_panic_exception():
    with pytest.raises(tinylm.TinyLMError, match=r"internal error in tinylm.*boom") as err:
        _core._panic_for_tests("boom")
    assert isinstance(err.value, Exception)  # `except Exception` catches it


# ------------------------------------------------------------------------------ interrupted saves

SAVER = textwrap.dedent(
    """
    import sys, numpy as np, tinylm
    path = sys.argv[1]
    cfg = tinylm.Config(vocab_size=512, d_model=512, n_layers=8, n_heads=8, max_seq_len=64)
    model = tinylm.Transformer(cfg, seed=0)   # 25M parameters: a 100 MB file
    state = model.state_dict()
    i = 0
    print("ready", flush=True)
    while True:
        i += 1
        state["ln_f.bias"][:] = i
        model.load_state_dict(state)
        model.save(path)
    """
)


def test_sigkill_during_saves_leaves_the_previous_file_intact(tmp_path: Path):
    path = tmp_path / "model.safetensors"
    proc = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout.readline().strip() == "ready"
        deadline = time.time() + 60
        while not path.exists() and time.time() < deadline:
            time.sleep(0.05)
        rng = np.random.default_rng(0)
        for _ in range(4):  # kill it at several moments of a save
            time.sleep(rng.uniform(0.05, 0.6))
            proc.send_signal(signal.SIGSTOP)  # freeze mid-write, read, then go on
            model = tinylm.Transformer.load(path)
            bias = model.state_dict()["ln_f.bias"]
            assert np.all(bias == bias[0]) and bias[0] >= 1
            proc.send_signal(signal.SIGCONT)
        time.sleep(rng.uniform(0.05, 0.6))
        proc.kill()  # SIGKILL, in the middle of some save
        proc.wait(timeout=30)
        model = tinylm.Transformer.load(path)
        assert model.state_dict()["ln_f.bias"][0] >= 1
        leftovers = [p.name for p in tmp_path.iterdir() if p.name != "model.safetensors"]
        # Only temporary files of the killed save may remain, never under the final name.
        assert all(name.startswith(".model.safetensors.tmp") for name in leftovers), leftovers
    finally:
        if proc.poll() is None:
            proc.kill()


def test_sigterm_then_resume_reproduces_the_uninterrupted_losses(tmp_path: Path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("Now is the winter of our discontent made glorious summer.\n" * 150)
    common = [
        "--data",
        str(corpus),
        "--d-model",
        "32",
        "--n-layers",
        "2",
        "--n-heads",
        "2",
        "--context",
        "16",
        "--steps",
        "300",
        "--batch-size",
        "4",
        "--eval-interval",
        "25",
        "--eval-batches",
        "2",
        "--quiet",
    ]
    run = [sys.executable, "-m", "tinylm", "train"]
    subprocess.run(
        [*run, *common, "--out", str(tmp_path / "straight")],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    proc = subprocess.Popen(
        [*run, *common, "--out", str(tmp_path / "cut")],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    ckpt = tmp_path / "cut" / "ckpt.safetensors"
    deadline = time.time() + 120
    while not ckpt.exists() and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    if proc.returncode == 0:
        pytest.skip("the run finished before SIGTERM arrived")
    assert proc.returncode == 130 and "SIGTERM" in stderr
    subprocess.run(
        [*run, *common, "--out", str(tmp_path / "cut"), "--resume"],
        check=True,
        capture_output=True,
        cwd=tmp_path,
        timeout=300,
    )
    straight = json.loads((tmp_path / "straight" / "losses.json").read_text())
    resumed = json.loads((tmp_path / "cut" / "losses.json").read_text())
    assert resumed["train_losses"] == straight["train_losses"]  # bit for bit (JSON floats)
    assert resumed["val_losses"] == straight["val_losses"]


# ------------------------------------------------------------------------------ threads


@pytest.fixture(scope="module")
def model() -> tinylm.Transformer:
    cfg = tinylm.Config(vocab_size=65, d_model=128, n_layers=2, n_heads=4, max_seq_len=64)
    return tinylm.Transformer(cfg, seed=1)


def test_threads_generating_at_once_get_what_one_thread_gets(model):
    calls = [
        dict(ids=[i % 65], max_new_tokens=40, temperature=0.5 + i % 3, top_k=5 + i, seed=100 + i)
        for i in range(12)
    ]
    expected = [model.generate(**c) for c in calls]
    results: list = [None] * len(calls)

    def worker(k: int) -> None:
        for i in range(k, len(calls), 4):
            results[i] = model.generate(**calls[i])

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == expected


def _ticks_during(call) -> int:
    """How far a pure-Python counter thread gets while `call` runs in this thread."""
    ticks = 0
    stop = threading.Event()

    def counter() -> None:
        nonlocal ticks
        while not stop.is_set():
            ticks += 1

    t = threading.Thread(target=counter)
    t.start()
    try:
        time.sleep(0.05)
        before = ticks
        call()
        return ticks - before
    finally:
        stop.set()
        t.join()


def test_generation_releases_the_gil(model):
    # One long call (past the context, the cache is rebuilt for every token): were the GIL
    # held, the counter could not move at all until it returned.
    assert _ticks_during(lambda: model.generate([1], max_new_tokens=300, stop=[])) > 10_000


def test_training_releases_the_gil(model):
    opt = _core.AdamW(model._core, 0.9, 0.99, 1e-8, 0.0)
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 65, (48, 64)), rng.integers(0, 65, (48, 64))
    assert _ticks_during(lambda: model._core.train_step(opt, x, y, 0.0, None)) > 10_000


# ------------------------------------------------------------------------------ memory

RSS_SCRIPT = textwrap.dedent(
    """
    import json, sys, numpy as np, tinylm
    from tinylm import _core

    def rss_mib():
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * 4096 / 2**20

    cfg = tinylm.Config(vocab_size=65, d_model=64, n_layers=2, n_heads=4, max_seq_len=32)
    model = tinylm.Transformer(cfg, seed=0)
    opt = _core.AdamW(model._core, 0.9, 0.99, 1e-8, 0.1)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 65, (8, 32)); y = rng.integers(0, 65, (8, 32))
    for _ in range(100):
        model.generate([1], 10, temperature=1.0, seed=1)
        model._core.train_step(opt, x, y, 1e-3, 1.0)
    base = rss_mib()
    for i in range(10000):
        model.generate([1], 10, temperature=1.0, seed=i)
    after_gen = rss_mib()
    for _ in range(1000):
        model._core.train_step(opt, x, y, 1e-3, 1.0)
    after_train = rss_mib()
    print(json.dumps({"base": base, "after_gen": after_gen, "after_train": after_train}))
    """
)


def test_memory_is_flat_over_many_calls():
    proc = subprocess.run(
        [sys.executable, "-c", RSS_SCRIPT], capture_output=True, text=True, check=True, timeout=600
    )
    rss = json.loads(proc.stdout.strip().splitlines()[-1])
    assert rss["after_gen"] - rss["base"] < 4.0, rss
    assert rss["after_train"] - rss["base"] < 4.0, rss


# ------------------------------------------------------------------------------ determinism


def _train_weights(threads: int) -> dict[str, np.ndarray]:
    previous = tinylm.get_num_threads()
    tinylm.set_num_threads(threads)
    try:
        cfg = tinylm.Config(vocab_size=30, d_model=32, n_layers=2, n_heads=2, max_seq_len=16)
        model = tinylm.Transformer(cfg, seed=3)
        data = np.random.default_rng(0).integers(0, 30, 2000)
        model, _ = tinylm.train(
            model,
            data,
            None,
            tinylm.TrainConfig(steps=12, batch_size=6, eval_interval=100, warmup_steps=2),
            progress=False,
        )
        return model.state_dict()
    finally:
        tinylm.set_num_threads(previous)


def test_same_seed_same_weights_with_one_or_two_threads():
    one, one_again, two = _train_weights(1), _train_weights(1), _train_weights(2)
    for name in one:
        np.testing.assert_array_equal(one[name], one_again[name], err_msg=name)
        np.testing.assert_array_equal(one[name], two[name], err_msg=name)


def test_set_num_threads_rejects_nonsense():
    with pytest.raises(ValueError, match="between 1 and"):
        tinylm.set_num_threads(0)


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="Linux only")
def test_thread_count_defaults_to_the_environment_variable(tmp_path):
    out = subprocess.run(
        [sys.executable, "-c", "import tinylm; print(tinylm.get_num_threads())"],
        env=dict(os.environ, TINYLM_NUM_THREADS="3"),
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "3"
