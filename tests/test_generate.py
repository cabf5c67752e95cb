"""Generation: greedy, sampling, stopping, and the context window."""

from __future__ import annotations

import numpy as np
import pytest

import tinylm
from conftest import random_model

CONFIG = tinylm.Config(vocab_size=20, d_model=16, n_layers=2, n_heads=2, max_seq_len=8)


@pytest.fixture(scope="module")
def model() -> tinylm.Transformer:
    return random_model(CONFIG, seed=3, scale=0.4)


def seen_windows(out: list[int], prompt_len: int, p: int, window: str):
    """(i, the ids the model sees when it chooses out[i]), by the documented rules: "sliding"
    sees the last P ids; "shift" sees every id since the last shift, and when a new id
    would make P + 1 of them, keeps only the last P // 2."""
    seen = out[max(0, prompt_len - p) : prompt_len]
    for i in range(prompt_len, len(out)):
        if window == "sliding":
            yield i, out[max(0, i - p) : i]
            continue
        yield i, list(seen)
        seen.append(out[i])
        if len(seen) == p + 1:
            seen = seen[-(p // 2) :]


@pytest.mark.parametrize("window", ["shift", "sliding"])
def test_greedy_generation_is_the_argmax_of_the_logits(model, window) -> None:
    out = model.generate(
        [1, 2], max_new_tokens=30, window=window, temperature=0.0
    )  # past the context of 8
    assert out[:2] == [1, 2] and len(out) == 32
    for i, seen in seen_windows(out, 2, CONFIG.max_seq_len, window):
        assert out[i] == int(np.argmax(model.logits(seen)[-1])), f"token {i}"


def test_top_k_one_equals_greedy(model) -> None:
    greedy = model.generate([4], max_new_tokens=15, temperature=0.0)
    for seed in range(3):
        assert model.generate([4], 15, temperature=1.3, top_k=1, seed=seed) == greedy


def test_seeded_sampling_is_reproducible(model) -> None:
    a = model.generate([4], 30, temperature=1.0, seed=123)
    b = model.generate([4], 30, temperature=1.0, seed=123)
    c = model.generate([4], 30, temperature=1.0, seed=124)
    assert a == b
    assert a != c


def test_sampling_follows_the_softmax_distribution(model) -> None:
    """First sampled token over many seeds: frequencies close to softmax(logits / T)."""
    temperature = 2.0
    logits = model.logits([7])[-1].astype(np.float64) / temperature
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    n = 4000
    counts = np.bincount(
        [model.generate([7], 1, temperature=temperature, seed=s)[-1] for s in range(n)],
        minlength=CONFIG.vocab_size,
    )
    assert np.abs(counts / n - probs).max() < 0.03


def test_top_k_and_top_p_restrict_the_choices(model) -> None:
    logits = model.logits([5])[-1]
    order = np.argsort(-logits, kind="stable")
    firsts = {model.generate([5], 1, temperature=5.0, top_k=3, seed=s)[-1] for s in range(300)}
    assert firsts <= set(order[:3].tolist()) and len(firsts) > 1
    probs = np.exp(logits - logits.max()) / np.exp(logits - logits.max()).sum()
    keep = int(np.searchsorted(np.cumsum(probs[order]), 0.5) + 1)
    firsts_p = {model.generate([5], 1, temperature=1.0, top_p=0.5, seed=s)[-1] for s in range(300)}
    assert firsts_p <= set(order[:keep].tolist())


def test_stop_ends_generation_right_after_the_stop_id(model) -> None:
    free = model.generate([1], max_new_tokens=20, temperature=0.0)
    stop_at = free[5]
    first = free.index(stop_at, 1)
    out = model.generate([1], max_new_tokens=20, stop=stop_at, temperature=0.0)
    assert out == free[: first + 1]


def test_zero_new_tokens_returns_the_prompt(model) -> None:
    assert model.generate([1, 2, 3], max_new_tokens=0) == [1, 2, 3]


def test_long_prompt_keeps_the_last_context_tokens(model) -> None:
    prompt = list(range(1, 13))  # longer than the context of 8
    out = model.generate(prompt, max_new_tokens=1, temperature=0.0)
    assert out[-1] == int(np.argmax(model.logits(prompt[-8:])[-1]))


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_new_tokens": -1}, "max_new_tokens"),
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"top_k": 0}, "top_k"),
    ],
)
def test_bad_generation_arguments_are_errors(model, kwargs, match) -> None:
    args = {"max_new_tokens": 3, **kwargs}
    with pytest.raises(ValueError, match=match):
        model.generate([1], **args)


def test_generate_text_uses_the_tokenizer() -> None:
    tok = tinylm.Tokenizer.char_level("abcdefghij")
    m = tinylm.Transformer(
        tinylm.Config(vocab_size=10, d_model=8, n_layers=1, n_heads=2, max_seq_len=6), tokenizer=tok
    )
    text = m.generate_text("abc", max_new_tokens=4)
    assert text.startswith("abc") and len(text) == 7


WIDE = tinylm.Config(vocab_size=70, d_model=144, n_layers=2, n_heads=3, d_ff=200, max_seq_len=16)


def test_wide_model_greedy_generation_is_the_argmax_of_the_logits() -> None:
    """d_model 144: generation shares its products with a helper thread, in panels of 64
    columns that do not divide the widths (144, 432, 200)."""
    model = random_model(WIDE, seed=4, scale=0.1)
    for window in ("shift", "sliding"):
        out = model.generate(
            [1, 2], max_new_tokens=40, window=window, temperature=0.0
        )  # past the context
        for i, seen in seen_windows(out, 2, WIDE.max_seq_len, window):
            assert out[i] == int(np.argmax(model.logits(seen)[-1])), f"token {i} ({window})"


