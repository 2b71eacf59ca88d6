"""User mistakes on the command line: one clear line, a non-zero exit, no traceback, and
nothing written. Output paths that cannot be written are refused before any work is done."""
from __future__ import annotations

import errno
import json
import math
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

import benchmark
import checkpoint_training
import dataset
import detect
import evaluate
import export
import main
import prepare
import train
import conftest
from config import Config
from conftest import ROOT
from fatigue.data import synthetic_videos as sv
from fatigue.data.clips import ClipDataset
from fatigue.errors import UserError, run_cli
from fatigue.inference import detection
from fatigue.inference.alarm import AlarmSettings
from fatigue.training import command as train_command
from fatigue.training import loop
from fatigue.training import state as state_module


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "afile"
    path.write_text("not a folder")
    return path


@pytest.mark.parametrize("main, args, option", [
    (evaluate.main, ["--model", "m.pth", "--report", "{file}"], "--report"),
    (evaluate.main, ["--model", "m.pth", "--json", "{folder}"], "--json"),
    (evaluate.main, ["--model", "m.pth", "--json", "{file}/sub/e.json"], "--json"),
    (export.main, ["--model", "m.pth", "--format", "torchscript", "--output", "{folder}"],
     "--output"),
    (detect.main, ["--model", "m.pth", "--source", "v.mp4", "--csv", "{folder}"], "--csv"),
    (detect.main, ["--model", "m.pth", "--source", "v.mp4", "--output", "{file}/o.mp4"],
     "--output"),
    (benchmark.main, ["--tmp-dir", "{file}"], "--tmp-dir"),
    (benchmark.main, ["--json", "{folder}"], "--json"),
    (prepare.main, ["--prepare", "videos", "--format", "folders", "--data-dir", "{file}"],
     "--data-dir"),
    (dataset.main, ["--synthetic", "--data-dir", "{file}"], "--data-dir"),
    (train.main, ["--model-dir", "{file}"], "--model-dir"),
])
def test_an_output_path_that_cannot_be_written_is_refused_at_once(main, args, option, a_file,
                                                                  tmp_path, capsys):
    folder = tmp_path / "a_folder"
    folder.mkdir()
    argv = [a.format(file=a_file, folder=folder) for a in args]
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert f"argument {option}:" in said and ("is a file, not a folder" in said
                                              or "is a folder" in said), said
    assert a_file.read_text() == "not a folder" and not any(folder.iterdir())


def test_an_empty_output_name_and_a_device_as_a_model_are_one_line(capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(["--model", "m.pth", "--json", ""])
    assert exit_.value.code == 2
    assert "argument --json: empty; give the path of a file" in capsys.readouterr().err
    with pytest.raises(UserError, match="/dev/null is not a regular file"):
        evaluate.main(["--model", "/dev/null"])
    # An empty folder name: --report "" was ignored without a word, --model-dir "" wrote
    # into the current folder, --data-dir "" trained on the data of '/'. An empty file
    # name: --info "" (an unset $VAR) trained a 100-epoch run.
    for command_main, argv, kind in (
            (evaluate.main, ["--model", "m.pth", "--report", ""], "folder"),
            (train.main, ["--model-dir", ""], "folder"),
            (evaluate.main, ["--model", "m.pth", "--data-dir", ""], "folder"),
            (checkpoint_training.main, ["--list", "--model-dir", ""], "folder"),
            (train.main, ["--data-dir", ""], "folder"),
            (checkpoint_training.main, ["--info", ""], "file"),
            (evaluate.main, ["--model", ""], "file"),
            (detect.main, ["--source", "v.mp4", "--model", ""], "file"),
            (export.main, ["--model", ""], "file")):
        option = argv[-2]
        with pytest.raises(SystemExit) as exit_:
            command_main(argv)
        assert exit_.value.code == 2
        assert f"argument {option}: empty; give the path of a {kind}" in \
            capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--epochs", "2"], "--epochs 2: give at least 3 (the first is warm-up, the second pays "
                        "one-off costs)"),
    (["--profile", "-3"], "--profile -3: give 0 (off) or a number of rows"),
    (["--steps", "0", "--batch-size", "-1"], "--batch-size -1, --steps 0: give at least 1"),
    # train.py's own check: the small CNN's pooling left nothing (a RuntimeError traceback).
    (["--image-size", "2"], "--image-size 2 is too small for the small CNN")])
def test_benchmark_values_that_measure_nothing_are_one_line(argv, says):
    """--epochs 2 measured only the epoch that pays one-off costs (the loop at 3% of bare);
    --profile -3 printed the whole profile; each bad value is named."""
    with pytest.raises(UserError, match=re.escape(says)):
        benchmark.main(["--device", "cpu", *argv])


@pytest.mark.parametrize("option, value", [("--open-minutes", "nan"), ("--open-minutes", "inf"),
                                           ("--open-minutes", "1e300"), ("--open-minutes", "0"),
                                           ("--closures", "1000000")])
def test_robustness_sizes_that_cannot_be_rendered_are_one_line(option, value):
    """nan, inf and 1e300 minutes were a worker's ValueError and OverflowError tracebacks."""
    with pytest.raises(UserError, match="--closures must be 1 to 1000, --workers at least 1, "
                                        "--open-minutes a positive number of minutes up to 600"):
        evaluate.main(["--model", "m.pth", "--robustness", option, value])


