"""Preparation of real driver videos (NTHU-DDD, UTA-RLDD or your own recordings) into the
clip store that training reads (fatigue.data.clip_store), split by subject; `prepare.py`
is its command line (also reached as `python dataset.py --prepare ...`).

Each video is decoded at --fps, the face is tracked and cropped on every frame
(fatigue.data.video), and the crops are cached per video in DATA_DIR/.prepare/; clips are
then cut from the cache and written to the store in the order of the sorted video paths.
So an interrupted run picks up where it stopped, any worker count gives the same bytes,
and changing only clip options (--sequence-length, --stride, --min-face-fraction,
--min-drowsy, splits) re-cuts without decoding.

Nothing here imports torch: the worker processes (spawned, so they import this module
afresh) stay light.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing as mp
import queue
import shutil
import signal
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np
from fatigue import files, progress
from fatigue.files import CLIPS_FILE
from fatigue.data import tracking, video
from fatigue.data.clip_store import (dataset_exists, interrupted_write, load_manifest,
                                     write_clip_store)
from fatigue.data.layouts import SUBJECT_RULE, Scan, Video, assign_splits, scan_source
from fatigue.errors import SaidInterrupt, UserError
from fatigue.text import agree, counted, first_few
from fatigue.training.stop import StopTraining, signals_raise

CACHE_DIR = ".prepare"
CACHE_VERSION = 3  # bump when per-video processing changes: old caches are then ignored


# ----------------------------------------------------------------------------- per-video work
_progress_queue = None


def _init_worker(progress_queue) -> None:
    global _progress_queue
    _progress_queue = progress_queue
    cv2.setNumThreads(1)  # one core per worker: parallelism is over videos
    # Ctrl-C is handled by the main process. SIGTERM is not ignored: the pool ends its
    # workers with it (a SIGTERM to the whole group ends them too; the main process says so).
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _worker_task(task: dict) -> dict:
    return process_video(task, _progress_queue.put)


def process_video(task: dict, progress: Callable[[int], None] | None = None) -> dict:
    """Decode and crop one video into its cache file; returns timings (not the frames).

    A video OpenCV cannot read is cached as an error, so a rerun does not retry it."""
    opts, shard = task["frame_options"], Path(task["shard"])
    tracker = tracking.FaceTracker(opts["detect_every"], opts["detect_width"])
    frame_folder = Path(task["file"]).is_dir()
    try:
        faces = video.read_video_faces(
            task["file"], opts["fps"], opts["image_size"], opts["channels"], tracker=tracker,
            margin=opts["margin"], source_fps=opts["frames_fps"] if frame_folder else None,
            progress=progress, normalize=opts["normalize"], region=opts["region"],
            rotate=opts.get("rotate", 0))
    except (video.VideoError, cv2.error) as err:
        message = str(err).strip().splitlines()[-1]
        files.atomic_write_text(shard.with_suffix(".error"), message)
        return {"path": task["path"], "errors": 1}
    # Atomic: a killed run never leaves half a cache file, which a rerun would trust.
    files.atomic_write(shard, lambda fh: np.savez(fh, frames=faces.frames,
                                                  face_found=faces.face_found,
                                                  source_index=faces.source_index,
                                                  source_frames=faces.source_frames,
                                                  source_fps=faces.source_fps,
                                                  unreadable=np.array(faces.unreadable, dtype=str),
                                                  odd_rate=faces.rate_assumed,
                                                  undecodable=faces.undecodable,
                                                  ended_early=np.array(faces.ended_early or (0, 0)),
                                                  resized=faces.resized))
    return {"path": task["path"], "source_frames": faces.source_frames, "frames": len(faces.frames),
            "decode_s": faces.decode_seconds, "detect_s": faces.detect_seconds,
            "total_s": faces.total_seconds}


def damage_words(damaged: dict) -> str:
    """'alert/s1.avi: 3 frames could not be decoded (replaced by the one before), it ends at
    frame 48 of the 90 it announces (cut short?)'."""
    said = []
    if damaged.get("undecodable"):
        said.append(f"{counted(damaged['undecodable'], 'frame')} could not be decoded "
                    f"(replaced by the one before)")
    if damaged.get("announced"):
        said.append(f"it ends at frame {damaged['ended_at']} of the {damaged['announced']} it "
                    f"announces (cut short?)")
    if damaged.get("resized"):
        said.append(f"{counted(damaged['resized'], 'frame image')} of another size than the "
                    f"first (resized to it)")
    return f"{damaged['source']}: {', '.join(said)}"


