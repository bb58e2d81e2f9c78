"""`msaas mix song.mp3 --mute vocals --gain drums=-6`: a mix of a song's tracks, rendered by the server (docs/mixes.md).
A song given as a file is separated first unless the server has it done already (it is looked up by its
songhash, so nothing is uploaded again); a songhash names a song submitted before."""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

from msaas.cli.client import ApiError, Client
from msaas.cli.commands import emit, options_of, save_into, wait
from msaas.cli.exits import OK, SONG_FAILED, USAGE, Failure
from msaas.cli.progress import Progress, describe
from msaas.naming import FORMATS
from msaas.options import SAMPLE_FORMATS, SPECS
from msaas.recipes import PRESETS

SONGHASH = re.compile(r"[0-9a-fA-F]{56}")


def add_parser(sub: argparse._SubParsersAction, parents: list[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("mix", parents=parents, help="a mix of a song's tracks, each at a gain or muted, "
                                                         "rendered by the server")
    parser.add_argument("song", help="an MP3 file (separated first, unless it is already), or a songhash")
    parser.add_argument("--gain", action="append", default=[], metavar="TRACK=DB",
                        help="a track's gain in decibels, -120 to 24, e.g. drums=-6 (repeatable)")
    parser.add_argument("--mute", action="append", default=[], metavar="TRACK", help="leave a track out (repeatable)")
    parser.add_argument("--preset", help=PRESETS)
    parser.add_argument("--mix-format", choices=tuple(FORMATS),
                        help="the mix's format (default: --out's extension, else mp3)")
    bitrates = next(spec.choices for spec in SPECS if spec.name == "mp3_bitrate")
    parser.add_argument("--mix-bitrate", type=int, choices=bitrates, help="kbit/s of an MP3 mix (default 320)")
    parser.add_argument("--mix-sample-format", choices=SAMPLE_FORMATS, help="a WAV mix's samples (default int16)")
    parser.add_argument("--out", help="file to save the mix to; - for stdout (default: <song>-<preset or mix>.<ext>)")
    parser.add_argument("--link", action="store_true", help="print a link to the mix (valid 15 minutes) instead")
    parser.add_argument("--timeout", type=float, help="give up waiting for the separation after this many seconds")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between status checks (default 1)")


def recipe_of(args: argparse.Namespace) -> dict[str, object]:
    """The recipe the flags ask for, as the mix route's JSON body; the server judges the values."""
    gains = {}
    for given in args.gain:
        track, equals, value = given.partition("=")
        try:
            gains[track.strip()] = float(value)
        except ValueError:
            equals = ""
        if not equals or not track.strip():
            raise Failure("usage", f"--gain {given!r} is not TRACK=DECIBELS, such as drums=-6", USAGE)
    extension = Path(args.out).suffix.lstrip(".").lower() if args.out and args.out != "-" else ""
    recipe: dict[str, object] = {"gains": gains, "mute": args.mute, "preset": args.preset,
                                 "format": args.mix_format or (extension if extension in FORMATS else None),
                                 "mp3_bitrate": args.mix_bitrate, "sample_format": args.mix_sample_format}
    return {name: value for name, value in recipe.items() if value not in (None, [], {})}


def mix(args: argparse.Namespace, client: Client) -> int:
    recipe = recipe_of(args)
    options = options_of(args)
    songhash, name = _song(args, client, options)
    if args.link:
        answer = client.mix_link(songhash, options, recipe)
        emit(args, answer, answer["url"])
        return OK
    if args.out == "-":
        client.mix(songhash, options, recipe, sys.stdout.buffer)
        return OK
    target = Path(args.out) if args.out else Path(f"{name}-{args.preset or 'mix'}.{recipe.get('format', 'mp3')}")
    described: dict = {}
    save_into(target, lambda file: described.update(client.mix(songhash, options, recipe, file)))
    emit(args, {"hash": songhash, "path": str(target), **described}, str(target))
    return OK


def _song(args: argparse.Namespace, client: Client, options: dict[str, str]) -> tuple[str, str]:
    """(songhash, a name for the mix's file) of a song done on the server, separating it first if need be."""
    song = Path(args.song)
    if not song.is_file():
        if not SONGHASH.fullmatch(args.song):
            raise Failure("usage", f"{args.song}: no such file, and not a songhash", USAGE)
        return args.song.lower(), args.song.lower()
    digest = hashlib.sha224()
    with song.open("rb") as file:
        while chunk := file.read(1 << 20):
            digest.update(chunk)
    songhash = digest.hexdigest()
    try:
        state = client.status(songhash, options)["state"]
    except ApiError as error:
        if error.status != 404:
            raise
        state = None
    progress = Progress(sys.stderr, song.name, args.quiet)
    if state in (None, "failed", "cancelled"):
        progress.note(f"{client.separate(song, options)['reason']} (songhash {songhash})")
    if state != "done":
        status = wait(client, songhash, options, progress, args.timeout, args.interval)
        if status["state"] != "done":
            raise Failure(f"song_{status['state']}", f"song {songhash} {describe(status)}", SONG_FAILED)
    return songhash, song.stem
