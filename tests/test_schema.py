"""The training state and the checkpoint schema, without training; and checkpoints written
by the code before the schema existed (tests/data/format1_*.pth), resumed as the old code
would have gone on."""
from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
import torch

import checkpoint_training
import train
from config import Config
from fatigue import seeds
from fatigue.checkpoints import schema
from fatigue.checkpoints.store import CheckpointError, load_checkpoint, write_checkpoint
from fatigue.inference.deployment import alarm_settings
from fatigue.training.schedule import make_schedule
from fatigue.training.state import TrainState
from model import build_model
from test_training import load

DATA = Path(__file__).parent / "data"
# The options of the run that wrote tests/data/format1_*.pth with the code before fatigue/
# existed (commit 04ae7be): 4 epochs on conftest's tiny data, --save-every 2
# --save-every-steps 4. format1_mid_epoch.pth is its first mid-epoch save (epoch 2, after 4
# clips), format1_mid_epoch_best.pth the best_model.pth beside it, format1_final.pth its end.
FIXTURE_OPTIONS = ("--epochs", "4", "--save-every", "2", "--save-every-steps", "4")


def tiny_config(**changes) -> Config:
    values = dict(image_size=16, sequence_length=8, cnn_width=4, feature_dim=8, lstm_hidden=8,
                  batch_size=4, seed=3, num_epochs=4)
    return Config(**{**values, **changes})


def built_run(cfg: Config) -> tuple[schema.Trainables, TrainState]:
    torch.manual_seed(cfg.seed)
    model = build_model(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate)
    return schema.Trainables(model, optimizer, make_schedule(optimizer, cfg), None), TrainState()


def trained_a_little(parts: schema.Trainables, state: TrainState) -> None:
    """Two optimizer steps and one epoch end, as the loop would record them."""
    for _ in range(2):
        parts.optimizer.zero_grad()
        parts.model(torch.rand(2, 8, 1, 16, 16)).sum().backward()
        parts.optimizer.step()
        state.add_step(torch.tensor([1.5, 1.0, 2.0], dtype=torch.float64), 2)
    parts.scheduler.step()
    state.end_epoch(0.7, 0.5, 0.69, 0.75, 1e-3, 1.0, alarm_threshold=0.55)
    state.add_step(torch.tensor([0.5, 2.0, 2.0], dtype=torch.float64), 2)


# ----------------------------------------------------------------------------- training state
def test_train_state_counts_steps_epochs_and_the_best():
    state = TrainState()
    state.add_step(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64), 4)
    assert (state.global_step, state.samples_in_epoch, state.mid_epoch) == (1, 4, True)
    assert state.end_epoch(0.5, 0.75, 0.6, 0.5, 1e-3, 2.0) is True
    assert (state.epoch, state.samples_in_epoch, state.sums.tolist()) == (1, 0, [0.0, 0.0, 0.0])
    # A tie with the best accuracy: a new best only at a lower validation loss.
    assert state.end_epoch(0.4, 0.8, 0.7, 0.5, 5e-4, 2.0) is False
    assert state.end_epoch(0.4, 0.8, 0.55, 0.5, 5e-4, 2.0) is True
    assert state.best_epoch == 3
    assert state.end_epoch(0.4, 0.8, 0.58, 0.5, 5e-4, 2.0) is False  # lower than 0.6, not 0.55
    assert state.end_epoch(0.3, 0.9, 0.9, 0.8, 1e-4, 2.0) is True  # better accuracy, any loss
    assert (state.best_val_acc, state.best_epoch, state.val_acc) == (0.8, 5, 0.8)
    assert state.history["val_accuracies"] == [0.5, 0.5, 0.5, 0.5, 0.8]
    assert state.history["learning_rates"] == [1e-3, 5e-4, 5e-4, 5e-4, 1e-4]
    assert state.history["train_accuracies"] == [0.75, 0.8, 0.8, 0.8, 0.9]


