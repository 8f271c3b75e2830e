"""What the supervisor runs (a Component) and what it remembers about a started one (a RunRecord)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# The watchdog is recorded like a component, under this name, so no component may use it.
WATCHDOG = "watchdog"


class Component(BaseModel):
    """One long-running process of the stack: how to start it and how to tell it is healthy."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(
        pattern=r"^[a-z][a-z0-9-]*$",
        description="Unique name; also names its log file and its pid record.",
    )
    argv: tuple[str, ...] = Field(min_length=1, description="Command line, argv[0] included.")
    env: dict[str, str] = Field(
        default_factory=dict,
        description="Variables added to the inherited environment (mlsd.telemetry's switches are added for all).",
    )
    log_file: Path = Field(description="Where stdout and stderr go (appended).")
    host: str = Field("127.0.0.1", description="Address it binds.")
    port: int | None = Field(None, description="Port it binds; checked free before it starts.")
    health_url: str | None = Field(
        None, description="Answers 2xx when the component is ready; unset: alive means healthy."
    )
    url: str | None = Field(None, description="What a person opens or a client points at.")
    depends_on: tuple[str, ...] = Field(
        (), description="Components that must be healthy before this one starts."
    )
    cwd: Path | None = Field(None, description="Working directory; unset: the caller's.")
    state_dirs: tuple[Path, ...] = Field(
        (), description="Directories created before it starts (SQLite does not create them)."
    )
    health_timeout_seconds: float | None = Field(
        None, gt=0, description="Overrides the stack's health timeout for a slow starter."
    )


class RunRecord(BaseModel):
    """A started component as `<run_dir>/<name>.json`: enough to find, restart and stop it later.

    `create_time` is what makes stopping safe: a pid alone may have been reused by an unrelated
    process once ours died, so a pid is only ours while its start time still matches.
    """

    model_config = ConfigDict(extra="forbid")

    component: Component
    pid: int = Field(description="Process id of the leader (also its process group id).")
    create_time: float = Field(description="The leader's start time (psutil, seconds since epoch).")
    restarts: int = Field(0, ge=0, description="Restarts by the watchdog since `mlsd up`.")
    state: Literal["running", "restarting", "failed"] = "running"

    @property
    def name(self) -> str:
        return self.component.name

    @staticmethod
    def path(run_dir: Path, name: str) -> Path:
        return run_dir / f"{name}.json"

    def save(self, run_dir: Path) -> Path:
        """Write atomically: `mlsd status` and the watchdog read these while others write them."""
        run_dir.mkdir(parents=True, exist_ok=True)
        target = self.path(run_dir, self.name)
        tmp = target.with_suffix(f".json.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.model_dump(mode="json"), indent=2) + "\n")
        os.replace(tmp, target)
        return target

    @classmethod
    def load(cls, path: Path) -> RunRecord | None:
        """The record in `path`, or None when it vanished or is not a record (left by a crash)."""
        try:
            return cls.model_validate_json(path.read_text())
        except (OSError, ValueError):
            return None
