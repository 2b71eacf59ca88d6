"""The clip store: the one on-disk format the training suite reads (one folder, `data/` by
default).

    clips.npy      uint8 array [N, T, C, H, W], memory-mapped at load time
    manifest.json  one record per clip (id, subject, label, split, source, start, ...),
                   the class names, the split's subjects; written last, so its presence
                   marks a complete data set.

Synthetic clips (fatigue.data.synthetic) and prepared real videos (fatigue.data.preparation)
both land in this format. This module needs numpy only (no torch), so that prepare's worker
processes stay light.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
from pathlib import Path
from typing import Iterable

import numpy as np

from fatigue import files
from fatigue.files import CLIPS_FILE, MANIFEST_FILE  # named there: outputs never replace them
from fatigue.errors import UserError
from fatigue.text import arg

FORMAT_VERSION = 1
MAX_FPS = 1000.0  # frames a second: rates above it (or inf) would repeat each frame until
                  # memory runs out (prepare, detect and export check theirs against it)
SPLITS = ("train", "val", "test")


def dataset_exists(data_dir: str | Path) -> bool:
    return (Path(data_dir) / MANIFEST_FILE).is_file()


def interrupted_write(data_dir: str | Path) -> bool:
    """Whether DATA_DIR holds the clips of a write that stopped before its manifest (the
    last file write_clip_store puts in place): clips of this store's kind, no manifest.
    The same command run again writes over them; a user's own clips.npy stays theirs."""
    clips = Path(data_dir) / CLIPS_FILE
    if dataset_exists(data_dir) or not clips.is_file():
        return False
    try:
        stored = np.load(clips, mmap_mode="r")
    except (OSError, ValueError):
        return False
    return stored.dtype == np.uint8 and stored.ndim == 5


def write_clip_store(data_dir: str | Path, clips: np.ndarray | Iterable[np.ndarray] | Path,
                     records: list[dict], meta: dict) -> None:
    """Write a data set.

    Args:
        clips: uint8 [N, T, C, H, W], or an iterable of such blocks whose rows follow
            `records` in order (so big data sets never sit in memory whole), or the path
            of another store's clips.npy holding them in that order: it is shared (a hard
            link; a copy where the file system cannot link).
        records: one dict per clip with at least id, subject, label and split.
        meta: must hold `classes` (names, index = label); anything else is kept as is.
    """
    data_dir = Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    # A killed writer's leftovers (its clips as big as the data set, its manifest) are named
    # by a process id never reused: drop them. Every command that writes a data set holds
    # the folder's claim.
    files.remove_temp_files(data_dir, claim_held=True)
    tmp = files.temp_path(data_dir / CLIPS_FILE)
    try:
        shape = (_share_clips(tmp, clips, len(records)) if isinstance(clips, Path)
                 else _write_clips(tmp, clips, len(records)))
        for rec in records:
            if rec.get("split") not in SPLITS:
                raise ValueError(f"clip {rec.get('id')} has no split")
        manifest = {"format_version": FORMAT_VERSION, "clip_shape": shape, **meta,
                    "splits": {s: sorted({r["subject"] for r in records if r["split"] == s})
                               for s in SPLITS},
                    "clips": records}
        # The old manifest goes only now, just before its clips are replaced: until here a
        # failure leaves the previous data set whole; after, no manifest marks a half-done one.
        (data_dir / MANIFEST_FILE).unlink(missing_ok=True)
        files.commit(tmp, data_dir / CLIPS_FILE)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    files.atomic_write_text(data_dir / MANIFEST_FILE, json.dumps(manifest, indent=1))


def _share_clips(tmp: Path, source: Path, count: int) -> list[int]:
    """`source` (a clips.npy of `count` rows) at `tmp`, ready for files.commit: shared, a
    hard link where possible (no clips.npy is ever changed in place, so the two stores
    cannot disturb each other)."""
    files.link_or_copy(source, tmp)
    shared = np.load(tmp, mmap_mode="r")
    shape, dtype = shared.shape, shared.dtype
    del shared
    if dtype != np.uint8 or len(shape) != 5:
        raise ValueError(f"{source} does not hold uint8 clips [N, T, C, H, W]")
    if shape[0] != count:
        raise ValueError(f"{source} holds {shape[0]} clips for {count} records")
    return list(shape[1:])


def _write_clips(tmp: Path, clips: np.ndarray | Iterable[np.ndarray], count: int) -> list[int]:
    """Write the clip blocks to `tmp` as one .npy file of `count` rows, flushed and fsynced
    (ready for files.commit); returns the shape of one clip."""
    blocks = [clips] if isinstance(clips, np.ndarray) else clips
    out = None
    row = 0
    for block in blocks:
        if block.dtype != np.uint8 or block.ndim != 5:
            raise ValueError("clips must be uint8 [N, T, C, H, W]")
        if out is None:
            # Memory-mapped: the blocks go straight to disk, never all in memory at once.
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8,
                                            shape=(count,) + block.shape[1:])
            _reserve(tmp)
        out[row:row + len(block)] = block
        row += len(block)
    if out is None or row != count:
        raise ValueError(f"{row} clips written for {count} records")
    out.flush()
    shape = list(out.shape[1:])
    del out
    with open(tmp, "rb+") as fh:
        os.fsync(fh.fileno())
    return shape