def test_which_epochs_were_best_is_replayed_from_the_histories():
    # What a log line rebuilt after a crash says its epoch saved (best_model.pth or not).
    state, said = TrainState(), []
    for acc, loss in [(0.5, 0.7), (0.5, 0.6), (0.75, 0.9), (0.75, 0.95), (0.5, 0.1), (0.75, 0.5)]:
        said.append(state.end_epoch(0.5, 0.5, loss, acc, 1e-3, 1.0))
    assert said == [True, True, True, False, False, True]
    assert [state.was_best(epoch) for epoch in range(1, 7)] == said


def test_a_tie_never_replaces_a_best_whose_loss_is_unknown():
    # A run from before best_epoch was recorded resumes with best_epoch 0: its best
    # checkpoint's loss is unknown, so only a better accuracy replaces it.
    state = TrainState()
    state.load_state_dict({**state.state_dict(), "epoch": 2, "best_val_acc": 0.75,
                           "best_epoch": 0, "val_accuracies": [0.5, 0.75],
                           "val_losses": [0.9, 0.8]})
    assert state.end_epoch(0.1, 0.9, 0.01, 0.75, 1e-3, 1.0) is False
    assert state.was_best(3) is False  # what a rebuilt log line says epoch 3 saved
    assert state.end_epoch(0.1, 0.9, 0.01, 0.8, 1e-3, 1.0) is True and state.best_epoch == 4


def test_train_state_round_trips_through_its_state_dict():
    state = TrainState()
    state.add_step(torch.tensor([2.0, 3.0, 4.0], dtype=torch.float64), 4)
    state.end_epoch(0.5, 0.75, 0.6, 0.5, 1e-3, 2.0)
    state.add_step(torch.tensor([1.0, 1.0, 4.0], dtype=torch.float64), 4)
    copy = TrainState()
    copy.load_state_dict(state.state_dict())
    assert copy.state_dict() == state.state_dict()
    assert set(state.state_dict()) >= set(schema.HISTORY_KEYS) | {"epoch", "val_acc",
                                                                  "best_val_acc"}


# ----------------------------------------------------------------------------- the schema
def test_snapshot_has_every_documented_key_at_the_top_and_loads_weights_only(tmp_path):
    cfg = tiny_config()
    parts, state = built_run(cfg)
    trained_a_little(parts, state)
    run = schema.RunIdentity(cfg, "fp", {"train": ["a"]}, ["a note"], {"fps": 10.0})
    snap = schema.snapshot(parts, state, run, [state.sums], [seeds.rng_state()])
    assert set(schema.DOCUMENTED_KEYS) <= set(snap)
    assert snap["format_version"] == schema.FORMAT_VERSION
    assert (snap["epoch"], snap["global_step"], snap["samples_in_epoch"]) == (1, 3, 2)
    assert snap["partial_epoch"].tolist() == [[0.5, 2.0, 2.0]]
    assert (snap["alarm_threshold"], snap["preprocessing"]) == (0.55, {"fps": 10.0})
    write_checkpoint(snap, tmp_path / "c.pth")
    loaded = torch.load(tmp_path / "c.pth", weights_only=True)
    assert loaded["config"] == cfg.to_dict()
    # docs/checkpoints.md names every key a checkpoint holds (a new field is documented).
    page = (Path(__file__).resolve().parent.parent / "docs" / "checkpoints.md").read_text()
    named = set(re.findall(r'state\["(\w+)"\]', page))
    assert set(loaded) - named == set()


