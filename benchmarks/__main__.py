"""`python -m benchmarks` (`make bench`): run every benchmark, each recording its own results file."""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path

from benchmarks.record import write_readme


def main() -> int:
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    only = set(sys.argv[1:])
    for name in names:
        if only and name.removeprefix("bench_") not in only:
            continue
        print(f"== {name}", flush=True)
        importlib.import_module(f"benchmarks.{name}").main()
    write_readme()
    print(Path(__file__).parent / "README.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
