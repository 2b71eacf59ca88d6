"""The speed features keep the contract: mixed precision state, gradient accumulation,
background saves, out-of-memory handling, torch.compile checkpoints."""
from __future__ import annotations

import inspect
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import threading
import time

import pytest
import torch

import benchmark
import model as model_module
import train
from config import Config
from conftest import ROOT, run_python, run_script
from dataset import ClipDataset
from fatigue import benchmarking
from fatigue.checkpoints import schema
from fatigue.checkpoints import store as checkpoint
from fatigue.data import loaders
from fatigue.data.clip_store import load_manifest
from fatigue.errors import UserError
from fatigue.inference.evaluation import evaluate_checkpoint
from fatigue.first_step import FIRST_STEP, HEAVY_MODULES
from fatigue.training import loop
from test_faults import interrupt
from test_training import assert_same_run, load


def test_gradient_accumulation_matches_one_large_batch():
    cfg = Config(image_size=16, sequence_length=6, cnn_width=4, feature_dim=8, lstm_hidden=8,
                 dropout=0.0)
    torch.manual_seed(0)
    net = model_module.build_model(cfg).eval()  # eval: BatchNorm uses fixed statistics
    clips, labels = torch.rand(8, 6, 1, 16, 16), torch.randint(0, 2, (8,))
    grads = []
    for accum in (1, 4):
        net.zero_grad()
        sums = loop.accumulate_gradients(net, clips, labels, accum, None, None)
        grads.append([p.grad.clone() for p in net.parameters()])
        assert sums[1:].tolist() == [float((net(clips).argmax(1) == labels).sum()), 8.0]
    for one, four in zip(*grads):
        torch.testing.assert_close(one, four, rtol=1e-5, atol=1e-6)


def test_fp16_scaler_state_is_saved_and_resumed_exactly(tiny, tmp_path, monkeypatch):
    args = tiny("--epochs", "3", "--amp", "fp16")
    ref_args = [a if a != str(tmp_path / "models") else str(tmp_path / "ref") for a in args]
    assert train.main(ref_args) == 0
    reference = load(tmp_path / "ref" / "latest_model.pth")
    assert reference["config"]["amp"] == "fp16"
    assert reference["scaler_state_dict"]["scale"] > 0  # the GradScaler's state is kept
    interrupt(monkeypatch, loop, "predict", 2, signal.SIGINT)
    assert train.main(args) == 130
    monkeypatch.undo()
    saved = load(tmp_path / "models" / "latest_model.pth")
    assert saved["scaler_state_dict"]["_growth_tracker"] > 0  # mid-run state, not a fresh one
    assert train.main(args + ["--resume"]) == 0
    final = load(tmp_path / "models" / "latest_model.pth")
    assert_same_run(reference, final)
    assert final["scaler_state_dict"] == reference["scaler_state_dict"]


def test_bf16_autocast_round_trip_on_cpu(tiny, tmp_path, monkeypatch):
    assert train.main(tiny("--epochs", "2", "--amp", "bf16")) == 0
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["config"]["amp"] == "bf16" and state["scaler_state_dict"] is None
    assert train.main(tiny("--epochs", "3", "--amp", "bf16", "--resume")) == 0
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 3


WRITER = """
import sys, torch
sys.path.insert(0, {root!r})
from fatigue.checkpoints import store as checkpoint
store = checkpoint.CheckpointStore({folder!r}, background=True)
big = {{"w": torch.randn(2_000_000)}}
for epoch in range(1, 10_000):
    state = {{"epoch": epoch, "model_state_dict": big, "optimizer_state_dict": {{}},
             "scheduler_state_dict": {{}}, "val_acc": 0.5, "best_val_acc": 0.5,
             "train_losses": [], "val_losses": [], "train_accuracies": [],
             "val_accuracies": [], "timestamp": "now", "config": {{}}}}
    store.save(state)
    if epoch == 1:  # on disk before the test's clock starts (a slow disk: not yet there)
        store.wait()
    print(epoch, flush=True)
"""


