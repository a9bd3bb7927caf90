"""Where the time of a CPU training step goes: data, input checks, forward, loss, backward, optimizer step.

Each case is one training run of the library's own loop (`prepare_run`, `train_step`) in a fresh process with a given
number of threads; the phases are read from outside the step, so any version of the loop can be profiled:

- data: `next()` on the run's batches (rendering or reading the scenes, augmentation, collation);
- input: from the batch to the model's forward (device copy, memory format, the finiteness check);
- forward: the model's `forward` (DropClass: both branches);
- loss: from the end of the forward to `zero_grad` (the loss and its parts);
- backward: from `zero_grad` to the optimizer's step;
- step: the optimizer's and the scheduler's step.

"outside the model" is data + input + loss, as a share of the whole step, less the upsampling of the logits to the
labels and its gradient, which the memory-lean loss runs for the model's head (timed on its own, `head_upsampling_seconds`).
That share counts the loss's own arithmetic as overhead; the overhead proper is read against a bare step of the same
model, interleaved with the library's steps (one after each): forward, the method's loss written with torch's
`cross_entropy` (Eq. 5, or Eq. 5-9 on both branches for DropClass), backward and the optimizer's step on one fixed batch,
with no data, no checks and no logging. `overhead_share` is 1 - bare/step. Cases differ by size (`demo`: 128x256, as the demo and the study; `bite`: 64x128, as the dose response and the
bite preset), method and threads; `--variant NAME=KEY=VALUE,...` adds settings measured in the same run (e.g.
`workers=num_workers=1`; `interop=N` sets torch's inter-op threads). `--pairs` trains the baseline and DropClass side by
side, one thread each, as the demo and the studies do, against the two one at a time. `--code PATH` runs every case a second time with the package found in PATH (an older
checkout), so a change of code is a ratio measured in one run too.

    python benchmarks/profile_step.py                          # 8 cases, about 5 minutes on two idle CPU cores
    python benchmarks/profile_step.py --sizes demo --methods baseline --threads 2 --iters 5
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RESULTS = Path(__file__).parent / "results"
# size -> (preset, settings); tiny: a check of the script
SIZES = {"demo": ("demo", []), "bite": ("bite", []), "tiny": ("tiny", [])}
PHASES = ("data", "input", "forward", "loss", "backward", "step")
OUTSIDE = ("data", "input", "loss")


class _Clock:
    "Timestamps of the phase boundaries of one training step, set by hooks on the batches, the model and the optimizer."

    def __init__(self): self.marks, self.on = {}, True

    def mark(self, name: str):
        if self.on: self.marks[name] = time.perf_counter()  # off during the bare step, which runs the same hooks


class _TimedBatches:
    def __init__(self, batches, clock: _Clock): self.batches, self.clock = batches, clock

    def __iter__(self): return self

    def __next__(self):
        self.clock.mark("start")
        b = next(self.batches)
        self.clock.mark("data")
        return b


def run_case(size: str, method: str, threads: int, iters: int, warmup: int, settings: list[str], folder: Path) -> dict:
    "Profile `iters` steps (after `warmup`) of one configuration in this process."
    import torch
    torch.set_num_threads(threads)
    for s in [s for s in settings if s.startswith("interop=")]:  # not a training setting: torch's inter-op pool
        torch.set_num_interop_threads(int(s.split("=", 1)[1]))
    settings = [s for s in settings if not s.startswith("interop=")]
    from dropclass.config import config_from
    from dropclass.train import prepare_run, train_step
    head = _time_head_upsampling(torch)
    preset, extra = SIZES[size]
    cfg = config_from(preset, [*extra, *settings, f"method={method}", f"max_iters={warmup + iters + 1}", "eval_every=0",
                               f"ckpt_every={10**9}", "progress=False", "resume=False", f"out_dir={folder}"])
    t_setup = time.perf_counter()
    run = prepare_run(cfg)
    setup_s = time.perf_counter() - t_setup
    clock = _Clock()
    run.batches = _TimedBatches(run.batches, clock)
    run.net.register_forward_pre_hook(lambda *a: clock.mark("input"))
    run.net.register_forward_hook(lambda *a: clock.mark("forward"))
    zero = run.opt.zero_grad
    run.opt.zero_grad = lambda *a, **k: (clock.mark("loss"), zero(*a, **k))[1]
    run.opt.register_step_pre_hook(lambda *a: clock.mark("backward"))
    totals = {p: 0.0 for p in PHASES}
    upsampling = 0.0
    run.net.train()
    bare_one, bare_s = _bare_step(run), 0.0
    for it in range(warmup + iters):
        head["s"] = 0.0
        train_step(run, it)
        clock.mark("step")
        clock.on, t = False, time.perf_counter()
        bare_one()  # interleaved with the library's steps, so that both see the same state of the machine
        t, clock.on = time.perf_counter() - t, True
        if it < warmup: continue
        bare_s += t
        upsampling += head["s"]
        m, prev = clock.marks, clock.marks["start"]
        for p in PHASES:
            totals[p] += m[p] - prev
            prev = m[p]
    step = sum(totals.values()) / iters
    per = {p: round(totals[p] / iters, 4) for p in PHASES}
    bare = bare_s / iters
    return {"size": size, "crop_size": list(cfg.crop_size), "method": method, "threads": threads, "settings": settings,
            "iters": iters, "warmup": warmup, "setup_seconds": round(setup_s, 1), "step_seconds": round(step, 4),
            "phase_seconds": per, "phase_share": {p: round(totals[p] / iters / step, 4) for p in PHASES},
            # inside "loss": the model's head, see _time_head_upsampling
            "head_upsampling_seconds": round(upsampling / iters, 4),
            "outside_model_share": round((sum(totals[p] for p in OUTSIDE) - upsampling) / iters / step, 4),
            "bare_step_seconds": round(bare, 4), "step_over_bare": round(step / bare, 4),
            "overhead_share": round(1 - bare / step, 4)}  # the step less the bare step, over the step


def _time_head_upsampling(torch) -> dict:
    """Time, inside the loss, the upsampling of the logits to the labels and its gradient: the memory-lean cross-entropy
    (`losses.UpsampledCrossEntropy`) runs the model head's upsampling (smp's x4, which the DropClass wrapper hands to the
    loss) and pulls its gradient back there, so that this part of the model's own work shows up in the "loss" phase."""
    import dropclass.losses as losses
    spent = {"s": 0.0}
    to_labels, grad = losses._to_labels, torch.autograd.grad

    def timed(f):
        def g(*a, **k):
            t = time.perf_counter()
            try: return f(*a, **k)
            finally: spent["s"] += time.perf_counter() - t
        return g
    losses._to_labels = lambda upsample, size: timed(to_labels(upsample, size))
    torch.autograd.grad = timed(grad)  # only the loss calls it in a training step
    return spent


