"""Derive src/echoasr/data/fotaq_transcripts.tsv from a queen.1c (engine naming scheme, no recogniser).

    PYTHONPATH=src python scripts/derive_fotaq_transcripts.py [/path/to/queen.1c]
"""

import collections
import sys
from pathlib import Path

from echoasr.data import fotaq


def main() -> None:
    resource = fotaq.Resource(fotaq.find_resource(sys.argv[1] if len(sys.argv) > 1 else None))
    rows, counts = fotaq.derive_transcripts(resource)
    target = Path(fotaq.__file__).with_name(fotaq.TRANSCRIPTS)
    fotaq.write_transcripts(target, rows)
    speakers = collections.Counter(row.speaker or "(none)" for row in rows)
    print(f"{target}: {len(rows)} clips of {len(resource.clips())}; {dict(counts)}")
    print("speakers:", speakers.most_common())


if __name__ == "__main__":
    main()
