"""One forward pass, step by step, as text: what ``tinylm explain`` prints.

Every number comes from :meth:`tinylm.Transformer.trace_steps` (the reference path), and
every step names the reference function that computed it, taken from the one table of
sources in ``rust/src/reference/trace.rs``. A small model (the Go demo's d_model of 4)
shows whole matrices; a bigger one shows each row's norm and largest entries instead.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from tinylm.model import TraceStep, Transformer
from tinylm.tokenizer import Tokenizer

#: Whole matrices are printed while every row has at most this many columns...
FULL_MAX_COLUMNS = 16
#: ... and the prompt at most this many tokens; otherwise summaries.
FULL_MAX_TOKENS = 16
#: Rows shown at each end of a summary of a long prompt.
SUMMARY_EDGE_ROWS = 4
#: Entries named per row in a summary, and next tokens listed at the end.
TOP_ENTRIES = 3
TOP_NEXT = 10
#: Width of a number's column.
CELL = 9


def token_label(tok: Tokenizer | None, token_id: int) -> str:
    """A token as a short printable label: spaces as ``␣``, newlines as ``\\n``."""
    if tok is None:
        return f"#{token_id}"
    text = tok.vocab[token_id]
    text = text.replace(" ", "␣").replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")
    return text if len(text) <= 12 else text[:11] + "…"


def _number(x: float) -> str:
    """A number in a column of width 9: four decimals, an exponent only when huge."""
    if np.isneginf(x):
        return "-inf".rjust(CELL)
    if abs(x) >= 1e4:
        return f"{x:{CELL}.2e}"
    return f"{x:{CELL}.4f}"


@dataclass
class _Out:
    lines: list[str]

    def __call__(self, text: str = "") -> None:
        self.lines.append(text.rstrip())


class _Explainer:
    def __init__(
        self, model: Transformer, ids: Sequence[int], steps: list[TraceStep], full: bool
    ) -> None:
        self.model, self.ids, self.full = model, list(ids), full
        self.steps = {s.name: s for s in steps}
        self.tokens = [token_label(model.tokenizer, i) for i in self.ids]
        # Row labels: the tokens, with their positions where a summary skips rows.
        self.labels = self.tokens if full else [f"{t:>2} {s}" for t, s in enumerate(self.tokens)]
        self.width = max(len(s) for s in self.labels)
        self.out = _Out([])
        self.number = 0

    # ------------------------------------------------------------------ building blocks

    def heading(self, title: str, *names: str, formula: str | None = None) -> None:
        """A numbered step: its title, the activations it shows with their shapes, how
        they are computed and by which reference function."""
        self.number += 1
        out = self.out
        out()
        out(f"{self.number:>2}. {title}")
        first = self.steps[names[0]] if names else None
        for name in names:
            step = self.steps[name]
            shape = " x ".join(str(n) for n in step.value.shape)
            out(f"    {name:<24} ({self._letters(name)}) = ({shape})")
        if formula is not None:
            out(f"    = {formula}")
        elif len(names) == 1 or names[1].endswith(".mean") or names[1].endswith(".rstd"):
            out(f"    = {first.formula}")  # type: ignore[union-attr]
        else:
            for name in names:
                out(f"    {name.rsplit('.', 1)[-1]} = {self.steps[name].formula}")
        sources = dict.fromkeys(self.steps[n].source for n in names)
        for source in sources:
            out(f"    computed by {source}")

    def _letters(self, name: str) -> str:
        """The shape of an activation in the letters of the docs."""
        last = name.rsplit(".", 1)[-1]
        c = self.model.config
        if last in ("mean", "rstd"):
            return "T"
        if last in ("att", "att_scores"):
            return "H, T, T"
        if last in ("q", "q_lin"):
            return "T, H, D"
        if last in ("k", "v", "k_lin"):
            return "T, K, D" if (c.n_kv_heads or c.n_heads) != c.n_heads else "T, H, D"
        if last in ("up", "gate", "hidden"):
            return "T, F"
        if last in ("logits", "probs"):
            return "T, V"
        return "T, C"

    def rows(self) -> list[int | None]:
        """The rows to show: all, or both ends of a long prompt (None marks the gap)."""
        t = len(self.ids)
        if self.full or t <= 2 * SUMMARY_EDGE_ROWS:
            return list(range(t))
        return [*range(SUMMARY_EDGE_ROWS), None, *range(t - SUMMARY_EDGE_ROWS, t)]

    def matrix(
        self,
        value: np.ndarray,
        columns: Sequence[str] | None = None,
        extra: dict[str, np.ndarray] | None = None,
        indent: str = "    ",
    ) -> None:
        """A (T, X) activation: each token's row in full, or its norm and top entries."""
        extra = extra or {}
        out, w = self.out, self.width
        if self.full:
            columns = columns or [f"[{j}]" for j in range(value.shape[1])]
            head = "".join(f"{c:>{CELL}}" for c in columns)
            head += "".join(f"{k:>{CELL + 2}}" for k in extra)
            out(f"{indent}{'':<{w}}  {head}")
            for t, label in enumerate(self.labels):
                cells = "".join(_number(float(x)) for x in value[t])
                cells += "".join("  " + _number(float(v[t])) for v in extra.values())
                out(f"{indent}{label:<{w}}  {cells}")
            return
        out(f"{indent}{'':<{w}}  {'norm':>8}  {'mean':>8}  largest |entries| [index]=value")
        for t in self.rows():
            if t is None:
                out(f"{indent}{'...':<{w}}  ({len(self.ids) - 2 * SUMMARY_EDGE_ROWS} rows)")
                continue
            row = value[t].astype(np.float64)
            top = np.argsort(-np.abs(row), kind="stable")[:TOP_ENTRIES]
            named = "  ".join(f"[{j}]={row[j]:+.3f}" for j in top)
            more = "".join(f"  {k}={float(v[t]):.3f}" for k, v in extra.items())
            out(
                f"{indent}{self.labels[t]:<{w}}  {np.linalg.norm(row):8.3f}  "
                f"{row.mean():8.3f}  {named}{more}"
            )

    def vector(self, name: str, value: np.ndarray) -> None:
        """One number per token, in a line."""
        shown = [t for t in self.rows() if t is not None]
        cells = "  ".join(f"{self.labels[t]}:{float(value[t]):.4f}" for t in shown)
        self.out(f"    {name}: {cells}")

    # --------------------------------------------------------------------------- steps

    def explain(self) -> list[str]:
        c = self.model.config
        tok = self.model.tokenizer
        out = self.out
        d = c.d_model // c.n_heads
        norm = "layer norm" if c.norm == "layernorm" else "RMSNorm"
        blocks = f"{c.n_layers} block{'s' * (c.n_layers > 1)}"
        out(
            f"model: C = d_model {c.d_model}, L = {blocks}, H = {c.n_heads} heads of D = {d}, "
            f"F = d_ff {c.d_ff}, V = {c.vocab_size} tokens"
        )
        out(f"       context {c.max_seq_len}; {norm}, {c.position} positions, {c.activation}")
        shown = "whole matrices" if self.full else "summaries (norm, mean, largest entries)"
        out(f"prompt: T = {len(self.ids)} tokens; shown as {shown}")
        out("every number is from Transformer.trace: the reference path (rust/src/reference)")

        self.number += 1
        out()
        out(f"{self.number:>2}. Token ids: the tokenizer turns the prompt into ids")
        kind = tok.kind if tok is not None else "none"
        out(f"    tokenizer: {kind} level, vocab {c.vocab_size}")
        cells = [max(len(s), len(str(i))) for s, i in zip(self.tokens, self.ids)]
        line: list[int] = []
        for t in range(len(self.ids) + 1):
            if line and (t == len(self.ids) or sum(cells[j] + 2 for j in line) + cells[t] > 90):
                out("    " + "  ".join(f"{self.tokens[j]:>{cells[j]}}" for j in line))
                out("    " + "  ".join(f"{self.ids[j]:>{cells[j]}}" for j in line))
                line = []
            line.append(t)

        self.heading("Token embedding: one row of token_embed per token", "embed.token")
        self.matrix(self.steps["embed.token"].value)
        if "embed.position" in self.steps:
            self.heading("Position embedding: one row of pos_embed per position", "embed.position")
            self.matrix(self.steps["embed.position"].value)
        else:
            out()
            out("    (rotary positions: no position rows; q and k are rotated instead)")
        for layer in range(c.n_layers):
            self.block(layer)
        last = f"blocks.{c.n_layers - 1}"
        self.heading(
            f"Residual stream after block {c.n_layers - 1}: x_mid + the feed-forward output",
            "x_final",
            formula=f"{last}.x_mid + {last}.ff_out",
        )
        self.matrix(self.steps["x_final"].value)
        self.norm_step("Final " + norm, "norm_f")
        self.logits()
        return self.out.lines

    def norm_step(self, title: str, name: str) -> None:
        names = [name] + [f"{name}.{s}" for s in ("mean", "rstd") if f"{name}.{s}" in self.steps]
        what = "weight and bias" if self.model.config.norm == "layernorm" else "weight"
        self.heading(f"{title}: each row scaled to unit size, then {what}", *names)
        extra = {
            ("mean of x" if n.endswith(".mean") else "rstd"): self.steps[n].value for n in names[1:]
        }
        self.matrix(self.steps[name].value, extra=extra)

    def block(self, layer: int) -> None:
        c = self.model.config
        b = f"blocks.{layer}"
        out = self.out
        out()
        out(f"=== block {layer} " + "=" * 60)
        first = "token rows + position rows" if layer == 0 else f"the output of block {layer - 1}"
        self.heading(f"Residual stream into block {layer}: {first}", f"{b}.x")
        self.matrix(self.steps[f"{b}.x"].value)
        norm = "Layer norm 1" if c.norm == "layernorm" else "RMSNorm 1"
        self.norm_step(norm, f"{b}.norm1")
        self.qkv(layer)
        self.attention(layer)
        self.heading("Attention output: each head's weighted sum of values, side by side", f"{b}.y")
        self.matrix(self.steps[f"{b}.y"].value)
        self.heading("Output projection of the attention", f"{b}.attn_out")
        self.matrix(self.steps[f"{b}.attn_out"].value)
        self.heading("Residual connection: add the attention to the stream", f"{b}.x_mid")
        self.matrix(self.steps[f"{b}.x_mid"].value)
        self.norm_step(norm.replace("1", "2"), f"{b}.norm2")
        ffn = [f"{b}.{n}" for n in ("gate", "up") if f"{b}.{n}" in self.steps]
        self.heading("Feed-forward, first matrix: to the hidden width F", *ffn)
        for n in ffn:
            if len(ffn) > 1:
                out(f"    {n.rsplit('.', 1)[1]}:")
            self.matrix(self.steps[n].value)
        self.heading(f"Feed-forward non-linearity ({c.activation})", f"{b}.hidden")
        self.matrix(self.steps[f"{b}.hidden"].value)
        self.heading("Feed-forward, second matrix: back to the width C", f"{b}.ff_out")
        self.matrix(self.steps[f"{b}.ff_out"].value)

    def qkv(self, layer: int) -> None:
        c = self.model.config
        b = f"blocks.{layer}"
        names = [f"{b}.{n}" for n in ("q_lin", "k_lin", "q", "k", "v") if f"{b}.{n}" in self.steps]
        self.heading("Queries, keys and values, per head", *names)
        q, k, v = (self.steps[f"{b}.{n}"].value for n in ("q", "k", "v"))
        kv_heads = k.shape[1]
        out = self.out
        group = c.n_heads // kv_heads
        if not self.full:
            out("    the norms |q| |k| |v| of each head's vectors at each position:")
            heads = "".join(f"{'head ' + str(h):^19}" for h in range(c.n_heads))
            out(f"      {'':<{self.width}} {heads}")
            for t in self.rows():
                if t is None:
                    out("      ...")
                    continue
                cells = "".join(
                    "".join(
                        f"{np.linalg.norm(m[t, hh]):6.2f}"
                        for m, hh in ((q, h), (k, h // group), (v, h // group))
                    )
                    + " "
                    for h in range(c.n_heads)
                )
                out(f"      {self.labels[t]:<{self.width}} {cells}")
            return
        for h in range(c.n_heads):
            kv = h // group
            shares = f" (shares key/value head {kv})" if kv_heads != c.n_heads else ""
            out(f"    head {h}{shares}:")
            if self.full:
                group = CELL * q.shape[2]
                names = "   ".join(f"{n:^{group}}" for n in ("q", "k", "v"))
                out(f"      {'':<{self.width}}  {names}")
                for t, label in enumerate(self.labels):
                    cells = "   ".join(
                        "".join(_number(float(x)) for x in m[t, hh])
                        for m, hh in ((q, h), (k, kv), (v, kv))
                    )
                    out(f"      {label:<{self.width}}  {cells}")

    def attention(self, layer: int) -> None:
        b = f"blocks.{layer}"
        scores = self.steps[f"{b}.att_scores"].value
        probs = self.steps[f"{b}.att"].value
        t = len(self.ids)
        masked = np.where(np.tril(np.ones((t, t), dtype=bool)), scores, -np.inf)
        out = self.out
        self.heading("Attention scores: how well each query matches each key", f"{b}.att_scores")
        self.heads(scores, "scores")
        self.number += 1
        out()
        out(f"{self.number:>2}. Causal mask: a token may not look at later tokens")
        out("    scores above the diagonal become -inf, so softmax gives them probability 0")
        out(f"    (attention_forward computes only s <= t): {self.steps[f'{b}.att'].source}")
        self.heads(masked, "masked")
        self.heading("Softmax of each row: the attention probabilities", f"{b}.att")
        self.heads(probs, "probabilities", probabilities=True)

    def heads(self, value: np.ndarray, what: str, probabilities: bool = False) -> None:
        """(H, T, T) per head: rows are queries, columns keys."""
        out, w = self.out, self.width
        for h in range(value.shape[0]):
            if self.full:
                out(f"    head {h} {what} (row: query, column: key)")
                out(f"      {'':<{w}}  " + "".join(f"{label:>{CELL}}" for label in self.labels))
                for t, label in enumerate(self.labels):
                    out(f"      {label:<{w}}  " + "".join(_number(float(x)) for x in value[h, t]))
                continue
            if not probabilities:
                finite = value[h][np.isfinite(value[h])]
                out(
                    f"    head {h} {what}: min {finite.min():.3f}, max {finite.max():.3f}, "
                    f"mean {finite.mean():.3f}"
                    + (f"; {value[h].size - finite.size} entries -inf" if what == "masked" else "")
                )
                continue
            out(f"    head {h}: each query's most attended keys (key@position=probability)")
            for t in self.rows():
                if t is None:
                    out("      ...")
                    continue
                row = value[h, t, : t + 1]
                top = np.argsort(-row, kind="stable")[:TOP_ENTRIES]
                named = "  ".join(f"{self.labels[s]}@{s}={row[s]:.3f}" for s in top)
                out(f"      {self.labels[t]:<{w}}  {named}")

    def logits(self) -> None:
        c = self.model.config
        tok = self.model.tokenizer
        out = self.out
        logits = self.steps["logits"].value
        self.heading(
            "Logits: a score for every token of the vocabulary, at every position", "logits"
        )
        if self.full and c.vocab_size <= FULL_MAX_COLUMNS:
            vocab = [token_label(tok, i) for i in range(c.vocab_size)]
            self.matrix(logits, columns=vocab)
        else:
            out(f"    the {TOP_ENTRIES} largest logits at each position:")
            for t in self.rows():
                if t is None:
                    out("      ...")
                    continue
                top = np.argsort(-logits[t], kind="stable")[:TOP_ENTRIES]
                named = "  ".join(f"{token_label(tok, int(v))}={logits[t, v]:.3f}" for v in top)
                out(f"      {self.labels[t]:<{self.width}}  {named}")
        probs = self.steps["probs"].value[-1]
        self.heading(
            f"Next-token probabilities: softmax of the last row (after {self.labels[-1]!r})",
            "probs",
        )
        order = np.argsort(-probs, kind="stable")[:TOP_NEXT]
        width = max(len(token_label(tok, int(v))) for v in order)
        for v in order:
            bar = "#" * round(40 * float(probs[v]))
            out(f"    {token_label(tok, int(v)):<{width}}  {probs[v]:7.4f}  {bar}")
        if c.vocab_size > TOP_NEXT:
            out(
                f"    ... ({c.vocab_size - TOP_NEXT} more tokens, "
                f"{1 - probs[order].sum():.4f} in all)"
            )
        best = int(order[0])
        out()
        out(
            f"the most likely next token is {token_label(tok, best)!r} "
            f"(id {best}, p = {probs[best]:.4f})"
        )


def explain(model: Transformer, ids: Sequence[int], full: bool | None = None) -> str:
    """The forward pass of ``model`` on ``ids`` (one sequence), step by step, as text.

    ``full`` prints whole matrices; the default does so only for a small model (at most
    :data:`FULL_MAX_COLUMNS` columns per row, :data:`FULL_MAX_TOKENS` tokens) and prints
    summaries (each row's norm, mean and largest entries) otherwise.
    """
    c = model.config
    ids = list(ids)
    if full is None:
        widest = max(c.d_model, c.d_ff or 0, (c.d_model // c.n_heads) * 3)
        full = widest <= FULL_MAX_COLUMNS and len(ids) <= FULL_MAX_TOKENS
    steps = model.trace_steps(ids)
    return "\n".join(_Explainer(model, ids, steps, full).explain()) + "\n"