@pytest.mark.parametrize("delay", [0.3, 0.55, 0.8])
def test_kill_during_background_save_never_tears_latest(tmp_path, delay):
    folder = tmp_path / "models"
    code = WRITER.format(root=str(ROOT), folder=str(folder))
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "1"  # the first save is on disk
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = checkpoint.load_checkpoint(folder / "latest_model.pth")  # whole, checksum ok
    assert state["epoch"] >= 1
    store = checkpoint.CheckpointStore(folder)
    store.clean_temp_files()
    assert not list(folder.glob(".*.tmp"))


def test_background_save_blocks_only_for_a_copy(tmp_path):
    state = {"epoch": 1, "model_state_dict": {"w": torch.randn(3_000_000)},
             "optimizer_state_dict": {}, "scheduler_state_dict": {}, "val_acc": 0.5,
             "best_val_acc": 0.5, "train_losses": [], "val_losses": [],
             "train_accuracies": [], "val_accuracies": [], "timestamp": "now", "config": {}}
    store = checkpoint.CheckpointStore(tmp_path, background=True)
    store.save(state)
    state["model_state_dict"]["w"].zero_()  # training goes on changing its tensors
    store.wait()
    saved = checkpoint.load_checkpoint(tmp_path / "latest_model.pth")
    assert saved["model_state_dict"]["w"].abs().sum() > 0  # the snapshot was written


def test_what_waits_for_a_background_save_runs_after_it_and_not_after_a_failed_one(
        tmp_path, monkeypatch):
    state = {"epoch": 1, "model_state_dict": {"w": torch.ones(3)}, "config": {}}
    store = checkpoint.CheckpointStore(tmp_path, background=True)
    latest, seen, go = tmp_path / "latest_model.pth", [], threading.Event()
    real = checkpoint.commit
    monkeypatch.setattr(checkpoint, "commit", lambda tmp, final: (go.wait(10), real(tmp, final)))
    store.save(state)
    store.when_saved(lambda: seen.append(("first", latest.exists())))
    # One that arrives while the writer runs the others (here: queued by one of them).
    store.when_saved(lambda: (seen.append(("second", latest.exists())), store.when_saved(
        lambda: seen.append(("while running", latest.exists())))))
    assert seen == []  # the write is held: nothing ran ahead of it
    go.set()
    store.wait()
    assert seen == [("first", True), ("second", True), ("while running", True)]
    store.when_saved(lambda: seen.append(("after", True)))  # nothing pending: at once
    assert seen[-1] == ("after", True)
    go.clear()

    def full_disk(tmp, final):
        go.wait(10)
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(checkpoint, "commit", full_disk)
    store.save(state)
    store.when_saved(lambda: seen.append(("failed", True)))  # queued while the write is held
    go.set()
    with pytest.raises(checkpoint.CheckpointWriteError, match="No space left"):
        store.wait()
    assert seen[-1] == ("after", True)  # no record of a save that failed


def fail_big_batches(monkeypatch, limit):
    real = model_module.FatigueCNNLSTM.forward

    def forward(self, clips):
        if clips.shape[0] > limit:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, clips)

    monkeypatch.setattr(model_module.FatigueCNNLSTM, "forward", forward)


def test_out_of_memory_stops_with_advice_and_saves(tiny, tmp_path, monkeypatch):
    assert train.main(tiny("--epochs", "1")) == 0
    fail_big_batches(monkeypatch, 2)
    with pytest.raises(UserError, match="--accum-steps 2, or add --auto-batch"):
        train.main(tiny("--epochs", "2", "--resume"))
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["epoch"] == 1  # progress kept, position intact


def test_auto_batch_halves_micro_batch_and_keeps_effective_batch(tiny, tmp_path, monkeypatch,
                                                                capsys):
    fail_big_batches(monkeypatch, 2)
    assert train.main(tiny("--epochs", "1", "--auto-batch", "yes")) == 0
    assert "micro-batch halved to 2 clips (--accum-steps 2)" in capsys.readouterr().err
    cfg = load(tmp_path / "models" / "latest_model.pth")["config"]
    assert (cfg["batch_size"], cfg["accum_steps"]) == (4, 2)


def test_compiled_model_checkpoints_load_uncompiled(tiny, tmp_path):
    pytest.importorskip("torch._dynamo")
    if os.environ.get("CI_SKIP_COMPILE"):
        pytest.skip("compiler not available")
    assert train.main(tiny("--epochs", "1", "--compile", "yes")) == 0
    state = load(tmp_path / "models" / "latest_model.pth")
    assert not any(k.startswith("_orig_mod") for k in state["model_state_dict"])
    net = model_module.build_model(Config.from_dict(state["config"]))
    net.load_state_dict(state["model_state_dict"])


