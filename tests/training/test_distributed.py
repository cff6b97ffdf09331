"""Multi-process training (torchrun, gloo on the CPU): N processes, each given its piece of every
batch, train the model that one process trains on the whole batches."""

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml
from accelerate.data_loader import BatchSamplerShard
from safetensors.numpy import load_file

from echoasr.data.collate import FrameBatchSampler, ProcessSplitBatchSampler, split_batch

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[2]
RATE = 16000
PROCESSES = 2
# Every transcript has the same number of characters, so a piece of a batch holds tokens in
# proportion to its utterances and the global loss is what the pieces' scaled losses sum to.
TRANSCRIPTS = ["abc dea", "bca eda", "cab ade", "ead cba", "dea bca", "eda cab", "ade bac"]
# 7 utterances, at most 4 a batch: batches of 4 and 3, so one batch splits unevenly (2 + 1).
SETTINGS = dict(preset="tiny", max_steps=6, warmup_steps=1, learning_rate=3e-3, batch_frames=4000,
                batch_max_items=4, save_steps=100, eval_steps=6, logging_steps=1, bf16=False, threads=1, seed=5)
# float32 sums in another order (smaller batches, another all-reduce), nothing more.
PARAMETER_TOLERANCE = 1e-5


def test_split_batch_keeps_order_and_sizes_within_one():
    assert split_batch([5, 4, 3, 2, 1], 2) == [[5, 4, 3], [2, 1]]
    assert split_batch([5, 4, 3, 2], 2) == [[5, 4], [3, 2]]
    assert split_batch([9, 8, 7, 6, 5, 4, 3], 3) == [[9, 8, 7], [6, 5], [4, 3]]


def test_a_batch_smaller_than_the_processes_repeats_its_utterances():
    assert split_batch([7, 3], 3) == [[7], [3], [7]]


@pytest.mark.parametrize("processes", [2, 3])
def test_behind_accelerate_each_process_gets_its_piece_of_every_global_batch(processes):
    lengths = np.random.default_rng(0).integers(50, 400, size=40)
    frame_batches = FrameBatchSampler(lengths, 1200, seed=3)
    global_batches = list(frame_batches)
    split = ProcessSplitBatchSampler(frame_batches, processes)
    # What accelerator.prepare wraps a data loader's batch sampler in, one per process.
    shards = [list(BatchSamplerShard(split, num_processes=processes, process_index=rank)) for rank in range(processes)]
    assert [len(shard) for shard in shards] == [len(global_batches)] * processes
    for step, batch in enumerate(global_batches):
        assert [shard[step] for shard in shards] == split_batch(batch, processes)
    split.set_epoch(1)
    frame_batches.set_epoch(1)
    assert list(split)[::processes] == [split_batch(batch, processes)[0] for batch in frame_batches]


def write_corpus(folder: Path) -> Path:
    """Seven short voiced clips (a gliding tone with harmonics, in noise), their manifest, and a
    dev manifest of three of them (decoded at the end of training)."""
    rng = np.random.default_rng(0)
    rows = ["path\ttext\tspeaker"]
    for index, text in enumerate(TRANSCRIPTS):
        seconds = 0.8 + 0.03 * index
        time = np.arange(int(seconds * RATE)) / RATE
        f0 = 120 + 40 * index + 30 * time
        phase = 2 * np.pi * np.cumsum(f0) / RATE
        wave = sum(np.sin(k * phase) / k for k in (1, 2, 3)) * 0.2 + 0.01 * rng.standard_normal(time.size)
        soundfile.write(folder / f"u{index}.wav", wave.astype(np.float32), RATE)
        rows.append(f"u{index}.wav\t{text}\ts{index % 2}")
    manifest = folder / "train.tsv"
    manifest.write_text("\n".join(rows) + "\n")
    (folder / "dev.tsv").write_text("\n".join(rows[:4]) + "\n")
    return manifest


def train_command(manifest: Path, config: Path, run: Path, cache: Path) -> list[str]:
    return ["train", "--config", str(config), "--data", str(manifest), "--dev", str(manifest.parent / "dev.tsv"),
            "--out", str(run),
            "--cache-dir", str(cache), "--workers", "1"]


def test_two_processes_with_half_batches_train_the_one_process_model(tmp_path):
    from echoasr.cli import main

    manifest = write_corpus(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(SETTINGS))
    cache = tmp_path / "cache"

    # One process: the ordinary path, no process group (and it fills the feature cache).
    assert main(train_command(manifest, config, tmp_path / "one", cache)) == 0

    environment = dict(os.environ, PYTHONPATH=str(ROOT / "src"), OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(PROCESSES),
              "--standalone", "-m", "echoasr",
              *train_command(manifest, config, tmp_path / "two", cache)]
    finished = subprocess.run(launch, env=environment, capture_output=True, text=True, timeout=240)
    assert finished.returncode == 0, finished.stderr[-4000:]

    one = load_file(tmp_path / "one" / "model.safetensors")
    two = load_file(tmp_path / "two" / "model.safetensors")
    assert one.keys() == two.keys()
    difference = max(float(np.abs(one[name] - two[name]).max()) for name in one)
    log.info("largest parameter difference, 1 vs %d processes: %.3g", PROCESSES, difference)
    assert difference < PARAMETER_TOLERANCE

    summaries = [json.loads((tmp_path / run / "train_summary.json").read_text()) for run in ("one", "two")]
    assert [summary["steps"] for summary in summaries] == [SETTINGS["max_steps"]] * 2
    losses = [[entry["loss"] for entry in summary["log_history"] if "loss" in entry] for summary in summaries]
    assert len(losses[0]) == SETTINGS["max_steps"] and losses[0][-1] < losses[0][0]  # it trained
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-4)  # the logged loss: the global batch's
    # Dev decoding split over the processes scores every utterance once: the same WER and CER.
    assert summaries[1]["dev"] == summaries[0]["dev"]
