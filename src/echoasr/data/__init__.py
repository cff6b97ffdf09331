"""Data: manifests and loaders (one record type for every source), the synthetic corpus and the
human test set. The collator for training lives in ``echoasr.data.collate``."""

from echoasr.data.loaders import load_audiofolder, load_dataset_any, load_hf_dataset, load_librispeech
from echoasr.data.manifest import read_manifest, write_manifest
from echoasr.data.records import Utterance, keep_usable, read_audio

__all__ = [
    "Utterance", "keep_usable", "load_audiofolder", "load_dataset_any", "load_hf_dataset", "load_librispeech",
    "read_audio", "read_manifest", "write_manifest",
]
