"""Numbers in prose that quote an output: written `<span class="out">12.3</span>` in a notebook's markdown (or in the
README, with `data-src="<file>"` naming the results file quoted), each must appear as a number, at the same precision,
in the outputs of the same notebook (or in that file)."""
import json
import re
from pathlib import Path

SPAN = re.compile(r'<span class="out"(?:\s+data-src="(?P<src>[^"]+)")?\s*>(?P<num>[^<]*)</span>')


def _norm(text: str) -> str:
    "Unicode minus as '-', no thousands separators inside numbers, no non-breaking spaces."
    text = text.replace("\u2212", "-").replace("\u00a0", " ").replace("\u202f", " ")
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)


def number_in(num: str, text: str) -> bool:
    "`num` (as written, e.g. '0.66', '-1.4', '86', '2,077') occurs in `text` as a whole number token of the same precision."
    num = _norm(num).strip()
    if not re.fullmatch(r"[-+]?\d+(\.\d+)?", num): raise ValueError(f"not a number: {num!r}")
    body = re.escape(num.lstrip("+"))
    sign = r"(?<![\d.])" if num.startswith(("-", "+")) else r"(?<![\d.\-])\+?"  # an unsigned quote may not hide a minus
    return re.search(sign + body + r"(?![\d]|\.\d)", _norm(text)) is not None


def notebook_outputs(nb: dict) -> str:
    "The text of every output of a notebook: streams, plain text, markdown and HTML."
    parts = []
    for c in nb["cells"]:
        for o in c.get("outputs", []):
            if "text" in o: parts.append("".join(o["text"]))
            for kind in ("text/plain", "text/markdown", "text/html"):
                if kind in o.get("data", {}): parts.append("".join(o["data"][kind]))
    return "\n".join(parts)


def quoted_numbers(markdown: str) -> list[tuple[str, str | None]]:
    "The (number, source file or None) pairs marked in a piece of markdown."
    return [(m["num"], m["src"]) for m in SPAN.finditer(markdown)]


def notebook_mismatches(nb: dict, root: Path) -> list[str]:
    "Quoted numbers of a notebook's markdown that its outputs (or the named file) do not show."
    outputs, bad = notebook_outputs(nb), []
    for c in nb["cells"]:
        if c["cell_type"] != "markdown": continue
        for num, src in quoted_numbers("".join(c["source"])):
            text = (root / src).read_text() if src else outputs
            if not number_in(num, text): bad.append(f"cell {c.get('id', '?')}: {num} not in {src or 'the outputs'}")
    return bad


def file_mismatches(text: str, root: Path) -> list[str]:
    "Quoted numbers of a markdown file (each naming its source with data-src) that the source does not show."
    bad = []
    for num, src in quoted_numbers(text):
        if src is None: bad.append(f"{num}: no data-src names the file it quotes"); continue
        if not number_in(num, (root / src).read_text()): bad.append(f"{num} not in {src}")
    return bad
