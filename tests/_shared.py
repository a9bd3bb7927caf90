"""Helpers several test modules share: stopping a run at a step, reading a checkpoint's weights, random label batches."""
import torch

from dropclass.train import load_checkpoint


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