def bare_loss(cfg, out, masks, weight, ignore: int, lam: float = 0.5):
    "The method's loss written with torch alone: Eq. 5 (the baseline), or Eq. 5-9 on a DropClass output with `lam`."
    import torch.nn.functional as F
    size = masks.shape[-2:]

    def full(t, upsample=None):
        t = upsample(t) if upsample is not None else t
        return t if t.shape[-2:] == size else F.interpolate(t, size=size, mode="bilinear", align_corners=False)

    if cfg.method != "dropclass": return F.cross_entropy(full(out), masks, weight=weight, ignore_index=ignore)
    logits, drop_logits, z, upsample = out
    ce = F.cross_entropy(full(logits, upsample), masks, weight=weight, ignore_index=ignore)
    kept = masks if z is None else masks.masked_fill(masks == z, ignore)
    ce_drop = F.cross_entropy(full(drop_logits, upsample), kept, weight=weight, ignore_index=ignore)
    sup = drop_logits.softmax(1)[:, z].mean() if z is not None and cfg.suppress else drop_logits.sum() * 0.0
    return (1 - lam) * ce + lam * ce_drop + cfg.alpha * sup


def _bare_step(run):
    """One step of the model's own work, written with torch alone, on one fixed batch: forward, the method's loss with
    torch's `cross_entropy` (`bare_loss`; DropClass draws its dropped class as in training), backward, the optimizer's
    step; no data, no checks, no logging. What the library's step spends beyond it is its overhead."""
    import torch
    images, masks = next(run.batches.batches)
    images = images.contiguous(memory_format=torch.channels_last) if run.cfg.channels_last else images

    def one():
        loss = bare_loss(run.cfg, run.net(images), masks, run.weight, run.labels.ignore_index)
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        run.opt.step()
    return one


