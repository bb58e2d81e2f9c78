"""`msaas`, the command line of Music Separation as a Service: upload songs, follow them, fetch their stems.

Standard library only (a grpc:// server needs grpcio: msaas/cli/grpc_client.py). The server is `--server`, else
`$MSAAS_URL`, else http://localhost:5000; an API key, when the server wants one, comes from `$MSAAS_API_KEY`.
Exit codes (docs/api.md, "The `msaas` command"):
0 success, 1 a bug here, 2 usage (bad arguments or options the server refused), 3 the server failed or could not
be reached, 4 the song failed to separate, 5 timed out waiting, 6 no such song or track.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.parse

from msaas.cli import commands, mixing
from msaas.cli.client import Client
from msaas.cli.exits import BUG, INTERRUPTED, SERVER, USAGE, Failure
from msaas.options import SPECS

DEFAULT_SERVER = "http://localhost:5000"
SCHEMES = ("http", "https", "grpc")


def global_options(parser: argparse.ArgumentParser, default: object) -> None:
    """--server, --json and -q, accepted before the command (as kubectl, docker and gh take them) and after it;
    after it, `default` is SUPPRESS so an option given before is not reset."""
    parser.add_argument("--server", default=default if default is argparse.SUPPRESS else None,
                        help=f"the REST service, or grpc://host:50051 for the gRPC one "
                             f"(default: $MSAAS_URL or {DEFAULT_SERVER})")
    parser.add_argument("--json", action="store_true", default=default if default is argparse.SUPPRESS else False,
                        help="print one JSON object on stdout, errors included")
    parser.add_argument("-q", "--quiet", action="store_true",
                        default=default if default is argparse.SUPPRESS else False, help="no progress on stderr")


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    global_options(common, argparse.SUPPRESS)
    selection = argparse.ArgumentParser(add_help=False)
    for spec in SPECS:  # the options table: one flag per option
        flag = "--" + spec.name.replace("_", "-")
        if spec.kind is bool:
            selection.add_argument(flag, action="store_const", const=True, help=spec.help)
            continue
        selection.add_argument(
            flag, type=spec.kind, choices=spec.choices or None,
            help=f"{spec.help} (default: {'the server' if spec.default is None else spec.default})",
        )

    main_parser = argparse.ArgumentParser(prog="msaas", description="Split songs into stems with Demucs, remotely.")
    global_options(main_parser, None)
    sub = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("separate", parents=[common, selection], help="upload a song, wait, save its stems")
    run.add_argument("song", help="an MP3 file")
    run.add_argument("--out", help="folder for the stems (default: separated/<song name>)")
    run.add_argument("--no-wait", action="store_true", help="print the songhash once queued and exit")
    run.add_argument("--timeout", type=float, help="give up waiting after this many seconds (exit 5)")
    run.add_argument("--interval", type=float, default=1.0, help="seconds between status checks (default 1)")
    status = sub.add_parser("status", parents=[common, selection], help="where a song stands")
    status.add_argument("songhash")
    listing = sub.add_parser("queue", parents=[common], help="your songs queued or processing, with their places")
    listing.add_argument("--cursor", help="one page, from where an earlier listing's `next` left off")
    sub.add_parser("usage", parents=[common], help="what your key's tenant has used")
    admin = sub.add_parser("admin", parents=[common], help="with an admin key: dead letters, every tenant's usage")
    admin_sub = admin.add_subparsers(dest="admin_command", required=True, metavar="WHAT")
    admin_sub.add_parser("usage", parents=[common], help="every tenant's usage")
    dead = admin_sub.add_parser("dead", parents=[common], help="jobs that will not be retried")
    dead.add_argument("dead_action", choices=("ls", "show", "retry", "purge"))
    dead.add_argument("entry", nargs="?", help="a dead letter's id (from `ls`)")
    dead.add_argument("--all", action="store_true", help="purge: every dead letter")
    get = sub.add_parser("get", parents=[common, selection], help="download one track")
    get.add_argument("songhash")
    get.add_argument("track", help="vocals, drums, bass, other, ... or no_<stem>; an extension picks the format")
    get.add_argument("--out", help="file or folder to save to; - for stdout (default: <songhash>-<track>.<ext>)")
    remove = sub.add_parser("rm", parents=[common, selection],
                            help="remove a song (everything; its queued or running jobs are cancelled) or one track")
    remove.add_argument("songhash")
    remove.add_argument("track", nargs="?")
    cancel = sub.add_parser("cancel", parents=[common], help="stop a song's queued and running jobs; results stay")
    cancel.add_argument("songhash")
    mixing.add_parser(sub, [common, selection])
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    command = {
        "separate": commands.separate, "status": commands.status, "queue": commands.queue,
        "get": commands.get, "rm": commands.remove, "cancel": commands.cancel, "usage": commands.usage,
        "admin": commands.admin, "mix": mixing.mix,
    }[args.command]
    try:
        client = client_for(server_url(args.server or os.environ.get("MSAAS_URL") or DEFAULT_SERVER),
                            os.environ.get("MSAAS_API_KEY", ""))
        return command(args, client)
    except Failure as failure:  # the client's own, and the server's errors (ApiError)
        return fail(args, failure.code, failure.message, failure.exit_code)
    except KeyboardInterrupt:
        return fail(args, "interrupted", "interrupted", INTERRUPTED)
    except OSError as error:  # a local file or folder: --out that cannot be made or written, a song unreadable
        where = f"{error.filename}: " if error.filename else ""
        return fail(args, "file_error", f"{where}{error.strerror or error}", USAGE)
    except (KeyError, TypeError, AttributeError) as error:  # an answer without the fields the API promises
        return fail(args, "bad_answer", f"the server's answer lacks what the API promises ({error!r})", SERVER)
    except Exception as error:  # a bug here: still one line, and its own exit code
        return fail(args, "bug", f"{type(error).__name__}: {error} (please report it)", BUG)


def server_url(value: str) -> str:
    """`--server` as a base URL; a bare host:port means http. Usage error for anything else."""
    url = value if "://" in value else f"http://{value}"
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a malformed port
        valid = parts.scheme in SCHEMES and bool(parts.hostname) and not (parts.query or parts.fragment)
        valid = valid and not (parts.scheme == "grpc" and parts.path not in ("", "/"))  # a gRPC target has no path
    except ValueError:
        valid = False
    if not valid:
        raise Failure("usage", f"--server {value!r} is not an http(s) URL such as http://localhost:5000 "
                               "(or grpc://host:50051)", USAGE)
    return url


def client_for(url: str, api_key: str):
    """REST's client, standard library only; for grpc://, the gRPC one, which needs grpcio (imported only then)."""
    if not url.startswith("grpc://"):
        return Client(url, api_key)
    try:
        from msaas.cli.grpc_client import GrpcClient
    except ImportError as error:
        raise Failure("usage", f"a grpc:// server needs grpcio and protobuf (pip install -r requirements/rpc.txt): "
                               f"{error}", USAGE) from None
    return GrpcClient(url, api_key)


def fail(args: argparse.Namespace, code: str, message: str, exit_code: int) -> int:
    """One line on stderr, `msaas: <code>: <message>`; with --json, an object on stdout instead."""
    if args.json:
        print(json.dumps({"error": code, "message": message, "exit_code": exit_code}))
    else:
        print(f"msaas: {code}: {message}", file=sys.stderr)
    return exit_code
