"""``python -m mote.stages ...`` runs the ``mote`` command (what ``torchrun -m`` needs)."""

from mote.stages.cli import main

main()
