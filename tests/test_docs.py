"""The documents (README.md, docs/*.md) say what the code does: every link and anchor resolves, every path and `make`
target they name exists, the tables generated from the code are current (`make docs`), and the tables written by hand
(settings, metrics, routes, RPCs, exit codes, error codes, tests, benchmarks, folders) list what the code has."""

from __future__ import annotations

import ast
import importlib.util
import re
import subprocess
from pathlib import Path

import pytest
import redis
from test_rpc_contract import NOT_RPCS, RPC_OF_ROUTE

from msaas.cli import exits
from msaas.jobqueue import JobQueue
from msaas.settings import FIELDS, Settings
from msaas.tenants import Tenants
from msaas.v1 import separation_pb2 as pb
from rest.metrics import QueueDepths, RestMetrics
from rpc.metrics import RpcMetrics
from support import ROOT
from worker.metrics import WorkerMetrics

# docs/generate.py, under a name of its own: proto/generate.py is imported as `generate` (tests/test_rpc_contract.py).
_spec = importlib.util.spec_from_file_location("docs_generate", ROOT / "docs" / "generate.py")
generate = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate)

DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
# Paths in code spans under the repository's own folders; those with placeholders (<songhash>, *, {a,b}) are patterns.
PATH = re.compile(r"`((?:\.ci|bench|data|deploy|devstack|docs|logs|minio|msaas|proto|redis|requirements|rest|rpc|tests"
                  r"|worker)/[^`\s]*)`")
MAKE_TARGET = re.compile(r"`make (\w+)")


def prose(text: str) -> str:
    """`text` without its fenced code blocks (examples, not claims about links)."""
    return re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)


def slug(heading: str) -> str:
    """The anchor GitHub gives a heading."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(text: str) -> set[str]:
    found: set[str] = set()
    for heading in re.findall(r"^#{1,6} (.+)$", prose(text), flags=re.M):
        name, number = slug(heading), 0
        while (name if not number else f"{name}-{number}") in found:
            number += 1
        found.add(name if not number else f"{name}-{number}")
    return found


def section(text: str, heading: str) -> str:
    """The text under `heading` (its exact words) up to the next heading of its level or above."""
    match = re.search(rf"^(#+) {re.escape(heading)}$", text, flags=re.M)
    assert match, f"no heading {heading!r}"
    level = len(match[1])
    end = re.search(rf"^#{{1,{level}}} ", text[match.end():], flags=re.M)
    return text[match.end():match.end() + end.start()] if end else text[match.end():]


def rows(text: str) -> list[list[str]]:
    """The body rows of every table in `text`, each a list of its cells (headers and separators left out)."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    found = []
    for index, line in enumerate(lines):
        is_separator = re.fullmatch(r"\|[-| :]+\|", line)
        is_header = index + 1 < len(lines) and re.fullmatch(r"\|[-| :]+\|", lines[index + 1])
        if not (is_separator or is_header):
            found.append([cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]])
    return found


def code_spans(cell: str) -> list[str]:
    return re.findall(r"`([^`]+)`", cell)


def read(name: str) -> str:
    return (ROOT / name).read_text()


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_link_and_anchor_resolves(document):
    text = document.read_text()
    broken = []
    for target in LINK.findall(prose(text)):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not ours to check
            continue
        path, _, anchor = target.partition("#")
        resolved = (document.parent / path).resolve() if path else document
        if not resolved.exists():
            broken.append(f"{target}: no file {path}")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved.read_text()):
            broken.append(f"{target}: no heading #{anchor} in {resolved.relative_to(ROOT)}")
    assert not broken, broken


@pytest.mark.parametrize("document", DOCUMENTS, ids=lambda path: path.name)
def test_every_path_and_make_target_named_exists(document):
    text = document.read_text()
    missing = [path for path in PATH.findall(text)
               if not re.search(r"[<>*{}]", path) and not (ROOT / path.rstrip("/")).exists()]
    assert not missing, f"{document.name} names files that are not there: {missing}"
    targets = set(re.findall(r"^([\w-]+):", read("Makefile"), flags=re.M))
    assert set(MAKE_TARGET.findall(text)) <= targets, f"{document.name}: no such make target"


def test_the_readme_is_short():
    """What it is, the two commands, a first request, where to read next; the rest is in docs/."""
    assert len(read("README.md").splitlines()) <= 160


def test_the_generated_tables_are_current():
    for path, names in generate.files().items():
        text = path.read_text()
        assert generate.generated(text, names) == text, f"{path.name}: a table is stale: run `make docs`"