@pytest.mark.parametrize("main,args,option", [
    (detect.main, ["--model", "m.pth", "--source", "v.mp4", "--csv"], "--csv"),
    (evaluate.main, ["--model", "m.pth", "--json"], "--json"),
])
def test_an_output_file_ending_with_a_slash_is_refused_not_written_as_a_file(
        main, args, option, tmp_path, capsys):
    """--csv new_folder/ wrote a file named new_folder."""
    meant = f"{tmp_path / 'new_folder'}/"
    with pytest.raises(SystemExit) as exit_:
        main([*args, meant])
    assert exit_.value.code == 2
    assert f"argument {option}: {meant} ends with a slash, so it names a folder" in \
        capsys.readouterr().err
    assert not (tmp_path / "new_folder").exists()


def test_missing_folders_of_an_output_file_are_made(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1")) == 0
    report = tmp_path / "new" / "deeper" / "figures.json"
    assert evaluate.main(["--model", str(tmp_path / "models" / "best_model.pth"), "--json",
                          str(report)]) == 0
    assert report.read_text().startswith("{")


def test_an_os_error_is_one_line_and_a_closed_pipe_is_quiet(tmp_path, capsys):
    def fails(argv):
        open(tmp_path / "no" / "such" / "file")
    with pytest.raises(SystemExit) as exit_:
        run_cli(fails)
    assert exit_.value.code == 1
    assert capsys.readouterr().err == \
        f"error: {tmp_path / 'no' / 'such' / 'file'}: No such file or directory\n"
    # `python checkpoint_training.py --list | head -1`: the reader leaves before the end
    # (here of far more than a pipe holds).
    code = ("from fatigue.errors import run_cli\n"
            "run_cli(lambda argv: [print('x' * 99) for _ in range(10 ** 4)] and 0)")
    piped = subprocess.run(f"{sys.executable} -c \"{code}\" | head -c 10", shell=True,
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert piped.stdout == "x" * 10 and piped.stderr == "", piped.stderr


def test_a_full_disk_while_writing_clips_is_one_line_and_leaves_nothing(tmp_path, monkeypatch,
                                                                       capsys):
    """The clips are written through a memory map: without the space claimed first, a full
    disk killed the process with SIGBUS and left its temporary file."""
    data = tmp_path / "data"
    small = ["--synthetic", "--data-dir", str(data), "--num-subjects", "3",
             "--clips-per-subject", "2", "--image-size", "16", "--sequence-length", "16"]
    assert dataset.main(small) == 0
    before = {p.name: p.read_bytes() for p in data.iterdir()}

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(SystemExit) as exit_:
        run_cli(lambda argv: dataset.main(small + ["--force", "--seed", "1"]))
    assert exit_.value.code == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: no room for the clips in {data}/ (No space left on device, ")
    assert line.endswith("MB needed): free space or give another --data-dir; nothing was changed")
    assert {p.name: p.read_bytes() for p in data.iterdir()} == before  # the old set, whole


def test_a_frame_too_small_for_the_model_is_refused_before_anything_is_written(tmp_path):
    with pytest.raises(UserError, match="--image-size 4 is too small for the small CNN: give "
                                        "at least 8"):
        train.main(["--model-dir", str(tmp_path / "models"), "--image-size", "4"])
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize("args", [["--num-subjects", "0"], ["--num-subjects", "2", "--as-videos"]])
def test_synthetic_data_needs_three_subjects(args, tmp_path):
    with pytest.raises(UserError, match="give at least 3"):
        dataset.main(["--synthetic", "--data-dir", str(tmp_path / "d"), *args])
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("args, says", [
    (["--as-videos", "--image-size", "8", "--clips-per-subject", "2"],
     "--clips-per-subject, --image-size: for the clip data set, not --as-videos"),
    (["--layout", "nthu"], "--layout: only with --as-videos"),
])
def test_synthetic_data_refuses_options_it_would_ignore(args, says, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        dataset.main(["--synthetic", "--data-dir", str(tmp_path / "d"), *args])
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_synthetic_data_is_not_written_into_a_folder_of_other_files(tmp_path):
    out = tmp_path / "d"
    out.mkdir()
    (out / "clips.npy").write_text("a file of mine")
    with pytest.raises(UserError, match=r"d/ is not empty \(clips.npy\) and holds no data set; "
                                        r"add --force"):
        dataset.main(["--synthetic", "--data-dir", str(out), "--num-subjects", "3",
                      "--clips-per-subject", "2", "--image-size", "8", "--sequence-length", "16"])
    assert (out / "clips.npy").read_text() == "a file of mine"


def test_synthetic_data_stopped_before_its_manifest_is_written_again_by_the_same_command(
        tmp_path):
    """Killed between putting its clips in place and its manifest: the folder holds clips
    and no data set. The same command goes on (not 'add --force'), and its leftovers go."""
    argv = ["--num-subjects", "3", "--clips-per-subject", "2", "--image-size", "8",
            "--sequence-length", "16"]
    assert dataset.main(["--synthetic", "--data-dir", str(tmp_path / "whole"), *argv]) == 0
    cut = tmp_path / "cut"
    assert dataset.main(["--synthetic", "--data-dir", str(cut), *argv]) == 0
    (cut / "manifest.json").rename(cut / ".manifest.json.99999999.tmp")  # never put in place
    assert dataset.main(["--synthetic", "--data-dir", str(cut), *argv]) == 0
    assert sorted(p.name for p in cut.iterdir() if p.name != ".claim") == \
        ["clips.npy", "manifest.json"]
    for name in ("clips.npy", "manifest.json"):
        assert (cut / name).read_bytes() == (tmp_path / "whole" / name).read_bytes()


def test_synthetic_data_names_only_the_option_that_is_out_of_range(tmp_path):
    with pytest.raises(UserError) as refused:
        dataset.main(["--synthetic", "--data-dir", str(tmp_path / "d"), "--sequence-length", "8"])
    assert str(refused.value) == "--sequence-length 8: give at least 16"
    assert not (tmp_path / "d").exists()
    # Sizes that could not be held in memory (894 GiB asked for) are a typo: one line.
    with pytest.raises(UserError) as refused:
        dataset.main(["--synthetic", "--data-dir", str(tmp_path / "d"), "--image-size", "100000"])
    assert str(refused.value) == "--image-size 100000: give at most 512"
    # The NTHU layout's subject ids run out: said, not a traceback.
    with pytest.raises(UserError, match="--num-subjects 40: the NTHU layout has ids for at most "
                                        "18 training and 14 evaluation subjects .* give at "
                                        "most 24"):
        dataset.main(["--synthetic", "--as-videos", "--layout", "nthu", "--num-subjects", "40",
                      "--data-dir", str(tmp_path / "v")])
    assert not (tmp_path / "d").exists() and not list((tmp_path / "v").rglob("*.avi"))


def test_a_run_resumed_from_another_folder_with_its_data_given_ends_with_its_test(
        tiny_data, tmp_path, monkeypatch, capsys):
    """Begun with a relative --data-dir, continued from another folder with --data-dir
    given: the run finished, then its test evaluation looked for the data where the best
    checkpoint's command had named it and ended in 'give its folder with --data-dir',
    exit 2. The commands it prints quote paths with spaces, so that they can be pasted."""
    shutil.copytree(tiny_data, tmp_path / "data here")
    monkeypatch.chdir(tmp_path)
    models = "my runs/first"
    argv = conftest.tiny_args(Path("data here"), Path(models))
    assert train.main([*argv, "--epochs", "2"]) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    capsys.readouterr()
    # Its best checkpoint stays one from before the resume, whose command named the data.
    monkeypatch.setattr(state_module, "improves", lambda *_: False)
    assert train.main(["--resume", "--epochs", "3", "--model-dir", f"../{models}",
                       "--data-dir", "../data here"]) == 0
    out = capsys.readouterr().out
    assert torch.load(f"../{models}/best_model.pth", weights_only=True)["epoch"] < 3
    assert "Test accuracy of best_model.pth on 6 clips" in out
    assert ("details: python evaluate.py --model '../my runs/first/best_model.pth' "
            "--data-dir '../data here')") in out
    assert loop.resume_command(Config(model_dir=models)) == \
        "python train.py --resume --model-dir 'my runs/first'"


def test_a_run_resumed_from_another_folder_without_its_data_says_where_it_was(
        tiny_data, tmp_path, monkeypatch):
    """Its data named relative to the folder it began in: the hint was to make a new data
    set ('python dataset.py --synthetic --data-dir d'), which the run would then refuse
    as other data."""
    shutil.copytree(tiny_data, tmp_path / "d")
    monkeypatch.chdir(tmp_path)
    assert train.main(conftest.tiny_args(Path("d"), tmp_path / "models", "--epochs", "1")) == 0
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    with pytest.raises(UserError, match=r"^the data set this run trained on is not in d/ \(as "
                                        r"the run's first command named it, relative to the "
                                        r"folder that command ran in\); run from that folder, "
                                        r"or give the data set's folder with --data-dir$"):
        train.main(["--resume", "--epochs", "2", "--model-dir", str(tmp_path / "models")])
    assert not any((tmp_path / "elsewhere").iterdir())


def test_a_model_too_large_for_memory_is_one_line_and_the_old_run_stays(tiny, tmp_path):
    """A few zeros too many in a size: the allocator's traceback came after the previous
    run had been moved to the archive, so that --resume found nothing to resume."""
    assert train.main(tiny("--epochs", "1")) == 0
    models = tmp_path / "models"
    before = sorted(p.name for p in models.iterdir())
    with pytest.raises(UserError, match=r"a model of these sizes does not fit in this "
                                        r"machine's memory \(one of its layers alone needs "
                                        r"[\d,]+ GiB\); lower .*--lstm-hidden \(1000000\)"):
        train.main(tiny("--force", "--lstm-hidden", "1000000"))
    assert sorted(p.name for p in models.iterdir()) == before
    assert not (models / "archive").exists()


def test_a_model_folder_given_as_a_model_says_which_file_to_give(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path} is a folder; give a checkpoint file in "
                                        f"it, such as {tmp_path / 'best_model.pth'}"):
        evaluate.main(["--model", str(tmp_path)])


def test_resuming_a_run_longer_than_asked_says_how_to_train_longer(tiny, capsys):
    assert train.main(tiny("--epochs", "2")) == 0
    capsys.readouterr()
    assert train.main(tiny("--epochs", "1", "--resume", "--lr", "0.01")) == 0
    said, err = capsys.readouterr()
    assert "This run has trained 2 epochs, more than --epochs 1" in said
    assert "replace the checkpoint's" not in err  # nothing is trained with them
    models = tiny()[tiny().index("--model-dir") + 1]
    assert f"python train.py --resume --model-dir {models} --epochs 52" in said
    assert "schedule rebuilt" not in said  # nothing is trained, so no schedule is rebuilt


@pytest.mark.parametrize("argv, says", [
    (["--list", "--status"], "argument --status: not allowed with argument --list"),
    (["--wait", "-5"], "argument --wait: -5 is not 0 (do not wait) or more seconds"),
    (["--wait", "nan"], "argument --wait: nan is not 0 (do not wait) or more seconds"),
])
def test_contradicting_or_impossible_options_are_refused(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        checkpoint_training.main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


@pytest.mark.parametrize("argv, says", [
    (["--model", "m.pth", "--quick"], "--quick: only with --robustness"),
    (["--model", "m.pth", "--closures", "4", "--conditions", "blur"],
     "--conditions, --closures: only with --robustness"),
    (["--model", "m.pth", "--robustness", "--split", "val"], "--split is for scoring clips"),
    (["--model", "m.pth", "--robustness", "--json", "r.json", "--batch-size", "8"],
     "--batch-size, --json are for scoring clips; --robustness renders its own held-out drives"),
    (["--model", "m.pth", "--workers", "3"], "--workers: only with --robustness"),
    (["--model", "m.pth", "--closures", "0"], "--closures: only with --robustness"),  # 0 is given
])
def test_evaluate_refuses_options_that_would_be_ignored(argv, says, capsys):
    with pytest.raises(SystemExit) as exit_:
        evaluate.main(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


def test_resuming_where_the_latest_checkpoint_is_a_folder_says_so(tiny, tmp_path):
    (tmp_path / "models" / "latest_model.pth").mkdir(parents=True)  # not "no latest_model.pth"
    with pytest.raises(UserError, match="latest_model.pth is not a file .* move it aside"):
        train.main(tiny("--resume"))


def test_a_file_that_is_no_checkpoint_and_a_folder_without_a_run_say_so(tmp_path):
    text = tmp_path / "notes.pth"
    text.write_text("hello")
    with pytest.raises(UserError, match="notes.pth is not a PyTorch checkpoint"):
        evaluate.main(["--model", str(text)])
    with pytest.raises(UserError, match=f"no run to continue in {tmp_path / 'none'}/"):
        checkpoint_training.main(["--status", "--model-dir", str(tmp_path / "none")])


@pytest.mark.parametrize("argv, ignored", [
    (["--clean", "--keep-last", "1", "--force"], "--force"),
    (["--list", "--epochs", "5", "--resume"], "--resume, --epochs"),
    (["--status", "--wait", "3"], "--wait"),
])
def test_a_checkpoint_tool_refuses_options_it_would_ignore(argv, ignored, tiny, tmp_path):
    """`--clean --force` used to clean and silently not start the new run it asked for."""
    models = tmp_path / "models"
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    before = sorted(p.name for p in models.rglob("*"))
    with pytest.raises(UserError, match=f"does not train: {ignored} would do nothing"):
        checkpoint_training.main([*argv, "--model-dir", str(models)])
    assert sorted(p.name for p in models.rglob("*")) == before
    assert checkpoint_training.main(["--clean", "--keep-last", "1", "--wait", "1",
                                     "--model-dir", str(models)]) == 0


def test_freezing_a_backbone_that_is_not_pretrained_is_a_warning(tiny, capsys):
    assert train.main(tiny("--epochs", "1", "--freeze-backbone-epochs", "1")) == 0
    said = capsys.readouterr().err
    assert "--freeze-backbone-epochs 1 holds a randomly initialised backbone fixed" in said
    assert "is not less than --epochs 1: the backbone never trains" in said


def test_no_output_overwrites_a_checkpoint_or_the_file_it_reads(tiny, tmp_path, capsys):
    """An output written over a checkpoint (an export over best_model.pth, when training
    hard-linked best and latest, destroyed the whole run) is refused before anything."""
    assert train.main(tiny("--epochs", "1")) == 0
    models = tmp_path / "models"
    best, latest = models / "best_model.pth", models / "latest_model.pth"
    kept = best.read_bytes(), latest.read_bytes()
    for command, argv, option in [
            (export.main, ["--model", best, "--format", "torchscript", "--output", best], "--output"),
            (evaluate.main, ["--model", best, "--json", latest], "--json"),
            (detect.main, ["--model", best, "--source", "v.avi", "--csv", best], "--csv")]:
        with pytest.raises(SystemExit) as exit_:
            command([str(a) for a in argv])
        assert exit_.value.code == 2
        assert f"argument {option}: {best if option != '--json' else latest} is a checkpoint" \
            in capsys.readouterr().err
    with pytest.raises(SystemExit):
        evaluate.main(["--model", str(best), "--report", str(models)])
    assert "holds checkpoints (a training run's folder)" in capsys.readouterr().err
    data = tmp_path / "data"
    data.mkdir()
    (data / "manifest.json").write_text("{}")
    with pytest.raises(SystemExit):  # its files sat beside clips.npy and manifest.json
        evaluate.main(["--model", str(best), "--report", str(data)])
    assert "holds a data set (manifest.json, clips.npy)" in capsys.readouterr().err
    assert [p.name for p in data.iterdir()] == ["manifest.json"]
    video = tmp_path / "drive.avi"
    video.write_bytes(b"a video")
    with pytest.raises(UserError, match="--output .*drive.avi is the file --source reads"):
        detect.main(["--model", str(best), "--source", str(video), "--output", str(video)])
    assert (best.read_bytes(), latest.read_bytes()) == kept and video.read_bytes() == b"a video"


def test_no_output_overwrites_a_data_set_or_a_run_file(tiny, tiny_data, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1")) == 0
    models = tmp_path / "models"
    best = str(models / "best_model.pth")
    kept = {p: p.read_bytes() for p in (tiny_data / "manifest.json", tiny_data / "clips.npy",
                                        models / "training_log.jsonl")}
    for command, argv, option, path, what in [
            (evaluate.main, ["--model", best, "--json"], "--json", tiny_data / "manifest.json",
             "a data set's manifest"),
            (detect.main, ["--model", best, "--source", "v.avi", "--csv"], "--csv",
             models / "training_log.jsonl", "a training run's log"),
            (export.main, ["--model", best, "--format", "torchscript", "--output"], "--output",
             tiny_data / "clips.npy", "a data set's clips")]:
        with pytest.raises(SystemExit) as exit_:
            command([*argv, str(path)])
        assert exit_.value.code == 2
        assert f"argument {option}: {path} is {what}, which an output never overwrites" \
            in capsys.readouterr().err
    with pytest.raises(UserError, match="the deployment info beside it, .*manifest.json is a "
                                        "data set's manifest"):
        export.main(["--model", best, "--format", "torchscript", "--output",
                     str(tiny_data / "manifest")])
    assert {p: p.read_bytes() for p in kept} == kept and not (tiny_data / "manifest").exists()
    # The same names elsewhere are a user's own outputs: written again without a word.
    mine = tmp_path / "mine" / "manifest.json"
    mine.parent.mkdir()
    mine.write_text("{}")
    assert evaluate.main(["--model", best, "--json", str(mine)]) == 0
    assert '"accuracy"' in mine.read_text()


def test_a_failed_detection_leaves_the_previous_csv_as_it_was(face_model, tmp_path,
                                                              monkeypatch):
    csv_file, video = tmp_path / "detections.csv", tmp_path / "drive.avi"
    csv_file.write_text("an earlier run's rows\n")
    sv.write_video(video, [np.full((120, 160, 3), 90, np.uint8)] * 30, 10)
    argv = ["--model", str(face_model), "--source", str(video), "--csv", str(csv_file), "--quiet"]
    with pytest.raises(UserError, match="--output out.txt: give a .mp4, .avi, .mov, .mkv or "
                                        ".m4v file name"):
        detect.main([*argv, "--output", "out.txt"])
    real_step = detection.Detector.step
    steps = []

    def fail_in_the_run(self, *args):  # a failure once the CSV is open and rows are written
        steps.append(1)
        if len(steps) == 25:
            raise RuntimeError("a failure half-way")
        return real_step(self, *args)
    monkeypatch.setattr(detection.Detector, "step", fail_in_the_run)
    with pytest.raises(RuntimeError, match="half-way"):
        detect.main(argv)
    assert len(steps) == 25 and csv_file.read_text() == "an earlier run's rows\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["detections.csv", "drive.avi"]


def test_files_that_are_no_training_checkpoint_say_what_they_are(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    best = tmp_path / "models" / "best_model.pth"
    export.main(["--model", str(best), "--format", "torchscript", "--output",
                 str(tmp_path / "m.pt")])
    text = tmp_path / "README.md"
    text.write_text("# a page")
    cut = tmp_path / "cut.pth"
    cut.write_bytes(best.read_bytes()[:5000])
    pickled = tmp_path / "pickled.pth"  # not damaged: never a checkpoint
    pickled.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    for path, says in [(tmp_path / "m.pt", "is a TorchScript export (export.py), not a training "
                        "checkpoint"), (text, "is not a PyTorch checkpoint"),
                       (cut, "is damaged and cannot be read (it may be cut short"),
                       (pickled, "is a Python pickle, not a PyTorch checkpoint")]:
        with pytest.raises(UserError, match=re.escape(f"{path} {says}")):
            evaluate.main(["--model", str(path)])
    with pytest.raises(UserError, match=f"--list --model-dir {tmp_path}'"):
        evaluate.main(["--model", str(tmp_path / "nope.pth")])
    with pytest.raises(UserError, match="README.md is a file, not a data set folder"):
        train.main(tiny("--data-dir", str(text)))


def test_checkpoint_tools_name_the_folder_they_looked_in(tmp_path, monkeypatch, capsys):
    missing = tmp_path / "nodir"
    assert checkpoint_training.main(["--list", "--model-dir", str(missing)]) == 0
    assert (f"No checkpoints in {missing}/ (no such folder). Train with: python "
            f"checkpoint_training.py --model-dir {missing}") in capsys.readouterr().out
    monkeypatch.chdir(tmp_path)
    (tmp_path / "m").mkdir()
    with pytest.raises(UserError, match="m is a folder; give a checkpoint file in it"):
        checkpoint_training.main(["--info", "m", "--model-dir", "m"])


def test_list_tells_damage_from_other_files_and_clean_spares_archived_runs(tiny, tmp_path,
                                                                            capsys):
    """--list marked a TorchScript export or a text file named .pth DAMAGED (a user would
    think a checkpoint broken); --list on a file said 'no checkpoints', exit 0; --clean
    deleted backups inside an archived run, which are never deleted."""
    models = tmp_path / "models"
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    assert export.main(["--model", str(models / "best_model.pth"), "--format", "torchscript",
                        "--output", str(models / "exported.pth")]) == 0
    (models / "notes.pth").write_text("not torch")
    (models / "pickled.pth").write_bytes(pickle.dumps({"a": 1}))
    with zipfile.ZipFile(models / "zipped.pth", "w") as archive:
        archive.writestr("readme.txt", "not torch")
    (models / "empty.pth").write_bytes(b"")
    torn = (models / "checkpoint_epoch_1.pth").read_bytes()
    (models / "torn.pth").write_bytes(torn[:len(torn) // 2])
    capsys.readouterr()
    assert checkpoint_training.main(["--list", "--model-dir", str(models)]) == 0
    status = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()[1:]
              if line.strip()}
    assert status["exported.pth"].endswith("not a checkpoint (a TorchScript export)")
    for name in ("notes.pth", "pickled.pth", "zipped.pth"):
        assert status[name].endswith("not a checkpoint"), status[name]
    assert status["empty.pth"].endswith("EMPTY")
    assert status["torn.pth"].endswith("DAMAGED")
    with pytest.raises(UserError, match="best_model.pth is a file, not a folder"):
        checkpoint_training.main(["--list", "--model-dir", str(models / "best_model.pth")])
    assert train.main(tiny("--epochs", "2", "--save-every", "1", "--force")) == 0
    [archived] = (models / "archive").iterdir()
    before = sorted(p.name for p in archived.iterdir())
    with pytest.raises(UserError, match="is an archived run, whose files are never deleted"):
        checkpoint_training.main(["--clean", "--keep-last", "1", "--model-dir", str(archived)])
    assert sorted(p.name for p in archived.iterdir()) == before
    # A study's archived fold too; a user's own folder named archive is theirs to clean.
    assert checkpoint_training.archived(tmp_path / "cv" / "archive" / "study_1" / "fold_2")
    assert not checkpoint_training.archived(tmp_path / "archive" / "mine")


def test_main_checkpoints_mode_lists_and_never_trains(tiny, tmp_path, capsys, monkeypatch):
    assert train.main(tiny("--epochs", "1")) == 0
    before = sorted(p.name for p in (tmp_path / "models").iterdir())
    capsys.readouterr()
    assert main.main(["--mode", "checkpoints", "--model-dir", str(tmp_path / "models")]) == 0
    out = capsys.readouterr().out
    assert "best_model.pth" in out and "epoch" in out and "Training" not in out
    assert sorted(p.name for p in (tmp_path / "models").iterdir()) == before
    # Its help offers only what it does: no training option.
    help_text = checkpoint_training.build_parser(tools_only=True).format_help()
    assert "--status" in help_text and "--keep-last" in help_text
    assert not {"--force", "--epochs", "--data-dir", "--lr"} & set(help_text.split())
    with pytest.raises(SystemExit) as stop:
        main.main(["--mode", "checkpoints", "--resume"])
    assert stop.value.code == 2 and "unrecognized arguments: --resume" in capsys.readouterr().err
    # A bare name is the --model-dir's file, even where the current folder has one too.
    monkeypatch.chdir(tmp_path)
    (tmp_path / "best_model.pth").write_bytes(b"another run's, or anything")
    assert checkpoint_training.main(["--info", "best_model.pth", "--model-dir", "models"]) == 0
    assert capsys.readouterr().out.startswith(f"file            {Path('models/best_model.pth')} (")


def test_more_mistakes_get_one_line(tmp_path, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    with pytest.raises(UserError, match="--data-dir is the videos' own folder"):
        prepare.main(["--prepare", str(videos), "--format", "folders", "--data-dir", str(videos)])
    with pytest.raises(UserError, match=f"no folder {tmp_path / 'typo'}/"):
        checkpoint_training.main(["--clean", "--keep-last", "1", "--model-dir",
                                  str(tmp_path / "typo")])
    assert main.main([]) == 2
    assert "error: say what to do with --mode MODE" in capsys.readouterr().err
    assert not any(videos.iterdir())


@pytest.mark.parametrize("argv, says", [
    (["--lr", "inf"], "--lr must be a number, got inf"),
    (["--grad-clip", "nan"], "--grad-clip must be a number, got nan"),
    (["--weight-decay", "nan"], "--weight-decay must be a number, got nan"),
    (["--seed", "99999999999999999999"], "--seed 99999999999999999999: give a whole number"),
    (["--seed", "-1"], "--seed -1: give a whole number from 0"),
    (["--image-size", "100000"], "--image-size 100000: give at most 512"),
    (["--lr", "1e39"], "--lr must be more than 0 and at most 10 (AdamW's useful rates lie "
                       "near the default, 0.001), got 1e+39"),
    # argparse took "-1e-3" for an option: "argument --lr: expected one argument".
    (["--lr", "-1e-3"], "--lr must be more than 0 and at most 10 (AdamW's useful rates lie "
                        "near the default, 0.001), got -0.001"),
    (["--weight-decay", "-2E-2"], "--weight-decay cannot be negative"),
])
def test_numbers_no_training_can_use_are_refused_before_anything_is_written(argv, says,
                                                                           tmp_path):
    # inf trained to NaN weights and saved them as the best model; the others tracebacks.
    with pytest.raises(UserError, match=re.escape(says)):
        train.main(["--model-dir", str(tmp_path / "m"), *argv])
    assert not (tmp_path / "m").exists()


def test_alarm_times_that_are_not_numbers_are_refused():
    for min_on, cooldown in ((math.nan, 2.0), (0.5, math.nan), (0.5, math.inf)):
        with pytest.raises(UserError, match="must be seconds, 0 or more"):
            AlarmSettings(min_on=min_on, cooldown=cooldown).check()


def test_yes_no_options_show_yes_or_no_in_the_help():
    text = " ".join(train_command.build_parser().format_help().split())
    assert re.search(r"--augment \{yes,no\} flip, shift[^-]*\(default: yes\)", text)
    assert "--compile {yes,no}" in text and "True" not in text and "False" not in text


@pytest.mark.parametrize("script, argv, says", [
    ("train.py", ["--augment", "maybe"], "argument --augment: expected yes or no, got 'maybe'"),
    ("main.py", ["--mode", "trian"], "argument --mode: invalid choice: 'trian'"),
    ("main.py", ["--mode", "evaluate", "--batch-size", "x"],
     "argument --batch-size: invalid int value: 'x'"),
    ("detect.py", ["--model", "m.pth"], "the following arguments are required: --source"),
    ("benchmark.py", ["--steps"], "argument --steps: expected one argument"),
    ("dataset.py", ["--prepare", "v", "--format", "mp4"], "argument --format: invalid choice"),
])
def test_a_mistake_argparse_finds_is_one_line_that_says_where_help_is(script, argv, says):
    out = subprocess.run([sys.executable, str(ROOT / script), *argv], capture_output=True,
                         text=True, timeout=120)
    prog = script + (f" --mode {argv[1]}" if script == "main.py" and argv[2:] else "")
    # prepare's options, reached through dataset.py, have their own help.
    where = f"{prog} --prepare SOURCE" if "--prepare" in argv else prog
    assert out.returncode == 2 and out.stdout == ""
    [line] = out.stderr.splitlines()
    assert line.startswith(f"{prog}: error: {says}") and line.endswith(f"(see {where} --help)")


def test_ctrl_c_or_a_stack_dump_request_while_a_script_starts_up_is_handled():
    """A script imports torch for seconds before run_cli takes over. The package's own import
    (every script's first) already handles SIGUSR1 (stacks printed, the process goes on) and
    Ctrl+C (one line, ended as by SIGINT), instead of ending it or printing a traceback."""
    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("no SIGUSR1 here")
    # `import config` is what each script begins with; the sleep stands for `import torch`.
    starting = subprocess.Popen(
        [sys.executable, "-c", "import config, time; print('ready', flush=True); time.sleep(60)"],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert starting.stdout.readline() == "ready\n"
    starting.send_signal(signal.SIGUSR1)
    time.sleep(1)
    assert starting.poll() is None, "a stack-dump request ended the process"
    starting.send_signal(signal.SIGINT)
    _, err = starting.communicate(timeout=60)
    assert starting.returncode == -signal.SIGINT  # the Ctrl+C landed and ended it
    assert "most recent call first" in err and "Traceback" not in err, err
    assert err.endswith("\ninterrupted\n"), err


def test_a_stack_dump_request_shows_every_thread_and_never_ends_the_process(tmp_path):
    """kill -USR1 (docs/checkpoints.md), sent many times while threads run Python code, as
    the checkpoint writer and the loader do during training: each thread's stack is printed
    and the process goes on to its end."""
    if not hasattr(signal, "SIGUSR1"):
        pytest.skip("no SIGUSR1 here")
    script = tmp_path / "busy.py"
    script.write_text(
        f"import sys, threading, time\nsys.path.insert(0, {str(ROOT)!r})\nimport config\n"
        "def background_worker():\n"
        "    while not done.is_set():\n"
        "        sum(i * i for i in range(1000))\n"
        "done = threading.Event()\n"
        "workers = [threading.Thread(target=background_worker) for _ in range(3)]\n"
        "[w.start() for w in workers]\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()\n"
        "done.set(); [w.join() for w in workers]\n"
        "print('finished', flush=True)\n")
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen([sys.executable, str(script)], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=err_out, text=True)
    assert proc.stdout.readline() == "ready\n"
    for _ in range(500):
        proc.send_signal(signal.SIGUSR1)
        time.sleep(0.001)
    # Shown while the main thread still waits in a system call (reading its input).
    deadline = time.monotonic() + 30
    while "in background_worker" not in err_file.read_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "in background_worker" in err_file.read_text() and proc.poll() is None
    out, _ = proc.communicate("go\n", timeout=60)
    err = err_file.read_text()
    assert proc.returncode == 0 and out == "finished\n", err[-2000:]
    assert "Current thread" in err and "in <module>" in err  # the main thread's stack too


@pytest.mark.parametrize("env, error, said", [
    ({"RANK": "1", "WORLD_SIZE": "2"}, "OptionError", False),  # process 0 says it
    ({"RANK": "1", "WORLD_SIZE": "2"}, "UserError", True),     # met by this process alone
    ({"RANK": "0", "WORLD_SIZE": "2"}, "OptionError", True),
    ({"RANK": "1"}, "OptionError", True),                      # RANK set, but no torchrun run
])
def test_under_torchrun_an_error_every_process_meets_is_said_by_process_0_alone(env, error,
                                                                                   said):
    code = (f"from fatigue.errors import {error}, run_cli\n"
            f"def main(argv):\n    raise {error}('a mistake')\n"
            "run_cli(main)")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, env={**os.environ, **env}, timeout=60)
    assert result.returncode == 2
    assert result.stderr == ("error: a mistake\n" if said else ""), result.stderr


def test_a_forked_worker_prints_its_stacks_too(tmp_path):
    """Loader workers are forked: they inherit the blocked signal, and wait for it too."""
    if not hasattr(os, "fork"):
        pytest.skip("no fork here")
    script = tmp_path / "forks.py"
    script.write_text(
        f"import multiprocessing, sys, time\nsys.path.insert(0, {str(ROOT)!r})\nimport config\n"
        "def loader_worker():\n    time.sleep(60)\n"
        "if __name__ == '__main__':\n"
        "    child = multiprocessing.get_context('fork').Process(target=loader_worker)\n"
        "    child.start()\n    print(child.pid, flush=True)\n    child.join()\n")
    err_file = tmp_path / "stderr.txt"
    with open(err_file, "w") as err_out:
        proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                                stderr=err_out, text=True)
    child = int(proc.stdout.readline())
    try:
        deadline = time.monotonic() + 30
        while "in loader_worker" not in err_file.read_text() and time.monotonic() < deadline:
            os.kill(child, signal.SIGUSR1)  # again until it shows the child at its work
            time.sleep(0.5)
        assert "in loader_worker" in err_file.read_text()
    finally:
        os.kill(child, signal.SIGTERM)
        proc.wait(timeout=60)


@pytest.mark.parametrize("main, args, says", [
    (detect.main, ["--model", "m.pth", "--source", "v.mp4", "--output", "{dir}/same.mp4",
                   "--csv", "{dir}/same.mp4"], "--output and --csv name the same file"),
    (evaluate.main, ["--model", "m.pth", "--report", "{dir}/r", "--json",
                     "{dir}/r/threshold_sweep.csv"], "is inside --report"),
    (evaluate.main, ["--model", "m.pth", "--report", "{dir}/out.json", "--json",
                     "{dir}/out.json"], "--json and --report both name"),
])
def test_two_outputs_of_one_command_never_name_one_file(main, args, says, tmp_path):
    """The second written would replace the first (detect's video by its CSV)."""
    with pytest.raises(UserError, match=says):
        main([a.format(dir=tmp_path) for a in args])
    assert not any(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc")
@pytest.mark.parametrize("main, args, option", [
    (evaluate.main, ["--model", "m.pth", "--json", "/proc/figures.json"], "--json"),
    (evaluate.main, ["--model", "m.pth", "--report", "/proc/report"], "--report"),
    (detect.main, ["--model", "m.pth", "--source", "v.mp4", "--csv", "/proc/d.csv"], "--csv"),
    (export.main, ["--model", "m.pth", "--output", "/proc/m.pt"], "--output"),
])
def test_a_folder_nothing_can_be_written_in_is_refused_before_the_work(main, args, option,
                                                                       capsys):
    """Permissions do not tell (root writes anywhere; /proc takes no new file): a file is
    made and removed there first, before any model is loaded."""
    with pytest.raises(SystemExit) as exit_:
        main(args)
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert exit_.value.code == 2 and f"argument {option}:" in said, said
    assert "cannot be written: nothing can be written in /proc/" in said, said


@pytest.mark.parametrize("change, says", [
    (lambda m: m["clips"][3].update(label=5), "has label 5, not one of 0..1 (alert, drowsy)"),
    (lambda m: m["clips"][3].update(label="1"), "has label '1', not one of 0..1"),
    (lambda m: m["clips"][3].update(label=True), "has label True, not one of 0..1"),
    (lambda m: m["clips"][3].pop("split"), "has split None, not one of train, val, test"),
    (lambda m: m["clips"][3].update(split="holdout"), "has split 'holdout'"),
    (lambda m: m["clips"][3].pop("subject"), "has no 'subject' (text)"),
    (lambda m: m["clips"][3].update(id=m["clips"][2]["id"]), "is there twice"),
    (lambda m: m.update(classes=["alert"]), "'classes' is not a list of two or more"),
    (lambda m: m.pop("clip_shape"), "'clip_shape' is not [frames, channels, height, width]"),
    (lambda m: m.update(clip_shape=[16, 1, 8, 8]), "holds uint8 clips of shape [24, 16, 1, 16, "
                                                   "16] where manifest.json says uint8 [24, 16, 1, 8, 8]"),
    (lambda m: m["clips"].pop(), "holds uint8 clips of shape [24, 16, 1, 16, 16] where "
                                 "manifest.json says uint8 [23,"),
    (lambda m: m.update(fps=-5), "'fps' is -5, not a frame rate"),
    (lambda m: m.update(fps="ten"), "'fps' is 'ten', not a frame rate"),
    ("float32", "holds float32 clips of shape"),
])
def test_a_data_set_changed_by_hand_is_one_line_before_a_run_is_archived(change, says, tiny,
                                                                         tiny_data, tmp_path):
    # Tracebacks from deep in training, after the previous run had been archived.
    data = tmp_path / "edited"
    shutil.copytree(tiny_data, data)
    if change == "float32":
        np.save(data / "clips.npy", np.load(data / "clips.npy").astype(np.float32))
    else:
        manifest = json.loads((data / "manifest.json").read_text())
        change(manifest)
        (data / "manifest.json").write_text(json.dumps(manifest))
    models = tmp_path / "models"
    models.mkdir()
    (models / "latest_model.pth").write_bytes(b"the previous run")  # stays where it is
    argv = tiny("--epochs", "1")
    argv[argv.index("--data-dir") + 1] = str(data)
    with pytest.raises(UserError, match=re.escape(says)):
        train.main(argv)
    assert sorted(p.name for p in models.iterdir()) == ["latest_model.pth"]
    with pytest.raises(UserError, match=re.escape(says)):  # evaluate reads it the same way
        ClipDataset(data, "train", 8, 16, 1)


def test_an_output_into_an_inherited_descriptor_is_appended_not_replaced(tmp_path):
    """`--json /dev/fd/3 3>>log`: the shell's file was replaced by the output alone."""
    log = tmp_path / "log"
    log.write_text("PRE\n")
    with open(log, "a") as fh:
        code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); from fatigue import files; "
                f"files.write_output_text('/dev/fd/{fh.fileno()}', 'OUT\\n')")
        subprocess.run([sys.executable, "-c", code], pass_fds=(fh.fileno(),), check=True,
                       timeout=60)
    assert log.read_text() == "PRE\nOUT\n"
