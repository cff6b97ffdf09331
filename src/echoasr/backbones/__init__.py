"""Pretrained backbones built locally from the pinned wheels (no network, no model hub).

`backbone_dir("whisper-base")` gives an ordinary Echo model folder computing what Whisper base
computes (built once into the cache); `echoasr backbone whisper-base` does the same from the shell.
Training starts from it with `echoasr train --init whisper-base` (see `echoasr.training`).
"""

from echoasr.backbones.whisper import BACKBONES, backbone_dir, check_backbone_folder, convert, repair_merges

__all__ = ["BACKBONES", "backbone_dir", "check_backbone_folder", "convert", "repair_merges"]
