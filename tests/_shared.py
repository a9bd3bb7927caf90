"""Helpers several test modules share: stopping a run at a step, reading a checkpoint's weights, random label batches,
time limits that scale with the machine, Chromium's flags, and loading a script as a module."""
import functools
import importlib.util
import socket
import sys
from pathlib import Path

import torch

from dropclass.checkpoints import load_checkpoint


CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def module_from_path(name: str, path: Path):
    "A script loaded as a module under `name` (e.g. docs/build.py, which would meet the PyPI package `build` by name)."
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


class Stop(Exception):
    "Raised by `stop_at` to interrupt a training run, as a kill would."


def stop_at(step):
    "A training callback that stops the run when it logs `step`."
    def cb(entry):
        if entry.get("step") == step: raise Stop()
    return cb


def weights(path):
    "The model state dict of a checkpoint."
    return load_checkpoint(path)["model"]


def random_batch(B=3, C=5, H=17, W=23, ignore=0.2, seed=0):
    "Random labels with a share of ignored pixels, and random class predictions."
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, C, (B, H, W), generator=g)
    target[torch.rand(B, H, W, generator=g) < ignore] = 255
    return torch.randint(0, C, (B, H, W), generator=g), target


@functools.lru_cache(maxsize=None)
def slowness() -> float:
    """How many times slower this machine is than the reference machine of benchmarks/machine_speed.py (at least 1),
    measured once per test session. A wait or a time limit in a test is multiplied by it, so that it holds on a slower
    machine; a check of what happens first (not how fast) needs none."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    try:
        import machine_speed
    finally:
        sys.path.pop(0)
    return machine_speed.measure()["slowness"]


def scaled(seconds: float) -> float:
    "`seconds` on the reference machine, as a time limit on this one."
    return seconds * slowness()


def free_port() -> int:
    "A TCP port on localhost that nothing listens on now."
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]
