"""Training: configuration, exact resumption, atomic and validated checkpoints, methods, DDP, the command line."""
import math
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _shared import Stop, stop_at, weights
from dropclass.cli import main as cli
from dropclass.experiments import run_history
from dropclass.checkpoints import load_checkpoint, load_model
from dropclass.config import TrainConfig, config_from
from dropclass.train import train


def tiny(out, **kw):
    return config_from("tiny", {"out_dir": str(out), **kw})


def same(a, b, atol=0.0):
    return a.keys() == b.keys() and all(torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0) for k in a)




def test_config_json_file_and_overrides(tmp_path):
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"method": "baseline", "max_iters": 7, "crop_size": [32, 64]}))
    cfg = config_from(f, ["lr=0.5", "model_args={\"decoder_segmentation_channels\": 32}"])
    assert (cfg.method, cfg.max_iters, cfg.crop_size, cfg.lr) == ("baseline", 7, (32, 64), 0.5)
    assert cfg.model_args == {"decoder_segmentation_channels": 32}
    f.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        config_from(f)
    with pytest.raises(ValueError, match="resample must be"):
        config_from("tiny", ["resample=class:car"])
    with pytest.raises(ValueError, match="expected true or false"):
        config_from("tiny", ["amp=maybe"])


def test_resume_gives_the_weights_of_an_uninterrupted_run_whatever_the_workers(tmp_path):
    train(tiny(tmp_path / "full"))
    with pytest.raises(Stop):
        train(tiny(tmp_path / "cut", log_every=1), callbacks=[stop_at(5)])
    assert load_checkpoint(tmp_path / "cut" / "last.pt")["step"] == 3
    train(tiny(tmp_path / "cut", num_workers=2))  # resumed, and with data workers this time
    assert same(weights(tmp_path / "full" / "last.pt"), weights(tmp_path / "cut" / "last.pt"))
    history = [json.loads(l) for l in (tmp_path / "cut" / "history.jsonl").read_text().splitlines()]
    assert history[-1]["step"] == 6


def test_seeds_matter(tmp_path):
    train(tiny(tmp_path / "a"))
    train(tiny(tmp_path / "b", seed=1))
    assert not same(weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "b" / "last.pt"))


def test_a_stop_while_writing_a_checkpoint_leaves_the_previous_one(tmp_path, monkeypatch):
    import dropclass.data.io as io
    calls = {"n": 0}
    real_fsync = os.fsync

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] == 2: raise KeyboardInterrupt  # the second checkpoint is cut off half-written
        return real_fsync(fd)

    monkeypatch.setattr(io.os, "fsync", failing_fsync)
    with pytest.raises(KeyboardInterrupt):
        train(tiny(tmp_path, ckpt_every=2))
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 2  # the first one, intact
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]  # no half-written file left behind
    monkeypatch.setattr(io.os, "fsync", real_fsync)
    train(tiny(tmp_path, ckpt_every=2))  # and the run resumes from it
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6


def test_corrupt_checkpoint_and_other_settings_are_explained(tmp_path):
    train(tiny(tmp_path))
    with pytest.raises(ValueError, match="written by a run with other settings.*lr"):
        train(tiny(tmp_path, lr=0.5))
    (tmp_path / "last.pt").write_bytes(b"\x80\x02garbage")
    with pytest.raises(ValueError, match="not a readable checkpoint.*Delete it to start over"):
        train(tiny(tmp_path))
    train(tiny(tmp_path, resume=False))  # resume=false starts over
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 6


@pytest.mark.parametrize("kw", [dict(method="baseline"), dict(method="ignore_label"),
                                dict(class_weights="median", resample="class:car:2"),
                                dict(class_weights="hrnet", resample="rfs:0.5", ramp="iter"),
                                dict(importance="class", average="all", inference="plain", eval_every=3)])
def test_methods_and_options_run(tmp_path, kw):
    metrics = train(tiny(tmp_path, **kw))
    assert set(metrics["splits"]) == {"val", "counterfactual"}
    assert 0 <= metrics["splits"]["val"]["miou"] <= 1 and len(metrics["splits"]["val"]["iou"]) == 19
    assert (tmp_path / "best.pt").is_file() and (tmp_path / "metrics.json").is_file()
    if kw.get("class_weights") in ("median", "hrnet"): assert (tmp_path / "class_stats.json").is_file()


