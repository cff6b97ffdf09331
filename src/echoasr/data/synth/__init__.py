"""The synthetic multi-speaker corpus (``echoasr data synth``)."""

from echoasr.data.synth.corpus import SPLITS, build_corpus, plan_corpus

__all__ = ["SPLITS", "build_corpus", "plan_corpus"]
