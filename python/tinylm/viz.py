"""Pictures of a model at work (matplotlib, an optional dependency: ``pip install
tinylm[plot]``): the attention heat maps of ``tinylm attention``."""

from __future__ import annotations

import io
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Union

import numpy as np

from tinylm._io import write_bytes_atomic

PathLike = Union[str, "os.PathLike[str]"]

#: Tick labels are all drawn up to this many tokens; beyond, every n-th.
ALL_LABELS_UP_TO = 40
#: Each cell shows its probability up to this many tokens.
ANNOTATE_UP_TO = 10


def pyplot() -> Any:
    """matplotlib's pyplot on the file-only Agg backend, or an ImportError saying how to
    install it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError(
            "drawing needs matplotlib, which is not installed: pip install 'tinylm[plot]' "
            "(or pip install matplotlib)"
        ) from None
    return plt


def save_figure(fig: Any, path: PathLike) -> None:
    """Writes a figure as a PNG, atomically, and closes it."""
    plt = pyplot()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    write_bytes_atomic(Path(path), buf.getvalue())


def plot_attention(
    att: np.ndarray, labels: Sequence[str], path: PathLike, title: str = "attention"
) -> None:
    """Draws attention probabilities ``att`` (L, H, T, T) as a grid of heat maps, one row
    per layer and one column per head; rows of a map are queries, columns the keys they
    attend to, ``labels`` the T tokens. The masked cells above the diagonal stay blank."""
    att = np.asarray(att, dtype=np.float64)
    if att.ndim != 4 or att.shape[2] != att.shape[3] or att.shape[2] != len(labels):
        raise ValueError(
            f"attention must be (L, H, T, T) with T = {len(labels)} labels, got {att.shape}"
        )
    plt = pyplot()
    n_layers, n_heads, t, _ = att.shape
    cell = min(max(0.28 * t, 0.4 * t + 0.8, 2.2), 6.0)  # inches per map
    # A fixed layout in inches (matplotlib's layout engines take seconds on many maps):
    # room for the tick labels and titles around each map, the colour bar on the right.
    gap, left, right, bottom, top = 0.9, 1.0, 1.3, 1.0, 0.7
    width = left + n_heads * cell + (n_heads - 1) * gap + right
    height = bottom + n_layers * cell + (n_layers - 1) * gap + top
    fig, axes = plt.subplots(n_layers, n_heads, figsize=(width, height), dpi=110, squeeze=False)
    fig.subplots_adjust(
        left=left / width,
        right=1 - right / width,
        bottom=bottom / height,
        top=1 - top / height,
        wspace=gap / cell,
        hspace=gap / cell,
    )
    step = 1 if t <= ALL_LABELS_UP_TO else math.ceil(t / ALL_LABELS_UP_TO)
    # Labels about 0.6 of the space between two of them (in points), 5 to 10 points.
    font = min(10.0, max(5.0, 0.6 * cell * 72 * step / t))
    ticks = list(range(0, t, step))
    small = min(9.0, 0.2 * cell * 72 / t)  # "1.00" fits in a cell
    masked = np.where(np.tril(np.ones((t, t), dtype=bool)), att, np.nan)
    cmap = plt.get_cmap("viridis").copy()
    cmap.set_bad("white")
    image = None
    for layer in range(n_layers):
        for head in range(n_heads):
            ax = axes[layer][head]
            image = ax.imshow(masked[layer, head], cmap=cmap, vmin=0.0, vmax=1.0)
            ax.set_xticks(ticks)
            ax.set_yticks(ticks)
            ax.set_xticklabels([labels[i] for i in ticks], rotation=90, fontsize=font)
            ax.set_yticklabels([labels[i] for i in ticks], fontsize=font)
            if t <= ANNOTATE_UP_TO:
                for q in range(t):
                    for k in range(q + 1):
                        p = att[layer, head, q, k]
                        colour = "black" if p > 0.6 else "white"
                        text = f"{p:.2f}".lstrip("0")
                        ax.text(k, q, text, ha="center", va="center", color=colour, fontsize=small)
            ax.set_title(f"layer {layer}, head {head}", fontsize=10)
            if head == 0:
                ax.set_ylabel("query (attends from)", fontsize=8)
            if layer == n_layers - 1:
                ax.set_xlabel("key (attends to)", fontsize=8)
    bar = fig.add_axes((1 - 0.8 * right / width, 0.3, 0.15 / width, 0.4))
    fig.colorbar(image, cax=bar, label="attention probability")
    fig.suptitle(title, fontsize=11, y=1 - 0.15 / height, va="top")
    save_figure(fig, path)
