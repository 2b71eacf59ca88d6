"""evaluate.py --report: the metrics (ROC, AUC, precision-recall, specificity, frame-level
accuracy) and the files, whose numbers must be the ones evaluate prints."""
from __future__ import annotations

import csv
import json
import math
import re
import shutil

import numpy as np
import pytest
import torch

import evaluate
from fatigue.data.clip_store import data_fingerprint
from fatigue.errors import UserError
from fatigue.data import synthetic
from fatigue.inference import metrics
from fatigue.inference.evaluation import kind_differs
from fatigue.inference.alarm import Alarm, AlarmSettings
from fatigue.training import crossval
import train


def test_roc_auc_matches_the_pairwise_definition():
    rng = np.random.default_rng(0)
    positive = rng.random(200) < 0.4
    scores = np.round(rng.random(200) + 0.3 * positive, 1)  # rounding makes ties
    pos, neg = scores[positive], scores[~positive]
    # AUC = P(score of a positive > score of a negative), ties counting half.
    pairwise = ((pos[:, None] > neg[None]).mean() + 0.5 * (pos[:, None] == neg[None]).mean())
    assert metrics.roc_auc(positive, scores) == pytest.approx(pairwise)
    assert metrics.roc_auc([1, 1, 0, 0], [0.9, 0.8, 0.3, 0.1]) == 1.0
    assert metrics.roc_auc([0, 0, 1, 1], [0.9, 0.8, 0.3, 0.1]) == 0.0
    assert metrics.roc_auc([0, 1, 0, 1], [0.5] * 4) == 0.5
    assert np.isnan(metrics.roc_auc([1, 1], [0.2, 0.3]))


def test_precision_recall_and_threshold_counts():
    positive = np.array([1, 0, 1, 1, 0], bool)
    scores = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    precision, recall, thresholds = metrics.precision_recall_curve(positive, scores)
    assert thresholds.tolist() == [0.9, 0.8, 0.7, 0.2, 0.1]
    assert recall.tolist() == pytest.approx([1 / 3, 1 / 3, 2 / 3, 1, 1])
    assert precision.tolist() == pytest.approx([1, 1 / 2, 2 / 3, 3 / 4, 3 / 5])
    assert metrics.average_precision(positive, scores) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3)
    at = metrics.binary_counts(positive, scores, 0.5)
    assert (at["tp"], at["fp"], at["tn"], at["fn"]) == (2, 1, 1, 1)
    assert at["specificity"] == 0.5 and at["recall"] == pytest.approx(2 / 3)


def test_classification_report_specificity_with_drowsy_positive():
    labels = torch.tensor([0, 0, 0, 1, 1])  # alert, alert, alert, drowsy, drowsy
    logits = torch.tensor([[2.0, 0], [0, 2.0], [2.0, 0], [0, 2.0], [2.0, 0]])
    r = metrics.classification_report(logits, labels, ["alert", "drowsy"])
    assert r["positive_class"] == "drowsy"
    assert r["specificity"] == pytest.approx(2 / 3)  # 2 of 3 alert clips let pass
    assert r["per_class"]["drowsy"]["recall"] == 0.5


def test_frame_accuracy_scores_each_frame_with_its_clip():
    preds = np.array([1, 0, 1])
    labels = ["0011", "0011", None]  # the third clip has no frame labels (not NTHU)
    window = slice(1, 4)  # the frames the model saw
    assert metrics.frame_accuracy(preds, labels, [window] * 3) == pytest.approx(3 / 6)
    assert metrics.frame_accuracy(preds, [None] * 3, [window] * 3) is None


@pytest.fixture(scope="module")
def two_checkpoints(tiny_data, tmp_path_factory):
    from conftest import tiny_args
    models = tmp_path_factory.mktemp("report_models")
    assert train.main(tiny_args(tiny_data, models, "--epochs", "2")) == 0
    other = models / "other.pth"
    shutil.copy(models / "latest_model.pth", other)
    return models / "best_model.pth", other


def printed_figures(out: str) -> dict:
    """The numbers evaluate prints for one model."""
    acc, f1 = re.search(r"accuracy ([\d.]+)%\s+macro F1 ([\d.]+)", out).groups()
    auc = re.search(r"ROC-AUC ([\d.]+|n/a)", out).group(1)
    per_class = {m[0]: [float(v) for v in m[1:]] for m in
                 re.findall(r"^\s+(alert|drowsy)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+\d+$",
                            out, re.M)}
    subjects = dict(re.findall(r"(s\d+) ([\d.]+)%", out.split("per subject:")[1]))
    return {"accuracy": float(acc), "macro_f1": float(f1), "roc_auc": auc,
            "per_class": per_class, "subjects": subjects}