def test_generation_follows_load_state_dict() -> None:
    model = random_model(WIDE, seed=5, scale=0.1)
    before = model.generate([3], max_new_tokens=20, temperature=0.0)
    other = random_model(WIDE, seed=6, scale=0.1)
    model.load_state_dict(other.state_dict())
    after = model.generate([3], max_new_tokens=20, temperature=0.0)
    assert after == other.generate([3], max_new_tokens=20, temperature=0.0)
    assert after != before


def test_generation_follows_training_steps() -> None:
    model = random_model(WIDE, seed=7, scale=0.1)
    model.generate([3], max_new_tokens=5)  # packs the weights for generation
    ids = np.arange(32).reshape(2, 16) % WIDE.vocab_size
    trained, _ = tinylm.train(
        model,
        ids.ravel(),
        ids.ravel(),
        tinylm.TrainConfig(steps=3, batch_size=2, eval_interval=100),
    )
    assert trained is model  # trained in place: the packed weights must follow
    fresh = tinylm.Transformer(WIDE)
    fresh.load_state_dict(model.state_dict())
    assert model.generate([3], max_new_tokens=20, temperature=0.0) == fresh.generate(
        [3], max_new_tokens=20, temperature=0.0
    )


def change_parameters(model: tinylm.Transformer, how: str) -> None:
    """Changes every parameter of a WIDE model by one of the ways the API offers."""
    ids = (np.arange(34).reshape(2, 17) * 7) % WIDE.vocab_size
    x, y = np.ascontiguousarray(ids[:, :-1]), np.ascontiguousarray(ids[:, 1:])
    if how == "train_step":
        model.train_step(tinylm.AdamW(model, lr=0.05), x, y)
    elif how == "forward_backward, AdamW.step":
        optimizer = tinylm.AdamW(model, lr=0.05)
        model.forward_backward(x, y)
        optimizer.step()
    elif how == "sgd_step":
        # The command line's Go-style training; a rate that moves the blocks' weights
        # (which generation reads packed) and not only the embeddings.
        model._core.sgd_step(x, y, 100.0)
    elif how == "load_state_dict":
        model.load_state_dict(random_model(WIDE, seed=9, scale=0.1).state_dict())
    else:
        raise AssertionError(how)


def many(model: tinylm.Transformer, prompts: list[list[int]]) -> list[list[int]]:
    """The new ids of each prompt, generated greedily side by side."""
    outs = model.generate_many(prompts, 12, temperature=0.0)
    return [out[len(p) :] for p, out in zip(prompts, outs)]


#: Each way to generate greedily: the prompts and (model) -> the new ids of each.
GREEDY = {
    "generate": ([[3]], lambda m: [m.generate([3], 12, temperature=0.0)[1:]]),
    "generate_many": ([[3], [3, 1]], lambda m: many(m, [[3], [3, 1]])),
    "beam_search": ([[3]], lambda m: [m.beam_search([3], 12, num_beams=1)[0].ids[1:]]),
    "stream_ids": ([[3]], lambda m: [list(m.stream_ids([3], 12, temperature=0.0))]),
}


def assert_greedy(
    model: tinylm.Transformer, prompts: list[list[int]], news: list[list[int]]
) -> None:
    """Each new id is the argmax of the full forward pass's logits over the ids before it
    (within the context: 1 or 2 prompt ids and 12 new ones of 16)."""
    for prompt, new in zip(prompts, news):
        seq = list(prompt)
        for i, tok in enumerate(new):
            assert tok == int(np.argmax(model.logits(seq)[-1])), f"token {i} after {prompt}"
            seq.append(tok)


@pytest.mark.parametrize(
    "how", ["train_step", "forward_backward, AdamW.step", "sgd_step", "load_state_dict"]
)
@pytest.mark.parametrize("way", list(GREEDY))
def test_generation_after_a_change_to_the_parameters_uses_the_new_ones(how, way) -> None:
    model = random_model(WIDE, seed=8, scale=0.1)
    prompts, greedy = GREEDY[way]
    before = greedy(model)  # packs the weights for generation
    assert_greedy(model, prompts, before)
    change_parameters(model, how)
    after = greedy(model)
    assert_greedy(model, prompts, after)
    assert after != before, "the change should change what greedy generation gives"


def test_a_generation_started_before_a_change_refuses_to_go_on() -> None:
    model = random_model(WIDE, seed=8, scale=0.1)
    stream = model.stream_ids([3], 200, temperature=0.0)
    next(stream)  # the first chunk, at most 64 ids
    change_parameters(model, "load_state_dict")
    with pytest.raises(ValueError, match="parameters changed"):
        list(stream)


def test_a_model_packs_its_weights_once_per_version_of_its_parameters() -> None:
    times_packed = tinylm._core._times_packed_for_tests
    model = random_model(WIDE, seed=10, scale=0.1)
    start = times_packed()
    model.logits([3, 1])
    model.score([3, 1, 4])
    assert times_packed() == start, "only generation packs"
    model.generate([3], 5, temperature=0.0)
    assert times_packed() == start + 1
    for _ in range(2):
        model.generate([3], 5)
        model.generate_many([[3], [4]], 5)
        model.beam_search([3], 5, num_beams=2)
        list(model.stream_ids([3], 5))
    assert times_packed() == start + 1, "generations of one version share one packing"
    change_parameters(model, "load_state_dict")
    assert times_packed() == start + 1, "a change drops the packing, the next generation packs"
    model.generate([3], 5)
    model.generate([3], 5)
    assert times_packed() == start + 2
    on_reference = tinylm.Transformer(WIDE, backend="reference")
    on_reference.generate([3], 3)
    assert times_packed() == start + 2, "the reference backend decodes without packed weights"