@pytest.mark.parametrize("start", [0, 3, 12])
def test_device_loader_gives_the_dataloaders_batches(tiny_data, monkeypatch, start):
    monkeypatch.setattr(loaders.DeviceClipLoader, "CHUNK_BATCHES", 2)  # several chunks, one cut
    cfg = Config(sequence_length=8, image_size=16, batch_size=5, seed=3)
    data = ClipDataset(tiny_data, "train", 8, 16, 1, augment=True, seed=3, raw=True)
    sampler = loaders.EpochSampler(len(data), 3)
    sampler.set_epoch(2, start=start)
    on_device = list(loaders.DeviceClipLoader(data, sampler, 5, torch.device("cpu")))
    loaded = list(loaders.ModelBatches(loaders.make_loader(data, 5, cfg, torch.device("cpu"),
                                                           sampler=sampler),
                                       torch.device("cpu")))
    assert len(on_device) == len(loaded) == -(-(len(data) - start) // 5)
    for (a, ya), (b, yb) in zip(on_device, loaded):
        assert torch.equal(a, b) and torch.equal(ya, yb)


def test_auto_batch_never_splits_below_one_clip(tiny, tmp_path, monkeypatch):
    fail_big_batches(monkeypatch, 1)
    args = tiny("--epochs", "1", "--auto-batch", "yes")
    args[args.index("--batch-size") + 1] = "3"
    assert train.main(args) == 0
    cfg = load(tmp_path / "models" / "latest_model.pth")["config"]
    assert (cfg["batch_size"], cfg["accum_steps"]) == (3, 3)
    Config.from_dict(cfg)  # the saved config stays loadable


def test_split_is_held_in_memory_only_when_it_fits_and_no_workers_are_asked_for(
        tiny_data, monkeypatch):
    data = ClipDataset(tiny_data, "train", 8, 16, 1, raw=True)
    cpu = torch.device("cpu")
    fits = loaders.DeviceClipLoader.fits
    assert fits(data, cpu)
    assert not fits(data, cpu, num_workers=1)
    split_bytes = len(data) * data.clips[0].size
    monkeypatch.setattr(loaders, "available_memory", lambda: 4 * split_bytes)
    assert fits(data, cpu)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")  # torchrun: each process holds a copy
    assert not fits(data, cpu)
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    monkeypatch.setattr(loaders, "available_memory", lambda: 4 * split_bytes - 1)
    assert not fits(data, cpu)
    monkeypatch.setattr(loaders, "available_memory", lambda: None)  # the system does not say
    assert not fits(data, cpu)


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    """One tiny benchmark run (two rounds), shared by the tests of its figures."""
    tmp = tmp_path_factory.mktemp("bench")
    sizes = {"steps": 2, "batch": 2, "frames": 4, "rounds": 2}
    began = time.perf_counter()
    out = run_script("benchmark.py", "--device", "cpu", "--steps", str(sizes["steps"]),
                     "--epochs", "3", "--rounds", str(sizes["rounds"]),
                     "--batch-size", str(sizes["batch"]), "--sequence-length",
                     str(sizes["frames"]), "--image-size", "8", "--tmp-dir", str(tmp),
                     "--json", str(tmp / "bench.json"), "--profile", "5")
    wall = time.perf_counter() - began
    assert out.returncode == 0, out.stderr
    figures = json.loads((tmp / "bench.json").read_text())
    return figures, out.stdout, wall, sizes, tmp, out.stderr


def test_the_profile_prints_none_of_the_profilers_own_log_lines(bench):
    """Kineto writes its start, stop and, without a GPU, an 'ERROR ... gpuGetDeviceCount'
    line past Python's stderr: a newcomer reads that as the benchmark failing."""
    assert "Where a two-epoch training run's CPU time goes" in bench[1]
    stderr = bench[5]
    assert "profiler_start" not in stderr and "ERROR:" not in stderr, stderr


def test_benchmark_says_when_one_round_cannot_show_the_spread(bench):
    figures = bench[0]
    assert "one round shows no spread" not in benchmark.table(figures)  # two rounds
    assert "one round shows no spread: --rounds 5" in benchmark.table({**figures, "rounds": 1})


def test_benchmark_prints_and_writes_every_figure(bench):
    f, stdout, wall, sizes, tmp, _ = bench
    steps, batch, frames = sizes["steps"], sizes["batch"], sizes["frames"]
    # What was measured: the options given, train.py's defaults for the rest.
    assert (f["device"], f["backbone"], f["batch_size"], f["sequence_length"], f["image_size"],
            f["amp"], f["channels_last"], f["num_workers"], f["loader"]) == \
        ("cpu", "small", batch, frames, 8, "off", True, 0, "in-memory batches")
    # Each rate is measured over one epoch (steps x batch clips) that took less than the
    # whole benchmark: a rate below that is a wrong count or a wrong clock.
    for key in ("loop_clips_per_s", "bare_clips_per_s", "augment_clips_per_s",
                "deterministic_clips_per_s", "loader_clips_per_s"):
        assert f[key] >= steps * batch / wall, key
    # Derived figures agree with the ones they come from (each rounded on its own).
    for kind in ("loop", "bare"):
        assert f[f"{kind}_frames_per_s"] == pytest.approx(frames * f[f"{kind}_clips_per_s"],
                                                          abs=0.05 * frames + 0.05)
    assert f["loop_overhead"] == pytest.approx(1 - f["loop_vs_bare"], abs=1e-4)
    for key in ("ckpt_save_ms", "torch_save_ms", "ckpt_block_ms", "ckpt_load_ms"):
        assert 0 < f[key] < 1000 * wall, key
    assert 0 < f["resume_to_first_step_s"] < wall
    assert 0 < f["peak_rss_mb"] < os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    # A checkpoint holds the weights and AdamW's two moments (float32 each), plus small
    # bookkeeping: at least three copies of the parameters, and less than four (a fourth
    # would be a duplicated tensor). torch.save of the same state is the same size.
    params = model_module.count_parameters(model_module.build_model(
        Config(sequence_length=frames, image_size=8)))
    assert 3 * 4 * params / 2**20 <= f["ckpt_mb"] < 4 * 4 * params / 2**20
    assert abs(f["ckpt_mb"] - f["torch_save_mb"]) < 0.05  # no duplicate tensors
    # The printed table shows the JSON's figures.
    assert re.search(rf"\nreal training loop +{f['loop_clips_per_s']:.1f} clips/s  "
                     rf"\({f['loop_frames_per_s']:.0f} frames/s\)", stdout)
    assert re.search(rf"\ncheckpoint size +{f['ckpt_mb']:.2f} MB ", stdout)
    assert re.search(rf"\nlaunch to first step \(--resume\) +{f['resume_to_first_step_s']:.2f} s",
                     stdout)
    assert "CPU time goes" in stdout and "aten::" in stdout
    assert not [p for p in tmp.iterdir() if p.name != "bench.json"]  # throwaway files gone


def test_benchmark_gives_each_rounds_ratio_and_their_spread(bench):
    f, stdout, _, sizes, _, _ = bench
    rounds = sizes["rounds"]
    assert set(f["per_round"]) == {"bare", "loop", "augment", "deterministic"}
    assert set(f["ratios_per_round"]) == {"loop", "augment", "deterministic"}
    for name, ratios in f["ratios_per_round"].items():
        speeds, bare = f["per_round"][name], f["per_round"]["bare"]
        assert len(ratios) == len(speeds) == len(bare) == rounds
        for ratio, speed, base in zip(ratios, speeds, bare):  # each against its own round
            # Within the rounding of the speeds (0.1) plus that of the ratio itself (4
            # decimals): approx takes the larger of rel and abs, so the sum is given as abs.
            rounding = (0.05 / speed + 0.05 / base + 1e-3) * speed / base + 5e-5
            assert ratio == pytest.approx(speed / base, rel=0, abs=rounding)
        assert f[f"{name}_vs_bare_spread"] == [min(ratios), max(ratios)]
        assert min(ratios) <= f[f"{name}_vs_bare"] <= max(ratios)
        assert f[f"{name}_vs_bare"] == pytest.approx(statistics.median(ratios), abs=1e-4)
        assert f[f"{name}_clips_per_s"] == pytest.approx(statistics.median(speeds), abs=0.06)
        low, high = f[f"{name}_vs_bare_spread"]
        assert f"{100 * f[f'{name}_vs_bare']:.1f}% median, {100 * low:.1f}-{100 * high:.1f}% " \
               f"over {rounds} rounds" in stdout


def test_benchmark_breaks_the_start_up_down(bench):
    f, stdout, _, _, _, _ = bench
    names = [name for name, _ in f["startup_phases"]]
    marks = ["checkpoint read and verified", "data on the device", "model built and restored"]
    assert names[:3] == ["launch to interpreter ready", "import torch",
                         "project imports (train and what it imports)"]
    assert [n for n in names if n in marks] == marks and names[-1] == FIRST_STEP
    seconds = [s for _, s in f["startup_phases"]]
    assert all(s >= 0 for s in seconds)
    # The phases add up to the child's whole life, from the parent's launch to the step.
    assert 0.75 * f["resume_to_first_step_s"] <= sum(seconds) <= f["resume_to_first_step_s"]
    assert f["startup_after_torch_s"] == pytest.approx(sum(seconds[2:]), abs=0.01)
    assert set(f["imported_but_unused"]) <= set(HEAVY_MODULES)
    for name, s in f["startup_phases"]:
        assert f"\n  {name} " in stdout and f"{s:.3f} s" in stdout


def test_startup_child_stops_train_at_its_first_optimizer_step(tiny, tmp_path):
    # What "launch to first step" times: train.py --resume, ended by the global optimizer
    # hook right after its first step, before anything of the new epoch is saved.
    assert train.main(tiny("--epochs", "1")) == 0
    out = subprocess.run([sys.executable, "-m", "fatigue.first_step", repr(time.time()), "cpu",
                          *tiny("--epochs", "2", "--resume")], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    reports = [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]
    assert len(reports) == 1 and reports[0]["phases"][-1][0] == FIRST_STEP
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 1
    # A one-process run of the small model without --compile loads none of the heavy
    # modules (the compiler stack, FSDP, pyplot, torchvision) before its first step.
    assert reports[0]["imported"] == []


def test_the_runs_optimizer_is_adamw_without_the_compiler_stack():
    # LeanAdamW is torch's AdamW minus the wrappers that import torch._dynamo (1.2 s of a
    # CPU start, 4 s on a GPU): same steps, same state_dict, in a process that never loads it.
    code = '''
import sys, torch
from config import Config
from fatigue.training.optimizer import make_optimizer
def run(make):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.ReLU(), torch.nn.Linear(5, 2))
    opt = make(net.parameters())
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5 ** e)
    for step in range(4):
        if step == 2:  # a resume half-way: the state goes out and back in
            state = opt.state_dict()
            opt = make(net.parameters())
            opt.load_state_dict(state)
        x, y = torch.randn(8, 6), torch.randint(0, 2, (8,))
        torch.nn.functional.cross_entropy(net(x), y).backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step(); opt.zero_grad(); sched.step()
    return net, opt
lean, lean_opt = run(lambda p: make_optimizer(p, Config(learning_rate=0.01, weight_decay=0.1)))
assert type(lean_opt).__name__ == "LeanAdamW", type(lean_opt)
assert all(not p.grad.requires_grad for p in lean.parameters() if p.grad is not None)
print(sorted(m for m in ("torch._dynamo", "sympy", "torch.distributed.fsdp") if m in sys.modules))
stock, stock_opt = run(lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1))
print(all(torch.equal(a, b) for a, b in zip(lean.parameters(), stock.parameters())))
a, b = lean_opt.state_dict(), stock_opt.state_dict()
print(a["param_groups"] == b["param_groups"] and a["state"].keys() == b["state"].keys() and all(
    torch.equal(a["state"][i][k], b["state"][i][k]) for i in a["state"] for k in a["state"][i]))
compiled = make_optimizer(torch.nn.Linear(2, 2).parameters(), Config(compile=True))
print(type(compiled) is torch.optim.AdamW)
'''
    assert run_python(code).split("\n")[:4] == ["[]", "True", "True", "True"]
    # Built after a stock AdamW (which wraps the class's step in its hooks), LeanAdamW still
    # takes torch's own step, not one of the wrappers that import the compiler.
    assert run_python("import torch; torch.optim.AdamW(torch.nn.Linear(2, 2).parameters());"
                      "from fatigue.training.optimizer import LeanAdamW;"
                      "print(LeanAdamW._adamw_step.__code__.co_name)").strip() == "step"


def test_bare_loop_uses_no_training_code_of_the_project():
    # The yardstick is plain PyTorch: were it the loop's own step functions, the benchmark
    # would measure the loop against itself.
    source = inspect.getsource(benchmarking)
    assert "accumulate_gradients" not in source and "optimizer_step" not in source
    assert "fatigue.training" not in source
    modules = {getattr(v, "__module__", None) or getattr(v, "__name__", "")
               for v in vars(benchmarking).values()}
    assert not [m for m in modules if str(m).startswith("fatigue.training")]
    code = ("import sys, torch; from config import Config; from fatigue import benchmarking as b;"
            "cfg = Config(sequence_length=4, image_size=8, cnn_width=4, feature_dim=8, "
            "lstm_hidden=8);"
            "clips = torch.randint(0, 256, (4, 4, 1, 8, 8), dtype=torch.uint8);"
            "batches = b.cut_batches(clips, torch.arange(4) % 2, 2, seed=0);"
            "assert len(b.bare_loop(cfg, torch.device('cpu'), batches, 2)) == 1;"
            "print(sorted(m for m in sys.modules if m.startswith('fatigue.training')))")
    assert run_python(code).strip() == "[]"


def test_bare_step_is_the_real_loops_step():
    # The same work: one bare step moves the weights as the loop's step functions do.
    cfg = Config(image_size=16, sequence_length=6, cnn_width=4, feature_dim=8, lstm_hidden=8,
                 grad_clip=0.1, dropout=0.0, seed=5)
    cpu = torch.device("cpu")
    clips = torch.randint(0, 256, (4, 6, 1, 16, 16), dtype=torch.uint8)
    labels = torch.tensor([0, 1, 1, 0])
    bare, step = benchmarking.bare_step(cfg, cpu)
    step(clips, labels)
    real = benchmarking.placed_model(cfg, cpu)
    optimizer = torch.optim.AdamW(real.parameters(), lr=cfg.learning_rate,
                                  weight_decay=cfg.weight_decay)
    loop.accumulate_gradients(real, clips.float() / 255, labels, 1, None, None)
    loop.optimizer_step(real, optimizer, None, cfg.grad_clip)
    for a, b in zip(bare.parameters(), real.parameters()):
        torch.testing.assert_close(a, b)


def test_lightning_row_needs_lightning(monkeypatch):
    def missing(name):
        raise ImportError(name)
    monkeypatch.setattr(benchmarking.importlib, "import_module", missing)
    assert benchmarking.import_lightning() is None
    with pytest.raises(ImportError, match="pip install lightning"):
        benchmarking.lightning_loop(Config(), torch.device("cpu"), [], 2)


def test_lightning_loop_times_its_epochs_after_the_warm_up():
    pytest.importorskip("lightning")
    cfg = Config(sequence_length=4, image_size=8, cnn_width=4, feature_dim=8, lstm_hidden=8)
    clips = torch.randint(0, 256, (4, 4, 1, 8, 8), dtype=torch.uint8)
    batches = benchmarking.cut_batches(clips, torch.arange(4) % 2, 2, seed=0)
    speeds = benchmarking.lightning_loop(cfg, torch.device("cpu"), batches, 3)
    assert len(speeds) == 2 and all(s > 0 for s in speeds)


def test_channels_last_where_the_kernels_want_it():
    uses_channels_last = model_module.uses_channels_last
    cuda, cpu = torch.device("cuda"), torch.device("cpu")  # a device name needs no GPU
    assert uses_channels_last(Config(backbone="resnet18", amp="bf16"), cuda)
    assert uses_channels_last(Config(backbone="mobilenet_v3_small", amp="fp16"), cuda)
    assert not uses_channels_last(Config(backbone="small", amp="bf16"), cuda)
    assert not uses_channels_last(Config(backbone="resnet18", amp="off"), cuda)
    assert uses_channels_last(Config(), cpu)  # oneDNN's NHWC kernels: 1.6x the small CNN's pace
    assert uses_channels_last(Config(backbone="resnet18"), cpu)
    assert not uses_channels_last(Config(channels_last="no"), cpu)
    assert not uses_channels_last(Config(backbone="resnet18", amp="bf16", channels_last="no"), cuda)


def test_a_channels_last_run_saves_a_plain_model(tiny, tiny_data, tmp_path, monkeypatch):
    assert train.main(tiny("--epochs", "2", "--channels-last", "yes")) == 0
    state = load(tmp_path / "models" / "best_model.pth")
    saved = list(state["model_state_dict"].values()) + [
        t for s in state["optimizer_state_dict"]["state"].values() for t in s.values()]
    assert all(t.is_contiguous() for t in saved)  # the file does not depend on the layout
    net = model_module.build_model(Config.from_dict(state["config"]))
    net.load_state_dict(state["model_state_dict"])
    assert not net.channels_last  # rebuilt for use: the ordinary layout
    # Resumed with NHWC, the restored optimizer state follows its weights' layout.
    seen = {}
    real = schema.match_layouts

    def spy(optimizer):
        real(optimizer)
        seen.update({id(p): (p.stride(), s["exp_avg"].stride())
                     for p, s in optimizer.state.items() if p.dim() == 4})
    monkeypatch.setattr(schema, "match_layouts", spy)
    assert train.main(tiny("--epochs", "3", "--channels-last", "yes", "--resume")) == 0
    monkeypatch.undo()
    assert seen and all(a == b for a, b in seen.values())
    # The NHWC-trained checkpoint evaluates, rebuilt plain, on every test clip in order.
    result = evaluate_checkpoint(tmp_path / "models" / "best_model.pth", device="cpu")
    test_clips = [c for c in load_manifest(tiny_data)["clips"] if c["split"] == "test"]
    assert result["clips"] == len(test_clips) > 0
    assert result["labels"] == [c["label"] for c in test_clips]
    predicted = torch.tensor(result["probabilities"]).argmax(1)
    assert result["accuracy"] == pytest.approx(
        float((predicted == torch.tensor(result["labels"])).double().mean()))
    placed = model_module.build_model(Config(channels_last="yes")).place(torch.device("cpu"),
                                                                          Config(channels_last="yes"))
    conv = [m for m in placed.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous()


def test_the_start_up_measurement_says_its_usage_and_can_start_its_clock_now(tiny):
    """docs/performance.md shows `python -m fatigue.first_step` run by hand."""
    def first_step(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fatigue.first_step", *args], cwd=ROOT,
                              capture_output=True, text=True, timeout=300)
    asked = first_step("--help")
    assert asked.returncode == 0 and asked.stdout.startswith("usage: python -m fatigue.first_step")
    for wrong in (["--bogus"], [], ["now"], ["now", "gpu"]):
        out = first_step(*wrong)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert out.stderr.startswith("usage: python -m fatigue.first_step LAUNCHED DEVICE")
    assert train.main(tiny("--epochs", "1")) == 0
    out = first_step("now", "cpu", *tiny("--epochs", "2", "--resume"))
    phases = json.loads(out.stdout.strip().splitlines()[-1])["phases"]
    assert phases[0][0] == "launch to interpreter ready" and phases[-1][0] == FIRST_STEP
    assert all(seconds >= 0 for _, seconds in phases)


@pytest.mark.parametrize("code", [1, 130])
def test_the_profiled_run_says_why_it_failed_and_keeps_what_is_not_the_profilers(
        monkeypatch, capfd, code):
    def training(argv):
        print("error: the run's own line", file=sys.stderr)
        os.write(2, b"a native library's message\n")
        os.write(2, b"ERROR:2026-11-29 18:39:14 1:1 DeviceProperties.cpp:56] gpuGetDeviceCount "
                    b"failed with code 35\n")
        return code
    monkeypatch.setattr(benchmark.command, "main", training)
    if code == 130:  # a Ctrl+C in the run stops the benchmark as one (no traceback)
        with pytest.raises(KeyboardInterrupt):
            benchmark.profile_loop([], torch.device("cpu"), 5)
    else:
        with pytest.raises(RuntimeError, match=r"the profiled training run failed \(exit code "
                                               r"1\): error: the run's own line"):
            benchmark.profile_loop([], torch.device("cpu"), 5)
    err = capfd.readouterr().err
    assert "a native library's message" in err and "gpuGetDeviceCount" not in err