def run_tasks(tasks: list[dict], workers: int, bar: progress.Bar) -> Iterator[dict]:
    """Results of process_video as they finish, in this process or in a spawn pool."""
    if workers <= 1 or len(tasks) <= 1:
        for task in tasks:
            yield process_video(task, bar.update)
        return
    ctx = mp.get_context("spawn")  # fork is unsafe with OpenCV's and torch's threads
    frames_done = ctx.Queue()
    with ctx.Pool(min(workers, len(tasks)), _init_worker, (frames_done,)) as pool:
        results = pool.imap_unordered(_worker_task, tasks)
        for _ in tasks:
            while True:
                try:
                    result = results.next(timeout=0.2)
                    break
                except mp.TimeoutError:
                    _drain(frames_done, bar)
            _drain(frames_done, bar)
            yield result


def _drain(frames_done, bar: progress.Bar) -> None:
    try:
        while True:
            bar.update(frames_done.get_nowait())
    except queue.Empty:
        pass


# ----------------------------------------------------------------------------- clips
def drowsy_frames_needed(min_drowsy_seconds: float, fps: float, sequence_length: int) -> int:
    """Frames labelled drowsy that make a clip drowsy: `min_drowsy_seconds` of them, but never
    more than half the clip (so the default of a 3 s clip is its first second of a doze,
    and a short clip keeps the majority rule, a tie counting as drowsy)."""
    return max(1, min(math.ceil(min_drowsy_seconds * fps - 1e-9), math.ceil(sequence_length / 2)))


def cut_clips(item: Video, found: np.ndarray, source_index: np.ndarray, sequence_length: int,
              stride: int, min_face: float, drowsy_needed: int
              ) -> tuple[list[dict], list[int], dict]:
    """Clip records of one video, the start frame of each kept clip, and counts."""
    n = len(found)
    labels = None
    if item.frame_labels is not None:
        # Label files and decoded videos can differ by a few frames: use the shorter.
        digits = np.frombuffer(item.frame_labels.encode(), dtype=np.uint8) - ord("0")
        n = int(np.searchsorted(source_index, len(digits)))
        labels = digits[source_index[:n]]
    records, starts, dropped = [], [], 0
    for start in range(0, n - sequence_length + 1, stride):
        window = slice(start, start + sequence_length)
        face = float(found[window].mean())
        if face < min_face:
            dropped += 1
            continue
        # The split is dealt once every video's clips are known (split_subjects_with_clips).
        rec = {"id": f"{item.path}@{start}", "subject": item.subject, "split": None,
               "source": item.path, "start": start, "face_fraction": round(face, 4)}
        if labels is not None:
            # Drowsy from the first second of a doze on, not from its middle: a detector
            # watching the latest 3 s must call a doze as it begins (missing one costs more).
            rec["label"] = int(labels[window].sum() >= drowsy_needed)
            rec["frame_labels"] = "".join(map(str, labels[window]))
        else:
            rec["label"] = item.label
        rec.update(item.extra)
        records.append(rec)
        starts.append(start)
    return records, starts, {"dropped": dropped, "frames": len(found), "found": int(found.sum())}


