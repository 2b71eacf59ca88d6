"""What a SOURCE folder holds, per published layout: its videos, their subjects, labels
and the splits the layout fixes (NTHU-DDD's sets, UTA-RLDD's folds, split folders), and the
subject-wise split of the rest. No video is opened here; fatigue.data.preparation does the
decoding.
"""
from __future__ import annotations

import argparse
import codecs
import csv
import os
import random
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from fatigue.data import video
from fatigue.errors import UserError
from fatigue.text import agree, counted, first_few

FORMATS = ("nthu", "rldd", "folders")
TEST_FRACTION = 0.2  # share of subjects for test when the layout names no test subjects
BYTE_ORDER_MARKS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"),
                    (codecs.BOM_UTF16_BE, "utf-16"))
NTHU_SCENARIOS = ("glasses", "noglasses", "sunglasses", "night_noglasses", "nightglasses")
# NTHU-DDD's training videos' names (<subject>/<scenario>/<name>.avi), and its evaluation and test
# videos': <subject>_<scenario>_mix.mp4.
NTHU_TRAINING_VIDEOS = ("nonsleepyCombination", "sleepyCombination", "slowBlinkWithNodding",
                        "yawning")
NTHU_MIX = re.compile(r"([^_]+)_(.+)_mix(?:ing)?", re.IGNORECASE)
RECTIFIED = re.compile(r"^re(?:cti|cit)fi?e?d[_\- ]?", re.IGNORECASE)  # incl. 'recitfied'
RLDD_NAME = re.compile(r"(0|5|10)(?:_(\d+))?")  # 10.mov, 10_1.mp4 (a video split in parts)
RLDD_CLASSES = {2: {0: 0, 10: 1}, 3: {0: 0, 5: 1, 10: 2}}
RLDD_NAMES = {2: ["alert", "drowsy"], 3: ["alert", "low_vigilant", "drowsy"]}
SPLIT_FOLDERS = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test",
                 "eval": "test", "evaluation": "test"}


@dataclass(frozen=True)
class Video:
    path: str                       # relative to SOURCE, '/'-separated: the record's `source`
    subject: str
    split: str | None = None        # fixed by the layout (NTHU set, RLDD fold, split folder)
    label: int | None = None        # the whole video's class (RLDD, folders)
    frame_labels: str | None = None  # one digit per source frame (NTHU; folders' .txt files)
    extra: tuple = ()               # (key, value) pairs copied into each clip record


@dataclass
class Scan:
    videos: list[Video]
    classes: list[str]
    skipped: list[dict] = field(default_factory=list)  # {"source", "reason"}
    notes: list[str] = field(default_factory=list)
    replaced: list[dict] = field(default_factory=list)  # {"source", "images", "first"}
    # {"source", "undecodable", "ended_at", "announced", "resized"}: a video read with trouble
    damaged: list[dict] = field(default_factory=list)
    unchecked: list[str] = field(default_factory=list)  # from a cache without that record


# ----------------------------------------------------------------------------- layouts
def _norm(text: str) -> str:
    """Spelling-insensitive key: 'night_noglasses' == 'nightNoGlasses'."""
    return re.sub(r"[^a-z0-9]", "", text.lower())


def _walk(source: Path, skip: Path | None = None) -> Iterator[tuple[Path, list[str], list[str]]]:
    """os.walk of `source` (folder, its subfolders, its files), sorted, without hidden files
    and folders (macOS's ._ twins). Linked folders are followed (a data set spread over
    disks), each real folder once (a link back up the tree would loop); `skip` (--data-dir)
    is left out. The caller may empty the subfolders to prune."""
    seen = {source.resolve()}
    for root, dirs, files in os.walk(source, followlinks=True):
        here = Path(root)
        kept = []
        for d in sorted(dirs):
            real = (here / d).resolve()
            if not d.startswith(".") and real != skip and real not in seen:
                seen.add(real)
                kept.append(d)
        dirs[:] = kept
        yield here, dirs, sorted(f for f in files if not f.startswith("."))


