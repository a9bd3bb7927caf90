"""The Sphinx extension of the documentation site: the package's docstrings and docments, written in the notebooks'
Markdown ($math$, `code`), turned into reST for autodoc, with each parameter's comment as a :param: field."""
from __future__ import annotations

import re

_MATH = re.compile(r"(\$\$.+?\$\$|(?<![\\$])\$[^$\n]+?\$)")  # display or inline math, as the notebooks write it
_CODE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")  # a Markdown code span
_SPECIAL = re.compile(r"([|*_\\])")  # characters that start reST markup (substitutions, emphasis, targets, escapes)


def _plain(text: str) -> str:
    "Text outside math: code spans as inline literals, the rest with reST's markup characters escaped."
    out, last = [], 0
    for m in _CODE.finditer(text):
        out.append(_SPECIAL.sub(r"\\\1", text[last:m.start()]))
        out.append(f"``{m.group(1)}``" if "``" not in m.group(1) else m.group(0))
        last = m.end()
    out.append(_SPECIAL.sub(r"\\\1", text[last:]))
    return "".join(out)


def to_rst(text: str) -> str:
    "Markdown-ish docstring text as reST: $...$ and $$...$$ as :math:, `code` as a literal, nothing else marked up."
    parts = _MATH.split(text)
    return "".join(f":math:`{p.strip('$').strip()}`" if i % 2 else _plain(p) for i, p in enumerate(parts))


def _docstring(app, what, name, obj, options, lines):
    lines[:] = to_rst("\n".join(lines)).splitlines()
    if what not in ("function", "method", "class"): return
    try:
        from fastcore.docments import docments
        notes = docments(obj.__init__ if what == "class" else obj)
    except Exception:  # builtins, C functions and the like have no source to read comments from
        return
    fields = [f":param {k}: {to_rst(v)}" for k, v in notes.items() if v and k not in ("return", "self")]
    if notes.get("return"): fields.append(f":returns: {to_rst(notes['return'])}")
    if fields: lines.extend(["", *fields])


def setup(app):
    app.connect("autodoc-process-docstring", _docstring)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
