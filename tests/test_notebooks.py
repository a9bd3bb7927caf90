"""The notebooks as teaching material: committed executed, exercises with solutions, no headings hidden in code cells,
every label map drawn through the shared helper (display palette and legend)."""
import json
import re
from pathlib import Path

import pytest

NBS = Path(__file__).parent.parent / "nbs"
NOTEBOOKS = sorted(NBS.glob("*.ipynb")) + sorted((NBS / "tutorials").glob("*.ipynb"))
WITH_EXERCISES = ["00_walkthrough", "01_importance", "02_features", "03_losses", "04_adapters", "05_core",
                  "28_dose_response", "30_bias", "31_correlation", "32_gradcam", "33_ablations", "34a_explorer_state"]


def cells(path, kind=None):
    return [c for c in json.loads(path.read_text())["cells"] if kind is None or c["cell_type"] == kind]


def source(cell): return "".join(cell["source"])


def test_there_are_notebooks():
    assert len(NOTEBOOKS) > 30


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_outputs(path):
    assert any(c.get("outputs") for c in cells(path, "code")), f"{path.name} is committed without any output: run it"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_markdown_heading_inside_a_code_cell(path):
    bad = [(c["id"], line) for c in cells(path, "code") for line in source(c).splitlines()
           if re.match(r"\s*#+\s*#{1,6}\s+\S", line) or re.match(r"#{2,6}\s+\S", line)]
    assert not bad, f"{path.name}: headings written as comments in code cells (make them markdown cells): {bad[:3]}"


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_exercises_with_checks_and_solutions(name):
    path = NBS / f"{name}.ipynb"
    md = [source(c) for c in cells(path, "markdown")]
    exercises = [s for s in md if s.lstrip().startswith("**Exercise")]
    assert len(exercises) >= 3, f"{name} has {len(exercises)} exercises"
    assert any(s.lstrip().startswith("## Solutions") for s in md), f"{name} has no solutions section"
    checks = [c for c in cells(path, "code") if "check(" in source(c) and c.get("outputs")]
    assert len(checks) >= 2, f"{name}: fewer than two executed exercise checks"


def _colorize_lines():
    files = [p for p in (NBS.parent / "dropclass").rglob("*.py") if p.name not in ("plotting.py", "labels.py", "_modidx.py")]
    for p in files:
        for k, line in enumerate(p.read_text().splitlines(), 1): yield f"{p.name}:{k}", line
    for nb in NOTEBOOKS:
        if nb.stem in ("10_labels", "17_plotting"): continue  # where colorize and the helper are defined and tested
        for c in cells(nb, "code"):
            for line in source(c).splitlines(): yield f"{nb.name}:{c['id']}", line


def test_label_maps_are_drawn_with_the_display_palette_and_a_legend():
    "colorize appears only inside the shared helper (show_labels adds the legend), in the display palette, or to make an image."
    bad = [(where, line.strip()) for where, line in _colorize_lines()
           if "colorize(" in line and "display_labels(" not in line and "# an image made from labels" not in line]
    assert not bad, f"label maps drawn without the shared helper: {bad[:5]}"
    assert any("show_labels(" in line for _, line in _colorize_lines())  # the helper is what draws them


ANALYSIS = ["30_bias", "31_correlation", "32_gradcam", "33_ablations"]
SKIPPED = ("#| export", "#| exporti", "#| hide", "#| eval: false", "#| notest", "#| gpu", "#| slow", "#| default_exp")


def _only_checks(text: str) -> bool:
    "A cell of definitions, imports and checks only: nothing to show."
    lines = [l for l in text.splitlines() if l.strip() and not l.strip().startswith("#")]
    starts = ("test_", "assert ", "np.testing.", "def ", "import ", "from ", "    ", "class ", "@", ")", "]")
    return all(l.startswith(starts) for l in lines)


