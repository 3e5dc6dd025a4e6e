"""The training-curves figure: loss and validation AUC per epoch."""

from __future__ import annotations

from pathlib import Path


def plot_training_curves(history: list[dict], path: str | Path) -> Path:
    """Writes a two-panel PNG from per-epoch records (``epoch``, ``train_loss``, ``val_auc``)."""
    import matplotlib

    matplotlib.use("Agg")  # files only: never needs a display
    import matplotlib.pyplot as plt

    epochs = [r["epoch"] for r in history]
    loss = [r.get("train_loss") for r in history]
    val_loss = [r.get("val_loss") for r in history]
    auc = [r.get("val_auc") for r in history]
    fig, (ax_loss, ax_auc) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    ax_loss.plot(epochs, [_nan(v) for v in loss], marker="o", label="train")
    if any(v is not None for v in val_loss):
        ax_loss.plot(epochs, [_nan(v) for v in val_loss], marker="o", label="validation")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="Loss")
    ax_loss.legend()
    ax_auc.plot(epochs, [_nan(v) for v in auc], marker="o", color="tab:green")
    ax_auc.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="chance")
    ax_auc.set(xlabel="epoch", ylabel="ROC AUC", title="Validation AUC", ylim=(0.0, 1.02))
    ax_auc.legend()
    for ax in (ax_loss, ax_auc):
        ax.grid(alpha=0.3)
    path = Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _nan(value):
    return float("nan") if value is None else value
