"""What each `msaas` command does. Results go to stdout (plain, or one JSON object with --json); progress and
notes go to stderr, so `$(msaas separate --no-wait song.mp3)` is just the songhash."""

from __future__ import annotations

import argparse
import json
import sys
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from msaas.cli.client import Client
from msaas.cli.exits import OK, SONG_FAILED, TIMEOUT, USAGE, Failure
from msaas.cli.progress import Progress, describe
from msaas.options import SPECS, text

FINAL_STATES = ("done", "failed", "cancelled")


def emit(args: argparse.Namespace, result: dict, text: str) -> None:
    print(json.dumps(result) if args.json else text)


def options_of(args: argparse.Namespace) -> dict[str, str]:
    """The chosen options as the API's query parameters; the server's defaults for the rest."""
    chosen = {spec.name: getattr(args, spec.name) for spec in SPECS}
    return {name: text(value) for name, value in chosen.items() if value is not None}


def named_by(answer: dict, asked: dict[str, str]) -> dict[str, str]:
    """The options the result is named by, from the submission's answer (a preview's range, as the server chose
    it), else those asked with (a server that does not say)."""
    options = answer.get("options")
    if not isinstance(options, dict):
        return asked
    return {name: text(value) for name, value in options.items() if value is not None and name != "preview"}


def separate(args: argparse.Namespace, client: Client) -> int:
    song = Path(args.song)
    if not song.is_file():
        raise Failure("usage", f"{song}: no such file", USAGE)
    answer = client.separate(song, options_of(args))
    songhash, options = answer["hash"], named_by(answer, options_of(args))
    if args.no_wait:
        emit(args, answer, songhash)
        return OK
    progress = Progress(sys.stderr, song.name, args.quiet)
    progress.note(f"{answer['reason']} (songhash {songhash})")
    status = wait(client, songhash, options, progress, args.timeout, args.interval)
    if status["state"] != "done":
        raise Failure(f"song_{status['state']}", f"song {songhash} {describe(status)}", SONG_FAILED)
    folder = Path(args.out) if args.out else Path("separated") / song.stem
    folder.mkdir(parents=True, exist_ok=True)
    saved = {}
    for track, url in status["tracks"].items():
        saved[track] = str(save(client, url, folder / Path(urllib.parse.urlsplit(url).path).name))
    progress.note(f"done: {len(saved)} tracks in {folder}")
    emit(args, {"hash": songhash, "state": "done", "tracks": saved}, "\n".join(saved.values()))
    return OK


def wait(
    client: Client, songhash: str, options: dict[str, str], progress: Progress, timeout: float | None, interval: float
) -> dict:
    """Follow the song's status until it is done or failed, showing each step: polled every `interval` seconds
    over REST, pushed by the server over gRPC."""
    status: dict = {}
    for status in client.watch(songhash, options, interval, timeout):
        progress.update(status)
        if status["state"] in FINAL_STATES:
            return status
    raise Failure(
        "timeout", f"song {songhash} still {describe(status)} after {timeout:g} s; it goes on: "
        f"`msaas status {songhash}`", TIMEOUT,
    )


def save(client: Client, url: str, path: Path) -> Path:
    """Download into `path`, via a partial file, so a failed download never leaves a truncated track."""
    return save_into(path, lambda file: client.download(url, file))


def save_into(path: Path, fill: Callable[[BinaryIO], object]) -> Path:
    """`fill` a partial file, then give it `path`'s name: a failure never leaves a truncated file there."""
    partial = path.with_name(path.name + ".part")
    try:
        with partial.open("wb") as file:
            fill(file)
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)
    return path


def status(args: argparse.Namespace, client: Client) -> int:
    answer = client.status(args.songhash, options_of(args))
    lines = [describe(answer)]
    lines += [f"{track}\t{url}" for track, url in answer.get("tracks", {}).items()]
    emit(args, answer, "\n".join(lines))
    return SONG_FAILED if answer["state"] in ("failed", "cancelled") else OK


