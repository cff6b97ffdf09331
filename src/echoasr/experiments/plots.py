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
    # an interim report's configurations without finished runs have nothing to draw
    configurations = {n: c for n, c in results["configurations"].items() if c["seeds"]}
    names = list(configurations)
    sets = list(next(iter(configurations.values()))["sets"])
    figure, axes = plt.subplots(1, 2 * len(sets), figsize=(4.5 * 2 * len(sets), 0.35 * len(names) + 1.5),
                                sharey=True, squeeze=False)
    positions = np.arange(len(names))
    for column, (set_name, metric) in enumerate((s, m) for s in sets for m in ("wer", "cer")):
        ax = axes[0, column]
        intervals = [configurations[n]["sets"][set_name][metric] for n in names]
        means = np.array([100 * i["mean"] if i["n"] else np.nan for i in intervals])
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


# ------------------------------------------------------------------------- one utterance


def _first_layer_attention(model, features: dict, lengths) -> tuple[np.ndarray, Any]:
    """Head-averaged attention probabilities (T, T) of the first shared encoder layer, recomputed
    from its inputs (captured by a forward pre-hook) with the layer's own projection, rotary tables
    and pitch bias; returns them with the rotary tables. Valid for dot-product scores."""
    import torch

    from echoasr.model.rotary import apply_rotary

    attention = model.get_encoder().layers[0].self_attn
    captured = {}
    hook = attention.register_forward_pre_hook(lambda module, args: captured.setdefault("args", args))
    try:
        with torch.inference_mode():
            model.get_encoder()(features, lengths)
    finally:
        hook.remove()
    x, context = captured["args"][:2]
    with torch.inference_mode():
        batch, length, dim = x.shape
        qkv = attention.qkv(x.float()).view(batch, length, 3, attention.heads, attention.head_dim).permute(2, 0, 3, 1, 4)
        qk = qkv[:2]
        if context.rotary is not None:
            qk = apply_rotary(qk, context.rotary.cos.float(), context.rotary.sin.float())
        q, k = qk.unbind(0)
        scores = q @ k.transpose(-1, -2) / attention.head_dim ** 0.5
        mask = context.mask
        if attention.pitch_bias is not None and context.similarity is not None:
            mask = attention.pitch_bias(mask, context.similarity)
        if mask is not None:
            scores = scores + mask.float()
        probabilities = torch.softmax(scores, dim=-1).mean(1)[0]
    return probabilities.numpy(), context.rotary


def draw_utterance(pitch_run: Path, plain_run: Path, utterance, path: Path) -> Path:
    """f0 track, rotary angle and radius per encoder frame (pitch model vs plain), and the first
    encoder layer's attention map of both models, for one utterance."""
    from echoasr.data import read_audio
    from echoasr.model.pitch import pitch_track
    from echoasr.loading import load_pretrained

    audio = read_audio(utterance)
    panels = {}
    for label, run in (("pitch", pitch_run), ("plain", plain_run)):
        model, processor = load_pretrained(run, device="cpu")
        model.float().eval()
        batch = processor.collator()([{"features": processor.extract(audio)}])
        features, lengths = batch["features"], batch["feature_lengths"]
        attention, rotary = _first_layer_attention(model, features, lengths)
        track = None
        if "f0" in features:
            track = pitch_track(features["f0"], features["voiced"], lengths, model.config.subsampling)
        panels[label] = {"attention": attention, "rotary": rotary, "track": track, "config": model.config}
    plt = _pyplot()
    figure, axes = plt.subplots(2, 3, figsize=(15, 8))
    track = panels["pitch"]["track"]
    if track is not None:
        frames = np.arange(track.f0.shape[1])
        axes[0, 0].plot(frames, np.where(track.voiced[0].numpy(), track.f0[0].numpy(), np.nan), ".", markersize=3)
    axes[0, 0].set(title=f"f0 at the encoder frame rate ({utterance.id})", xlabel="encoder frame", ylabel="Hz")
    for label, style in (("pitch", "-"), ("plain", "--")):
        rotary = panels[label]["rotary"]
        if rotary is None:
            continue
        angle = rotary.angle[0, 0, :, 0].float().numpy()  # the first channel pair: frequency 1, the position
        axes[0, 1].plot(angle, style, label=label)
        radius = rotary.radius[0, 0, :, 0].float().numpy() if rotary.radius is not None else np.ones_like(angle)
        axes[0, 2].plot(radius, style, label=label)
    axes[0, 1].set(title="rotary angle of channel pair 0 (rad)", xlabel="encoder frame")
    axes[0, 2].set(title="rotary radius", xlabel="encoder frame")
    for ax in axes[0, 1:]:
        ax.legend()
    for ax, label in zip(axes[1, :2], ("pitch", "plain"), strict=True):
        ax.imshow(panels[label]["attention"], aspect="auto", origin="lower", cmap="magma")
        config = panels[label]["config"]
        ax.set(title=f"{label}: layer-1 attention\n(theta {config.rotary_theta_mode}, radius {config.rotary_radius}, "
               f"bias {config.pitch_bias})", xlabel="key frame", ylabel="query frame")
    difference = panels["pitch"]["attention"] - panels["plain"]["attention"]
    limit = float(np.abs(difference).max()) or 1.0
    axes[1, 2].imshow(difference, aspect="auto", origin="lower", cmap="coolwarm", vmin=-limit, vmax=limit)
    axes[1, 2].set(title="pitch - plain", xlabel="key frame")
    figure.tight_layout()
    _save(figure, path)
    plt.close(figure)
    return path
