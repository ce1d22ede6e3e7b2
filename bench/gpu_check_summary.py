"""The summary of bench/gpu_check.sh: one row per planned step (status, seconds, limit, key
figures), read from the step logs and JSON figures in its work folder, written to the output
folder as summary.md (the table, also printed), summary.json and logs.txt (each log's tail).

Rewritten after every step, so a run cut short still brings back a table. What it writes is
capped (``LOG_TAIL`` per log, ``OUT_CAP`` in all): the output folder is copied back from the
GPU machine with limits on what comes back, and the summary must not be lost to a big log.

    python bench/gpu_check_summary.py WORK_DIR OUT_DIR
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

LOG_TAIL = 64 * 1024  # bytes of each step's log that come back
OUT_CAP = 5 * 1024 * 1024  # bytes of the output folder in all
JSON_CAP = 64 * 1024  # a step's JSON figures larger than this stay in the work folder
NOTES = {  # steps.tsv's note -> the status shown when the step did not run to its end
    "unselected": "skipped: not selected",
    "no_time": "skipped: no time",
    "no_environment": "skipped: no mote or no CUDA",
    "cut": "cut at deadline",
}


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
    lines = _json_lines(out / "logs" / "extract_dask.log")
    if not lines:
        return ""
    s = lines[-1]
    workers = ", ".join(
        f"{d.get('device')}[CVD={d.get('cuda_visible_devices')}] {d.get('videos')}"
        for d in s.get("devices", [])
    )
    return f"{s.get('newly_done')} done, {s.get('videos_per_s')} videos/s; workers: {workers}"


def _staging(out: Path) -> str:
    f = _json(out / "staging.json")
    if not f:
        return ""
    return (
        f"staged/plain {f.get('staged_over_plain')} ({f.get('staged_images_per_s')} vs "
        f"{f.get('plain_images_per_s')} images/s), copy hidden {f.get('copy_hidden')}, "
        f"identical {f.get('identical_embeddings')}"
    )


def _decode(out: Path) -> str:
    """One cell per backend and video of decode_backends.py's table: accuracy and frames/s."""
    try:
        lines = (out / "logs" / "decode.log").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    rows = [c for c in cells if len(c) >= 5 and c[0] not in ("video", "---")]
    return "; ".join(f"{c[0]} {c[1]}: {c[2]}, {c[4]} frames/s" for c in rows)


def _extract_decoder(name: str) -> Callable[[Path], str]:
    def figures(out: Path) -> str:
        lines = _json_lines(out / "logs" / f"{name}.log")
        if not lines:
            return ""
        s = lines[-1]
        done, failed = s.get("newly_done"), s.get("newly_failed")
        return f"{done} done, {failed} failed, {s.get('videos_per_s')} videos/s"

    return figures


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


def _scaling(out: Path, name: str = "scaling.json") -> str:
    rows = _json(out / name).get("rows", {})
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
    lines = _json_lines(out / "logs" / "predict.log")
    if not lines:
        return ""
    top = lines[0].get("top") or [{}]
    name = Path(lines[0].get("video", "")).name
    return f"{len(lines)} video(s); {name}: {top[0].get('label')} p={top[0].get('score')}"


FIGURES: dict[str, Callable[[Path], str]] = {
    "extract_devices": _extract,
    "extract_dask": _dask,
    "staging": _staging,
    "decode": _decode,
    "extract_cpu_decode": _extract_decoder("extract_cpu_decode"),
    "extract_gpu_decode": _extract_decoder("extract_gpu_decode"),
    "train_b16": _train("train_b16"),
    "train_l14": _train("train_l14"),
    "scaling": _scaling,
    "finetune_e2e": _e2e,
    "predict": _predict,
    "graphed_ddp": lambda out: _scaling(out, "graphed_ddp.json"),
}


def status(rc: str, note: str) -> str:
    """The row's status: ok, FAIL rc, timeout (its own cap), cut at deadline, skipped: why."""
    if note in NOTES:
        return NOTES[note]
    if rc == "0":
        return "ok"
    return "timeout" if rc in ("124", "137") else f"FAIL {rc}"


def rows(work: Path) -> list[dict]:
    """One row per planned step, in order; a step with no record yet shows as not run."""
    plan = (work / "plan.txt").read_text().split()
    done = {}
    for line in (work / "steps.tsv").read_text().splitlines():
        name, rc, seconds, limit, note = line.split("\t")
        done[name] = {
            "step": name,
            "status": status(rc, note),
            "s": int(seconds),
            "limit": int(limit),
        }
    table = []
    for name in plan:
        row = done.get(name, {"step": name, "status": "not run", "s": 0, "limit": 0})
        figures = ""
        if row["status"] not in NOTES.values() and row["status"] != "not run":
            try:
                figures = FIGURES[name](work) if name in FIGURES else ""
            except (KeyError, TypeError, ValueError) as error:  # a figure missing: say so, go on
                figures = f"(figures unreadable: {error!r})"
            figures = figures or _log_summary(work / "logs" / f"{name}.log")
        row["figures"] = figures.replace("|", "/")
        table.append(row)
    return table


def markdown(table: list[dict]) -> str:
    """The table as markdown: readable printed and in summary.md, pasteable into the docs."""
    lines = ["| step | status | s | limit s | figures |", "|---|---|---|---|---|"]
    lines += [
        f"| {r['step']} | {r['status']} | {r['s']} | {r['limit']} | {r['figures']} |" for r in table
    ]
    ok = sum(r["status"] == "ok" for r in table)
    selected = [r for r in table if r["status"] != NOTES["unselected"]]
    return "\n".join(lines) + f"\n\n{ok} of {len(selected)} steps ok\n"


def tail(path: Path, size: int) -> str:
    """The last ``size`` bytes of a log (a step that printed megabytes keeps only its end)."""
    with path.open("rb") as f:
        f.seek(max(0, path.stat().st_size - size))
        return f.read().decode(errors="replace")


def write_out(work: Path, out: Path, table: list[dict], text: str) -> None:
    """summary.md, summary.json and logs.txt, no more than ``OUT_CAP`` bytes together."""
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(text)
    for row in table:
        figures = work / f"{row['step']}.json"
        if figures.exists() and figures.stat().st_size <= JSON_CAP:
            row["json"] = _json(figures)
    (out / "summary.json").write_text(json.dumps({"steps": table}, indent=1, default=str))
    room = OUT_CAP - sum(f.stat().st_size for f in out.iterdir() if f.name != "logs.txt")
    parts = []
    for row in table:
        log = work / "logs" / f"{row['step']}.log"
        if log.exists():
            parts.append(f"==== {row['step']}: {row['status']} ====\n{tail(log, LOG_TAIL)}\n")
    logs = "".join(parts).encode()  # over the cap: the latest steps' logs are kept
    (out / "logs.txt").write_bytes(logs[max(0, len(logs) - max(room, 0)) :])


def main() -> None:
    work, out = Path(sys.argv[1]), Path(sys.argv[2])
    table = rows(work)
    text = markdown(table)
    write_out(work, out, table, text)
    print(text, end="")
    failed = [r for r in table if r["status"] not in ("ok", NOTES["unselected"])]
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
