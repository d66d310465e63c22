"""Write constraints.txt, the lock file: the exact versions pip resolves for ``.[dev]`` on this kind of machine.

    make lock   # resolves in a scratch venv (pip install --dry-run --report), then runs this script

Reads pip's installation report (JSON) and writes one ``name==version`` line per package, sorted, the project
itself left out. ``make`` installs with ``pip install -c constraints.txt``, so every fresh machine gets these.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HEADER = """\
# The lock file: exact versions for `pip install -c constraints.txt -e '.[dev]'` (what `make` runs).
# Written by `make lock` (.ci/lock.py from pip's resolution report); edit pyproject.toml, then run `make lock`.
"""


def normalized(name: str) -> str:
    """A distribution name as PEP 503 compares them."""
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(report: dict) -> list[str]:
    """``name==version`` for every package pip would install, except the project being installed."""
    named = ((normalized(item["metadata"]["name"]), item["metadata"]["version"]) for item in report["install"])
    return sorted(f"{name}=={version}" for name, version in named if name != "autoprune")


def main() -> None:
    report_path, out_path = Path(sys.argv[1]), Path(sys.argv[2])
    report = json.loads(report_path.read_text())
    out_path.write_text(HEADER + "\n".join(pins(report)) + "\n")
    print(f"wrote {out_path}")


if __name__ == "__main__":
    main()
