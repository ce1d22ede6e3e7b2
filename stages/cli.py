"""The ``mote`` command: the typer app over the command table, and its entry point.

Every command is generated from its config dataclass (stages/configs/, stages/options.py): the
options, their help and ``[default: X]``, positional arguments and aliases all come from the
fields' metadata, so a setting is spelled once, in its dataclass. What each command runs and
prints is stages/command_table.py. Commands are built lazily (``_Commands``) from their light
settings modules; the stage module (torch, open_clip) is imported only when the command runs, so
no ``--help`` waits for it. ``main`` turns every fault, click's refusals of the command line
included, into one line.

Whether the reader is a terminal is decided for help by ``TerminalHelp`` and for progress by
``command_progress`` (stages/plain.py): rich panels and bars on a terminal, whole plain lines off
one.
"""

import logging
import os
import signal
import sys
from typing import Any

import click
import typer
from typer.core import TyperCommand, TyperGroup

from mote.pipeline.exit_codes import INTERRUPTED, TERMINATED, USAGE
from mote.stages.command_table import BUILDERS, Terminated
from mote.stages.faults import (
    ClickError,
    NoArgsIsHelp,
    exit_code,
    fault_message,
    print_error,
    show_mote_warnings,
)
from mote.stages.plain import TerminalHelp


class _Command(TerminalHelp, TyperCommand):
    """One mote command."""


def _build(name: str) -> click.Command:
    builder = BUILDERS[name]
    single = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
    single.command(name, cls=_Command, help=builder.__doc__)(builder())
    return typer.main.get_command(single)


class _Commands(TerminalHelp, TyperGroup):
    """A typer group whose commands are built on first use; its own help lists docstrings."""

    _listing = False

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(BUILDERS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in BUILDERS:
            return None
        if self._listing:
            return click.Command(name, help=BUILDERS[name].__doc__)
        built = self.__dict__.setdefault("_built", {})
        if name not in built:
            built[name] = _build(name)
        return built[name]

    def format_help(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        self._listing = True
        try:
            super().format_help(ctx, formatter)
        finally:
            self._listing = False


app = typer.Typer(
    name="mote",
    cls=_Commands,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(asked: bool) -> None:
    if asked:
        from mote.pipeline import __version__

        print(f"mote {__version__}")
        raise typer.Exit()


@app.callback()
def _mote(
    version: bool = typer.Option(
        False,
        "--version",
        help="Print mote's version and exit.",
        callback=_print_version,
        is_eager=True,
    ),
) -> None:
    """MoTE video recognition from CLIP: extract CLIP frame features once into a Zarr store,
    then train and evaluate temporal experts from the cache in minutes."""


def _terminate(signum: int, frame: Any) -> None:
    raise Terminated


def main() -> None:
    """Entry point: every fault is one line on stderr and an exit code by
    ``faults.EXIT_CODES``; ``MOTE_DEBUG=1`` re-raises, showing the traceback."""
    signal.signal(signal.SIGTERM, _terminate)
    show_mote_warnings()
    # fsspec's event loop logs an outage's orphaned requests as tracebacks; the fault itself
    # reaches the command and is its one line
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    try:
        code = app(prog_name="mote", standalone_mode=False)  # click's errors come to us
    except NoArgsIsHelp as bare:  # `mote` alone: its help (rich: shown)
        if str(bare).strip():
            print(bare)
        sys.exit(USAGE)
    except ClickError as refused:  # no such option, a missing argument, a bad value
        print_error(fault_message(refused))
        sys.exit(exit_code(refused))
    except Terminated:
        print_error("terminated: rerun the same command to resume where it stopped")
        sys.exit(TERMINATED)
    except (KeyboardInterrupt, typer.Abort):
        print_error("interrupted: rerun the same command to resume where it stopped")
        sys.exit(INTERRUPTED)
    except Exception as error:  # the last resort: never a traceback unless asked for
        if os.environ.get("MOTE_DEBUG", "") not in ("", "0"):
            raise
        print_error(fault_message(error))
        sys.exit(exit_code(error))
    sys.exit(code if isinstance(code, int) else 0)  # typer.Exit(code), --help's 0, or done


if __name__ == "__main__":
    main()
