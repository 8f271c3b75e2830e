"""`mlflow server`, with its web server in the CLI's own process: `python -m
mlsd.stack.mlflow_server <the options of mlflow server>`.

`mlflow server` (3.17) checks its options, initialises the stores, then starts uvicorn as a
child process and waits for it. The waiting CLI keeps every module it imported: measured in a
lab on 2 cores, 209 MB of PSS beside the 216 MB of the uvicorn that serves. Here MLflow's CLI
does all it does, and where it would start the child, the child's command replaces the CLI in
the same process (`exec`): one process of the server's own, and the pid the supervisor records,
signals and checks is the server's.

This replaces one private name of MLflow's, `mlflow.server._exec_cmd`, the call that starts the
child. The CLI runs as it is (two processes) when that name is gone (another MLflow), or when
MLflow's job execution is on: with it, the CLI starts a job runner after the server and
forwards signals to it, which an exec would skip. The stack turns job execution off
(mlsd.stack.services.mlflow_component).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from typing import Any


def _exec_in_place(
    cmd: Sequence[str],
    *,
    throw_on_error: bool = True,
    extra_env: dict[str, str] | None = None,
    capture_output: bool = False,
    synchronous: bool = True,
    stream_output: bool = False,
    **popen_kwargs: Any,
) -> Any:
    """What `_exec_cmd(cmd, extra_env=..., capture_output=False, synchronous=False)` starts,
    run in place of this process; it never returns. Any other use of the call (a captured or
    awaited run, arguments for Popen) fails loudly instead of starting a server otherwise."""
    if capture_output or synchronous or stream_output or popen_kwargs:
        raise RuntimeError(
            "mlsd.stack.mlflow_server: MLflow started its server in a way this launcher does "
            "not know; run `mlflow server` itself"
        )
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], list(cmd), {**os.environ, **(extra_env or {})})


def in_place_possible() -> str | None:
    """None when the server can replace the CLI; else why not (it then runs as a child)."""
    import mlflow
    import mlflow.server
    from mlflow.environment_variables import MLFLOW_SERVER_ENABLE_JOB_EXECUTION

    if not callable(getattr(mlflow.server, "_exec_cmd", None)):
        return f"mlflow {mlflow.__version__} has no mlflow.server._exec_cmd"
    if MLFLOW_SERVER_ENABLE_JOB_EXECUTION.get():
        return "MLflow's job execution is on (MLFLOW_SERVER_ENABLE_JOB_EXECUTION)"
    return None


def main(argv: Sequence[str] | None = None) -> None:
    import mlflow.server
    from mlflow.cli import cli

    why_not = in_place_possible()
    if why_not is None:
        mlflow.server._exec_cmd = _exec_in_place
    else:
        print(
            f"mlsd: the MLflow server runs as a child of its CLI ({why_not}): "
            "one more process, about 200 MB",
            file=sys.stderr,
        )
    args = list(sys.argv[1:] if argv is None else argv)
    cli.main(args=["server", *args], prog_name="mlflow")


if __name__ == "__main__":
    main()