def run(args: argparse.Namespace) -> int:
    """Prepare the videos of args.prepare into args.data_dir (the options as prepare.py
    parses them); prints the summary. Returns the exit code (0)."""
    started = time.perf_counter()
    source, data_dir = Path(args.prepare).expanduser(), Path(args.data_dir)
    scan = scan_source(source, data_dir, args)
    source = source.resolve()
    assign_splits(scan.videos, args.val_fraction, args.seed)  # a layout's error, before any work

    frame_options = {"prepare_version": CACHE_VERSION, "fps": args.fps,
                     "image_size": args.image_size, "channels": args.channels,
                     "detect_every": args.detect_every, "detect_width": args.detect_width,
                     "margin": args.margin, "normalize": args.normalize, "region": args.region,
                     "frames_fps": args.frames_fps or args.fps,
                     # Only when given: caches of upright videos keep their names.
                     **({"rotate": args.rotate} if args.rotate else {})}
    options = {**frame_options, "sequence_length": args.sequence_length, "stride": args.stride,
               "min_face_fraction": args.min_face_fraction, "min_drowsy": args.min_drowsy,
               "val_fraction": args.val_fraction,
               "seed": args.seed}
    if args.format == "rldd":
        options.update(fold=args.fold, rldd_classes=args.rldd_classes)
    # A video's cache file is named by its path, size and time of change: a replaced file
    # is redone, even at the same size (a folder of same-sized frame images).
    stamps = {v.path: _stamp(source / v.path) for v in scan.videos}
    # The split a layout fixes is part of it: a corrected reading of a layout's sets (NTHU's
    # evaluation subjects, once taken for training) must not find the data 'already prepared'.
    fingerprint = _digest([args.format, options, [(v.path, stamps[v.path], v.frame_labels,
                                                   v.subject, v.split) for v in scan.videos]])
    if not _clear_store(data_dir, source, fingerprint, args.force):
        print(f"Already prepared: {data_dir}/ holds these videos with these options; "
              f"nothing to do.")
        return 0

    cache = data_dir / CACHE_DIR / f"frames-{_digest(frame_options)[:12]}"
    cache.mkdir(parents=True, exist_ok=True)
    shard_of = {v.path: cache / f"{_digest([v.path, stamps[v.path]])[:20]}.npz"
                for v in scan.videos}
    if args.force:  # videos that failed before are tried again
        for shard in shard_of.values():
            shard.with_suffix(".error").unlink(missing_ok=True)
    todo = [{"path": v.path, "file": str(source / v.path), "shard": str(shard_of[v.path]),
             "frame_options": frame_options} for v in scan.videos
            if not any(shard_of[v.path].with_suffix(s).exists() for s in (".npz", ".error"))]
    stats = _process(todo, args.workers, len(scan.videos))

    records, blocks, counts, mismatches = collect_clips(scan, shard_of, args)
    split_of = split_subjects_with_clips(scan, records, args)
    meta = {"classes": scan.classes, "source": args.format, "source_dir": str(source), **options,
            "prepare_fingerprint": fingerprint, "skipped_videos": scan.skipped,
            "label_length_mismatches": mismatches, "replaced_frame_images": scan.replaced,
            "damaged_videos": scan.damaged}
    write_clip_store(data_dir, _clip_blocks(blocks, args.sequence_length), records, meta)
    _remove_stale(data_dir / CACHE_DIR, cache, set(shard_of.values()))
    print(summary(args, scan, records, counts, mismatches, stats, split_of,
                  time.perf_counter() - started, [source / t["path"] for t in todo[:3]]))
    return 0