def test_report_files_hold_the_printed_numbers(two_checkpoints, tmp_path, capsys):
    best, _ = two_checkpoints
    assert evaluate.main(["--model", str(best), "--report", str(tmp_path / "r")]) == 0
    shown = printed_figures(capsys.readouterr().out)
    r = tmp_path / "r"
    for name in ("confusion_matrix.png", "roc.png", "precision_recall.png",
                 "training_curves.png"):
        assert (r / name).read_bytes()[:4] == b"\x89PNG", name
    m = json.loads((r / "metrics.json").read_text())
    assert f"{100 * m['accuracy']:.2f}" == f"{shown['accuracy']:.2f}"
    assert f"{m['macro_f1']:.3f}" == f"{shown['macro_f1']:.3f}"
    assert shown["roc_auc"] == (f"{m['roc_auc']:.3f}" if m["roc_auc"] is not None else "n/a")
    for name, (precision, recall, f1) in shown["per_class"].items():
        c = m["per_class"][name]
        assert [round(c["precision"], 3), round(c["recall"], 3), round(c["f1"], 3)] == \
            [precision, recall, f1]
    assert {s: f"{100 * a:.1f}" for s, a in m["per_subject"].items()} == shown["subjects"]
    assert {"specificity", "confusion_matrix", "clips"} <= set(m)
    assert "probabilities" not in m  # per-clip arrays stay out of the figures
    with open(r / "threshold_sweep.csv") as fh:
        sweep = list(csv.DictReader(fh))
    assert [float(row["threshold"]) for row in sweep] == pytest.approx(np.linspace(0, 1, 21))
    half = sweep[10]  # P(drowsy) >= 0.5 is the argmax decision of a 2-class model
    assert float(half["recall"]) == pytest.approx(m["per_class"]["drowsy"]["recall"], abs=1e-4)
    assert float(half["specificity"]) == pytest.approx(m["specificity"], abs=1e-4)
    assert int(sweep[0]["tp"]) + int(sweep[0]["fp"]) == m["clips"]  # threshold 0: all positive


