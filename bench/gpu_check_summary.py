"""The summary table of bench/gpu_check.sh: one row per step (status, seconds, key figures),
read from the step log files and JSON figures in its output folder.

    python bench/gpu_check_summary.py OUT_DIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _log_summary(log: Path) -> str:
    """The step's ``SUMMARY`` line, else its last non-empty line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()]
    except OSError:
        return "no log"
    tagged = [line[len("SUMMARY ") :] for line in lines if line.startswith("SUMMARY ")]
    rest = [line for line in lines if line]
    return tagged[-1] if tagged else (rest[-1] if rest else "")


def _extract(out: Path) -> str:
    f = _json(out / "extract_devices.json")
    if not f:
        return ""
    per_device = ", ".join(f"{d['device']} {d['videos_per_s']:.1f}" for d in f.get("c_devices", []))
    return (
        f"{f.get('model')} on {f.get('devices')}: decode {f.get('a_decode_vps')}, encode "
        f"{f.get('b_encode_vps')}, extract {f.get('c_extract_vps')} videos/s "
        f"(per device: {per_device}); c/limit {f.get('c_over_limit')}"
    )


def _json_lines(log: Path) -> list[dict]:
    """The JSON objects a command printed one per line (``--json``)."""
    if not log.exists():
        return []
    text = log.read_text(errors="replace")
    return [json.loads(line) for line in text.splitlines() if line.startswith("{")]


def _dask(out: Path) -> str:
    lines = _json_lines(out / "extract_dask.log")
    if not lines:
        return ""
    s = lines[-1]
    workers = ", ".join(
        f"{d.get('device')}[CVD={d.get('cuda_visible_devices')}] {d.get('videos')}"
        for d in s.get("devices", [])
    )
    return f"{s.get('newly_done')} done, {s.get('videos_per_s')} videos/s; workers: {workers}"


def _train(name: str) -> Callable[[Path], str]:
    def figures(out: Path) -> str:
        f = _json(out / f"{name}.json")
        rows = f.get("epochs", {}).get("rows", [])
        parts = [
            f"{r['arch']} {r['step']} {r['videos_per_s']:,.0f} v/s {r['aten_ops_per_step']} ops"
            for r in rows
        ]
        return f"D={f.get('dim')}: " + "; ".join(parts) if parts else ""

    return figures


def _scaling(out: Path) -> str:
    rows = _json(out / "scaling.json").get("rows", {})
    return "; ".join(
        f"W={w}: {r['launching_per_step']:.0f} launches/step ({r['outside_losses_per_step']:.0f} "
        f"outside the losses), host {r['host_ms_per_step']:.1f} ms/step"
        for w, r in sorted(rows.items(), key=lambda kv: int(kv[0]))
    )


def _e2e(out: Path) -> str:
    f = _json(out / "finetune_e2e.json")
    if not f:
        return ""
    peaks = ", ".join(f"{k[9:]} {v} GiB" for k, v in f.items() if k.startswith("peak_gib_") and v)
    return (
        f"{f.get('model')} {f.get('c_precision')}, checkpointing {f.get('c_grad_checkpointing')}: "
        f"decode {f.get('a_decode_augment_vps')}, steps {f.get('b_train_steps_vps')}, full "
        f"{f.get('c_finetune_e2e_vps')} videos/s, c/limit {f.get('c_over_limit')}; steps peak "
        f"{f.get('b_peak_gib')} GiB" + (f"; {peaks}" if peaks else "")
    )


def _predict(out: Path) -> str:
    lines = _json_lines(out / "predict.log")
    if not lines:
        return ""
    top = lines[0].get("top") or [{}]
    name = Path(lines[0].get("video", "")).name
    return f"{len(lines)} video(s); {name}: {top[0].get('label')} p={top[0].get('score')}"


FIGURES: dict[str, Callable[[Path], str]] = {
    "extract_devices": _extract,
    "extract_dask": _dask,
    "train_b16": _train("train_b16"),
    "train_l14": _train("train_l14"),
    "scaling": _scaling,
    "finetune_e2e": _e2e,
    "predict": _predict,
}


def main() -> None:
    out = Path(sys.argv[1])
    rows = [line.split("\t") for line in (out / "steps.tsv").read_text().splitlines() if line]
    print(f"{'step':<16} {'status':<8} {'s':>5}  figures")
    failed = 0
    for name, rc, seconds in rows:
        status = "ok" if rc == "0" else ("TIMEOUT" if rc == "124" else f"FAIL {rc}")
        failed += rc != "0"
        try:
            figures = FIGURES[name](out) if name in FIGURES else ""
        except (KeyError, TypeError, ValueError) as error:  # a figure missing: say so, go on
            figures = f"(figures unreadable: {error!r})"
        figures = figures or _log_summary(out / f"{name}.log")
        print(f"{name:<16} {status:<8} {seconds:>5}  {figures}")
    print(f"{len(rows) - failed} of {len(rows)} steps ok; logs and JSON in {out}")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