def _clear_store(data_dir: Path, source: Path, fingerprint: str, force: bool) -> bool:
    """False when DATA_DIR already holds exactly this result, whole (--force: always
    rebuilt). A data set made from another SOURCE, or by something else, and a folder of
    other files, are only written into with --force; an old data set stays whole and usable
    until the new one is written (write_clip_store)."""
    if not dataset_exists(data_dir):
        # An interrupted preparation continues: its cache, and the clips it was putting in
        # place when it stopped (write_clip_store writes the manifest last).
        ours = {CACHE_DIR} | ({CLIPS_FILE} if (data_dir / CACHE_DIR).is_dir()
                              or interrupted_write(data_dir) else set())
        others = files.other_files(data_dir, ours)
        if others and not force:
            raise UserError(f"{data_dir}/ is not empty ({first_few(others)}) and holds no "
                            f"data set; add --force to write into it anyway, or choose "
                            f"another --data-dir")
        return True
    try:
        old = load_manifest(data_dir)
        whole = (data_dir / CLIPS_FILE).is_file()
    except UserError:
        old, whole = {}, False
    if old.get("prepare_fingerprint") == fingerprint and whole and not force:
        return False
    if old.get("source_dir") != str(source) and not force:
        raise UserError(f"{data_dir}/ already holds a data set made from something else; add "
                        f"--force to replace it or choose another --data-dir")
    return True


def split_subjects_with_clips(scan: Scan, records: list[dict],
                              args: argparse.Namespace) -> dict[str, str]:
    """Subject -> split, dealt among the subjects whose videos gave clips (a subject without
    any would take a split's place and leave it empty), written into the records. Refuses
    clips that cannot make a training and a validation split."""
    with_clips = {r["subject"] for r in records}
    split_of, notes = assign_splits([v for v in scan.videos if v.subject in with_clips],
                                    args.val_fraction, args.seed)
    scan.notes += notes
    for rec in records:
        rec["split"] = split_of[rec["subject"]]
    labels = sorted({r["label"] for r in records})
    if len(labels) < 2:
        raise UserError(f"every clip is {scan.classes[labels[0]]!r}: a detector needs clips of "
                        f"at least two classes (check the label folders, and the videos that "
                        f"gave no clip)")
    empty = [c for i, c in enumerate(scan.classes) if not any(r["label"] == i for r in records)]
    # A label folder without a clip: its output would never be trained (a stray folder read
    # as a label took the per-frame labels of the others). The public sets' classes are
    # fixed: there a class without clips is said per split below.
    if empty and args.format == "folders":
        raise UserError(f"no clip of {agree(len(empty), 'class', 'classes')} "
                        f"{', '.join(empty)} among the {len(scan.classes)} "
                        f"({', '.join(scan.classes)}): check the label folders, and the "
                        f"videos that were skipped ({len(scan.skipped)}"
                        + (f"; first: {scan.skipped[0]['source']}: {scan.skipped[0]['reason']}"
                           if scan.skipped else "") + ") or gave no clip")
    missing = [s for s in ("train", "val") if s not in split_of.values()]
    if missing == ["val"] and args.val_fraction == 0:
        raise UserError("--val-fraction 0 leaves no val split, which training needs: give a "
                        "fraction such as 0.15, or put the val subjects' videos under val/ "
                        "folders")
    if missing:
        raise UserError(f"the clips come from {counted(len(with_clips), 'subject')} "
                        f"({', '.join(sorted(with_clips))}), too few for a "
                        f"{' and a '.join(missing)} split: training needs people in both. "
                        f"Add videos of more people "
                        f"({counted(len(no_clip(scan, records)), 'video')} gave no clip, "
                        f"{len(scan.skipped)} were skipped)"
                        + (f". {SUBJECT_RULE}" if args.format == "folders" else ""))
    for split in ("train", "val", "test"):
        held = {r["label"] for r in records if r["split"] == split}
        lacking = [c for i, c in enumerate(scan.classes) if i not in held]
        if held and lacking:
            scan.notes.append(f"the {split} split holds no clip of {', '.join(lacking)} (its "
                              f"subjects have none): " + (
                                  "the model cannot learn it; add videos of it by more people"
                                  if split == "train" else
                                  f"its accuracy says nothing of "
                                  f"{agree(len(lacking), 'that class', 'those classes')}"))
    return split_of


