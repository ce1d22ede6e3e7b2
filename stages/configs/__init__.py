"""Each command's settings, one module per command, importing neither torch nor open_clip.

``mote X --help`` builds its options from the dataclass here alone (stages/cli.py); the stage
module (stages/X.py) imports it and the heavy code when the command runs.
``tests/test_architecture.py`` keeps this package light.
"""