def test_restore_puts_back_what_snapshot_took():
    cfg = tiny_config()
    parts, state = built_run(cfg)
    trained_a_little(parts, state)
    rng = seeds.rng_state()
    snap = schema.snapshot(parts, state, schema.RunIdentity(cfg, "fp", {}, []), [state.sums],
                           [rng])
    expected_draw = torch.rand(3)  # what the run draws next, from the saved RNG state

    other_parts, other_state = built_run(tiny_config(seed=99))
    truncated = []
    notes = schema.restore(snap, other_parts, other_state, cfg, rank=0, world_size=1,
                           fingerprint="fp", truncate_log=truncated.append)
    assert notes == [] and truncated == [1]
    assert other_state.state_dict() == state.state_dict()
    assert other_state.sums.tolist() == [0.5, 2.0, 2.0]
    assert torch.equal(torch.rand(3), expected_draw)  # mid-epoch: the RNG as it was
    for key, value in parts.model.state_dict().items():
        assert torch.equal(value, other_parts.model.state_dict()[key]), key
    assert other_parts.scheduler.last_epoch == 1
    assert other_parts.optimizer.param_groups[0]["lr"] == parts.optimizer.param_groups[0]["lr"]


@pytest.mark.parametrize("processes, fingerprint, said", [
    (2, "fp", "2 processes wrote this checkpoint and 1 run now"),
    # --allow-data-change: the position counts clips of the checkpoint's data
    (1, "another", "the data set is not the one this checkpoint was written on, so epoch 2 "
                   "restarts at its beginning")])
def test_restore_restarts_an_epoch_begun_by_other_processes_or_on_other_data(
        processes, fingerprint, said):
    cfg = tiny_config()
    parts, state = built_run(cfg)
    trained_a_little(parts, state)
    snap = schema.snapshot(parts, state, schema.RunIdentity(cfg, "fp", {}, []),
                           [state.sums] * processes, [seeds.rng_state()] * processes)
    fresh_parts, fresh = built_run(cfg)
    notes = schema.restore(snap, fresh_parts, fresh, cfg, rank=0, world_size=1,
                           fingerprint=fingerprint)
    assert len(notes) == 1 and said in notes[0]
    assert (fresh.epoch, fresh.samples_in_epoch, fresh.sums.tolist()) == (1, 0, [0, 0, 0])


def test_restore_rebuilds_the_schedule_for_a_new_number_of_epochs():
    cfg = tiny_config()
    parts, state = built_run(cfg)
    trained_a_little(parts, state)
    snap = schema.snapshot(parts, state, schema.RunIdentity(cfg, "fp", {}, []), [state.sums],
                           [seeds.rng_state()])
    longer = tiny_config(num_epochs=8)
    fresh_parts, fresh = built_run(longer)
    notes = schema.restore(snap, fresh_parts, fresh, longer, rank=0, world_size=1,
                           fingerprint="fp")
    assert notes and notes[0].startswith("Learning-rate schedule rebuilt for 8 epochs")
    assert fresh_parts.optimizer.param_groups[0]["lr"] == pytest.approx(
        0.001 * (0.01 + 0.99 * 0.5 * (1 + torch.cos(torch.tensor(torch.pi / 8)).item())))


def test_data_change_is_named_or_none():
    assert schema.data_change({"data_fingerprint": "a", "epoch": 3}, "a") is None
    assert schema.data_change({"data_fingerprint": None, "epoch": 3}, "b") is None
    assert schema.data_change({"data_fingerprint": "a", "epoch": 3}, "b") == \
        "data set changed on resume at epoch 3: a -> b"


def test_problems_of_files_that_cannot_be_used():
    good = {k: 0 for k in schema.DOCUMENTED_KEYS}
    assert schema.problem(good) is None
    assert "no model_state_dict" in schema.problem({"weights": 1})
    assert "newer version" in schema.problem({**good, "format_version": schema.FORMAT_VERSION + 1})
    assert schema.problem({k: 0 for k in schema.DOCUMENTED_KEYS if k != "val_acc"}) \
        == "lacks val_acc: not a full training checkpoint"


