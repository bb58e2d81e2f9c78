"""The worker: takes jobs off the queue, runs Demucs on each song and stores the separated tracks."""
