"""The `mlsd` command line: the lab's control room."""

from __future__ import annotations

from typing import Any

import typer
from typer.core import TyperOption

from mlsd.commands import capacity as capacity_cmd
from mlsd.commands import config as config_cmd
from mlsd.commands import data as data_cmd
from mlsd.commands import demo as demo_cmd
from mlsd.commands import experiment as experiment_cmd
from mlsd.commands import features as features_cmd
from mlsd.commands import monitor as monitor_cmd
from mlsd.commands import rehearse as rehearse_cmd
from mlsd.commands import rollout as rollout_cmd
from mlsd.commands import stack as stack_cmd
from mlsd.commands import status as status_cmd
from mlsd.commands import train as train_cmd
from mlsd.commands import walk as walk_cmd
from mlsd.commands import watch as watch_cmd
from mlsd.commands import world as world_cmd
from mlsd.console import EXIT_CODES_HELP
from mlsd.telemetry import quiet_libraries

quiet_libraries()


def _hide_flag_types() -> None:
    """Typer 0.29's help prints a type beside every option, so each flag (`--help`, `--json`)
    shows a `<bool>` that is no value to type. Keep the types of options that take a value."""
    shown = TyperOption.display_type_rich

    def display_type_rich(self: TyperOption, ctx: Any) -> str | None:
        return None if self.is_flag else shown(self, ctx)

    TyperOption.display_type_rich = display_type_rich  # type: ignore[method-assign]


_hide_flag_types()

app = typer.Typer(
    name="mlsd",
    help="mlsd-lab: rehearse ML system design on live components.",
    epilog=EXIT_CODES_HELP,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_show_locals=False,
)
app.add_typer(config_cmd.app, name="config")
app.add_typer(rollout_cmd.app, name="rollout")
app.add_typer(features_cmd.app, name="features")
data_cmd.register(app)
train_cmd.register(app)
stack_cmd.register(app)
status_cmd.register(app)
demo_cmd.register(app)
walk_cmd.register(app)
capacity_cmd.register(app)
experiment_cmd.register(app)
rehearse_cmd.register(app)
world_cmd.register(app)
monitor_cmd.register(app)
watch_cmd.register(app)


if __name__ == "__main__":
    app()
