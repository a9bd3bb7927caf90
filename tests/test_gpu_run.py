"""The GPU session (benchmarks/gpu_run.sh), dry-run on the CPU with tiny sizes: every step runs in its time limit and
writes the JSON the summary reads, with finite numbers where numbers belong. About 2.5 minutes on a 2-core AMD EPYC.

The dry run checks the plumbing, not the machine's speed: its time limits are multiplied by the slowness of this machine
(benchmarks/machine_speed.py), measured here and handed to the script, so that they hold on a slower machine too."""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _shared import scaled

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = ROOT / "benchmarks" / "gpu_run.sh"
ARCHS = ("hrnetv2_w18_small_v1", "hrnetv2_w18_small_v2", "deeplabv3_mobilenet_v3_large")
VARIANTS = ("baseline", "dropclass", "dropclass_reference")
STEPS = ("install", "bench_gpu", "bench_gpu_train", "compare_seeds", "bench_gpu_compile")
FILES = ("bench_gpu.json", "bench_gpu_train.json", "compare_seeds.json", "compare_seeds.md", "bench_gpu_compile.json",
         "summary.json", "gpu_run.log")


def finite(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def positive(x) -> bool:
    return finite(x) and x > 0


def _results_listing():
    return sorted(p.relative_to(ROOT) for p in (ROOT / "benchmarks" / "results").rglob("*"))


@pytest.fixture(scope="module")
def session(tmp_path_factory):
    "One dry run of the whole session into a temporary OUT: (folder, completed process, results listing before, after)."
    out = tmp_path_factory.mktemp("gpu_session")
    before = _results_listing()
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable}
    scale = scaled(1.0)  # this machine's slowness (benchmarks/machine_speed.py), measured once per test session
    budget = 400  # the script's budget with --tiny, before the scale
    proc = subprocess.run(["bash", str(SCRIPT), "--tiny", "--device", "cpu", "--time-scale", f"{scale:.2f}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=(budget + 60) * scale + 60)  # a hung script only: the
    # steps, their kill-after and the summary end within budget + 60 s (scaled)
    return out, proc, before, _results_listing()


def _steps_that_failed(out: Path) -> str:
    "Each step that did not end ok: its status, seconds and time limit, and the end of its part of the log."
    try: steps = load(out, "summary.json")["steps"]
    except (OSError, ValueError, KeyError): return "summary.json is missing or unreadable"
    log = (out / "gpu_run.log").read_text() if (out / "gpu_run.log").is_file() else ""
    lines = []
    for name, st in steps.items():
        if st["status"] == "ok": continue
        limit = f" of its {st['limit_s']} s" if st.get("limit_s") is not None else ""
        lines.append(f"step {name}: {st['status']} (exit code {st['rc']}) after {st['seconds']} s{limit}")
        part = log.split(f"=== {name} (", 1)[-1].split("\n=== ", 1)[0] if f"=== {name} (" in log else ""
        if part: lines.append("  " + "\n  ".join(part.strip().splitlines()[-15:]))
    return "\n".join(lines) or "every step ended ok"


def load(out: Path, name: str) -> dict:
    path = out / name
    if not path.is_file() and name != "summary.json":
        raise AssertionError(f"{name} was not written:\n{_steps_that_failed(out)}")
    return json.loads(path.read_text())


def test_session_ends_cleanly_with_every_file(session):
    out, proc, before, after = session
    assert proc.returncode == 0, (f"gpu_run.sh exited with {proc.returncode}:\n{_steps_that_failed(out)}\n"
                                  f"--- the end of its output:\n{proc.stdout[-2000:]}\n{proc.stderr[-1500:]}")
    for name in FILES: assert (out / name).is_file(), f"{name} was not written"
    assert len(list(out.iterdir())) <= 8, "the device returns at most 8 files from $OUT"
    assert after == before, "the dry run wrote into benchmarks/results"
    log = (out / "gpu_run.log").read_text()
    assert "no wheels in benchmarks/wheels" in log or "already installed, its wheel is not used" in log


def test_bench_gpu_measures_every_model_and_variant(session):
    d = load(session[0], "bench_gpu.json")
    assert d["tiny"] is True and d["compile"] is False and set(d["archs"]) == set(ARCHS)
    for arch in ARCHS:
        a = d["archs"][arch]
        assert a["schedule"]["iterations"] == 59048 and a["schedule"]["batch_per_gpu"] == 12
        for v in VARIANTS:
            r = a["variants"][v]
            assert "error" not in r["train"], f"{arch} {v}: {r['train'].get('error')}"
            t = r["train"]
            assert positive(t["step_s"]) and positive(t["images_per_s"]) and finite(t["loss"])
            assert len(t["all_s"]) == 2 and all(positive(s) for s in t["all_s"])
            assert positive(r["eval"]["images_per_s"])
            for k in ("train_hours_1_gpu", "train_hours_4_gpus_ideal", "eval_hours_1_gpu", "schedule_hours_1_gpu"):
                assert positive(t[k]), (arch, v, k)
            assert t["schedule_includes_eval"] is True
        assert positive(a["ratios"]["dropclass_step_time"]) and positive(a["ratios"]["reference_step_time"])
    assert d["results"] == d["archs"][ARCHS[0]]["variants"], "the first model also at the top level"
    pr = d["profile"]
    assert "error" not in pr, pr.get("error")
    assert pr["arch"] == "hrnetv2_w18_small_v2" and positive(pr["baseline_total_ms"]) and positive(pr["dropclass_total_ms"])
    assert finite(pr["extra_ms"]) and positive(pr["ratio"])
    assert pr["top_extra_ops"] and all(isinstance(r["op"], str) and finite(r["extra_ms"]) for r in pr["top_extra_ops"])


def test_training_run_logs_the_loss_and_the_loader(session):
    d = load(session[0], "bench_gpu_train.json")
    assert d["preset"] == "cityscapes-dropclass-hrnet-v2" and d["settings"]["arch"] == "hrnetv2_w18_small_v2"
    n = d["iterations"]
    assert n == 6 and not d["stopped_early"]
    for part in ("total", "ce", "ce_drop", "sup", "p", "lam"):
        assert len(d["loss"][part]) == n and all(finite(v) for v in d["loss"][part]), part
    assert d["loss"]["p"][0] == 0.0 and d["loss"]["p"][-1] > 0, "the compressed ramp raises p within the run"
    s = d["loss_summary"]
    for k in ("first_window_total", "last_window_total", "first_window_ce", "last_window_ce"): assert positive(s[k]), k
    assert s["finite"] is True and isinstance(s["ce_falls"], bool)
    tm = d["timing"]
    for k in ("loader_step_s", "preloaded_step_s", "gpu_busy_fraction", "gpu_images_per_s", "run_images_per_s"):
        assert positive(tm[k]), k
    assert [l["workers"] for l in tm["loader_alone"]] == [0, 1]
    assert all(positive(l["images_per_s"]) for l in tm["loader_alone"]) and isinstance(tm["loader_keeps_up"], bool)


def test_comparison_over_seeds(session):
    d = load(session[0], "compare_seeds.json")
    assert d["preset"] == "tiny" and d["seeds"] == [0, 1] and "device=cpu" in d["overrides"]
    row = d["summary"]["val"]["dropclass"]["miou"]
    assert row["n"] == 2 and finite(row["mean"]) and finite(row["baseline"]["mean"]) and finite(row["other"]["mean"])
    assert set(d["per_seed"]) == {"0", "1"}
    assert "# Baseline against DropClass over 2 seeds" in (session[0] / "compare_seeds.md").read_text()


def test_compiled_steps(session):
    d = load(session[0], "bench_gpu_compile.json")
    assert d["compile"] is True and list(d["archs"]) == ["hrnetv2_w18_small_v2"]
    variants = d["archs"]["hrnetv2_w18_small_v2"]["variants"]
    assert set(variants) == {"baseline", "dropclass"}
    for v, r in variants.items():
        t = r["train"]
        assert "error" not in t, f"{v}: {t.get('error')}"
        assert positive(t["step_s"]) and positive(t["first_step_s"]) and t["unique_graphs"] >= 1 and t["graph_breaks"] >= 0
        assert "eval" not in r


def test_summary_names_the_device_and_every_step(session):
    s = load(session[0], "summary.json")
    assert s["device"] == "cpu" and s["tiny"] is True and s["all_ok"] is True, _steps_that_failed(session[0])
    assert s["time_scale"] >= 1 and s["budget_s"] >= 400
    assert list(s["steps"]) == list(STEPS)
    for name, step in s["steps"].items():
        assert step["status"] == "ok" and step["rc"] == 0, name
        assert name == "install" or step["seconds"] <= step["limit_s"] + 1, name
    assert all(v == "ok" for v in s["files"].values())
    h = s["headline"]
    assert positive(h["bench_gpu"]["hrnetv2_w18_small_v2"]["dropclass_step_ms"])
    assert positive(h["bench_gpu"]["hrnetv2_w18_small_v2"]["dropclass_schedule_hours_1_gpu"])
    assert positive(h["bench_gpu"]["profile"]["dropclass_ms"])
    assert positive(h["bench_gpu_train"]["loss_first"]) and positive(h["bench_gpu_train"]["gpu_busy_fraction"])
    assert finite(h["compare_seeds"]["val/dropclass/miou"]["delta"]) and h["compare_seeds"]["val/dropclass/miou"]["n"] == 2
    assert positive(h["bench_gpu_compile"]["hrnetv2_w18_small_v2"]["baseline"]["step_ms"])


def test_bad_arguments_and_help():
    env = {**os.environ, "PYTHON": sys.executable}
    bad = subprocess.run(["bash", str(SCRIPT), "--device", "tpu"], env=env, capture_output=True, text=True, timeout=scaled(30))
    assert bad.returncode == 2 and "--device must be cuda, cuda:<index> or cpu" in bad.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "--seeds", "x"], env=env, capture_output=True, text=True, timeout=scaled(30))
    assert bad.returncode == 2 and "--seeds must be a whole number" in bad.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "--tiny", "--time-scale", "fast"], env=env, capture_output=True, text=True, timeout=scaled(30))
    assert bad.returncode == 2 and "--time-scale must be a number" in bad.stderr
    bad = subprocess.run(["bash", str(SCRIPT), "--tiny", "--time-scale", "0"], env=env, capture_output=True, text=True, timeout=scaled(30))
    assert bad.returncode == 2 and "--time-scale must be greater than 0" in bad.stderr
    ok = subprocess.run(["bash", str(SCRIPT), "--help"], env=env, capture_output=True, text=True, timeout=scaled(30))
    assert ok.returncode == 0 and "--fetch-wheels" in ok.stdout
    for script in ("bench_gpu.py", "bench_gpu_train.py", "gpu_summary.py", "machine_speed.py"):
        r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), "--help"], capture_output=True, text=True, timeout=scaled(120))
        assert r.returncode == 0 and "usage:" in r.stdout, script
