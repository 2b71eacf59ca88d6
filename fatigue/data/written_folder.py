"""What a folder of generated videos holds: a record beside them of what was asked, which
files the writing makes, and whether it finished. With it, the same command run again
after an interruption writes the videos again, one run after they were all written has
nothing to do, and a folder holding anything else is told apart (refused without --force).

    plan = Plan(asked={...options...}, outputs=["alert/subject01_1", "drowsy/s_2.txt", ...])
    state(folder, plan)   # 'empty', 'written', 'interrupted' or 'other'
    begin(folder, plan); ...write...; finish(folder, plan)

An output named without a suffix is a video whose container (.avi or .mp4) the writing
decides as it goes.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from fatigue import files

RECORD_FILE = ".synthetic_videos.json"
VIDEO_SUFFIXES = (".avi", ".mp4")


@dataclass(frozen=True)
class Plan:
    asked: dict            # the options that decide the files (JSON-able)
    outputs: list[str]     # the files, relative to the folder, '/'-separated


@dataclass(frozen=True)
class State:
    kind: str              # 'empty', 'written', 'interrupted' or 'other'
    strangers: list[str]   # files the plan does not make
    earlier: dict | None   # what an earlier writing of other files was asked (kind 'other')


def _is_output(rel: str, outputs: set[str]) -> bool:
    if rel in outputs:
        return True
    stem, dot, suffix = rel.rpartition(".")
    return bool(dot) and f".{suffix.lower()}" in VIDEO_SUFFIXES and stem in outputs


def _present(out: Path, name: str) -> bool:
    return (out / name).is_file() or any((out / f"{name}{s}").is_file() for s in VIDEO_SUFFIXES)


def _files(out: Path) -> list[str]:
    """Every file under `out` but the record, the claim and temporary files."""
    if not out.is_dir():
        return []
    names = []
    for path in sorted(out.rglob("*")):
        rel = path.relative_to(out).as_posix()
        if path.is_file() and rel != RECORD_FILE and rel != files.CLAIM_FILE \
                and not path.name.endswith(files.TMP_SUFFIX):
            names.append(rel)
    return names


def read_record(out: Path) -> dict | None:
    try:
        record = json.loads((out / RECORD_FILE).read_text())
    except (OSError, ValueError):
        return None
    ok = isinstance(record, dict) and isinstance(record.get("asked"), dict) \
        and isinstance(record.get("outputs"), list)
    return record if ok else None


def state(out: Path, plan: Plan) -> State:
    record = read_record(out)
    present = _files(out)
    if not present and record is None:
        return State("empty", [], None)
    if record is None or record["asked"] != plan.asked:
        return State("other", present, record and record["asked"])
    outputs = set(plan.outputs)
    strangers = [rel for rel in present if not _is_output(rel, outputs)]
    if strangers:
        return State("other", strangers, None)
    whole = record.get("complete") is True and all(_present(out, n) for n in plan.outputs)
    return State("written" if whole else "interrupted", [], None)


def earlier_outputs(out: Path) -> list[Path]:
    """The files an earlier writing recorded in `out` made (whatever it was asked)."""
    record = read_record(out)
    if record is None:
        return []
    outputs = {str(n) for n in record["outputs"]}
    return [out / rel for rel in _files(out) if _is_output(rel, outputs)]


def begin(out: Path, plan: Plan) -> None:
    _write(out, plan, complete=False)


def finish(out: Path, plan: Plan) -> None:
    _write(out, plan, complete=True)


def _write(out: Path, plan: Plan, complete: bool) -> None:
    out.mkdir(parents=True, exist_ok=True)
    files.atomic_write_text(out / RECORD_FILE, json.dumps(
        {"asked": plan.asked, "complete": complete, "outputs": plan.outputs}) + "\n")