def no_clip(scan: Scan, records: list[dict]) -> list[str]:
    """The videos that were read but gave no clip (skipped ones are listed apart)."""
    return sorted({v.path for v in scan.videos} - {r["source"] for r in records}
                  - {s["source"] for s in scan.skipped})


def collect_clips(scan: Scan, shard_of: dict[str, Path],
                  args: argparse.Namespace) -> tuple[list[dict], list, Counter, list[dict]]:
    """Records of all clips in video path order (their split not yet dealt), with where
    their frames are, from the per-video cache; videos that failed are moved to
    scan.skipped."""
    records, blocks, counts, mismatches, slower, odd_rate = [], [], Counter(), [], [], []
    drowsy_needed = drowsy_frames_needed(args.min_drowsy, args.fps, args.sequence_length)
    for item in scan.videos:
        shard = shard_of[item.path]
        if shard.with_suffix(".error").exists():
            scan.skipped.append({"source": item.path,
                                 "reason": shard.with_suffix(".error").read_text()})
            continue
        with np.load(shard) as z:
            found, index, decoded = z["face_found"], z["source_index"], int(z["source_frames"])
            unreadable = list(z["unreadable"]) if "unreadable" in z.files else []
            source_fps = float(z["source_fps"]) if "source_fps" in z.files else args.fps
            if "odd_rate" in z.files and bool(z["odd_rate"]):
                odd_rate.append(item.path)
            trouble = {k: int(z[k]) for k in ("undecodable", "resized") if k in z.files and z[k]}
            if "ended_early" in z.files and z["ended_early"][1]:  # (0, 0): not cut
                trouble.update(ended_at=int(z["ended_early"][0]),
                               announced=int(z["ended_early"][1]))
            if "undecodable" not in z.files:  # cached by a prepare that did not record it
                scan.unchecked.append(item.path)
        if trouble:
            scan.damaged.append({"source": item.path, **trouble})
        if source_fps < args.fps - 1e-6:
            slower.append(f"{item.path} at {source_fps:g} fps")
        if unreadable:
            scan.replaced.append({"source": item.path, "images": len(unreadable),
                                  "first": Path(unreadable[0]).name})
        if item.frame_labels is not None and len(item.frame_labels) != decoded:
            mismatches.append({"source": item.path, "frames": decoded,
                               "labels": len(item.frame_labels)})
        recs, kept, c = cut_clips(item, found, index, args.sequence_length, args.stride,
                                  args.min_face_fraction, drowsy_needed)
        counts.update(c, videos=1)
        records += recs
        blocks.append((shard, kept))
    if not records:
        raise UserError(f"no clip survived: the videos are shorter than --sequence-length "
                        f"{args.sequence_length} frames at {args.fps:g} fps, or faces were "
                        f"found in fewer than --min-face-fraction {args.min_face_fraction} of "
                        f"their frames")
    if odd_rate:
        n = len(odd_rate)
        scan.notes.append(f"{counted(n, 'video')} {agree(n, 'gives', 'give')} a frame rate that "
                          f"cannot be right, so {agree(n, 'it was', 'they were')} read at "
                          f"{video.FALLBACK_FPS:g} fps (times and labels may be off): "
                          f"{first_few(odd_rate)}")
    if slower:
        n = len(slower)
        scan.notes.append(f"{counted(n, 'video')} {agree(n, 'runs', 'run')} slower than --fps "
                          f"{args.fps:g}, so each of {agree(n, 'its', 'their')} frames is "
                          f"repeated (times stay right; a lower --fps saves the work): "
                          f"{first_few(slower)}")
    scan.skipped.sort(key=lambda s: s["source"])
    return records, blocks, counts, mismatches


def _stamp(path: Path) -> list[int]:
    """A video file's (or a folder of frame images') size and latest time of change."""
    if path.is_file():
        return [path.stat().st_size, path.stat().st_mtime_ns]
    entries = [f.stat() for f in path.iterdir()]
    return [sum(e.st_size for e in entries),
            max([path.stat().st_mtime_ns, *(e.st_mtime_ns for e in entries)])]


