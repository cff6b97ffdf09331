"""Re-analyse the committed experiment reports (reports/quick, reports/full) with the statistics of
issue 20, from their results.json (and utterances.tsv.gz where one exists), training nothing:

    PYTHONPATH=src .venv/bin/python scripts/reanalyse_reports.py [reports/quick reports/full]

The committed results.json files hold each run's error rates but not its per-utterance errors, so
their verdicts come from the paired t over seeds; the families and the equivalence margin are the
built-in plans' (one family per question, 1 point), chosen after these runs had finished."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from echoasr.experiments.plans import load_plan
from echoasr.experiments.report import UTTERANCES_FILE, reanalyse

NOTE = ("Verdicts recomputed from the committed per-run error rates (`results.json`; no per-utterance "
        "errors were committed for these runs, so the verdict test is the paired t over seeds and the "
        "utterance bootstrap column is empty) with the statistics of issue 20: seed-paired tests, Holm "
        "within each family, TOST and MDE. The families (one per question) and the 1-point equivalence "
        "margin were set after these runs had finished: this analysis is not pre-registered. Nothing "
        "was retrained.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", nargs="*", type=Path, default=[Path("reports/quick"), Path("reports/full")])
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for folder in args.folders:
        results = reanalyse(folder, load_plan(folder.name if folder.name in ("quick", "full") else
                                              (folder / "plan.yaml")),
                            note="" if (folder / UTTERANCES_FILE).is_file() else NOTE)
        for comparison in results["comparisons"]:
            if comparison.get("verdict") not in (None, "n/a"):
                logging.info("%s: %s vs %s on %s: %s", folder.name, comparison["system"], comparison["baseline"],
                             comparison["set"], comparison["verdict_text"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
