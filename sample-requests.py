#!/usr/bin/env python3
"""Separate every MP3 in data/ through the REST API, in the reference client's style, and save the stems.

    REST=localhost:5000 python sample-requests.py ['data/*.mp3']

Each song is posted as base64 JSON with a callback; the queue is printed; then the script waits for the
four tracks of every song and saves them under output/<songhash>/. Callbacks go to a small listener this
script starts (or to $CALLBACK if set, e.g. when the workers run in a cluster that cannot reach you).
"""

import base64
import glob
import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonpickle
import requests

REST = os.getenv("REST") or "localhost:5000"
WAIT_SECONDS = float(os.getenv("WAIT", "900"))
TRACKS = ("vocals", "drums", "bass", "other")


def mkReq(reqmethod, endpoint, data, verbose=True):
    print(f"Response to http://{REST}/{endpoint} request is {type(data)}")
    jsonData = jsonpickle.encode(data)
    if verbose and data is not None:
        print(f"Make request http://{REST}/{endpoint} with json {data.keys()}")
        print(f"mp3 is of type {type(data['mp3'])} and length {len(data['mp3'])} ")
    response = reqmethod(f"http://{REST}/{endpoint}", data=jsonData, headers={"Content-type": "application/json"})
    if response.status_code == 200:
        jsonResponse = json.dumps(response.json(), indent=4, sort_keys=True)
        print(jsonResponse)
        return response.json()
    else:
        print(f"response code is {response.status_code}, raw response is {response.text}")
        return None


class CallbackListener(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        print(f"Callback received for {self.headers.get('X-Songhash')}: {body.decode(errors='replace')}")
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args):
        pass


def start_callback_listener():
    server = ThreadingHTTPServer(("0.0.0.0", 0), CallbackListener)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return f"http://localhost:{server.server_address[1]}/"


def fetch_tracks(songhash, pending):
    """Save each finished track; return False when the song failed for good."""
    for track in list(pending):
        response = requests.get(f"http://{REST}/apiv1/track/{songhash}/{track}.mp3")
        if response.status_code == 200:
            folder = os.path.join("output", songhash)
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{track}.mp3"), "wb") as out:
                out.write(response.content)
            print(f"Saved {folder}/{track}.mp3 ({len(response.content)} bytes)")
            pending.remove(track)
        elif "separation failed" in response.text:
            print(f"Song {songhash} failed: {response.json()['message']}")
            return False
    return True


def main(pattern):
    callback_url = os.getenv("CALLBACK") or start_callback_listener()
    songs = {}
    failed = []
    for mp3 in sorted(glob.glob(pattern)):
        print(f"Separate {mp3}")
        answer = mkReq(
            requests.post,
            "apiv1/separate",
            data={
                "mp3": base64.b64encode(open(mp3, "rb").read()).decode("utf-8"),
                "callback": {"url": callback_url, "data": {"mp3": mp3, "data": "to be returned"}},
            },
            verbose=True,
        )
        if answer:
            songs[answer["hash"]] = set(TRACKS)
        else:
            failed.append(mp3)
        print("Cache from server is")
        mkReq(requests.get, "apiv1/queue", data=None)

    deadline = time.monotonic() + WAIT_SECONDS
    while songs and time.monotonic() < deadline:
        for songhash, pending in list(songs.items()):
            if not fetch_tracks(songhash, pending):
                failed.append(songhash)
            if not pending or songhash in failed:
                del songs[songhash]
        if songs:
            time.sleep(1)
    time.sleep(1)  # let the last callbacks arrive before the listener goes away
    for songhash in songs:
        print(f"Timed out waiting for {songhash}: still missing {sorted(songs[songhash])}")
    return 1 if songs or failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "data/*.mp3"))
