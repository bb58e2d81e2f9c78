"""Writes the tables of docs/api.md that the code defines: the options (msaas/options.py), the status fields
(msaas/shapes.py) and the errors (msaas/errors.py). Run by `make docs`; tests/test_docs.py fails while a committed
table is stale, as tests/test_rpc_contract.py does for the proto (proto/generate.py).

    .venv/bin/python docs/generate.py        # rewrites the tables in docs/*.md in place
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msaas import shapes  # noqa: E402
from msaas.errors import ERRORS  # noqa: E402
from msaas.options import SPECS  # noqa: E402

DOCS = ROOT / "docs"


def _cell(text: str) -> str:
    """Prose as one table cell: one line, and `<stem>` shown as written rather than read as HTML."""
    return " ".join(text.split()).replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


KINDS = {str: "string", int: "integer", float: "number", bool: "boolean"}  # as JSON and the OpenAPI document name them


def _value(value: object) -> str:
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value:g}`" if isinstance(value, float) else f"`{value}`"


def options_table() -> str:
    rows = ["| option | type | values | default | what it does |", "|---|---|---|---|---|"]
    for spec in SPECS:
        if spec.choices:
            values = ", ".join(_value(choice) for choice in spec.choices)
        elif spec.bounds:
            values = f"{_value(spec.bounds[0])} to {_value(spec.bounds[1])}"
        else:
            values = spec.allowed()
        default = ("the service's `DEMUCS_MODEL`" if spec.name == "model" else
                   "none" if spec.default is None else _value(spec.default))
        rows.append(f"| `{spec.name}` | {KINDS[spec.kind]} | {values} | {default} | {_cell(spec.help)} |")
    return "\n".join(rows)


def _shown_in(field: shapes.Field) -> str:
    """The states a status field is shown in, found by asking the field (its rule is a function)."""
    def song(state: str, filled: bool) -> shapes.SongState:
        callback = shapes.CallbackState("pending", False, 0, "pending") if filled else None
        return shapes.SongState("0" * 56, state, {}, (), reason="why" if filled else "", callback=callback)

    empty = [state for state in shapes.STATES if field.shown(song(state, False))]
    if empty == list(shapes.STATES):
        return "always"
    if empty:
        return ", ".join(f"`{state}`" for state in empty)
    return "when it has one"


def status_table() -> str:
    rows = ["| field (gRPC) | type | shown | meaning |", "|---|---|---|---|"]
    for field in shapes.FIELDS:
        name = f"`{field.name}`" + (f" (`{field.proto_name}`)" if field.proto_name != field.name else "")
        kind = field.schema["type"] + (", or null" if field.schema.get("nullable") else "")
        rows.append(f"| {name} | {kind} | {_shown_in(field)} | {_cell(field.description)} |")
    return "\n".join(rows)


def errors_table() -> str:
    rows = ["| `error` | HTTP | gRPC | `Retry-After` | when |", "|---|---|---|---|---|"]
    for error in ERRORS:
        retry = f"{error.retry_after} s" if error.retry_after is not None else ""
        rows.append(f"| `{error.code}` | {error.http_status} | `{error.grpc_code}` | {retry} | "
                    f"{_cell(error.__doc__ or '')} |")
    return "\n".join(rows)


# Each generated table: its name in the markers, the file it lives in, and how it is written.
TABLES = {
    "options": ("api.md", options_table, "msaas/options.py"),
    "status": ("api.md", status_table, "msaas/shapes.py"),
    "errors": ("api.md", errors_table, "msaas/errors.py"),
}


def begin(name: str) -> str:
    source = TABLES[name][2]
    return f"<!-- BEGIN {name}: generated from {source} by `make docs` (docs/generate.py); edit it there. -->"


def end(name: str) -> str:
    return f"<!-- END {name} -->"


def generated(text: str, names: list[str]) -> str:
    """`text` with each of its generated tables as the code says."""
    for name in names:
        start, stop = text.index(begin(name)) + len(begin(name)), text.index(end(name))
        text = text[:start] + "\n" + TABLES[name][1]() + "\n" + text[stop:]
    return text


def files() -> dict[Path, list[str]]:
    """Every document holding generated tables, with their names."""
    by_file: dict[Path, list[str]] = {}
    for name, (document, _, _) in TABLES.items():
        by_file.setdefault(DOCS / document, []).append(name)
    return by_file


if __name__ == "__main__":
    for path, names in files().items():
        path.write_text(generated(path.read_text(), names))
