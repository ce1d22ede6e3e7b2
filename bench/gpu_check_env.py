"""First step of bench/gpu_check.sh: does mote import, is CUDA there, which versions run? A fresh
GPU box must stop here in one line (exit 3) rather than fail every later step for one cause.

    python bench/gpu_check_env.py --device cuda|cpu
"""

from __future__ import annotations

import argparse
import platform
import sys
from importlib.metadata import PackageNotFoundError, version


def mote_version() -> str:
    """The installed mote's version (``import mote`` must work too: the steps import it)."""
    import mote  # noqa: F401

    try:
        return version("mote")
    except PackageNotFoundError:  # imported from a checkout on sys.path, not installed
        return "checkout"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    args = parser.parse_args()
    try:
        import torch

        mote = mote_version()
    except Exception as error:  # any import failure (a missing wheel, a bad build): one line
        print(f"gpu_check: mote does not import: {type(error).__name__}: {error}")
        sys.exit(3)
    cuda = torch.cuda.is_available()
    print(f"python {platform.python_version()}, torch {torch.__version__}, mote {mote}")
    print(f"torch built for CUDA {torch.version.cuda}; CUDA available: {cuda}")
    if args.device == "cuda" and not cuda:
        built = f"torch {torch.__version__}, built for CUDA {torch.version.cuda}"
        print(f"gpu_check: no CUDA device ({built}): nothing to check; --device cpu: the CPU twin")
        sys.exit(3)
    gpu = "cpu"
    if cuda and args.device == "cuda":
        props = torch.cuda.get_device_properties(0)
        gpu = f"{torch.cuda.device_count()} x {props.name} {props.total_memory / 2**30:.0f} GiB"
        print(f"{gpu}, bf16 {torch.cuda.is_bf16_supported()}, sm {props.major}{props.minor}")
    print(
        f"SUMMARY python {platform.python_version()}, torch {torch.__version__}, CUDA "
        f"{torch.version.cuda}, {gpu}, mote {mote}"
    )


if __name__ == "__main__":
    main()