def _reserve(path: Path) -> None:
    """Claim the disk space of the (sparse) file at `path` now: a full disk is then an
    OSError here, not a SIGBUS when a page of the memory map is first written."""
    if not hasattr(os, "posix_fallocate"):
        return
    with open(path, "rb+") as fh:
        try:
            os.posix_fallocate(fh.fileno(), 0, os.fstat(fh.fileno()).st_size)
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS):
                return  # a file system without it: the write itself will tell
            raise UserError(f"no room for the clips in {path.parent}/ ({err.strerror}, "
                            f"{os.fstat(fh.fileno()).st_size / 1e6:.1f} MB needed): free space "
                            f"or give another --data-dir; nothing was changed") from None


def load_manifest(data_dir: str | Path) -> dict:
    path = Path(data_dir) / MANIFEST_FILE
    if Path(data_dir).is_file():
        raise UserError(f"{data_dir} is a file, not a data set folder; give the folder that "
                        f"'python dataset.py' wrote (it holds {MANIFEST_FILE})")
    if not path.is_file():
        raise UserError(f"no data set in {data_dir}/ (no {MANIFEST_FILE}); make one with "
                        f"'python dataset.py --synthetic --data-dir {arg(data_dir)}' or "
                        f"prepare videos with 'python dataset.py --prepare SOURCE --format "
                        f"{{nthu,rldd,folders}} --data-dir {arg(data_dir)}'")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as err:  # ValueError: not JSON, or not text at all
        raise UserError(f"{path} is unreadable ({err}); rebuild the data set") from None
    if not isinstance(manifest, dict):
        raise UserError(f"{path} is not a data set's manifest; rebuild the data set")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has format {manifest.get('format_version')}, this code "
                        f"reads {FORMAT_VERSION}; rebuild the data set")
    problem = manifest_problem(manifest)
    if problem:
        raise UserError(f"{path}: {problem}; it was changed by hand or damaged: rebuild the "
                        f"data set (python dataset.py ...)")
    return manifest


def manifest_problem(manifest: dict) -> str | None:
    """What makes a manifest unusable (None: nothing): every clip read by training and
    evaluation needs an id, a subject, a label among the classes and a known split."""
    classes, shape, clips = (manifest.get(k) for k in ("classes", "clip_shape", "clips"))
    if not isinstance(classes, list) or len(classes) < 2 or \
            not all(isinstance(c, str) for c in classes):
        return "'classes' is not a list of two or more class names"
    if not isinstance(shape, list) or len(shape) != 4 or \
            not all(_whole(v) and v > 0 for v in shape):
        return "'clip_shape' is not [frames, channels, height, width]"
    if not isinstance(clips, list):
        return "'clips' is not a list of clips"
    fps = manifest.get("fps")  # prepared videos' rate: detect and export feed the model at it
    if fps is not None and not (isinstance(fps, (int, float)) and not isinstance(fps, bool)
                                and 0 < fps <= MAX_FPS):
        return f"'fps' is {fps!r}, not a frame rate (more than 0, at most {MAX_FPS:g})"
    seen = set()
    for k, clip in enumerate(clips):
        if not isinstance(clip, dict):
            return f"clip {k} is not a record"
        name = clip.get("id", k)
        for key in ("id", "subject"):
            if not isinstance(clip.get(key), str):
                return f"clip {name} has no '{key}' (text)"
        if not (_whole(clip.get("label")) and 0 <= clip["label"] < len(classes)):
            return (f"clip {name} has label {clip.get('label')!r}, not one of 0..{len(classes) - 1} "
                    f"({', '.join(classes)})")
        if clip.get("split") not in SPLITS:
            return f"clip {name} has split {clip.get('split')!r}, not one of {', '.join(SPLITS)}"
        if clip["id"] in seen:
            return f"clip id {name} is there twice"
        seen.add(clip["id"])
    return None


def _whole(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def data_fingerprint(manifest: dict) -> str:
    """Identifies a data set by what training sees: clip ids, subjects, labels, splits, shape."""
    key = [manifest["clip_shape"], manifest["classes"],
           [(c["id"], c["subject"], c["label"], c["split"]) for c in manifest["clips"]]]
    return hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]


def open_clips(data_dir: str | Path, manifest: dict | None = None) -> np.ndarray:
    """The data set's clips, memory-mapped, checked against its manifest (read here when
    not given)."""
    manifest = manifest if manifest is not None else load_manifest(data_dir)
    path = Path(data_dir) / CLIPS_FILE
    try:
        clips = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}); rebuild the data set") from None
    expected = (len(manifest["clips"]), *manifest["clip_shape"])
    if clips.dtype != np.uint8 or clips.shape != expected:
        raise UserError(f"{path} holds {clips.dtype} clips of shape {list(clips.shape)} where "
                        f"{MANIFEST_FILE} says uint8 {list(expected)} (clips, frames, channels, "
                        f"height, width); the two do not belong together: rebuild the data set")
    return clips