def _start(case: dict, code: str | None) -> subprocess.Popen:
    env = dict(os.environ)
    if code: env["PYTHONPATH"] = os.pathsep.join([code, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    env["OMP_NUM_THREADS"] = str(case["threads"])
    return subprocess.Popen([sys.executable, __file__, "--case", json.dumps(case)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen, case: dict) -> dict:
    out, err = proc.communicate()
    if proc.returncode != 0: raise RuntimeError(f"case {case} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def _child(case: dict, code: str | None) -> dict: return _result(_start(case, code), case)


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", nargs="+", default=["demo", "bite"], choices=list(SIZES))
    p.add_argument("--methods", nargs="+", default=["baseline", "dropclass"], choices=["baseline", "dropclass"])
    p.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    p.add_argument("--iters", type=int, default=8, help="measured steps per case (default 8)")
    p.add_argument("--warmup", type=int, default=3, help="steps before the measured ones (default 3)")
    p.add_argument("--variant", action="append", default=[], metavar="NAME=KEY=VALUE[,KEY=VALUE]",
                   help="settings measured beside today's, in the same run")
    p.add_argument("--pairs", action="store_true",
                   help="also train the baseline and DropClass side by side, one thread each, as the demo and the studies do")
    p.add_argument("--code", default=None, help="a checkout whose package is profiled too (label 'code:<PATH>')")
    p.add_argument("--out", type=Path, default=RESULTS / "profile_step.json")
    p.add_argument("--case", default=None, help=argparse.SUPPRESS)  # one case, in a child process
    args = p.parse_args(argv)
    from dropclass.machine import machine_info
    if args.case:
        c = json.loads(args.case)
        print(json.dumps(run_case(**{k: c[k] for k in ("size", "method", "threads", "iters", "warmup", "settings")},
                                  folder=Path(c["folder"]))))
        return 0
    variants = {"today": []}
    for v in args.variant:
        name, _, sets = v.partition("=")
        if not sets: p.error(f"--variant {v!r}: write NAME=KEY=VALUE[,KEY=VALUE...]")
        variants[name] = sets.split(",")
    codes = [None] + ([args.code] if args.code else [])
    rows, failed, t0 = [], [], time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for method in args.methods:
                for threads in args.threads:
                    for code in codes:
                        for name, sets in variants.items():
                            case = {"size": size, "method": method, "threads": threads, "iters": args.iters, "warmup": args.warmup,
                                    "settings": sets, "folder": str(Path(tmp) / f"{size}-{method}-{threads}-{name}-{bool(code)}")}
                            # counted once per size, copied into each run
                            stats = Path(tmp) / f"{size}.class_stats.json"
                            Path(case["folder"]).mkdir(parents=True)
                            if stats.is_file(): (Path(case["folder"]) / "class_stats.json").write_bytes(stats.read_bytes())
                            label = name if code is None else f"code:{code}" + ("" if name == "today" else f"+{name}")
                            try: r = _child(case, code)
                            # e.g. torch.compile without a C++ compiler: recorded, the rest goes on
                            except RuntimeError as e:
                                failed.append({"size": size, "method": method, "threads": threads, "variant": label,
                                               "error": str(e).strip().splitlines()[-1][:300]})
                                print(f"{size:5s} {method:9s} {threads}t {label:18s} failed: {failed[-1]['error']}", flush=True)
                                continue
                            if not stats.is_file() and (Path(case["folder"]) / "class_stats.json").is_file():
                                stats.write_bytes((Path(case["folder"]) / "class_stats.json").read_bytes())
                            r["variant"] = label
                            rows.append(r)
                            print(f"{size:5s} {method:9s} {threads}t {r['variant']:18s} step {r['step_seconds']:.3f} s, outside the "
                                  f"model {100 * r['outside_model_share']:.1f} % (" + ", ".join(f"{k} {100 * v:.0f} %" for k, v in
                                  r["phase_share"].items()) + ")" + (f"; {r['step_over_bare']:.2f} x the bare model step"
                                  if r["step_over_bare"] else ""), flush=True)
        pairs = []
        # two trainings at once, one thread each, against one at a time on all threads
        for size in args.sizes if args.pairs else []:
            for name, sets in variants.items():
                if any(f["variant"] == name and f["size"] == size for f in failed): continue  # it failed alone already
                cases = {m: {"size": size, "method": m, "threads": 1, "iters": args.iters, "warmup": args.warmup, "settings": sets,
                             "folder": str(Path(tmp) / f"{size}-{m}-pair-{name}")} for m in ("baseline", "dropclass")}
                for c in cases.values():
                    Path(c["folder"]).mkdir(parents=True)
                    stats = Path(tmp) / f"{size}.class_stats.json"
                    if stats.is_file(): (Path(c["folder"]) / "class_stats.json").write_bytes(stats.read_bytes())
                procs = {m: _start(c, None) for m, c in cases.items()}
                try: got = {m: _result(procs[m], cases[m]) for m in cases}
                except RuntimeError as e:
                    for q in procs.values(): q.kill()
                    failed.append({"size": size, "method": "pair", "threads": 1, "variant": name,
                                   "error": str(e).strip().splitlines()[-1][:300]})
                    continue
                alone = {m: next((q for q in rows if q["size"] == size and q["method"] == m and q["variant"] == name
                                  and q["threads"] == max(args.threads)), None) for m in cases}
                both_alone = sum(a["step_seconds"] for a in alone.values()) if all(alone.values()) else None
                side = max(g["step_seconds"] for g in got.values())
                pairs.append({"size": size, "variant": name, "side_by_side": got,
                              "step_seconds": {m: g["step_seconds"] for m, g in got.items()},
                              "one_at_a_time_threads": max(args.threads),
                              "pair_seconds_per_iteration": {"side_by_side": round(side, 4),
                                                             "one_at_a_time": None if both_alone is None else round(both_alone, 4)},
                              "side_by_side_speedup": None if both_alone is None else round(both_alone / side, 3)})
                print(f"{size:5s} {name:10s} side by side, one thread each: baseline {got['baseline']['step_seconds']:.3f} s, "
                      f"DropClass {got['dropclass']['step_seconds']:.3f} s per step (outside the model "
                      f"{100 * got['baseline']['outside_model_share']:.1f} / {100 * got['dropclass']['outside_model_share']:.1f} %)"
                      + (f"; {pairs[-1]['side_by_side_speedup']:.2f} x the pair one at a time on {max(args.threads)} threads"
                         if both_alone else ""), flush=True)
    ratios = []
    for r in rows:
        if r["variant"] == "today": continue
        ref = next((q for q in rows if q["variant"] == "today" and all(q[k] == r[k] for k in ("size", "method", "threads"))), None)
        if ref is None: continue
        ratios.append({"size": r["size"], "method": r["method"], "threads": r["threads"], "variant": r["variant"],
                       "step_ratio_to_today": round(r["step_seconds"] / ref["step_seconds"], 3)})
    out = {"command": " ".join(["python benchmarks/profile_step.py", *(argv if argv is not None else sys.argv[1:])]),
           "machine": machine_info(), "phases": list(PHASES), "outside_model": list(OUTSIDE), "cases": rows, "ratios": ratios,
           "pairs": pairs, "failed": failed,
           "wall_seconds": round(time.perf_counter() - t0, 1)}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(out, indent=1) + "\n")
    os.replace(tmp, args.out)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