def _digest(value) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True).encode()).hexdigest()


def _process(todo: list[dict], workers: int, total_videos: int) -> Counter:
    """Run the pending videos with a progress bar over their frames; sum their timings."""
    stats = Counter(done=total_videos - len(todo))
    if not todo:
        return stats
    started = time.perf_counter()
    estimate = 0
    for task in todo:
        try:
            with video.VideoReader(task["file"]) as reader:
                estimate += reader.frame_count()
        except video.VideoError:
            pass
    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # the same single-threaded OpenCV as in the workers
    # A bar on a terminal, a plain line every 10 s in a log (fatigue.progress).
    bar = progress.bar(total=estimate, unit="frame", desc=f"videos {stats['done']}/{total_videos}",
                       unit_scale=True, dynamic_ncols=True)
    try:
        with signals_raise(StopTraining, (signal.SIGTERM,)):  # as Ctrl+C: said, then ended
            for result in run_tasks(todo, workers, bar):
                stats.update(done=1, processed=1,
                             **{k: v for k, v in result.items() if k != "path"})
                bar.set_description(f"videos {stats['done']}/{total_videos}")
    except (KeyboardInterrupt, StopTraining) as stop:
        bar.close()
        print(f"Interrupted after {stats['done']} of {total_videos} videos; run the same "
              f"command again to continue from there.", file=sys.stderr)
        if isinstance(stop, StopTraining):
            raise SystemExit(stop.exit_code) from None
        raise SaidInterrupt from None  # said above: run_cli's "interrupted" would repeat it
    except BrokenPipeError:
        raise  # `prepare ... | head`: the reader left; run_cli ends quietly
    except OSError as err:  # disk full, permissions: nothing a skipped video would fix
        raise UserError(f"prepare stopped: {err}; fix that and run the same command again "
                        f"to continue") from None
    finally:
        bar.close()
        cv2.setNumThreads(threads)
    stats["workers"] = min(workers, len(todo))
    stats["seconds"] = time.perf_counter() - started
    return stats


def _clip_blocks(starts: list[tuple[Path, list[int]]], length: int) -> Iterator[np.ndarray]:
    """uint8 [n, T, C, H, W] per video, in record order: one video in memory at a time."""
    for shard, kept in starts:
        if kept:
            with np.load(shard) as z:
                frames = z["frames"]
            yield frames[np.asarray(kept)[:, None] + np.arange(length)]


def _remove_stale(root: Path, current: Path, shards: set[Path]) -> None:
    """Drop caches of other frame options and of videos no longer in SOURCE."""
    for folder in root.iterdir():
        if folder != current:
            shutil.rmtree(folder, ignore_errors=True)
    for path in current.iterdir():
        if path.with_suffix(".npz") not in shards:
            path.unlink()


SIDEWAYS_HINT = " (a camera mounted sideways or upside down? add --rotate 90, 180 or 270)"


