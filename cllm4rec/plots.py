"""One PNG per run: training losses and validation metrics over epochs, and model vs baselines."""
from __future__ import annotations

from .files import replacing
from .metrics import VAL_KEYS
from .runs import Run


def plot_run(run: Run, test_rows: dict[str, dict[str, float]] | None = None,
             keys=VAL_KEYS):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for stage, ax in zip(("pretrain", "finetune"), axes[:2]):
        hist = run.history(stage)
        for key in sorted({k for row in hist for k in row if k.startswith("loss_")}):
            pts = [(r["epoch"], r[key]) for r in hist if key in r]
            ax.plot(*zip(*pts), marker="o", label=key)
        ax.set(title=f"{stage}: mean loss per epoch", xlabel="epoch", ylabel="loss")
        vals = [k for k in ("val_recall@20", "val_recall@40", "val_ndcg@100") if any(k in r for r in hist)]
        if vals:
            twin = ax.twinx()
            for key in vals:
                pts = [(r["epoch"], r[key]) for r in hist if key in r]
                twin.plot(*zip(*pts), linestyle="--", marker="x", label=key)
            twin.set_ylabel("validation metric")
            twin.legend(loc="center right", fontsize=8)
        if ax.lines:
            ax.legend(loc="best", fontsize=8)
    ax = axes[2]
    if test_rows:
        names, width = list(test_rows), 0.8 / max(1, len(test_rows))
        for n, name in enumerate(names):
            ax.bar([k + n * width for k in range(len(keys))], [test_rows[name].get(k, 0.0) for k in keys],
                   width, label=name)
        ax.set_xticks([k + width * (len(names) - 1) / 2 for k in range(len(keys))], list(keys))
        ax.legend(fontsize=8)
    ax.set(title="test, full ranking")
    fig.tight_layout()
    path = run.root / "plot.png"
    with replacing(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
