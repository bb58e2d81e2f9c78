"""`msaas`, the command line of Music Separation as a Service: upload songs, follow them, fetch their stems.

Standard library only. The server is `--server`, else `$MSAAS_URL`, else http://localhost:5000; an API key,
when the server wants one, comes from `$MSAAS_API_KEY`. Exit codes (README, "Command line"):
0 success, 1 a bug here, 2 usage (bad arguments or options the server refused), 3 the server failed or could not
be reached, 4 the song failed to separate, 5 timed out waiting, 6 no such song or track.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from msaas.cli import commands
from msaas.cli.client import Client
from msaas.cli.exits import INTERRUPTED, Failure
from msaas.jobs import FORMATS, MODEL_TRACKS, MP3_BITRATES, SIX_STEMS

DEFAULT_SERVER = "http://localhost:5000"


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--server", help=f"the REST service (default: $MSAAS_URL or {DEFAULT_SERVER})")
    common.add_argument("--json", action="store_true", help="print one JSON object on stdout, errors included")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress on stderr")
    selection = argparse.ArgumentParser(add_help=False)
    selection.add_argument("--model", choices=list(MODEL_TRACKS), help="Demucs model (default: the server's)")
    selection.add_argument("--two-stems", choices=list(SIX_STEMS), help="only STEM and no_STEM")
    selection.add_argument("--format", choices=list(FORMATS), help="tracks' format (default mp3)")
    selection.add_argument("--mp3-bitrate", type=int, choices=MP3_BITRATES, help="kbit/s (default 320)")

    main_parser = argparse.ArgumentParser(prog="msaas", description="Split songs into stems with Demucs, remotely.")
    sub = main_parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    run = sub.add_parser("separate", parents=[common, selection], help="upload a song, wait, save its stems")
    run.add_argument("song", help="an MP3 file")
    run.add_argument("--out", help="folder for the stems (default: separated/<song name>)")
    run.add_argument("--no-wait", action="store_true", help="print the songhash once queued and exit")
    run.add_argument("--timeout", type=float, help="give up waiting after this many seconds (exit 5)")
    run.add_argument("--interval", type=float, default=1.0, help="seconds between status checks (default 1)")
    status = sub.add_parser("status", parents=[common, selection], help="where a song stands")
    status.add_argument("songhash")
    sub.add_parser("queue", parents=[common], help="songs waiting for a worker, next first")
    get = sub.add_parser("get", parents=[common, selection], help="download one track")
    get.add_argument("songhash")
    get.add_argument("track", help="vocals, drums, bass, other, ... or no_<stem>; an extension picks the format")
    get.add_argument("--out", help="file or folder to save to; - for stdout (default: <songhash>-<track>.<ext>)")
    remove = sub.add_parser("rm", parents=[common, selection], help="remove a song (everything) or one track")
    remove.add_argument("songhash")
    remove.add_argument("track", nargs="?")
    return main_parser


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    server = args.server or os.environ.get("MSAAS_URL") or DEFAULT_SERVER
    client = Client(server, os.environ.get("MSAAS_API_KEY", ""))
    command = {
        "separate": commands.separate, "status": commands.status, "queue": commands.queue,
        "get": commands.get, "rm": commands.remove,
    }[args.command]
    try:
        return command(args, client)
    except Failure as failure:  # the client's own, and the server's errors (ApiError)
        return fail(args, failure.code, failure.message, failure.exit_code)
    except KeyboardInterrupt:
        return fail(args, "interrupted", "interrupted", INTERRUPTED)


def fail(args: argparse.Namespace, code: str, message: str, exit_code: int) -> int:
    """One line on stderr, `msaas: <code>: <message>`; with --json, an object on stdout instead."""
    if args.json:
        print(json.dumps({"error": code, "message": message, "exit_code": exit_code}))
    else:
        print(f"msaas: {code}: {message}", file=sys.stderr)
    return exit_code