def summary(args: argparse.Namespace, scan: Scan, records: list[dict], counts: Counter,
            mismatches: list[dict], stats: Counter, split_of: dict[str, str], seconds: float,
            timed: list[Path]) -> str:
    """The report printed at the end: videos, frames, faces, clips per split and label, speed."""
    # Of the videos prepared: those read by this run and those its cache held (a video
    # that could not be read is neither: it is among the skipped).
    read_now = stats["processed"] - stats["errors"]
    lines = [f"Prepared {counts['videos']} videos from {args.prepare} ({args.format}) into "
             f"{args.data_dir}/ in {seconds:.1f} s ({read_now} processed now, "
             f"{counts['videos'] - read_now} from the cache)."]
    if scan.skipped:
        lines.append(f"  skipped {counted(len(scan.skipped), 'video')} (all listed in manifest.json):")
        lines += [f"    {s['source']}: {s['reason']}" for s in scan.skipped[:10]]
    lines += [f"  note: {note}" for note in scan.notes]
    if scan.replaced:
        first = scan.replaced[0]
        images = counted(sum(r['images'] for r in scan.replaced), 'frame image')
        lines.append(f"  warning: {images} in {counted(len(scan.replaced), 'folder')} could not "
                     f"be read, each replaced by the one before it (first: "
                     f"{first['source']}/{first['first']}; all listed in manifest.json)")
    if scan.damaged:
        lines.append(f"  warning: {counted(len(scan.damaged), 'video')} read with trouble "
                     f"(all listed in manifest.json, damaged_videos); first: "
                     f"{damage_words(scan.damaged[0])}")
    if scan.unchecked:
        lines.append(f"  note: {counted(len(scan.unchecked), 'video')} came from a cache made "
                     f"by an older prepare, which kept no record of damaged frames (the oldest "
                     f"stopped reading a video at its first undecodable frame); delete "
                     f"{Path(args.data_dir) / CACHE_DIR}/ to read them again")
    without = no_clip(scan, records)
    if without:
        lines.append(f"  {counted(len(without), 'video')} gave no clip (too short, or the face "
                     f"found in too few frames): {first_few(without, 5)}")
    found = counts["found"] / max(1, counts["frames"])
    sideways = "" if found >= 0.5 or args.rotate else SIDEWAYS_HINT
    lines.append(f"  frames: {counts['frames']} at {args.fps:g} fps, face found in "
                 f"{100 * found:.1f}%{sideways}")
    if mismatches:
        worst = max(mismatches, key=lambda m: abs(m["frames"] - m["labels"]))
        n = len(mismatches)
        lines.append(f"  labels: {counted(n, 'label file')} {agree(n, 'differs', 'differ')} in "
                     f"length from {agree(n, 'its', 'their')} video (by up to "
                     f"{abs(worst['frames'] - worst['labels'])} frames, {worst['source']}); "
                     f"clipped to the shorter")
        far = [m for m in mismatches if abs(m["frames"] - m["labels"]) > 0.1 * m["frames"]]
        if far:
            lines.append(f"  warning: {counted(len(far), 'label file')} "
                         f"{agree(len(far), 'differs from its', 'differ from their')} video by "
                         f"more than a tenth: is each the right video's? " + first_few(
                             [f"{m['source']} ({m['labels']} labels, {m['frames']} frames)"
                              for m in far]) + " (one digit per frame the video holds: a "
                         "phone's variable-rate video holds fewer than its seconds at 30 fps)")
    lines.append(f"  clips: {len(records)} of {args.sequence_length} frames, stride {args.stride}; "
                 f"{counts['dropped']} dropped (face in < {args.min_face_fraction:g} of frames)")
    per = Counter((r["split"], r["label"]) for r in records)
    lines.append(f"    {'':6}" + "".join(f"{c:>14}" for c in scan.classes) + f"{'subjects':>10}")
    for split in ("train", "val", "test"):
        cells = "".join(f"{per[split, i]:>14}" for i in range(len(scan.classes)))
        lines.append(f"    {split:6}{cells}{sum(s == split for s in split_of.values()):>10}")
    if stats["source_frames"]:
        frames = stats["source_frames"]
        lines.append(f"  speed: {frames / stats['seconds']:.0f} source frames/s with "
                     f"{counted(stats['workers'], 'worker')}, "
                     f"{frames / stats['total_s']:.0f}/s per worker; "
                     f"OpenCV decode alone: {video.decode_fps(timed):.0f} frames/s (1 thread, "
                     f"first {len(timed)} videos); face detection took "
                     f"{stats['detect_s'] / max(stats['decode_s'], 1e-9):.2f}x the decode time")
    lines.append(f"  cache: {args.data_dir}/{CACHE_DIR}/ holds the per-video crops (changing "
                 f"only clip options reuses them; delete it to free space)")
    return "\n".join(lines)
