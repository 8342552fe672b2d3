"""The one Jinja2 environment every page renders through: templates, CSS and JS in `loadgrid/templates/`.

Autoescape is on for every template, so any value a record carries reaches a page as text; Python hands the
templates plain data (strings, numbers, small dataclasses) and never markup. Undefined names fail loudly
(StrictUndefined) instead of rendering as blanks. CSS and JS are files beside the templates, inlined at render
time (`asset`), so every page stays one offline file.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import jinja2
from markupsafe import Markup

TEMPLATES = Path(__file__).with_name("templates")
_PLAIN_FILE = re.compile(r"[^/\\:]+")


def coord(value) -> str:
    """An SVG coordinate: a number with one decimal, whatever was passed (a non-number draws at 0)."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        return "0"
    return f"{v:.1f}" if math.isfinite(v) else "0"


def file_href(name) -> str | None:
    """A link target for a file beside the page: a plain relative path of plain names (no scheme, no absolute
    path, no '..'), URL-quoted; None for anything else, so it is shown as text and never followed."""
    if not isinstance(name, str) or not name or name.startswith(("/", "\\")):
        return None
    parts = name.split("/")
    if any(p in ("", ".", "..") or not _PLAIN_FILE.fullmatch(p) or p != p.strip() for p in parts):
        return None
    if any(ord(ch) < 32 for ch in name):
        return None
    return quote(name, safe="/")


@functools.lru_cache(maxsize=1)
def env() -> jinja2.Environment:
    e = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        autoescape=jinja2.select_autoescape(enabled_extensions=("html", "j2", "svg"), default_for_string=True,
                                            default=True),
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    e.filters["c"] = coord
    e.globals["asset"] = asset
    return e


@functools.cache
def _asset_text(name: str) -> str:
    return (TEMPLATES / name).read_text(encoding="utf-8")


def asset(name: str) -> Markup:
    """A CSS or JS file of the package, inlined into a style or script element (our own file, never record data)."""
    return Markup(_asset_text(name))


def render(template: str, **context) -> str:
    return env().get_template(template).render(**context)


def macro(template: str, name: str, *args, **kwargs) -> Markup:
    """One macro of a template, rendered: for the pieces of a page other code and tests use on their own."""
    return Markup(getattr(env().get_template(template).module, name)(*args, **kwargs))


# --- plain data the templates lay out -----------------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """A run of text in a cell or sentence, and how it is shown; the templates escape `text` and `tip`."""

    text: str
    kind: str = "text"  # text, b (bold), code, link (in-page or file, `href`), small (own line), tip, badge
    href: str = ""  # link: "#anchor" or a file name passed through `file_href`; "" shows the text only
    tip: str = ""  # tip: the hover text
    small: str = ""  # tip: a second, small line inside the hover


@dataclass(frozen=True)
class Cell:
    parts: tuple[Piece, ...]
    sort: object = None  # data-v: what the table sorts by (None: its text)
    cls: str = ""


@dataclass(frozen=True)
class Row:
    cells: tuple[Cell, ...]
    id: str = ""
    cls: str = ""


@dataclass(frozen=True)
class Table:
    head: tuple[tuple[str, bool], ...]  # heading, aligned left
    rows: tuple[Row, ...]
    css: str = "sortable"


def text(value) -> Piece:
    return Piece(str(value))


def parts(*items) -> tuple[Piece, ...]:
    """Pieces from pieces, plain values (shown as text) and tuples or lists of pieces."""
    out: list[Piece] = []
    for item in items:
        if isinstance(item, Piece):
            out.append(item)
        elif isinstance(item, (tuple, list)):
            out += parts(*item)
        elif item is not None and item != "":
            out.append(Piece(str(item)))
    return tuple(out)


def cell(*items, sort=None, cls: str = "") -> Cell:
    return Cell(parts(*items), sort, cls)


def file_link(label, name) -> Piece:
    """A link to a file beside the page when `name` is a plain relative file name, else the label as text."""
    href = file_href(name)
    return Piece(str(label), "link", href) if href else Piece(str(label))


def joined(pieces: list, sep: str = ", ") -> tuple[Piece, ...]:
    out: list = []
    for i, p in enumerate(pieces):
        if i:
            out.append(sep)
        out.append(p)
    return parts(*out)