def test_the_settings_tables_list_every_setting_with_its_default():
    listed = [row for row in rows(section(read("docs/operations.md"), "Settings")) if row[0].startswith("`")]
    names = [code_spans(row[0])[0] for row in listed]
    assert len(names) == len(set(names)), "a setting is listed twice"
    assert set(names) == set(FIELDS)
    defaults = {name: getattr(Settings(), name.lower()) for name in FIELDS}
    wrong = []
    for name, row in zip(names, listed, strict=True):
        value, cell = defaults[name], row[1]
        if value is None or value == "":  # no value: the cell says in words what happens
            if cell.startswith("`"):
                wrong.append(f"{name}: {cell!r}, but it has no default")
            continue
        shown = str(value).lower() if isinstance(value, bool) else f"{value:g}" if isinstance(value, float) else value
        if not cell.startswith(f"`{shown}`"):
            wrong.append(f"{name}: {cell!r}, but the code's default is {shown}")
    assert not wrong, wrong


def test_the_metrics_table_lists_every_metric_and_who_serves_it(tmp_path):
    queue = JobQueue(redis.Redis(), "toWorker", "htdemucs")  # no connection is made: nothing is scraped
    served: dict[str, set[str]] = {}
    rest = RestMetrics(queue, Tenants(None), tmp_path).registry.collect()
    for service, families in (("rest", [*rest, *QueueDepths.describe(QueueDepths(queue))]),
                              ("worker", WorkerMetrics().registry.collect()), ("rpc", RpcMetrics().registry.collect())):
        for family in families:
            served.setdefault(family.name, set()).add(service)
    documented = {}
    for row in rows(section(read("docs/operations.md"), "Metrics")):
        name = code_spans(row[0])[0].split("{")[0].removesuffix("_total")
        documented[name] = set(row[1].replace(" ", "").split(","))
    assert documented == served


def test_the_route_table_lists_every_rest_route():
    documented = set()
    for row in rows(section(read("docs/api.md"), "Routes")):
        for method in row[0].split(", "):
            documented |= {(method, path) for path in code_spans(row[1])}
    routes = set(RPC_OF_ROUTE) | {("GET", path) for path in NOT_RPCS}
    assert documented == routes


def test_the_rpc_tables_list_every_rpc():
    text = section(read("docs/api.md"), "gRPC")
    for service in ("SeparationService", "AdminService"):
        table = text[text.index(f"| `{service}` RPC |"):]
        table = table[:table.index("\n\n")]
        documented = {code_spans(row[0])[0] for row in rows(table)}
        assert documented == set(pb.DESCRIPTOR.services_by_name[service].methods_by_name), service


def test_the_exit_code_table_is_the_commands():
    documented = {int(row[0]) for row in rows(section(read("docs/api.md"), "The `msaas` command")) if row[0].isdigit()}
    assert documented == {value for name, value in vars(exits).items() if name.isupper() and isinstance(value, int)}


# Codes the source spells in parts: rest/api.py's `_count_arg("limit", ...)` answers `invalid_{name}`.
COMPOSED_CODES = {"invalid_limit": ("rest/api.py", '_count_arg("limit"')}


def test_every_error_code_listed_is_one_the_code_answers():
    source = "\n".join(path.read_text() for folder in ("msaas", "rest", "rpc", "worker")
                       for path in (ROOT / folder).rglob("*.py"))
    codes = [code for row in rows(section(read("docs/api.md"), "Errors")) for code in code_spans(row[1])
             if re.fullmatch(r"[a-z_]+", code)]
    assert len(codes) > 20
    unknown = [code for code in codes if f'"{code}"' not in source
               and not (code in COMPOSED_CODES and COMPOSED_CODES[code][1] in read(COMPOSED_CODES[code][0]))]
    assert not unknown, unknown


def test_every_test_file_and_benchmark_is_listed():
    development = read("docs/development.md")
    tests = {code_spans(row[0])[0] for row in rows(section(development, "Tests")) if row[0].startswith("`tests/")}
    assert tests == {f"tests/{path.name}" for path in (ROOT / "tests").glob("test_*.py")}
    # Read, not imported: bench/run.py rewrites sys.path[0] when imported.
    (benchmarks,) = [node.value for node in ast.parse(read("bench/run.py")).body
                     if isinstance(node, ast.AnnAssign) and ast.unparse(node.target) == "BENCHMARKS"]
    listed = {code_spans(row[0])[0] for row in rows(section(development, "Benchmarks"))}
    assert listed == {key.value for key in benchmarks.keys}


def test_every_folder_is_in_the_layout():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    folders = {"/".join(parts[:depth]) + "/" for parts in (Path(path).parts for path in tracked)
               for depth in (1, 2) if len(parts) > depth}
    layout = {span for row in rows(section(read("docs/development.md"), "Layout")) for span in code_spans(row[0])}
    assert folders <= layout, sorted(folders - layout)
