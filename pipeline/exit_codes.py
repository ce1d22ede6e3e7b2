"""mote's exit codes, named once: error classes, the store's errors and the CLI read them here.

No imports, so the store contract, the error types and ``mote --help`` may all use it; what each
code means for a user is ``EXIT_CODES`` in stages/faults.py (the README's table).
"""

DONE = 0
NO_RESULT = 1  # no video gave a result, or with --strict some failed
USAGE = 2  # usage or input error
DAMAGE = 3  # damage found in a store or run file
SYSTEM = 4  # system fault: disk, permissions, network, a device
DIVERGED = 5  # training diverged
BUG = 70  # unexpected error (EX_SOFTWARE)
INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT
TERMINATED = 143  # SIGTERM: 128 + SIGTERM
