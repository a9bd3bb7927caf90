"""The documentation site in a browser: built by `python docs/build.py` (rebuilt here when older than its sources),
served on localhost and opened page by page in headless Chromium. Every page loads without a console error or a
failed request, loads every image, links only to pages and anchors that exist, sends no request off localhost and
shows typeset math; the search finds the package's words. Screenshots of the landing page and notebook 02 are kept
in artifacts/docs/."""
import functools
import html
import importlib.util
import re
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest

from _shared import CHROMIUM_FLAGS, module_from_path, scaled

ROOT = Path(__file__).resolve().parents[1]
SITE = ROOT / "_site"
ARTIFACTS = ROOT / "artifacts" / "docs"


def _missing() -> str | None:
    "Why the browser test cannot run here, or None."
    if shutil.which("chromium") is None: return "Debian's chromium is not installed (apt-get install -y chromium)"
    for mod, pkg in (("playwright", "playwright"), ("sphinx", "sphinx"), ("myst_nb", "myst-nb"), ("furo", "furo")):
        if importlib.util.find_spec(mod) is None: return f"{pkg} is not installed (pip install -e '.[dev]')"
    return None


_WHY = _missing()
pytestmark = pytest.mark.skipif(_WHY is not None, reason=_WHY or "")


def _sources() -> list[Path]:
    "What the site is built from: the notebooks, the README (its map), the library (its docstrings) and docs/."
    return [*(ROOT / "nbs").rglob("*.ipynb"), ROOT / "README.md", ROOT / "settings.ini", *(ROOT / "dropclass").rglob("*.py"),
            *(p for p in (ROOT / "docs").rglob("*") if p.is_file() and "__pycache__" not in p.parts)]


@pytest.fixture(scope="module")
def site() -> Path:
    "The built site: _site/ as `.ci/run` built it, or built again when a source is newer."
    stamp = SITE / "index.html"
    newest = max(p.stat().st_mtime for p in _sources() if ".ipynb_checkpoints" not in p.parts)
    if not stamp.is_file() or stamp.stat().st_mtime < newest:
        module_from_path("docs_build", ROOT / "docs" / "build.py").build(SITE)
    return SITE


@pytest.fixture(scope="module")
def server(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://localhost:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args): pass


def _pages(site: Path) -> list[str]:
    "Every HTML page of the site, relative to its root (Sphinx's own static and source folders left out)."
    return sorted(p.relative_to(site).as_posix() for p in site.rglob("*.html")
                  if not {"_static", "_sources", "_images"} & set(p.relative_to(site).parts))


_HREF = re.compile(r"""<a\s[^>]*?href=["']([^"']+)["']""", re.I)
_ID = re.compile(r"""\bid=["']([^"']+)["']""")


@functools.lru_cache(maxsize=None)
def _ids(path: Path) -> frozenset:
    return frozenset(html.unescape(i) for i in _ID.findall(path.read_text(encoding="utf-8")))


def broken_links(site: Path, page: str) -> list[str]:
    "The links of `page` to a file of the site that does not exist, or to an anchor its target lacks."
    bad = []
    for href in _HREF.findall((site / page).read_text(encoding="utf-8")):
        href = html.unescape(href)
        parts = urlsplit(href)
        if parts.scheme or parts.netloc or href.startswith(("mailto:", "javascript:")): continue  # leaves the site
        target = (site / page).parent / unquote(parts.path) if parts.path else site / page
        if target.is_dir(): target = target / "index.html"
        target = target.resolve()
        if not target.is_file() or site.resolve() not in target.parents:
            bad.append(href)
        elif parts.fragment and target.suffix == ".html" and unquote(parts.fragment) not in _ids(target):
            bad.append(href)
    return bad


def test_the_link_checker_sees_a_broken_link(tmp_path):
    (tmp_path / "a.html").write_text('<p id="here"><a href="b.html">b</a> <a href="a.html#here">x</a> '
                                     '<a href="a.html#gone">y</a> <a href="https://example.org">out</a></p>')
    assert broken_links(tmp_path, "a.html") == ["b.html", "a.html#gone"]


def test_every_page_in_the_browser(site, server):
    from playwright.sync_api import sync_playwright

    pages = _pages(site)
    nb_pages = [p for p in pages if p not in ("genindex.html", "search.html", "py-modindex.html")]
    assert len(nb_pages) >= 39, f"only {len(nb_pages)} pages were built: {nb_pages}"
    problems, offsite, typeset = {}, set(), {}
    ms = lambda s: int(1000 * scaled(s))
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium"), args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors, failed = [], []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: offsite.add(r.url) if not r.url.startswith((server, "data:", "blob:", "about:")) else None)
            page.on("response", lambda r: failed.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("requestfailed", lambda r: failed.append(f"failed {r.url}"))
            for name in pages:
                errors.clear(), failed.clear()
                page.goto(f"{server}/{name}", wait_until="load", timeout=ms(60))
                has_math = page.evaluate("() => !!document.querySelector('div.math, span.math')")
                if has_math:  # MathJax typesets after load; its startup promise settles when it is done
                    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=ms(30))
                    page.evaluate("() => MathJax.startup.promise")
                images = page.evaluate("() => [...document.images].filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)")
                raw = page.evaluate("""() => { const b = document.body.cloneNode(true);
                    b.querySelectorAll('pre, code, script, style, mjx-container, .highlight').forEach(e => e.remove());
                    const t = b.textContent; return [t.includes('$$'), t.includes('\\\\frac'), t.includes('\\\\mathrm')]; }""")
                found = {"console errors": list(errors), "failed requests": list(failed), "images not loaded": images,
                         "raw math ($$, \\frac, \\mathrm)": [s for s, r in zip(("$$", "\\frac", "\\mathrm"), raw) if r],
                         "broken links": broken_links(site, name)}
                found = {k: v for k, v in found.items() if v}
                if found: problems[name] = found
                if has_math: typeset[name] = page.evaluate("() => document.querySelectorAll('mjx-container').length")
                if name == "index.html" or name.startswith("02_"):
                    ARTIFACTS.mkdir(parents=True, exist_ok=True)
                    page.screenshot(path=str(ARTIFACTS / name.replace(".html", ".png")), full_page=False)
            hits = {}
            for term in ("suppression", "Eq. 4"):
                page.goto(f"{server}/search.html?q={term.replace(' ', '+')}", wait_until="load", timeout=ms(60))
                page.wait_for_function("() => document.querySelectorAll('#search-results li, ul.search li').length > 0"
                                       " || /did not match|no documents/i.test(document.body.innerText)", timeout=ms(60))
                hits[term] = page.evaluate("() => document.querySelectorAll('#search-results li, ul.search li').length")
        finally:
            browser.close()
    assert not problems, "\n".join(f"{name}: {found}" for name, found in problems.items())
    assert not offsite, f"requests that left localhost: {sorted(offsite)[:10]}"
    assert typeset.get("02_features.html", 0) > 20, f"math not typeset on page 02: {typeset}"
    assert all(n > 0 for n in typeset.values()), f"pages with math but no typeset formula: {typeset}"
    assert all(n > 0 for n in hits.values()), f"the search found nothing for some terms: {hits}"
    assert (ARTIFACTS / "index.png").is_file() and (ARTIFACTS / "02_features.png").is_file()