def list_videos(source: Path, skip: Path | None, frame_folders: bool) -> list[str]:
    """Relative paths of the video files (and, if asked, folders of frame images), sorted."""
    found = []
    for here, dirs, files in _walk(source, skip):
        rel = here.relative_to(source).as_posix()
        images = any(f.lower().endswith(video.IMAGE_EXTENSIONS) for f in files)
        videos = any(f.lower().endswith(video.VIDEO_EXTENSIONS) for f in files)
        # A folder of frames holds images only: a stray picture beside videos or frame
        # folders (a cover, a thumbnail) does not turn a label folder into one video.
        if frame_folders and rel != "." and images and not videos and not dirs:
            found.append(rel)
            dirs[:] = []
            continue
        found += [(here / f).relative_to(source).as_posix() for f in files
                  if f.lower().endswith(video.VIDEO_EXTENSIONS)]
    return sorted(found)


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # bytes the file system gave as surrogates
        return False
    return True


def read_label_digits(path: Path) -> str:
    """A label file: one digit (0 or 1) per frame, as NTHU's one line; spaces, line breaks,
    commas and semicolons between them (a spreadsheet's export) are left out. Saved by a
    Windows editor, it may begin with a byte-order mark (UTF-8, or UTF-16 from PowerShell's
    `>`): read as that encoding."""
    raw = path.read_bytes()
    encoding = next((name for mark, name in BYTE_ORDER_MARKS if raw.startswith(mark)), "utf-8")
    digits = re.sub(r"[\s,;]", "", raw.decode(encoding, errors="replace"))
    if not digits or set(digits) - {"0", "1"}:
        raise ValueError(f"expected one 0/1 digit per frame in {path.name}")
    return digits


def _nthu_set(folders: tuple[str, ...]) -> str:
    """'train', 'eval' or 'test': the NTHU-DDD set the deepest folder naming one of them
    says ('Evaluation Dataset'), passing over a name of two (the archive holding both,
    'Training_Evaluation_Dataset'); '' if none."""
    for name in reversed([_norm(f) for f in folders]):
        named = [word for word in ("train", "eval", "test") if word in name]
        if len(named) == 1:
            return named[0]
    return ""


def scan_nthu(source: Path, paths: list[str]) -> Scan:
    scan = Scan([], ["alert", "drowsy"])
    labels_by_dir: dict[str, dict[str, str]] = {}
    everywhere: dict[str, list[str]] = {}
    for here, _, files in _walk(source):
        for f in files:
            if f.lower().endswith("_drowsiness.txt"):
                rel = (here / f).relative_to(source).as_posix()
                labels_by_dir.setdefault(str(Path(rel).parent), {})[_norm(Path(f).stem)] = rel
                everywhere.setdefault(_norm(Path(f).stem), []).append(rel)
    video_dirs = {str(Path(rel).parent) for rel in paths}
    chosen: dict[tuple, Video] = {}
    for rel in paths:
        parts = Path(rel).parts
        part = _nthu_set(parts[:-1])
        stem = Path(rel).stem
        mix = NTHU_MIX.fullmatch(stem)
        if mix:  # evaluation / test: <subject>_<scenario>_mix.mp4
            subject, scenario, name = mix[1], mix[2], "mix"
            key = _norm(f"{subject}{scenario}mixingdrowsiness")
        elif len(parts) >= 3:  # training: <subject>/<scenario>/<video>.avi
            subject, scenario, name = parts[-3], parts[-2], RECTIFIED.sub("", stem)
            key = _norm(f"{subject}{name}drowsiness")
        else:
            scan.skipped.append({"source": rel, "reason": "not in <subject>/<scenario>/ and "
                                 "not named <subject>_<scenario>_mix"})
            continue
        label = labels_by_dir.get(str(Path(rel).parent), {}).get(key)
        # Else labels shipped in a folder of their own (the testing set's test_label_txt/):
        # not one beside other videos, whose training labels share its name (a training
        # label names no scenario: glasses/ and night_noglasses/ both hold 001_yawning_...).
        elsewhere = sorted(f for f in everywhere.get(key, [])
                           if str(Path(f).parent) not in video_dirs)
        if label is None and len(elsewhere) == 1:
            label = elsewhere[0]
        if label is None:
            reason = (f"{len(elsewhere)} label files of its name, none beside it "
                      f"({', '.join(elsewhere[:3])}); move the right one beside the video"
                      if elsewhere else f"no label file {subject}_..._drowsiness.txt beside it")
            scan.skipped.append({"source": rel, "reason": reason})
            continue
        try:
            digits = read_label_digits(source / label)
        except (OSError, ValueError) as err:
            scan.skipped.append({"source": rel, "reason": f"bad label file: {err}"})
            continue
        scenario = next((s for s in NTHU_SCENARIOS if _norm(s) == _norm(scenario)), scenario)
        in_train = part == "train" if part else not mix
        # Which of NTHU's sets (papers report the evaluation set's figures apart).
        nthu_set = {"train": "training", "eval": "evaluation", "test": "testing"}.get(
            part, "training" if in_train else "testing")
        item = Video(rel, subject, "train" if in_train else "test", frame_labels=digits,
                     extra=(("scenario", scenario), ("nthu_set", nthu_set)))
        # A rectified copy beside the original replaces it rather than doubling it.
        slot = (subject, _norm(scenario), _norm(name))
        if slot in chosen:
            keep, drop = sorted((chosen[slot], item),
                                key=lambda v: not RECTIFIED.match(Path(v.path).stem))
            scan.skipped.append({"source": drop.path, "reason": f"duplicate of {keep.path}"})
            item = keep
        chosen[slot] = item
    scan.videos = sorted(chosen.values(), key=lambda v: v.path)
    return scan


