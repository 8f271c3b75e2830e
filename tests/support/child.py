"""What a test learns from a fresh interpreter: Python source run in a child process, and the
JSON it prints last. The child's imports, environment and process-wide state are its own, so
what a test asserts of them is not what an earlier test left in the test process."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPOSITORY = Path(__file__).resolve().parents[2]  # the working directory: `import serving`


def python_json(
    source: str,
    args: Sequence[str] = (),
    *,
    env: Mapping[str, str] | None = None,
    timeout: float = 120,
) -> Any:
    """Run `python -c source *args` from the repository; the JSON of its last line of output.
    A child that fails raises with what it wrote to stderr."""
    done = subprocess.run(
        [sys.executable, "-c", source, *args],
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=None if env is None else dict(env),
    )
    if done.returncode != 0:
        raise AssertionError(f"the child exited {done.returncode}:\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])
