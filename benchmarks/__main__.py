"""`python -m benchmarks` (`make bench`): run every benchmark, each recording its own results file.

Each in a process of its own: benchmarks set environment variables (the router's small world)
and process-wide state (a frozen heap) that must not leak into the next one's figures."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path


def main() -> int:
    names = sorted(
        m.name
        for m in pkgutil.iter_modules([str(Path(__file__).parent)])
        if m.name.startswith("bench_")
    )
    only = set(sys.argv[1:])
    failed = []
    for name in names:
        if only and name.removeprefix("bench_") not in only:
            continue
        print(f"== {name}", flush=True)
        # One that fails (bench_stack needs the stack's ports free) does not stop the others.
        if subprocess.run([sys.executable, "-m", f"benchmarks.{name}"], check=False).returncode:
            failed.append(name)
    # (Each benchmark's `record` regenerated the README.)
    print(Path(__file__).parent / "README.md")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
