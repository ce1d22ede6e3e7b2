"""What a command costs before it works: every ``mote X --help`` against ``mote --help``, and the
fixed start-up of ``mote extract`` (interpreter, imports, decode workers, encoder) against
``python -c "import torch, open_clip"``.

Each figure is the median of ``--rounds`` runs of a real process, the commands interleaved round
by round so a busy machine slows them alike; the targets are ratios measured in this one run:
every help at most 1.5x ``mote --help``.

    python bench/startup.py                 # 5 rounds, a JSON line at the end
    python bench/startup.py --smoke --json figures.json   # 1 round (tests/test_bench_startup.py)
    python bench/startup.py --baseline /path/to/older/venv/bin/mote   # before/after, interleaved
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HELP_TARGET = 1.5  # every command's --help within this many times `mote --help`
BASELINE = "baseline: "  # the label of the --baseline installation's figures


def mote_script() -> str:
    """The ``mote`` console script of this interpreter's environment."""
    beside = Path(sys.executable).parent / "mote"
    return str(beside) if beside.exists() else (shutil.which("mote") or "mote")


def timed(command: list[str], cwd: Path | None = None) -> tuple[float, str]:
    """Wall seconds of one process and its stdout; a failure stops the bench."""
    started = time.perf_counter()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=600)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return seconds, done.stdout


def command_names() -> list[str]:
    from mote.stages.cli import BUILDERS  # light: the command table and typer

    return list(BUILDERS)


def help_cases(mote: str, label: str = "") -> dict[str, list[str]]:
    cases = {f"{label}mote --help": [mote, "--help"]}
    cases.update({f"{label}mote {n} --help": [mote, n, "--help"] for n in command_names()})
    return cases


def extract_case(mote: str, work: Path, videos_per_class: int, model: str) -> list[str]:
    from mote.pipeline.data.synthetic import write_motion_dataset

    data = write_motion_dataset(work / "videos", videos_per_class=videos_per_class)
    return [
        mote, "extract", "--dataset", "list", "--list", str(data.list_file), "--labels",
        str(data.labels_file), "--root", str(data.root), "--model", model, "--pretrained",
        "none", "--out", str(work / "store.zarr"), "--overwrite", "--json", "--devices", "cpu",
    ]  # fmt: skip


def measure(args: argparse.Namespace) -> dict:
    mote = mote_script()
    python = [sys.executable, "-c"]
    cases = {
        "python -c pass": [*python, "pass"],
        "import torch, open_clip": [*python, "import mote.pipeline, torch, open_clip"],
        **help_cases(mote),
        **(help_cases(args.baseline, BASELINE) if args.baseline else {}),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    extract_wall, extract_inside = [], []
    with tempfile.TemporaryDirectory() as folder:
        extract = extract_case(mote, Path(folder), args.videos_per_class, args.model)
        for _ in range(args.rounds):
            for name, command in cases.items():
                times[name].append(timed(command)[0])
            seconds, out = timed(extract)
            extract_wall.append(seconds)
            extract_inside.append(json.loads(out.strip().splitlines()[-1])["seconds"])
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["mote --help"]
    helps = {
        n: round(t / base, 2)
        for n, t in median.items()
        if n.endswith("--help") and not n.startswith(BASELINE)
    }
    wall, inside = statistics.median(extract_wall), statistics.median(extract_inside)
    return {
        "rounds": args.rounds,
        "seconds": {name: round(value, 3) for name, value in median.items()},
        "help_ratio": helps,
        "worst_help_ratio": max(helps.values()),
        "help_target": HELP_TARGET,
        "extract": {
            "model": args.model,
            "wall_s": round(wall, 3),
            "inside_s": round(inside, 3),
            "fixed_s": round(wall - inside, 3),
            "fixed_over_imports": round((wall - inside) / median["import torch, open_clip"], 2),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--videos-per-class", type=int, default=2)
    parser.add_argument("--model", default="mote-tiny", help="open_clip model, random weights")
    parser.add_argument("--smoke", action="store_true", help="1 round (tests)")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    parser.add_argument(
        "--baseline",
        help="the mote script of another installation (an older commit's venv): its help "
        "times are measured in the same rounds, interleaved, for a before/after table",
    )
    args = parser.parse_args()
    if args.smoke:
        args.rounds, args.videos_per_class = 1, 1
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = measure(args)
    width = max(len(name) for name in result["seconds"])
    for name, seconds in result["seconds"].items():
        if name.startswith(BASELINE):
            continue
        ratio = result["help_ratio"].get(name)
        before = result["seconds"].get(BASELINE + name)
        print(
            f"{name:<{width}}  {seconds:7.3f} s"
            + (f"  {ratio:4.2f}x" if ratio else "")
            + (f"  (baseline {before:.3f} s)" if before is not None else "")
        )
    e = result["extract"]
    print(
        f"mote extract ({e['model']}): wall {e['wall_s']:.2f} s, its own timer {e['inside_s']:.2f}"
        f" s, fixed start-up {e['fixed_s']:.2f} s = {e['fixed_over_imports']:.2f}x the imports"
    )
    print(json.dumps(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
