"""Build the documentation site from the committed, executed notebooks (nothing is executed again).

    python docs/build.py            # into _site/; open _site/index.html, or serve it: python -m http.server -d _site

Sphinx with myst-nb renders every notebook of the README's notebook map with its prose, code, printed outputs and
figures, in the map's order, grouped as teaching, library, data, training, analysis, explorer and tutorials; each page
that exports a module ends in that module's API reference (every exported name with its signature, its docstring and
the comments of its parameters). The site is offline: MathJax is vendored from the npm package `mathjax` at build time
(cached in `build/vendor/`; `--mathjax DIR` takes an unpacked copy), the furo theme ships its own scripts and uses the
system's fonts, and widgets are shown as a screenshot with a line on how to run them live.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MATHJAX = "3.2.2"
GROUPS = [  # (caption, which notebooks): the README's notebook map, cut into the groups a reader looks for
    ("Teaching", lambda n: n.startswith("00_")),
    ("Library", lambda n: n.startswith("00a_") or (n[:2].isdigit() and 1 <= int(n[:2]) <= 9)),  # 00a: the ground floor
    ("Data", lambda n: n[:2].isdigit() and 10 <= int(n[:2]) <= 18),
    ("Training", lambda n: n[:2].isdigit() and 19 <= int(n[:2]) <= 29),
    ("Analysis", lambda n: n[:2].isdigit() and 30 <= int(n[:2]) <= 33),
    ("Explorer", lambda n: n[:2].isdigit() and 34 <= int(n[:2]) <= 39),
    ("Tutorials", lambda n: n.startswith("tutorials/")),
]
WIDGET = "application/vnd.jupyter.widget-view+json"
# widget notebooks with a screenshot in docs/images
SCREENSHOTS = {"34d_explorer": "explorer.png", "35_app": "explorer.png"}


def notebook_map(readme: Path = ROOT / "README.md") -> list[tuple[str, str | None]]:
    "(notebook path under nbs/, module it exports or None) for each row of the README's notebook map, in its order."
    rows = []
    for line in readme.read_text().splitlines():
        if not line.startswith("| `nbs/"): continue
        cells = [c.strip() for c in line.strip("|").split("|")]
        mod = re.findall(r"`([\w.]+)`", cells[2]) if len(cells) > 2 else []
        names = re.findall(r"`(?:nbs/)?([\w/]+\.ipynb)`", cells[0])
        base = names[0].rsplit("/", 1)[0] + "/" if "/" in names[0] else ""
        for i, name in enumerate(names):
            rows.append(((base + name) if i and "/" not in name else name, mod[0] if mod else None))
    return rows


def _mathjax(cache: Path, given: Path | None) -> Path:
    "An unpacked MathJax 3 (its es5 folder): given, cached, or fetched with npm from the registry."
    if given is not None:
        es5 = given / "es5" if (given / "es5").is_dir() else given
        if not (es5 / "tex-mml-chtml.js").is_file(): raise SystemExit(f"--mathjax {given}: no tex-mml-chtml.js there")
        return es5
    es5 = cache / f"mathjax-{MATHJAX}" / "package" / "es5"
    if (es5 / "tex-mml-chtml.js").is_file(): return es5
    cache.mkdir(parents=True, exist_ok=True)
    if shutil.which("npm") is None:
        raise SystemExit("the site typesets its math with MathJax, taken from the npm registry: install Node.js and npm, "
                         "or pass --mathjax DIR with an unpacked copy of the npm package mathjax@3")
    out = subprocess.run(["npm", "pack", f"mathjax@{MATHJAX}", "--silent", "--pack-destination", str(cache)],
                         capture_output=True, text=True)
    if out.returncode != 0: raise SystemExit(f"npm pack mathjax@{MATHJAX} failed: {out.stderr.strip()[-500:]}")
    tgz = cache / f"mathjax-{MATHJAX}.tgz"
    with tarfile.open(tgz) as t:
        t.extractall(cache / f"mathjax-{MATHJAX}", members=[m for m in t.getmembers()
                                                            if m.name.startswith(("package/es5/", "package/LICENSE"))],
                     filter="data")
    return es5


def _static_widget(nb_name: str, images: Path) -> dict:
    "The output a widget's cell shows on the site: its screenshot (where one exists) and how to run it live."
    shot = SCREENSHOTS.get(nb_name)
    live = ("*A live widget: run this notebook in JupyterLab" + (", or `dropclass explore` for the explorer app" if shot else "")
            + ", to move its controls.*")
    md = (f"![the widget, as it looks live](images/{shot})\n\n" if shot and (images / shot).is_file() else "") + live
    return {"output_type": "display_data", "metadata": {}, "data": {"text/markdown": md}}  # outputs carry no id


def _stage_notebook(src: Path, dst: Path, module: str | None, images: Path, git_url: str) -> None:
    nb = json.loads(src.read_text())
    name = src.stem
    cells = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            lines = "".join(cell["source"]).splitlines(keepends=True)
            flags = [l[3:].split()[0] for l in lines if l.startswith("#| ") and l[3:].split()]
            if "hide" in flags or "default_exp" in flags: continue  # what nbdev's own docs leave out
            cell["source"] = "".join(l for l in lines if not l.startswith("#|")).lstrip("\n")
            outs, widget_seen = [], False
            for o in cell.get("outputs", []):
                if WIDGET in o.get("data", {}):
                    if not widget_seen: outs.append(_static_widget(name, images))
                    widget_seen = True
                else: outs.append(o)
            cell["outputs"] = outs
        elif cell["cell_type"] == "markdown":
            text = "".join(cell["source"])
            cell["source"] = _links(text.replace("](../docs/images/", "](images/").replace('src="../docs/images/', 'src="images/'),
                                    src, git_url)
        cells.append(cell)
    nb["cells"] = cells
    if module:
        nb["cells"].append({"cell_type": "markdown", "id": "api-reference", "metadata": {}, "source":
                            f"## API reference: `{module}`\n\n```{{eval-rst}}\n.. automodule:: {module}\n   :members:\n```\n"})
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(json.dumps(nb))


def heading_anchor(anchor: str) -> str:
    "A heading's anchor as Jupyter writes it (`#The-module`, case and punctuation kept) in the site's form (`the-module`)."
    return re.sub(r"[^\w-]", "", anchor.lower()).strip("-")


def _links(text: str, src: Path, git_url: str) -> str:
    "Links to pages of the site stay links (heading anchors in the site's form); links to other repository files point at the repository."
    def fix(m):
        label, target = m.group(1), m.group(2)
        if re.match(r"^[a-z]+:|^mailto:", target): return m.group(0)
        path, _, anchor = target.partition("#")
        if not path or path.endswith(".ipynb"):  # this page or another page of the site: the heading's anchor there
            return f"[{label}]({path}{'#' + heading_anchor(anchor) if anchor else ''})"
        full = (src.parent / path).resolve()
        try: rel = full.relative_to(ROOT)
        except ValueError: return m.group(0)
        return f"[{label}]({git_url.rstrip('/')}/blob/main/{rel.as_posix()}{'#' + anchor if anchor else ''})"
    return re.sub(r"(?<!!)\[([^\]]*)\]\(([^)\s]+)\)", fix, text)


CONF = '''
import sys
sys.path.insert(0, {root!r})
sys.path.insert(0, {docs!r})  # dropclass_sphinx, the docstring extension
project = "dropclass"
author = "the dropclass developers"
extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.mathjax", "dropclass_sphinx"]
html_theme = "furo"
html_title = "dropclass"
html_favicon = "favicon.svg"
html_static_path = ["_static"]
mathjax_path = "mathjax/tex-mml-chtml.js"
nb_execution_mode = "off"
nb_ipywidgets_js = {{}}
nb_output_stderr = "remove"
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
suppress_warnings = ["myst.header", "myst.xref_missing", "misc.highlighting_failure", "mystnb.unknown_mime_type",
                     "autodoc", "docutils", "ref.python", "toc.not_included"]
autodoc_member_order = "bysource"
autodoc_inherit_docstrings = False  # torch's own docstrings of overridden methods are not this package's
autodoc_typehints = "signature"
exclude_patterns = ["_build"]

'''


def build(out: Path, mathjax: Path | None = None, jobs: int = 2, quiet: bool = True) -> dict:
    "Stage the notebooks, write Sphinx's configuration, build the HTML site into `out`; a summary (pages, seconds)."
    t0 = time.perf_counter()
    stage = ROOT / "build" / "docs_src"
    if stage.exists(): shutil.rmtree(stage)
    (stage / "_static").mkdir(parents=True)
    es5 = _mathjax(ROOT / "build" / "vendor", mathjax)
    shutil.copytree(es5, stage / "_static" / "mathjax")
    images = ROOT / "docs" / "images"
    shutil.copytree(images, stage / "images")
    shutil.copy(ROOT / "docs" / "favicon.svg", stage / "favicon.svg")
    settings = dict(l.split("=", 1) for l in (ROOT / "settings.ini").read_text().splitlines() if "=" in l)
    git_url = settings.get("git_url", "https://github.com/dropclass/dropclass").strip()
    rows = notebook_map()
    pages = []
    for path, module in rows:
        src = ROOT / "nbs" / path
        if not src.is_file(): raise SystemExit(f"the README's notebook map names nbs/{path}, which does not exist")
        _stage_notebook(src, stage / path, module, images, git_url)
        pages.append(path)
    index = json.loads((stage / "index.ipynb").read_text())
    toc = []
    for caption, pick in GROUPS:
        names = [p[:-len(".ipynb")] for p in pages if p != "index.ipynb" and pick(p)]
        if names: toc.append(f"```{{toctree}}\n:caption: {caption}\n:maxdepth: 1\n\n" + "\n".join(names) + "\n```\n")
    index["cells"].append({"cell_type": "markdown", "id": "site-contents", "metadata": {}, "source": "\n".join(toc)})
    (stage / "index.ipynb").write_text(json.dumps(index))
    (stage / "conf.py").write_text(CONF.format(root=str(ROOT), docs=str(ROOT / "docs")))
    if out.exists(): shutil.rmtree(out)
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-j", str(jobs), *(["-q"] if quiet else []), str(stage), str(out)]
    r = subprocess.run(cmd)
    if r.returncode != 0: raise SystemExit(f"sphinx failed (exit {r.returncode}): {' '.join(cmd)}")
    shutil.copytree(images, out / "images", dirs_exist_ok=True)  # what raw <img> tags in the notebooks' markdown show
    return {"pages": len(pages), "seconds": round(time.perf_counter() - t0, 1), "out": str(out)}


def main(argv=None) -> int:
    doc = __doc__.split("\n\n")
    p = argparse.ArgumentParser(description=doc[0], epilog="\n\n".join(doc[1:]), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "_site", help="folder of the site (default: _site)")
    p.add_argument("--mathjax", type=Path, default=None, help="an unpacked npm package mathjax@3 (default: fetched with npm, cached)")
    p.add_argument("--jobs", type=int, default=2, help="Sphinx's parallel jobs (default 2)")
    p.add_argument("--verbose", action="store_true", help="Sphinx's own messages")
    a = p.parse_args(argv)
    s = build(a.out, a.mathjax, a.jobs, quiet=not a.verbose)
    print(f"built {s['pages']} pages in {s['seconds']} s: open {Path(s['out']) / 'index.html'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