def test_a_format_0_file_with_only_the_documented_keys_loads_and_resumes(tiny, tmp_path):
    """The seed's flat checkpoint (documented keys only, no format version): it loads,
    `--info` reads it, and training continues from it to the end."""
    assert train.main(tiny("--epochs", "2")) == 0
    models = tmp_path / "models"
    full = load(models / "latest_model.pth")
    write_checkpoint({k: full[k] for k in schema.DOCUMENTED_KEYS}, models / "latest_model.pth")
    old = load_checkpoint(models / "latest_model.pth")
    assert (old["format_version"], old["samples_in_epoch"], old["best_epoch"]) == \
        (schema.FORMAT_VERSION, 0, 0)
    assert old["learning_rates"] == [pytest.approx(float("nan"), nan_ok=True)] * 2
    assert train.main(tiny("--resume", "--epochs", "3")) == 0
    assert load(models / "latest_model.pth")["epoch"] == 3


@pytest.mark.parametrize("version, added", [(4, ("data_source", "data_classes")),
                                            (5, ("alarm_off_threshold",))])
def test_a_file_of_an_older_format_loads_and_resumes_exactly(version, added, tiny, tmp_path,
                                                             capsys):
    """Format 5 added data_source and data_classes, format 6 alarm_off_threshold: a file of
    the format before has none of them; it loads with them unknown (the alarm's off-threshold
    following its on-threshold, as it did), and its run resumes as the uninterrupted one,
    then records them."""
    assert train.main(tiny("--epochs", "2")) == 0
    models = tmp_path / "models"
    shutil.copytree(models, tmp_path / "reference")
    assert train.main(tiny("--epochs", "3", "--resume", "--model-dir",
                           str(tmp_path / "reference"))) == 0
    full = load(models / "latest_model.pth")
    assert (full["data_source"], full["data_classes"]) == ("synthetic", ["alert", "drowsy"])
    assert 0 < full["alarm_off_threshold"] <= full["alarm_threshold"]
    older = {k: v for k, v in full.items() if k not in added}
    write_checkpoint({**older, "format_version": version}, models / "latest_model.pth")
    state = load_checkpoint(models / "latest_model.pth")
    assert state["format_version"] == schema.FORMAT_VERSION
    assert all(state[key] is None for key in added)
    info = ["--info", "latest_model.pth", "--model-dir", str(models)]
    if version == 5:
        on = state["alarm_threshold"]
        assert alarm_settings(state).off == round(on * 0.55 / 0.7, 4)
        capsys.readouterr()
        assert checkpoint_training.main(info) == 0
        assert "(on chosen on validation)" in capsys.readouterr().out
    assert train.main(tiny("--resume", "--epochs", "3")) == 0
    if version == 5:
        capsys.readouterr()
        assert checkpoint_training.main(info) == 0
        assert "(both chosen on validation)" in capsys.readouterr().out
    resumed, reference = load(models / "latest_model.pth"), load(tmp_path / "reference" /
                                                                 "latest_model.pth")
    assert all(torch.equal(resumed["model_state_dict"][k], v)
               for k, v in reference["model_state_dict"].items())
    assert all(resumed[key] is not None for key in added)


# ----------------------------------------------------------------------------- older files
def test_checkpoints_of_the_code_before_the_schema_load(tmp_path):
    for name in ("format1_mid_epoch.pth", "format1_final.pth"):
        assert torch.load(DATA / name, weights_only=True)["format_version"] == 1
        state = load_checkpoint(DATA / name)  # checksum verified, upgraded
        assert state["format_version"] == schema.FORMAT_VERSION == 6
        assert state["partial_epoch"].dim() == 2
        # Unknown to format 1: detect and export keep what they did for such files.
        assert state["alarm_threshold"] is state["alarm_off_threshold"] is None
        assert state["preprocessing"] is None
        # ... and their training goes on without camera jitter, as it would have.
        assert state["config"]["augment_camera"] == "no"
        # ... in the mode they ran in (auto: exact on the CPU, autotuned on a GPU), which
        # they did not record.
        assert state["config"]["deterministic"] == "auto" and state["deterministic"] is None
    mid = load_checkpoint(DATA / "format1_mid_epoch.pth")
    assert (mid["epoch"], mid["samples_in_epoch"]) == (1, 4)