def test_several_models_one_table_and_one_roc_plot(two_checkpoints, tmp_path, capsys):
    best, other = two_checkpoints
    assert evaluate.main(["--model", str(best), "--model", str(other),
                          "--report", str(tmp_path / "r")]) == 0
    assert "ROC-AUC" in capsys.readouterr().out
    r = tmp_path / "r"
    with open(r / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [row["model"] for row in rows] == [str(best), str(other)]
    assert (r / "roc_comparison.png").read_bytes()[:4] == b"\x89PNG"
    assert "do not compare" not in capsys.readouterr().out  # one data set
    # Models scored each on its own data set were put side by side without a word.
    rows = [{"model": f"m{k}", "epoch": 1, "accuracy": 0.5, "macro_f1": 0.5, "roc_auc": 0.5,
             "data_dir": str(tmp_path / f"d{k}")} for k in (1, 2)]
    assert f"note: scored on 2 data sets ({tmp_path / 'd1'}, {tmp_path / 'd2'}), so these " \
           f"figures do not compare" in evaluate.comparison_table(rows)
    assert len(json.loads((r / "metrics.json").read_text())) == 2
    for tag in ("best_model", "other"):
        assert (r / tag / "metrics.json").is_file() and (r / tag / "roc.png").is_file()
    # The same folder for one model's report: the comparison's files stay, and are said.
    assert evaluate.main(["--model", str(best), "--report", str(r)]) == 0
    assert (f"note: {r}/ also holds 4 files or folders this report did not write (best_model, "
            f"comparison.csv, other ...): an earlier report's?") in capsys.readouterr().out


def test_frame_level_accuracy_for_data_with_frame_labels(two_checkpoints, tiny_data, tmp_path,
                                                         capsys):
    # Give every stored 16-frame test clip NTHU-style frame labels: 6 alert, then 10 drowsy.
    # The 8-frame model sees frames 4..11 (centred): 2 alert and 6 drowsy ones.
    data = tmp_path / "nthu_like"
    shutil.copytree(tiny_data, data)
    manifest = json.loads((data / "manifest.json").read_text())
    for rec in manifest["clips"]:
        rec["frame_labels"] = "0" * 6 + "1" * 10
    (data / "manifest.json").write_text(json.dumps(manifest))
    best, _ = two_checkpoints
    out = tmp_path / "figures.json"
    assert evaluate.main(["--model", str(best), "--data-dir", str(data), "--json", str(out)]) == 0
    said = capsys.readouterr().out
    assert "frame-level accuracy" in said and said.rstrip().endswith(f"Figures: {out}")
    assert "warning" not in said  # another folder, named on purpose
    m = json.loads(out.read_text())
    called_drowsy = sum(row[1] for row in m["confusion_matrix"])
    expected = (2 * (m["clips"] - called_drowsy) + 6 * called_drowsy) / (8 * m["clips"])
    assert m["frame_accuracy"] == pytest.approx(expected)
    assert m["frame_labelled_clips"] == m["clips"] and "only the" not in said
    # Clips of videos without a label file count for nothing there: the line says so.
    for rec in manifest["clips"][::2]:
        del rec["frame_labels"]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert evaluate.main(["--model", str(best), "--data-dir", str(data), "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    assert 0 < m["frame_labelled_clips"] < m["clips"]
    assert (f"; only the {m['frame_labelled_clips']} of {m['clips']} clips whose videos have "
            f"per-frame labels)") in capsys.readouterr().out
    assert m["per_nthu_set"] == {}  # no NTHU-DDD sets recorded
    # NTHU-DDD's evaluation set apart from its testing set: papers report the former.
    for k, rec in enumerate(manifest["clips"]):
        rec["nthu_set"] = ("evaluation", "testing")[k % 2]
    (data / "manifest.json").write_text(json.dumps(manifest))
    assert evaluate.main(["--model", str(best), "--data-dir", str(data), "--json", str(out)]) == 0
    m = json.loads(out.read_text())
    sets = m["per_nthu_set"]
    assert sorted(sets) == ["evaluation", "testing"]
    assert sum(v["clips"] for v in sets.values()) == m["clips"]
    assert sum(v["accuracy"] * v["clips"] for v in sets.values()) / m["clips"] == \
        pytest.approx(m["accuracy"])
    assert (f"per NTHU-DDD set: evaluation {100 * sets['evaluation']['accuracy']:.1f}% "
            f"({sets['evaluation']['clips']} clips)") in capsys.readouterr().out


def test_the_alarm_threshold_is_the_middle_of_the_best_ones():
    """Well-separated validation clips: every threshold from 0.3 to 0.9 separates them,
    and the alarm gets the middle one (the widest margin), not the highest."""
    drowsy = np.array([1] * 10 + [0] * 10)
    apart = np.r_[np.full(10, 0.97), np.full(10, 0.1)]
    assert metrics.alarm_threshold(drowsy, apart) == 0.6
    # Overlapping scores: the one threshold that separates best wins.
    overlap = np.r_[np.linspace(0.5, 1, 10), np.linspace(0, 0.6, 10)]
    best = metrics.alarm_threshold(drowsy, overlap)
    rates = {r["threshold"]: r["recall"] + r["specificity"]
             for r in metrics.threshold_sweep(drowsy, overlap)}
    assert rates[best] == max(v for t, v in rates.items() if 0.3 - 1e-9 <= t <= 0.9 + 1e-9)


def test_a_weak_models_alarm_ends_when_the_eyes_open():
    """A weakly trained model: its alert clips score 0.53-0.67, its drowsy ones 0.62-0.95.
    With the usual off-threshold (11/14 of the on-threshold chosen, under every alert
    score) an alarm never ended after the eyes opened; the chosen one lies above three
    alert clips in four, so open eyes end it. A model that tells the classes well apart
    keeps the usual one."""
    drowsy = np.array([1] * 20 + [0] * 20)
    scores = np.r_[np.linspace(0.62, 0.95, 20), np.linspace(0.53, 0.67, 20)]
    on = metrics.alarm_threshold(drowsy, scores)
    usual = AlarmSettings().off_for(on)
    off = metrics.alarm_off_threshold(drowsy, scores, on, usual)
    alert = scores[drowsy == 0]
    assert usual < alert.min() and usual < off <= on - metrics.HYSTERESIS_GAP
    # A closure (drowsy scores), then open eyes (the alert clips' scores, in turn).
    stream = list(scores[:20]) + list(np.tile(alert, 3))
    for threshold, ends in ((usual, False), (off, True)):
        alarm = Alarm(AlarmSettings(on=on, off=threshold, min_on=0.5, cooldown=0))
        for k, p in enumerate(stream):
            alarm.update(0.5 * k, p)
        assert alarm.events[0][0] < 10 and (alarm.events[0][1] is not None) == ends
    # Alert clips above the on-threshold: the off-threshold keeps its gap below it (none,
    # and an alarm wavering around the on-threshold would start and end again).
    spread = np.r_[np.linspace(0.6, 0.95, 20), np.linspace(0.4, 0.8, 20)]
    on = metrics.alarm_threshold(drowsy, spread)
    off = metrics.alarm_off_threshold(drowsy, spread, on, AlarmSettings().off_for(on))
    assert off == round(on - metrics.HYSTERESIS_GAP, 4)
    apart = np.r_[np.full(20, 0.97), np.full(20, 0.1)]
    assert metrics.alarm_off_threshold(drowsy, apart, 0.6, usual) == usual
    # Only one class in the validation split: the usual one.
    assert metrics.alarm_off_threshold(np.ones(5), np.full(5, 0.9), 0.6, usual) == usual


def test_data_made_again_in_the_training_folder_is_flagged(tmp_path, capsys):
    """A data folder prepared or generated again after training: its test split may now
    hold clips the model trained on, and evaluate says so (training's own data: silent)."""
    from conftest import tiny_args
    from fatigue.data import synthetic
    data = tmp_path / "data"
    synthetic.generate(data, seed=1, num_subjects=4, clips_per_subject=6, image_size=16,
                       sequence_length=16)
    assert train.main(tiny_args(data, tmp_path / "m", "--epochs", "1")) == 0
    best = str(tmp_path / "m" / "best_model.pth")
    capsys.readouterr()
    assert evaluate.main(["--model", best]) == 0
    assert "warning" not in capsys.readouterr().out
    synthetic.generate(data, seed=2, num_subjects=4, clips_per_subject=6, image_size=16,
                       sequence_length=16)
    assert evaluate.main(["--model", best]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].startswith(f"  warning: {data}/ holds another data set than the one this "
                               f"model trained on")
    with pytest.raises(UserError, match=r"no data set in .*dta/ \(no manifest.json\): give "
                                        r"--data-dir a folder that dataset.py or prepare wrote"):
        evaluate.main(["--model", best, "--data-dir", str(tmp_path / "dta")])
    with pytest.raises(UserError, match=r"best_model.pth is a file, not a data set folder: "
                                        r"give --data-dir a folder that dataset.py or prepare"):
        evaluate.main(["--model", best, "--data-dir", best])


def test_a_drawn_face_model_scored_on_video_crops_is_warned_of_and_the_reverse():
    drawn, videos = {"data_source": "synthetic"}, {"data_source": "folders"}
    assert kind_differs(drawn, {"source": "rldd"}, "dv") == (
        "this model trained on the built-in drawn faces and the clips in dv/ are face crops "
        "of videos: its figures here say little")
    assert "trained on face crops of videos and the clips in data/ are the built-in drawn " \
        "faces" in kind_differs(videos, {"source": "synthetic"}, "data")
    assert kind_differs(videos, {"source": "nthu"}, "d") is None  # another data set, one kind
    assert kind_differs(drawn, {"source": "synthetic"}, "d") is None
    assert kind_differs({"data_source": None}, {"source": "nthu"}, "d") is None  # older file


def test_scored_on_data_with_its_training_subjects_or_other_classes_it_says_so(
        two_checkpoints, tiny_data, tmp_path, capsys):
    """A cross-validation fold scored on the test split of the data set it was cut from
    gave optimistic figures without a word. Classes in another order read every label as
    the other class (20% for a model of 79%)."""
    from conftest import tiny_args
    best, _ = two_checkpoints
    manifest = json.loads((tiny_data / "manifest.json").read_text())
    tested = {c["subject"] for c in manifest["clips"] if c["split"] == "test"}
    fold = tmp_path / "fold"  # as crossval cuts one: its test subjects train here
    shutil.copytree(tiny_data, fold)
    cut = {**manifest, "cross_validation": {"source_fingerprint": data_fingerprint(manifest)},
           "splits": {**manifest["splits"], "train": manifest["splits"]["test"],
                      "test": manifest["splits"]["train"]},
           "clips": [{**c, "split": {"test": "train", "train": "test"}.get(c["split"],
                                                                          c["split"])}
                     for c in manifest["clips"]]}
    (fold / "manifest.json").write_text(json.dumps(cut))
    assert train.main(tiny_args(fold, tmp_path / "fold_model", "--epochs", "1")) == 0
    capsys.readouterr()
    assert evaluate.main(["--model", str(tmp_path / "fold_model" / "best_model.pth"),
                          "--data-dir", str(tiny_data)]) == 0
    assert (f"warning: 1 subject of this test split ({', '.join(sorted(tested))}) was among "
            f"the subjects this model trained on: its figures are optimistic") in \
        capsys.readouterr().out
    # Another data set that reuses the names (s00, s01...) for other people: no warning.
    other = tmp_path / "other"
    synthetic.generate(other, seed=2, num_subjects=4, clips_per_subject=6, image_size=16,
                       sequence_length=16)
    assert evaluate.main(["--model", str(best), "--data-dir", str(other)]) == 0
    assert "optimistic" not in capsys.readouterr().out
    copy = tmp_path / "copy"
    shutil.copytree(tiny_data, copy)
    manifest["classes"] = manifest["classes"][::-1]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(UserError, match="numbers its classes drowsy, alert and .* alert, "
                                        "drowsy: scored, every label would be read as another"):
        evaluate.main(["--model", str(best), "--data-dir", str(copy)])
    manifest["classes"] = ["awake", "drowsy"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    assert evaluate.main(["--model", str(best), "--data-dir", str(copy)]) == 0
    assert "names its classes awake, drowsy, the model's alert, drowsy: taken as the same" \
        in capsys.readouterr().out


def test_a_class_absent_from_the_data_has_no_recall_or_f1_rather_than_zero():
    """A fold whose test subjects show one class: the other class's recall and F1 are
    undefined (n/a), and macro F1 is over the classes present, so that a fold scored 100%
    does not read as macro F1 0.5 or pull a study's mean recall down."""
    labels = torch.tensor([0, 0, 0])  # alert only
    right = metrics.classification_report(torch.tensor([[2.0, 0]] * 3), labels, ["alert", "drowsy"])
    assert right["per_class"]["alert"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 3}
    drowsy = right["per_class"]["drowsy"]
    assert math.isnan(drowsy["recall"]) and math.isnan(drowsy["f1"]) and drowsy["support"] == 0
    assert right["macro_f1"] == 1.0
    # Clips called drowsy that are not: precision 0 for drowsy (defined), alert's recall down.
    wrong = metrics.classification_report(torch.tensor([[2.0, 0], [0, 2.0], [0, 2.0]]), labels,
                                          ["alert", "drowsy"])
    assert wrong["per_class"]["drowsy"]["precision"] == 0.0
    assert wrong["per_class"]["alert"]["recall"] == pytest.approx(1 / 3)
    assert wrong["macro_f1"] == pytest.approx(0.5)  # alert's F1 alone
    # Cross-validation's mean leaves the undefined recall out.
    folds = [{"fold": k, "test": ["s"], "result": crossval.fold_result(
        dict(r, epoch=1, val_acc=1.0, per_subject={}))} for k, r in ((1, right), (2, wrong))]
    table = crossval.results_table({"classes": ["alert", "drowsy"], "folds": folds,
                                    "data_dir": "d", "num_folds": 2, "options": {}})
    assert table["n"]["recall_drowsy"] == 0 and table["mean"]["recall_drowsy"] is None
    assert table["mean"]["macro_f1"] == pytest.approx(0.75)
    assert crossval.format_table(table).splitlines()[1].endswith("n/a")  # recall drowsy, fold 1


def test_clips_shorter_than_the_model_sees_are_said_in_the_models_terms(two_checkpoints,
                                                                        tmp_path):
    short = tmp_path / "short"
    synthetic.generate(short, num_subjects=3, clips_per_subject=2, image_size=16,
                       sequence_length=4)
    best, _ = two_checkpoints  # sees 8 frames
    with pytest.raises(UserError, match=r"sees clips of 8 frames and those in .*short/ have 4: "
                                        r"give --data-dir a data set prepared with "
                                        r"--sequence-length 8 or more"):
        evaluate.main(["--model", str(best), "--data-dir", str(short)])
