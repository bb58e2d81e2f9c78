#!/usr/bin/env python3
"""Separate the short samples (data/short-*.mp3): sample-requests.py on fewer songs.

    REST=localhost:5000 python short-sample-requests.py
"""

import os
import runpy
import sys

sys.argv = [sys.argv[0], "data/short-*.mp3"]
runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "sample-requests.py"), run_name="__main__")
