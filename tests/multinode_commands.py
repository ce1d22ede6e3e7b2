"""A torchrun worker that runs several ``mote`` commands in a row (tests/test_multinode.py,
tests/test_train_distributed.py).

``torchrun ... tests/multinode_commands.py ARGS [--then ARGS]...``: each ARGS is one command line
of ``mote`` (what ``python -m mote.stages ARGS`` runs: the same ``cli.main``, its one ``error:``
line and its exit code). Why one process for several commands: on 2 shared cores, each pair of
launchers costs its rendezvous and four interpreters importing torch and open_clip, more than
the tiny runs themselves. The worker opens the gloo group once; each command's
``DistContext`` joins it instead of opening its own, and leaves it open for the next.

After each command, one line on stderr: ``mote COMMAND: exit CODE``.
"""

from __future__ import annotations

import os
import sys

import torch.distributed as dist

from mote.stages.cli import main

SEPARATOR = "--then"


def command_lines(argv: list[str]) -> list[list[str]]:
    """The command lines between ``--then`` separators."""
    lines: list[list[str]] = [[]]
    for word in argv:
        if word == SEPARATOR:
            lines.append([])
        else:
            lines[-1].append(word)
    return [line for line in lines if line]


def run_command(argv: list[str]) -> int:
    """``mote ARGV`` through the real entry point; its exit code."""
    sys.argv = ["mote", *argv]
    try:
        main()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 1
    return 0


if __name__ == "__main__":
    dist.init_process_group("gloo")
    try:
        for line in command_lines(sys.argv[1:]):
            code = run_command(line)
            sys.stdout.flush()
            # one write, so the lines of processes sharing the pipe never run together
            sys.stderr.write(f"mote {line[0]}: exit {code}\n")
            sys.stderr.flush()
    finally:
        dist.destroy_process_group()
    # Leave without the interpreter's teardown: once, under load, a worker that had run two
    # commands (each "exit 0") aborted there ("terminate called without an active
    # exception", a native thread still joinable at exit), failing a launch whose every
    # command had finished. Every command's outcome is already on stderr.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)
