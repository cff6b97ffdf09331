"""The experiment report's figures (PNG, matplotlib Agg): error rates with intervals, training
curves and steps to a dev CER threshold. Read from the aggregated results only."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from echoasr import atomic


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    with atomic.atomic_path(path) as temporary:
        figure.savefig(temporary, format="png", dpi=110, bbox_inches="tight")


def draw_figures(results: dict[str, Any], out: Path) -> dict[str, str]:
    """Draw every figure into ``out/plots``; returns title -> path relative to ``out``."""
    plt = _pyplot()
    folder = out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    figures = {}
    try:
        figures["Error rates per configuration (mean and 95% interval over seeds)"] = _error_rates(plt, results, folder)
        figures["Training curves (mean over seeds)"] = _training_curves(plt, results, folder)
        if results["steps_to_threshold"]["available"]:
            figures["Steps to reach the dev CER threshold"] = _steps_to_threshold(plt, results, folder)
    finally:
        plt.close("all")
    return {title: str(Path(path).relative_to(out)) for title, path in figures.items()}


def _error_rates(plt, results, folder: Path) -> Path:
    configurations = results["configurations"]
    names = list(configurations)
    sets = list(next(iter(configurations.values()))["sets"])
    figure, axes = plt.subplots(1, 2 * len(sets), figsize=(4.5 * 2 * len(sets), 0.35 * len(names) + 1.5),
                                sharey=True, squeeze=False)
    positions = np.arange(len(names))
    for column, (set_name, metric) in enumerate((s, m) for s in sets for m in ("wer", "cer")):
        ax = axes[0, column]
        intervals = [configurations[n]["sets"][set_name][metric] for n in names]
        means = np.array([100 * i["mean"] for i in intervals])
        errors = np.array([[100 * (i["mean"] - i["low"]), 100 * (i["high"] - i["mean"])] if i["low"] is not None
                           else [0.0, 0.0] for i in intervals]).T
        ax.errorbar(means, positions, xerr=errors, fmt="o", capsize=3)
        ax.set_title(f"{set_name} {metric.upper()} (%)")
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].set_yticks(positions, names)
    axes[0, 0].invert_yaxis()
    path = folder / "error_rates.png"
    _save(figure, path)
    return path


def _curves(results, key: str) -> dict[str, list[tuple[int, float]]]:
    curves = {}
    for name in results["configurations"]:
        points: dict[int, list[float]] = {}
        for run in results["runs"]:
            if run["configuration"] == name:
                for entry in run["log_history"]:
                    if key in entry:
                        points.setdefault(entry["step"], []).append(entry[key])
        curves[name] = sorted((step, float(np.mean(v))) for step, v in points.items())
    return curves


def _training_curves(plt, results, folder: Path) -> Path:
    figure, (loss_ax, cer_ax) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, curve in _curves(results, "loss").items():
        if curve:
            loss_ax.plot(*zip(*curve, strict=True), label=name)
    for name, curve in _curves(results, "eval_cer").items():
        if curve:
            steps, cer = zip(*curve, strict=True)
            cer_ax.plot(steps, 100 * np.array(cer), marker="o", label=name)
    loss_ax.set(title="training loss", xlabel="step", yscale="log")
    cer_ax.set(title="dev CER (%)", xlabel="step")
    for ax in (loss_ax, cer_ax):
        ax.grid(alpha=0.3)
    loss_ax.legend(fontsize=7)
    path = folder / "training_curves.png"
    _save(figure, path)
    return path


def _steps_to_threshold(plt, results, folder: Path) -> Path:
    threshold = results["steps_to_threshold"]
    names = list(threshold["steps"])
    last = max(threshold["evaluated_steps"])
    values = [threshold["steps"][n] if threshold["steps"][n] is not None else last * 1.1 for n in names]
    figure, ax = plt.subplots(figsize=(7, 0.35 * len(names) + 1.5))
    bars = ax.barh(names, values, color=["C0" if threshold["steps"][n] is not None else "0.7" for n in names])
    for bar, name in zip(bars, names, strict=True):
        if threshold["steps"][name] is None:
            ax.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, " not reached", va="center", fontsize=8)
    ax.invert_yaxis()
    ax.set(xlabel=f"steps to dev CER <= {100 * threshold['threshold_cer']:.1f}% ({threshold['reference']}'s final)")
    path = folder / "steps_to_threshold.png"
    _save(figure, path)
    return path