def scan_rldd(paths: list[str], num_classes: int, test_fold: int) -> Scan:
    scan = Scan([], list(RLDD_NAMES[num_classes]))
    chosen: dict[tuple, Video] = {}
    dropped = 0
    for rel in paths:
        parts = Path(rel).parts
        name = RLDD_NAME.fullmatch(Path(rel).stem)
        if not name or len(parts) < 2:
            scan.skipped.append({"source": rel, "reason": "not <subject>/<0|5|10>[_part].<ext>"})
            continue
        subject = f"{int(parts[-2]):02d}" if parts[-2].isdigit() else parts[-2]
        folds = [int(m[1]) for p in parts[:-2]
                 if (m := re.fullmatch(r"fold_?(\d+)(?:_part\d+)?", p, re.IGNORECASE))]
        fold = folds[-1] if folds else ((int(subject) - 1) // 12 + 1 if subject.isdigit() else None)
        if fold is None:
            scan.skipped.append({"source": rel, "reason": "no Fold<k>_part<p> folder above it"})
            continue
        raw = int(name[1])
        if raw not in RLDD_CLASSES[num_classes]:
            dropped += 1
            continue
        item = Video(rel, subject, "test" if fold == test_fold else "train",
                     label=RLDD_CLASSES[num_classes][raw], extra=(("fold", fold),))
        # The doubled folder (Fold5_part2/Fold5_part2/...) may sit beside a clean copy.
        slot = (subject, Path(rel).stem)
        if slot in chosen:
            scan.skipped.append({"source": rel, "reason": f"duplicate of {chosen[slot].path}"})
            continue
        chosen[slot] = item
    if dropped:
        scan.notes.append(f"{dropped} low-vigilant (5) videos left out (--rldd-classes 2)")
    scan.videos = sorted(chosen.values(), key=lambda v: v.path)
    folds = sorted({dict(v.extra)["fold"] for v in scan.videos})
    if scan.videos and test_fold not in folds:
        raise UserError(f"--fold {test_fold} has no videos in this folder (found folds "
                        f"{', '.join(map(str, folds))}); pick one of those")
    if folds == [test_fold]:  # said before hours of decoding, not after as 'too few people'
        raise UserError(f"every video found is in fold {test_fold}, the test fold (--fold "
                        f"{test_fold}), which training never sees: unpack another fold too "
                        f"(Fold<k>_part1 and _part2), to train on")
    return scan


def _class_order(names: set[str]) -> list[str]:
    """Numbers numerically; otherwise alphabetical with drowsy-like names last, so that
    'alert/drowsy', 'awake/sleepy', 'notdrowsy/drowsy' and 'eyes_open/eyes_closed' all make
    the drowsy-like class the last one, which the alarm is for (metrics.positive_index)."""
    if all(n.isdigit() for n in names):
        return sorted(names, key=int)
    sleepy = re.compile(r"drows|sleep|fatig|tired|clos|shut|doz|yawn")
    negated = re.compile(r"^(non|not|no)[_\- ]?", re.IGNORECASE)
    return sorted(names, key=lambda n: (bool(sleepy.search(n.lower())) and not negated.match(n), n))


# How the folders layout tells people apart, said where that goes wrong.
SUBJECT_RULE = ("A video's subject (person) is its name up to the first '_' (s01_drive.mp4: "
                "s01), unless subjects.csv beside the label folders names it: one "
                "'file,subject' row a video")
# File-name prefixes that cameras and phones give every video (IMG_0001.MOV): no person.
CAMERA_PREFIXES = ("img", "vid", "pxl", "dsc", "mov", "gopr", "gx", "dji", "mvi", "video",
                   "movie", "rec", "record", "screen", "signal", "whatsapp")


def scan_folders(source: Path, paths: list[str]) -> Scan:
    table = _subjects_table(source)
    scan = Scan([], [])
    rows = []
    for rel in paths:
        parts = Path(rel).parts
        if len(parts) < 2:
            scan.skipped.append({"source": rel, "reason": "not inside a <label>/ folder"})
            continue
        name = Path(rel).stem if not (source / rel).is_dir() else Path(rel).name
        subject = table.get(rel) or table.get(Path(rel).name) or name.split("_", 1)[0]
        split = SPLIT_FOLDERS.get(parts[-3].lower()) if len(parts) >= 3 else None
        rows.append((rel, subject, split, parts[-2]))
    if any(r[2] for r in rows) and not all(r[2] for r in rows):
        raise UserError("some videos sit under train/val/test folders and some do not; put "
                        "all of them under split folders, or none (then subjects are split)")
    rows = _one_video_a_name(rows, scan)
    if not table:
        scan.notes += _subject_notes(rows)
    scan.classes = _class_order({r[3] for r in rows})
    other_layout = _known_layout(rows) if len(scan.classes) > 2 else None
    if other_layout:
        raise UserError(f"{source} looks like {other_layout[1]} (its folders read as "
                        f"{len(scan.classes)} labels here: {first_few(scan.classes)}): give "
                        f"--format {other_layout[0]}")
    if len(scan.classes) > 2:  # a folder below a label folder is a label of its own
        scan.notes.append(f"{len(scan.classes)} classes ({', '.join(scan.classes)}): each "
                          f"folder that holds videos is a label; put the videos of one label "
                          f"in one folder if that is not what you meant")
    for rel, subject, split, label in rows:
        # Optional per-frame labels: <name>.txt beside the video (or the frame folder).
        digits, where = None, source / rel
        label_file = (where.with_suffix(".txt") if where.is_file()
                      else where.parent / f"{where.name}.txt")
        if not label_file.is_file():  # also s1_a.TXT, as some recorders write it
            label_file = label_file.with_suffix(".TXT")
        if label_file.is_file():
            if len(scan.classes) != 2:
                scan.skipped.append({"source": rel, "reason": "per-frame labels (0/1) need "
                                     "exactly two class folders"})
                continue
            try:
                digits = read_label_digits(label_file)
            except ValueError as err:
                scan.skipped.append({"source": rel, "reason": f"bad label file: {err}"})
                continue
        scan.videos.append(Video(rel, subject, split, label=scan.classes.index(label),
                                 frame_labels=digits))
    _refuse_unused_labels(scan)
    return scan


def _subjects_table(source: Path) -> dict[str, str]:
    """SOURCE/subjects.csv's rows (file, as a path or a name -> subject); {} without it."""
    if not (source / "subjects.csv").is_file():
        return {}
    # utf-8-sig: a spreadsheet's "CSV UTF-8" starts with a byte-order mark, which would
    # otherwise stick to the first file name.
    try:
        with open(source / "subjects.csv", newline="", encoding="utf-8-sig") as fh:
            return {row[0].strip(): row[1].strip() for row in csv.reader(fh)
                    if len(row) >= 2 and not row[0].startswith("#")}
    except UnicodeDecodeError as err:
        raise UserError(f"{source / 'subjects.csv'} is not UTF-8 text ({err.reason} at "
                        f"byte {err.start}); save it as CSV UTF-8") from None


def _subject_notes(rows: list[tuple]) -> list[str]:
    """What to say of subjects taken from names that may not be people's."""
    notes = []
    spread = _subjects_across_folders(rows)
    if spread:
        notes.append(f"subjects here ({first_few(sorted(spread))}) are videos' whole names, "
                     f"each found under several of the folders above the label folders "
                     f"({first_few(sorted(set().union(*spread.values())))}): if those folders "
                     f"are the people, one person's videos are dealt to several splits; name "
                     f"the people in subjects.csv, or the videos <person>_<name>. "
                     f"{SUBJECT_RULE}")
    cameras = sorted({r[1] for r in rows if r[1].lower() in CAMERA_PREFIXES})
    if cameras:
        notes.append(f"{counted(len(cameras), 'subject')} ({', '.join(cameras)}) "
                     f"{agree(len(cameras), 'is a', 'are')} camera file-name "
                     f"{agree(len(cameras), 'prefix', 'prefixes')}, not "
                     f"{agree(len(cameras), 'a person', 'people')}: the splits need "
                     f"people. {SUBJECT_RULE}")
    return notes


def _refuse_unused_labels(scan: Scan) -> None:
    """A label folder none of whose videos can be used (a stray folder read as a third
    label took the others' per-frame labels): refused before any decoding, as its output
    would never be trained."""
    left = {v.label for v in scan.videos}
    empty = [c for i, c in enumerate(scan.classes) if i not in left]
    if not scan.videos or not empty:
        return
    reasons = sorted({s["reason"] for s in scan.skipped
                      if Path(s["source"]).parts[-2:-1] == (empty[0],)})
    raise UserError(f"no video of {agree(len(empty), 'label', 'labels')} {', '.join(empty)} "
                    f"can be used, among the {len(scan.classes)} ({', '.join(scan.classes)})"
                    + (f": {reasons[0]}" if reasons else "")
                    + "; check the label folders (each folder that holds videos is a label)")


def _one_video_a_name(rows: list[tuple], scan: Scan) -> list[tuple]:
    """The rows less a second video of one name in one folder (s1_a.avi beside s1_a.mp4: a
    copy, or at least one label file for two), which is skipped with its reason."""
    kept: dict[tuple[str, str], str] = {}
    out = []
    for row in rows:
        rel = Path(row[0])
        key = (str(rel.parent), rel.stem)  # A.mp4 and a.mp4 are two (their labels too)
        if key in kept:
            scan.skipped.append({"source": row[0], "reason": f"another video of its name in its "
                                 f"folder is taken ({kept[key]}): one name, one video"})
            continue
        kept[key] = row[0]
        out.append(row)
    return out


def _subjects_across_folders(rows: list[tuple]) -> dict[str, set[str]]:
    """Subject -> the folders above its label folders, where no video's name holds a '_'
    (each subject is then a whole name: drive1.mp4), for the subjects under two or more of
    them: the layout <person>/<label>/drive1.mp4, whose people are the folders, or
    <session>/<label>/<person>.mp4, whose people are the names."""
    if any("_" in Path(rel).stem or len(Path(rel).parts) < 3 or split
           for rel, _, split, _ in rows):
        return {}
    above: dict[str, set[str]] = {}
    for rel, subject, _, _ in rows:
        above.setdefault(subject, set()).add(Path(rel).parts[-3])
    return {subject: folders for subject, folders in above.items() if len(folders) > 1}


# RLDD's own video names, to tell its tree given the wrong --format.
RLDD_VIDEO = re.compile(r"(0|5|10)(?:_\d+)?")


def _known_layout(rows: list[tuple]) -> tuple[str, str] | None:
    """('nthu', 'NTHU-DDD') or ('rldd', 'UTA-RLDD') when every video is named, and every
    folder read as a label is named, as in that data set's own layout (RLDD's subject
    numbers; NTHU's scenarios, or its subject numbers above the evaluation videos); None
    otherwise, as for one's own tree that borrows the names (01/alert/0.mov)."""
    stems = [Path(rel).stem for rel, *_ in rows]
    labels = {label for *_, label in rows}
    scenarios = {_norm(name) for name in NTHU_SCENARIOS}
    training = {_norm(name) for name in NTHU_TRAINING_VIDEOS}
    if all(NTHU_MIX.fullmatch(stem) or _norm(RECTIFIED.sub("", stem)) in training
           for stem in stems) \
            and all(label.isdigit() or _norm(label) in scenarios for label in labels):
        return "nthu", "NTHU-DDD"
    if all(RLDD_VIDEO.fullmatch(stem) for stem in stems) and all(map(str.isdigit, labels)):
        return "rldd", "UTA-RLDD"
    return None


# ----------------------------------------------------------------------------- splits
def _carve(subjects: list[str], fraction: float, seed: int, salt: str) -> list[str]:
    """A deterministic `fraction` of the subjects (at least one, never all)."""
    if fraction <= 0 or len(subjects) < 2:
        return []
    order = sorted(subjects)
    random.Random(f"{seed}-{salt}").shuffle(order)
    return sorted(order[:min(len(order) - 1, max(1, round(len(order) * fraction)))])


def assign_splits(videos: list[Video], val_fraction: float,
                  seed: int) -> tuple[dict[str, str], list[str]]:
    """Subject -> split. Layout-given splits are kept; test, when the layout names none,
    and val are carved out of the training subjects. A subject never spans two splits."""
    given: dict[str, set] = {}
    for v in videos:
        given.setdefault(v.subject, set()).add(v.split)
    for subject, splits in sorted(given.items()):
        if len(splits) > 1:
            raise UserError(f"subject {subject} has videos in more than one split "
                            f"({', '.join(sorted(map(str, splits)))}); move them into one")
    split = {s: next(iter(g)) or "train" for s, g in given.items()}
    notes = []
    for name, fraction in (("test", TEST_FRACTION), ("val", val_fraction)):
        if fraction > 0 and name not in split.values():
            carved = _carve([s for s, v in split.items() if v == "train"], fraction, seed, name)
            split.update({s: name for s in carved})
            if name == "test":
                notes.append(f"no test subjects in the layout: "
                             f"{counted(len(carved), 'training subject')} held out for test")
    return split, notes


def scan_source(source: Path, data_dir: Path, args: argparse.Namespace) -> Scan:
    """The videos of SOURCE in the chosen layout, with subjects, labels and given splits."""
    if not source.exists():
        raise UserError(f"{source} does not exist; give the folder the data set was unpacked "
                        f"into")
    if not source.is_dir():
        raise UserError(f"{source} is not a folder; give the folder the data set was unpacked into")
    source = source.resolve()
    found = list_videos(source, data_dir.resolve(), frame_folders=args.format == "folders")
    # A name that is not UTF-8 (bytes from another system) crashes OpenCV: named, not opened.
    unreadable_names = [p for p in found if not _is_utf8(p)]
    paths = [p for p in found if (source / p).exists() and p not in unreadable_names]
    if not paths:
        images = (f", or folders of {'/'.join(video.IMAGE_EXTENSIONS)} frame images"
                  if args.format == "folders" else "")
        raise UserError(f"no videos ({', '.join(video.VIDEO_EXTENSIONS)}{images}) found under "
                        f"{source}")
    if args.format == "nthu":
        scan = scan_nthu(source, paths)
    elif args.format == "rldd":
        scan = scan_rldd(paths, args.rldd_classes, args.fold)
    else:
        scan = scan_folders(source, paths)
    scan.skipped += [{"source": os.fsencode(p).decode("utf-8", "replace"),
                      "reason": "its name is not UTF-8 text, which OpenCV cannot open: rename it"}
                     for p in unreadable_names]
    scan.skipped += [{"source": p, "reason": "a broken link: what it points to does not exist"}
                     for p in found if p not in paths and p not in unreadable_names]
    scan.skipped.sort(key=lambda s: s["source"])
    if len(scan.classes) == 1:  # before any video is decoded
        raise UserError(f"every video is under one label folder ({scan.classes[0]}/): a "
                        f"detector needs at least two, e.g. alert/ and drowsy/")
    if not scan.videos:
        reasons = "; ".join(sorted({s["reason"] for s in scan.skipped}))[:300]
        raise UserError(f"none of the {len(paths)} videos under {source} fits the '{args.format}' "
                        f"layout ({reasons}); check --format and the folder")
    return scan