@pytest.mark.parametrize("name", ANALYSIS)
def test_analysis_notebooks_show_what_they_compute(name):
    "Every executed cell of an analysis notebook that computes something shows a result (a printed number or a figure)."
    silent = [c["id"] for c in cells(NBS / f"{name}.ipynb", "code")
              if not any(s in source(c) for s in SKIPPED) and not c.get("outputs") and not _only_checks(source(c))]
    assert not silent, f"{name}: cells that compute without showing anything: {silent}"


ENGINEERING = {  # derivation notebook -> what marks engineering detail that belongs in its appendices
    "01_importance": ["is_grads_batched", "_loop_reference("],
    "02_features": ["torch.autograd.Function", "gradcheck(", "SignedScale"],
    "03_losses": ["torch.autograd.Function", "distributed data parallel", "Explorer(", "## Checking labels"],
}


@pytest.mark.parametrize("name", list(ENGINEERING))
def test_engineering_detail_sits_in_marked_appendices(name):
    "The derivation reads straight: custom autograd, distributed training, label checks and widgets come after the solutions."
    nb = cells(NBS / f"{name}.ipynb")
    heads = [i for i, c in enumerate(nb) if c["cell_type"] == "markdown" and source(c).lstrip().startswith("## Appendix")]
    solutions = [i for i, c in enumerate(nb) if source(c).lstrip().startswith("## Solutions")]
    assert heads and solutions and min(heads) > solutions[0], f"{name}: no '## Appendix' section after the solutions"
    def engineering(c, marker):  # the library's own functions may use it; a custom autograd function is itself detail
        exported = source(c).lstrip().startswith("#| export")
        return marker in source(c) and (not exported or marker == "torch.autograd.Function")
    early = [(c["id"], marker) for c in nb[:min(heads)] for marker in ENGINEERING[name] if engineering(c, marker)]
    assert not early, f"{name}: engineering detail before the appendices: {early}"


TEACHING = ["00_walkthrough", "01_importance", "02_features", "03_losses", "04_adapters", "05_core", "22_demo",
            "07_diagnostics", "30_bias", "31_correlation", "32_gradcam", "33_ablations", "34a_explorer_state", "tutorials/train_synthetic"]


@pytest.mark.parametrize("name", TEACHING)
def test_teaching_notebooks_end_in_a_recap(name):
    nb = cells(NBS / f"{name}.ipynb")
    heads = [i for i, c in enumerate(nb) if c["cell_type"] == "markdown" and re.search(r"^## Recap\b", source(c), re.M)]
    assert heads, f"{name} has no '## Recap' section"
    appendix = [i for i, c in enumerate(nb) if c["cell_type"] == "markdown" and source(c).lstrip().startswith("## Appendix")]
    assert not appendix or heads[-1] < min(appendix), f"{name}: the recap comes after the appendices"
    bullets = [l for l in source(nb[heads[-1]]).splitlines() if l.startswith("- ")]
    assert 3 <= len(bullets) <= 6, f"{name}: a recap of 3-6 bullets, not {len(bullets)}"


@pytest.mark.parametrize("name", WITH_EXERCISES)
def test_solutions_are_code_run_against_the_checks(name):
    "Every exercise with a check has a solution cell that asserts the same check, so a wrong solution fails nbdev_test."
    nb = cells(NBS / f"{name}.ipynb")
    start = next(i for i, c in enumerate(nb) if source(c).lstrip().startswith("## Solutions"))
    asked = {m for c in nb[:start] if c["cell_type"] == "code" for m in re.findall(r'check\("(exercise \d+)"', source(c))}
    solved = {m for c in nb[start:] if c["cell_type"] == "code" for m in re.findall(r'assert check\("(exercise \d+)"', source(c))}
    assert asked and asked <= solved, f"{name}: exercises without a solution cell asserting their check: {sorted(asked - solved)}"
    unanswered = [c["id"] for c in nb[start:] if c["cell_type"] == "code" and "assert check(" in source(c) and not c.get("outputs")]
    assert not unanswered, f"{name}: solution cells committed without outputs (run the notebook): {unanswered}"
