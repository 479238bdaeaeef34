"""Learning curves from run folders (metrics.jsonl): train.py --plot, and the studies' figures.

Imports nothing of ours; matplotlib is imported when a figure is drawn."""

import json
from pathlib import Path

NOT_PLOTTED = ("step", "epoch", "lr", "tokens_per_s", "mfu", "matmul_peak_flops", "val_ppl")


def plot(out_dir, compare=()):
    """metrics.jsonl -> curves.png against step: losses on the left, every other metric logged (BLEU,
    accuracies; else tokens/s) on the right. Runs in `compare` are drawn dashed on the same axes.
    Validation points, and curves of a single point, are drawn as markers."""
    for run in [out_dir, *compare]:
        if not (Path(run) / "metrics.jsonl").exists():
            raise FileNotFoundError(f"--plot: {run} has no metrics.jsonl (not a run folder, or nothing logged yet)")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4))
    single, drawn = False, 0  # a curve of one point; curves drawn
    for n, run in enumerate([out_dir, *compare]):
        rows = [json.loads(line) for line in (Path(run) / "metrics.jsonl").read_text().splitlines()]
        style, name = ("-" if n == 0 else "--"), Path(run).name
        keys = sorted({k for r in rows for k, v in r.items() if isinstance(v, int | float) and k not in NOT_PLOTTED})
        losses = ["loss", "val_loss", *(k for k in keys if k.startswith("val_loss_"))]  # BART's val_loss_other_source
        metrics = [k for k in keys if not k.endswith("loss") and k not in losses] or ["tokens_per_s"]
        for ax, key in [*((ax1, k) for k in losses), *((ax2, k) for k in metrics)]:
            rs = [r for r in rows if key in r]
            if not rs:
                continue
            single, drawn = single or len(rs) == 1, drawn + 1
            marker = "o" if key.startswith("val_") or len(rs) == 1 else ""
            ax.plot([r["step"] for r in rs], [r[key] for r in rs], marker + style, label=f"{name}: {key}")
    ax1.set_ylabel("loss per target")
    for ax in (ax1, ax2):
        ax.set_xlabel("step")
        if ax.lines:
            ax.legend(fontsize=7)
    note = " (nothing logged yet)" if not drawn else " (single points: markers)" if single else ""
    fig.suptitle(" vs ".join(map(str, [out_dir, *compare])) + note)
    fig.tight_layout()
    path = Path(out_dir) / "curves.png"
    fig.savefig(path, dpi=100)
    return path


def bars(path, title, ylabel, groups):
    """A study's figure: grouped bars, groups {group label: {series label: value or None (not drawn)}},
    each bar labeled with its value -> path (a PNG)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    series = list(dict.fromkeys(s for bars in groups.values() for s in bars))
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(5, 1.6 * len(groups) * max(len(series), 1) ** 0.5), 4))
    for k, name in enumerate(series):
        xs = [i + (k - (len(series) - 1) / 2) * width for i, g in enumerate(groups) if groups[g].get(name) is not None]
        ys = [groups[g][name] for g in groups if groups[g].get(name) is not None]
        drawn = ax.bar(xs, ys, width, label=name)
        ax.bar_label(drawn, fmt="%.3g", fontsize=7)
    ax.set_xticks(range(len(groups)), list(groups), fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if len(series) > 1:
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