@pytest.fixture
def fixture_threads():
    """The CPU threads the old code ran on when it wrote tests/data (this 2-core machine's
    default): a float sum split across another number of threads rounds differently."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


# tests/data was written on another machine's CPU, and float kernels of another vector width
# round the last bits differently: on an AVX-512 AMD EPYC the old code's run, redone by the
# new code or resumed from its mid-epoch file, ends at most 3e-8 from the stored weights (the
# same code on the same CPU is bit-identical: test_training). Anything lost on resume moves
# them far more: one optimizer step count off by one, 9e-5 (the control below); the Adam
# moments lost, 9e-3.
ROUNDING = 1e-6


def assert_same_run_but_rounding(a: dict, b: dict) -> None:
    """The same run as assert_same_run, up to how another CPU rounds (ROUNDING)."""
    assert (a["epoch"], a["global_step"]) == (b["epoch"], b["global_step"])
    for key, value in a["model_state_dict"].items():
        assert torch.allclose(value.double(), b["model_state_dict"][key].double(), rtol=0,
                              atol=ROUNDING), key
    for pid, st in a["optimizer_state_dict"]["state"].items():
        for name, value in st.items():
            assert torch.allclose(value.double(), b["optimizer_state_dict"]["state"][pid][name]
                                  .double(), rtol=0, atol=ROUNDING), (pid, name)
    for key in ("train_losses", "val_losses", "train_accuracies", "val_accuracies",
                "learning_rates"):
        assert a[key] == pytest.approx(b[key], rel=0, abs=ROUNDING), key
    assert a["best_val_acc"] == b["best_val_acc"]


def resumed_from_the_old_mid_epoch_file(tiny, models: Path, change=None) -> dict:
    """The old code's mid-epoch files resumed by this code: the file as it is, or as
    `change` makes it (loaded, changed, written again)."""
    models.mkdir()
    if change is None:
        shutil.copy(DATA / "format1_mid_epoch.pth", models / "latest_model.pth")
    else:
        state = load_checkpoint(DATA / "format1_mid_epoch.pth")
        change(state)
        write_checkpoint(state, models / "latest_model.pth")
    shutil.copy(DATA / "format1_mid_epoch_best.pth", models / "best_model.pth")
    assert train.main(tiny("--resume", "--model-dir", str(models))) == 0
    return load(models / "latest_model.pth")


def test_an_uninterrupted_run_matches_the_old_code(tiny, fixture_threads):
    args = tiny(*FIXTURE_OPTIONS)
    assert train.main(args) == 0
    assert_same_run_but_rounding(load(DATA / "format1_final.pth"), load(
        Path(args[args.index("--model-dir") + 1]) / "latest_model.pth"))


def test_a_mid_epoch_checkpoint_of_the_old_code_resumes_as_it_would_have(tiny, tmp_path,
                                                                         fixture_threads):
    assert_same_run_but_rounding(load(DATA / "format1_final.pth"),
                                 resumed_from_the_old_mid_epoch_file(tiny, tmp_path / "models"))


def test_the_rounding_allowance_still_sees_a_resume_that_lost_something(tiny, tmp_path,
                                                                        fixture_threads):
    def one_step_off(state: dict) -> None:
        state["optimizer_state_dict"]["state"][0]["step"] += 1
    resumed = resumed_from_the_old_mid_epoch_file(tiny, tmp_path / "off", one_step_off)
    with pytest.raises(AssertionError):
        assert_same_run_but_rounding(load(DATA / "format1_final.pth"), resumed)


def test_a_damaged_old_file_is_refused(tmp_path):
    damaged = tmp_path / "latest_model.pth"
    data = bytearray((DATA / "format1_final.pth").read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        load_checkpoint(damaged)
