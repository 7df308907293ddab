"""The one place where text becomes HTML: every user string (run names, descriptions, config
values, paths, claims) reaches the page through :func:`esc`, :func:`tag` or :func:`script_json`.

    tag("td", run.name)                         # text is escaped, always
    tag("a", "run 3", href="#run-3")            # attribute values too
    Markup("<br>")                              # trusted markup written by groklab itself only

Building pages only from ``tag`` makes forgetting to escape impossible rather than unlikely: a
plain ``str`` child is text, whatever it contains.
"""
from __future__ import annotations

import html
import json
import math
from typing import Any, Iterable


class Markup(str):
    """A string that is already HTML (written by groklab, or escaped)."""


def esc(value: Any) -> Markup:
    """Text → HTML text (``<``, ``>``, ``&``, quotes escaped); Markup passes through unchanged."""
    if isinstance(value, Markup):
        return value
    return Markup(html.escape("" if value is None else str(value), quote=True))


def _children(items: Iterable[Any]) -> str:
    out = []
    for c in items:
        if c is None:
            continue
        if isinstance(c, (list, tuple)):
            out.append(_children(c))
        else:
            out.append(esc(c))
    return "".join(out)


VOID = frozenset({"input", "meta", "br", "hr", "img", "link"})  # elements without an end tag


def _attrs(attrs: dict[str, Any]) -> str:
    parts = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        parts.append(f" {key}" if value is True else f' {key}="{esc(value)}"')
    return "".join(parts)


def tag(name: str, *children: Any, **attrs: Any) -> Markup:
    """``<name attrs>children</name>``. Attribute names come from code (``class_`` → ``class``,
    ``data_run`` → ``data-run``); True renders a bare attribute, False/None omits it."""
    open_ = f"<{name}{_attrs(attrs)}>" if attrs else f"<{name}>"
    if name in VOID:
        return Markup(open_)
    return Markup(f"{open_}{_children(children)}</{name}>")


def _finite_or_none(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


def plain(value: Any) -> Any:
    """JSON-safe copy: NaN/inf → None (JSON.parse rejects them), numpy scalars → Python."""
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        # fast path for the long number lists of curves
        if all(v is None or type(v) in (int, float) for v in value):
            return [_finite_or_none(v) for v in value]
        return [plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    return _finite_or_none(value)


def script_json(obj: Any) -> Markup:
    """JSON for a ``<script type="application/json">`` block: ``<``, ``>``, ``&`` and the JS line
    separators as \\u escapes, so no value can close the script element or open a comment."""
    text = json.dumps(plain(obj), separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    for ch, rep in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"), ("\u2028", "\\u2028"),
                    ("\u2029", "\\u2029")):
        text = text.replace(ch, rep)
    return Markup(text)


def label(value: Any) -> str:
    """A user string for a Plotly label (legend, title, hover): Plotly reads labels as a small
    HTML dialect and decodes entities, so the HTML escape makes it show as literal text."""
    return str(esc(value))