def test_training_lowers_the_loss(tmp_path):
    train(tiny(tmp_path, max_iters=30, log_every=1, ckpt_every=30))
    ce = [e["ce"] for e in map(json.loads, (tmp_path / "history.jsonl").read_text().splitlines()) if "ce" in e]
    assert sum(ce[-5:]) / 5 < 0.7 * sum(ce[:5]) / 5


def test_load_model_predicts(tmp_path):
    train(tiny(tmp_path))
    model, cfg = load_model(tmp_path / "last.pt")
    assert cfg.method == "dropclass" and not model.training
    assert model(torch.randn(2, 3, 64, 128)).shape == (2, 19, 64, 128)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# The DDP checks train in float64: there a run that computes the same sums as another agrees with it to about 1e-14,
# however the machine's kernels round, while a run that computes other sums (per-process batch norm statistics, a
# smaller batch) is off by 1e-3 or more. In float32 the rounding of 2 iterations of these random nets is itself 1e-6
# to 1e-3, depending on the CPU's kernels, which no fixed tolerance can tell from a real difference.
EXACT = 1e-10  # float64: exact up to the order of the sums
DIFFERENT = 1e-4  # what another computation gives (measured: 4e-3 to 2e-1)

_DDP_SCRIPT = """
import json, sys
from dropclass.config import config_from
from dropclass.train import train
train(config_from(sys.argv[1] or None, json.loads(sys.argv[2])))
import torch.distributed as dist
if dist.is_initialized(): dist.destroy_process_group()  # a clean exit of gloo's threads
"""


def _ddp_runs(tmp_path, preset: str, common: dict, batch: int, names=("single", "half")) -> dict:
    "Weights after one process with the global batch (`single`), one with the per-process batch (`half`), and 2-process DDP."
    script = tmp_path / "ddp_run.py"
    script.write_text(_DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    run = lambda name, **kw: subprocess.run([sys.executable, str(script), preset, json.dumps({**common, **kw, "out_dir": str(tmp_path / name)})],
                                            check=True, env=env)
    if "single" in names: run("single", batch_size=2 * batch)
    if "half" in names: run("half", batch_size=batch)  # what a process on its own computes
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--nnodes=1",
                          f"--master_port={_free_port()}", str(script), preset,
                          json.dumps({**common, "batch_size": batch, "out_dir": str(tmp_path / "ddp")})],
                         env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-3000:]
    return {n: weights(tmp_path / n / "last.pt") for n in (*names, "ddp")}


def test_two_process_ddp_matches_one_process_with_twice_the_batch(tmp_path):
    common = {"optimizer": "sgd", "lr": 0.05, "max_iters": 4, "ckpt_every": 4, "p_max": 1.0, "iters_per_epoch": 1, "dtype": "float64"}
    w = _ddp_runs(tmp_path, "tiny", common, batch=2)
    assert all(v.dtype == torch.float64 for v in w["ddp"].values() if v.is_floating_point())
    model, cfg = load_model(tmp_path / "ddp" / "last.pt")
    assert cfg.dtype == "float64" and all(p.dtype == torch.float64 for p in model.parameters())  # loads as it trained
    assert same(w["single"], w["ddp"], atol=EXACT)
    # the comparison can tell: the per-process batch trains other weights
    assert not same(w["half"], w["ddp"], atol=DIFFERENT)
    ma, mb = (json.loads((tmp_path / n / "metrics.json").read_text())["splits"]["val"]["miou"] for n in ("single", "ddp"))
    assert abs(ma - mb) < 1e-9  # evaluation sharded over the processes and summed


def _largest_difference(a, b, keys):
    return max((a[k].double() - b[k].double()).abs().max().item() for k in keys)


def test_two_process_ddp_with_batch_norm_matches_one_process_with_twice_the_batch(tmp_path):
    """Batch norm over the global batch on CPUs (GlobalBatchNorm): two processes give the running statistics and weights of
    one process with the whole batch, in float64 to rounding (5e-15 measured); per-process statistics are 0.2 off."""
    common = {"method": "dropclass", "arch": "FPN", "encoder": "resnet18", "init_std": None, "optimizer": "sgd", "lr": 0.001,
              "model_args": {"decoder_dropout": 0.0, "decoder_segmentation_channels": 32}, "crop_size": [64, 128],
              "train_length": 16, "eval_length": 4, "diag_length": 0, "max_iters": 2, "ckpt_every": 2, "iters_per_epoch": 1,
              "eval_splits": [], "progress": False, "dtype": "float64"}  # no dropout: its masks are drawn per process
    w = _ddp_runs(tmp_path, "", common, batch=2)
    single, half, ddp = w["single"], w["half"], w["ddp"]
    stats = [k for k in single if k.endswith(("running_mean", "running_var"))]
    params = [k for k in single if single[k].is_floating_point() and k not in stats]
    assert stats and all(single[k].dtype == ddp[k].dtype == torch.float64 for k in stats + params)
    assert _largest_difference(single, ddp, stats) <= EXACT
    assert _largest_difference(single, ddp, params) <= EXACT
    assert _largest_difference(half, ddp, stats) > DIFFERENT  # per-process statistics would be far off


