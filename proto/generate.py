"""Writes the proto's `Options` message from the options table (msaas/options.py): run by `make proto` before protoc,
and checked by tests/test_rpc_contract.py, so the proto never drifts from the table.

    .venv/bin/python proto/generate.py        # rewrites proto/msaas/v1/separation.proto in place
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from msaas.options import SPECS, Spec, text  # noqa: E402

PROTO = ROOT / "proto" / "msaas" / "v1" / "separation.proto"
BEGIN = "// BEGIN Options: generated from msaas/options.py by `make proto` (proto/generate.py); edit the table there."
END = "// END Options"
TYPES = {str: "string", int: "int32", float: "double", bool: "bool"}


def field(spec: Spec) -> str:
    default = "the service's DEMUCS_MODEL" if spec.name == "model" else (
        "none" if spec.default is None else text(spec.default))
    words = f"{spec.help}: {spec.allowed()}; default: {default}."
    comment = textwrap.wrap(words, 110, initial_indent="  // ", subsequent_indent="  // ")
    return "\n".join([*comment, f"  optional {TYPES[spec.kind]} {spec.name} = {spec.number};"])


def options_message() -> str:
    numbers = [spec.number for spec in SPECS]
    if len(set(numbers)) != len(numbers) or 0 in numbers:
        raise SystemExit("every option needs a field number of its own (msaas/options.py)")
    return "\n".join([BEGIN, "message Options {", *(field(spec) for spec in SPECS), "}", END])


def generated(proto: str) -> str:
    """The proto with its Options message as the table says."""
    start, end = proto.index(BEGIN), proto.index(END) + len(END)
    return proto[:start] + options_message() + proto[end:]


if __name__ == "__main__":
    PROTO.write_text(generated(PROTO.read_text()))
