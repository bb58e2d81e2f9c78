"""The gRPC contract (proto/msaas/v1/separation.proto) agrees with its committed Python code and with the
options table, and covers every route of the REST API."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from msaas.options import SPECS
from msaas.v1 import separation_pb2 as pb
from rest import create_app
from support import ROOT

sys.path.insert(0, str(ROOT / "proto"))
import generate  # noqa: E402 - proto/generate.py, the Options message's writer

PROTO = "proto/msaas/v1/separation.proto"
GENERATED = ("separation_pb2.py", "separation_pb2.pyi", "separation_pb2_grpc.py")
# Every REST route (but the page, the health checks and metrics, which gRPC has its own standards for) and the
# RPC that does the same.
RPC_OF_ROUTE = {
    ("POST", "/apiv1/separate"): "Submit",
    ("GET", "/apiv1/queue"): "ListQueue",
    ("GET", "/apiv1/queue/"): "ListQueue",
    ("GET", "/apiv1/status/<songhash>"): "GetStatus",
    ("GET", "/apiv1/track/<songhash>/<track>"): "DownloadTrack",
    ("GET", "/apiv1/remove/<songhash>/<track>"): "RemoveTrack",
    ("DELETE", "/apiv1/remove/<songhash>/<track>"): "RemoveTrack",
    ("DELETE", "/apiv1/remove/<songhash>"): "RemoveSong",
    ("POST", "/apiv1/cancel/<songhash>"): "CancelSong",
    ("GET", "/apiv1/usage"): "GetUsage",
    ("GET", "/apiv1/models"): "ListModels",
    ("GET", "/apiv1/admin/dead"): "ListDeadLetters",
    ("DELETE", "/apiv1/admin/dead"): "PurgeDeadLetters",
    ("GET", "/apiv1/admin/dead/<entry_id>"): "GetDeadLetter",
    ("DELETE", "/apiv1/admin/dead/<entry_id>"): "PurgeDeadLetters",
    ("POST", "/apiv1/admin/dead/<entry_id>/retry"): "RetryDeadLetter",
    ("GET", "/apiv1/admin/usage"): "ListUsage",
    ("POST", "/apiv1/mix/<songhash>"): "RenderMix",
    ("GET", "/apiv1/waveform/<songhash>/<track>"): "GetWaveform",
}
NOT_RPCS = {"/", "/healthz", "/readyz", "/metrics", "/apiv1/openapi.json", "/static/<path:filename>"}


def test_committed_code_is_what_the_proto_generates(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", "-Iproto", f"--python_out={tmp_path}", f"--pyi_out={tmp_path}",
         f"--grpc_python_out={tmp_path}", PROTO],
        cwd=ROOT, capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    for name in GENERATED:
        fresh = (tmp_path / "msaas/v1" / name).read_text()
        assert fresh == (ROOT / "msaas/v1" / name).read_text(), f"msaas/v1/{name} is stale: run `make proto`"


def test_the_options_message_is_written_from_the_options_table():
    proto = (ROOT / PROTO).read_text()
    assert generate.generated(proto) == proto, "the proto's Options message is stale: run `make proto`"


def test_the_options_message_is_the_options_table():
    fields = {field.name: field for field in pb.Options.DESCRIPTOR.fields}
    assert list(fields) == [spec.name for spec in SPECS]
    field = pb.Options.DESCRIPTOR.fields[0]
    kinds = {str: field.TYPE_STRING, int: field.TYPE_INT32, float: field.TYPE_DOUBLE, bool: field.TYPE_BOOL}
    for spec in SPECS:
        assert fields[spec.name].type == kinds[spec.kind], spec.name
        assert fields[spec.name].has_presence, f"{spec.name}: unset must mean the default"
    proto = (ROOT / PROTO).read_text()
    for spec in SPECS:  # the documentation names every allowed value (or the catalogue, for the models), or the bounds
        block = proto[proto.index("message Options"):proto.index(f" {spec.name} = ")]
        if "catalogue" in spec.allowed():  # too many to name in a sentence (msaas/options.py Spec.allowed)
            assert "catalogue (GET /apiv1/models)" in " ".join(block.replace("//", "").split()), spec.name
        else:
            assert all(str(choice) in block for choice in spec.choices), spec.name
        assert all(f"{bound:g}" in block for bound in spec.bounds or ()), spec.name


def test_every_rest_route_has_its_rpc(settings):
    app = create_app(settings)
    routes = {(method, rule.rule) for rule in app.url_map.iter_rules() if rule.rule not in NOT_RPCS
              for method in rule.methods - {"HEAD", "OPTIONS"}}
    assert routes == set(RPC_OF_ROUTE)
    methods = {name for service in ("SeparationService", "AdminService")
               for name in pb.DESCRIPTOR.services_by_name[service].methods_by_name}
    assert set(RPC_OF_ROUTE.values()) | {"WatchStatus", "GetTrackLink"} == methods


def test_the_contract_is_documented_field_by_field():
    """Every message field and RPC has a comment above it, or is self-explanatory by name and listed here."""
    lines = (ROOT / PROTO).read_text().splitlines()
    obvious = {"songhash", "url", "STATE_UNSPECIFIED", "options", "state", "track", "cancelled", "delivered",
               "attempts", "callback", "header", "info"}
    undocumented = []
    for number, line in enumerate(lines):
        text = line.strip()
        is_field = text.endswith(";") and "=" in text and not text.startswith(("option", "syntax", "package"))
        is_rpc = text.startswith("rpc ")
        if not (is_field or is_rpc):
            continue
        name = text.split("=")[0].split()[-1] if is_field else text.split()[1].split("(")[0]
        if name not in obvious and not lines[number - 1].strip().startswith("//"):
            undocumented.append(name)
    assert not undocumented, undocumented


def test_generated_code_lives_in_the_package_the_cli_installs():
    pyproject = (ROOT / "pyproject.toml").read_text()
    assert '"msaas.v1"' in pyproject
    assert Path(pb.__file__).parent == ROOT / "msaas" / "v1"
