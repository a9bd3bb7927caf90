"""Numbers in the prose that quote an output equal that output (`tests/_prose.py` says how they are marked)."""
import copy
import json
from pathlib import Path

import pytest

from _prose import file_mismatches, notebook_mismatches, number_in, quoted_numbers

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "nbs").glob("*.ipynb")) + sorted((ROOT / "nbs" / "tutorials").glob("*.ipynb"))
MUST_QUOTE = ["00_walkthrough", "22_demo", "30_bias", "32_gradcam", "33_ablations"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_quoted_numbers_equal_the_outputs(path):
    bad = notebook_mismatches(json.loads(path.read_text()), ROOT)
    assert not bad, f"{path.name}: prose numbers that no output shows (rerun the notebook and re-read the text): {bad}"


def test_the_readme_quotes_its_results_files():
    text = (ROOT / "README.md").read_text()
    assert quoted_numbers(text), "the README marks no quoted number"
    bad = file_mismatches(text, ROOT)
    assert not bad, f"README.md: {bad}"


@pytest.mark.parametrize("name", MUST_QUOTE)
def test_the_analysis_notebooks_mark_their_quoted_numbers(name):
    nb = json.loads((ROOT / "nbs" / f"{name}.ipynb").read_text())
    marked = [q for c in nb["cells"] if c["cell_type"] == "markdown" for q in quoted_numbers("".join(c["source"]))]
    assert len(marked) >= 2, f"{name}: mark the numbers its prose quotes from its outputs (<span class=\"out\">...</span>)"


def test_a_planted_mismatch_is_found():
    nb = json.loads((ROOT / "nbs" / "00_walkthrough.ipynb").read_text())
    assert not notebook_mismatches(nb, ROOT)
    cell = next(c for c in nb["cells"] if c["cell_type"] == "markdown" and quoted_numbers("".join(c["source"])))
    num, _ = quoted_numbers("".join(cell["source"]))[0]
    planted = copy.deepcopy(nb)
    wrong = next(w for w in ("97.31", "12345.6", "0.000123") if not number_in(w, json.dumps(nb)))
    c2 = next(c for c in planted["cells"] if c.get("id") == cell.get("id"))
    c2["source"] = "".join(c2["source"]).replace(f'<span class="out">{num}</span>', f'<span class="out">{wrong}</span>', 1)
    assert notebook_mismatches(planted, ROOT) == [f"cell {cell.get('id', '?')}: {wrong} not in the outputs"]


@pytest.mark.parametrize("num, text, found", [
    ("0.66", "rider 0.66, bicycle 0.04", True), ("0.66", "rider 0.664", False), ("0.6", "rider 0.66", False),
    ("86", "on 86.0 %", False), ("86", "on 86 %", True), ("1.4", "Δ -1.4", False), ("-1.4", "Δ -1.4 [", True),
    ("1.4", "Δ +1.4", True), ("2,077", "took 2077 s", True), ("\u22122.2", "-2.2 [-3.1, -1.3]", True), ("12", "112", False)])
def test_number_matching(num, text, found):
    assert number_in(num, text) is found