def test_cli_train_eval_and_demo_end_to_end(tmp_path, capsys):
    assert cli(["train", "--config", "tiny", "--out", str(tmp_path / "run"), "--quiet"]) == 0
    assert "val: mIoU" in capsys.readouterr().out
    assert cli(["eval", "--checkpoint", str(tmp_path / "run" / "last.pt"), "--split", "val", "counterfactual",
                "--json", str(tmp_path / "m.json"), "--quiet"]) == 0
    assert set(json.loads((tmp_path / "m.json").read_text())["splits"]) == {"val", "counterfactual"}
    small = ["arch=tiny", "encoder_weights=none", "train_length=32", "eval_length=8", "crop_size=64x128", "scale_range=1,1", "batch_size=4",
             "max_iters=4", "compensation_norm=group", "class_weights=none", "model_args={}"]
    assert cli(["demo", "--quick", "--out", str(tmp_path / "demo"), "--quiet"] + sum((["--set", s] for s in small), [])) == 0
    printed = capsys.readouterr().out
    assert "val split" in printed and "counterfactual split" in printed and "Δ" in printed
    assert {"report.md", "results.json", "loss_curves.png", "iou_per_class.png"} <= {p.name for p in (tmp_path / "demo").iterdir()}


@pytest.mark.parametrize("argv, message", [
    (["train", "--config", "nope"], "unknown preset 'nope'"),
    (["train", "--config", "tiny", "--set", "method=magic"], "method must be one of"),
    (["train", "--config", "tiny", "--set", "lr"], "KEY=VALUE"),
    (["eval", "--checkpoint", "/nonexistent.pt"], "no checkpoint at"),
    (["train", "--config", "tiny", "--set", "dataset=cityscapes", "--set", "data_root=/nonexistent"], "Expected layout"),
])
def test_cli_errors_are_one_line(argv, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_cli_help():
    out = subprocess.run([sys.executable, "-c", "from dropclass.cli import main; main(['train', '--help'])"],
                         capture_output=True, text=True)
    assert out.returncode == 0 and "--config" in out.stdout and "--set" in out.stdout


@pytest.mark.parametrize("method", ["baseline", "ignore_label"])
def test_a_torchvision_model_trains_without_dropclass(method, tmp_path):
    "torchvision's segmentation models return {'out': logits}; the plain losses read the logits out of it."
    cfg = config_from("tiny", {"arch": "deeplabv3_mobilenet_v3_large", "method": method, "max_iters": 1, "eval_length": 2,
                               "out_dir": str(tmp_path / method), "eval_splits": (), "progress": False})
    metrics = train(cfg)
    history = [e for e in run_history(tmp_path / method) if "ce" in e]
    assert history and all(math.isfinite(e["ce"]) for e in history)
    assert math.isfinite(metrics["splits"][cfg.val_split]["miou"])


def test_augmentation_seeds_the_cpu_generator_only_with_the_draws_of_manual_seed(monkeypatch):
    from dropclass.sampling import SeededAugment

    class Pairs:
        def __len__(self): return 4
        def __getitem__(self, i): return torch.zeros(3, 2, 2), torch.zeros(2, 2)

    def draw(image, mask): return torch.rand(6), torch.randint(0, 100, (3,))

    def no_accelerator_seed(*a, **k): raise AssertionError("an accelerator's generator was seeded")
    monkeypatch.setattr(torch.cuda, "manual_seed_all", no_accelerator_seed)
    before = torch.random.get_rng_state()
    got = SeededAugment(Pairs(), draw, seed=3)[(1, 2, 3)]
    assert torch.equal(torch.random.get_rng_state(), before)  # the global stream is left where it was
    monkeypatch.undo()
    torch.manual_seed(hash((3, 1, 2, 3)) % (2**63 - 1))
    want = draw(None, None)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    assert not torch.equal(SeededAugment(Pairs(), draw, seed=4)[(1, 2, 3)][0], got[0])