def queue(args: argparse.Namespace, client: Client) -> int:
    """The tenant's songs waiting for a worker, next first (with --json: also those processing, and their places);
    every page unless --cursor picks one."""
    pages = [client.queue(args.cursor)]
    while not args.cursor and pages[-1].get("next"):
        pages.append(client.queue(pages[-1]["next"]))
    songs = [song for page in pages for song in page.get("songs", [])]
    waiting = [songhash for page in pages for songhash in page["queue"]]
    emit(args, {"queue": waiting, "songs": songs, "next": pages[-1].get("next")}, "\n".join(waiting))
    return OK


def usage(args: argparse.Namespace, client: Client) -> int:
    """What this key's tenant has used: songs, audio seconds separated, separation CPU-seconds."""
    answer = client.usage()
    emit(args, answer, f"tenant {answer['tenant']}: {answer['songs']:.0f} songs, "
                       f"{answer['audio_seconds'] / 60:.1f} audio minutes separated, "
                       f"{answer['cpu_seconds'] / 3600:.2f} CPU-hours")
    return OK


def admin(args: argparse.Namespace, client: Client) -> int:
    """`msaas admin usage`, `msaas admin dead ls|show|retry|purge`: needs an admin key ($MSAAS_API_KEY)."""
    if args.admin_command == "usage":
        answer = client.admin_usage()
        emit(args, answer, "\n".join(f"{name}\t{used['songs']:.0f} songs\t{used['audio_seconds']:.0f} audio s\t"
                                     f"{used['cpu_seconds']:.0f} CPU s" for name, used in answer["tenants"].items()))
        return OK
    action, entry = args.dead_action, args.entry
    if action == "ls":
        pages = [client.dead_letters()]
        while pages[-1].get("next"):
            pages.append(client.dead_letters(pages[-1]["next"]))
        letters = [letter for page in pages for letter in page["dead"]]
        emit(args, {"dead": letters}, "\n".join(
            f"{letter['id']}\t{letter['songhash']}\t{letter['tenant']}\t{letter['attempts']} attempts\t"
            f"{letter['buried_at']}\t{letter['reason']}" for letter in letters))
    elif action == "show":
        letter = client.dead_letter(_needs(entry, action))
        emit(args, letter, "\n".join(f"{name}: {value}" for name, value in letter.items()))
    elif action == "retry":
        answer = client.retry_dead(_needs(entry, action))
        emit(args, answer, answer.get("reason", "queued again"))
    else:
        if entry is None and not args.all:
            raise Failure("usage", "purge needs a dead letter's id, or --all", USAGE)
        answer = client.purge_dead(entry)
        emit(args, answer, f"{answer['purged']} purged")
    return OK


def _needs(entry: str | None, action: str) -> str:
    if entry is None:
        raise Failure("usage", f"{action} needs a dead letter's id (`msaas admin dead ls` lists them)", USAGE)
    return entry


def get(args: argparse.Namespace, client: Client) -> int:
    if "/" in args.track or args.track in ("", ".", ".."):
        raise Failure("usage", f"{args.track!r} is not a track name (vocals, drums, bass.mp3, ...)", USAGE)
    options = options_of(args)
    path = f"/apiv1/track/{args.songhash}/{args.track}"
    if args.out == "-":
        client.download(path, sys.stdout.buffer, options)
        return OK
    name = args.track if "." in args.track else f"{args.track}.{args.format or 'mp3'}"
    target = Path(args.out) if args.out else Path(f"{args.songhash}-{name}")
    if target.is_dir():
        target = target / f"{args.songhash}-{name}"
    url = client.url(path, options)
    save(client, url, target)
    emit(args, {"hash": args.songhash, "track": args.track, "path": str(target)}, str(target))
    return OK


def remove(args: argparse.Namespace, client: Client) -> int:
    answer = client.remove(args.songhash, args.track, options_of(args))
    emit(args, answer, answer.get("reason", "removed"))
    return OK


def cancel(args: argparse.Namespace, client: Client) -> int:
    answer = client.cancel(args.songhash)
    emit(args, answer, answer.get("reason", "cancelled"))
    return OK

