"""The paper's learning-rate curve against hf_deit's two granularities, for docs/recipe.md (docs/recipe_lr.png).

    python benchmarks/plot_lr_schedule.py            # -> docs/recipe_lr.png, and the largest gaps printed

The official curve is timm's CosineLRScheduler with main.py's arguments, stepped once after every epoch as
main.py:432 does (so epoch k trains at L(k - 1)), for the paper's ImageNet-1k run: 300 epochs of 1,251 optimizer
steps at lr 1e-3 (global batch 1024). hf_deit's "epoch" schedule must lie on it exactly; "step" is the same curve
per optimizer step.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402
from timm.scheduler import CosineLRScheduler  # noqa: E402

from hf_deit.distillation.schedule import DeiTSchedule  # noqa: E402

EPOCHS, STEPS_PER_EPOCH, LR = 300, 1251, 1e-3


def official_per_epoch() -> list[float]:
    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=LR)
    scheduler = CosineLRScheduler(optimizer, t_initial=EPOCHS, lr_min=1e-5, warmup_lr_init=1e-6, warmup_t=5,
                                  cycle_limit=1, t_in_epochs=True)
    lrs = []
    for epoch in range(EPOCHS):
        lrs.append(optimizer.param_groups[0]["lr"])
        scheduler.step(epoch)
    return lrs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "docs" / "recipe_lr.png"))
    out = parser.parse_args().out
    official = official_per_epoch()
    steps = range(0, EPOCHS * STEPS_PER_EPOCH, 25)  # every 25th step is plenty for a plot
    curves = {
        granularity: [DeiTSchedule(LR, STEPS_PER_EPOCH, EPOCHS, 5, 1e-6, 1e-5, granularity).lr_at(s) for s in steps]
        for granularity in ("epoch", "step")
    }
    official_at_steps = [official[s // STEPS_PER_EPOCH] for s in steps]
    for granularity, lrs in curves.items():
        gap = max(abs(a - b) for a, b in zip(lrs, official_at_steps))
        print(f"{granularity:>5}: largest gap to the official lr {gap:.3g} (peak lr {LR:g})")

    figure, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    for ax, last_epoch in zip(axes, (EPOCHS, 12)):
        keep = [i for i, s in enumerate(steps) if s < last_epoch * STEPS_PER_EPOCH]
        x = [steps[i] / STEPS_PER_EPOCH for i in keep]
        ax.plot(x, [official_at_steps[i] for i in keep], lw=4, alpha=0.35, color="k", label="official (main.py)")
        ax.plot(x, [curves["epoch"][i] for i in keep], lw=1.2, label="hf_deit --lr_schedule epoch (default)")
        ax.plot(x, [curves["step"][i] for i in keep], lw=1.2, ls="--", label="hf_deit --lr_schedule step")
        ax.set_xlabel("epoch")
        ax.set_ylabel("learning rate")
        ax.set_title("300 epochs" if last_epoch == EPOCHS else "the first 12 epochs (warmup)")
    axes[1].legend(fontsize=8)
    figure.suptitle("DeiT's schedule, ImageNet-1k at global batch 1024 (1,251 steps per epoch)", fontsize=10)
    figure.tight_layout()
    figure.savefig(out, dpi=90)
    print(f"saved {out}")


if __name__ == "__main__":
    main()
