"""The documentation build's staging (docs/build.py), without running Sphinx: the README's notebook map covers every
notebook, and a staged notebook hides what nbdev's docs hide, shows widgets as a static line and ends in its API."""
import json
from pathlib import Path

from _shared import module_from_path

ROOT = Path(__file__).resolve().parents[1]
build = module_from_path("docs_build", ROOT / "docs" / "build.py")


def test_the_notebook_map_names_every_notebook_once_with_its_module():
    rows = build.notebook_map()
    names = [p for p, _ in rows]
    on_disk = sorted(p.relative_to(ROOT / "nbs").as_posix() for p in (ROOT / "nbs").rglob("*.ipynb")
                     if ".ipynb_checkpoints" not in p.parts)
    assert sorted(names) == on_disk and len(set(names)) == len(names)
    mods = dict(rows)
    assert mods["03_losses.ipynb"] == "dropclass.losses" and mods["00_walkthrough.ipynb"] is None
    assert mods["tutorials/voc.ipynb"] is None
    grouped = [p for p in names if p != "index.ipynb" and any(pick(p) for _, pick in build.GROUPS)]
    assert len(grouped) == len(names) - 1  # every page but the landing page sits in one group


def test_a_staged_notebook(tmp_path):
    nb = {"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [
        {"cell_type": "code", "metadata": {}, "source": "#| hide\nimport secret", "outputs": [], "execution_count": 1},
        {"cell_type": "code", "metadata": {}, "source": "#| export\ndef f(): pass", "outputs": [], "execution_count": 2},
        {"cell_type": "code", "metadata": {}, "source": "w", "execution_count": 3, "outputs": [
            {"output_type": "display_data", "metadata": {}, "data": {build.WIDGET: {"model_id": "x"}, "text/plain": "VBox()"}}]},
        {"cell_type": "markdown", "metadata": {}, "source": "see [the README](../README.md) and [02](02_features.ipynb)"}]}
    src = ROOT / "nbs" / "34d_explorer.ipynb"  # a widget notebook with a screenshot; only its name is used
    fake = tmp_path / "nbs" / src.name
    fake.parent.mkdir()
    fake.write_text(json.dumps(nb))
    build._stage_notebook(fake, tmp_path / "out.ipynb", "dropclass.losses", ROOT / "docs" / "images", "https://example.org/r")
    cells = json.loads((tmp_path / "out.ipynb").read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells]
    assert not any("secret" in s for s in sources) and sources[0] == "def f(): pass"
    (out,) = cells[1]["outputs"]
    assert build.WIDGET not in out["data"] and "JupyterLab" in out["data"]["text/markdown"]
    assert "images/explorer.png" in out["data"]["text/markdown"]
    assert "(02_features.ipynb)" in sources[2]  # a page of the site stays a page
    readme = build._links("see [the README](../README.md#two-commands)", ROOT / "nbs" / "x.ipynb", "https://example.org/r")
    # a repository file: its URL
    assert readme == "see [the README](https://example.org/r/blob/main/README.md#two-commands)"
    assert sources[-1].startswith("## API reference: `dropclass.losses`") and "automodule:: dropclass.losses" in sources[-1]


def test_docstrings_become_rest_with_math_and_code_kept_apart():
    ext = module_from_path("dropclass_sphinx", ROOT / "docs" / "dropclass_sphinx.py")
    # two math spans with a code span between them: each stays what it is
    assert ext.to_rst("weights $M^c_{u,v}$ of `x` over class $c$.") == r"weights :math:`M^c_{u,v}` of ``x`` over class :math:`c`."
    # no substitution, emphasis, target
    assert ext.to_rst("|C| classes, mIoU* and name_") == r"\|C\| classes, mIoU\* and name\_"
    assert ext.to_rst("$$a + b$$ and `a|b`") == ":math:`a + b` and ``a|b``"  # inside code, nothing is escaped


def test_jupyter_heading_anchors_take_the_sites_form():
    assert build.heading_anchor("The-module") == "the-module"
    assert build.heading_anchor("Eq.-4:-the-average") == "eq-4-the-average"
    assert build._links("see [Recap](#Recap) and [05](05_core.ipynb#One-training-step)", ROOT / "nbs" / "x.ipynb",
                        "https://example.org/r") == "see [Recap](#recap) and [05](05_core.ipynb#one-training-step)"
