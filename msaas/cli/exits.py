"""The exit codes of `msaas`, which scripts may rely on (docs/api.md, "The `msaas` command")."""

OK = 0
BUG = 1  # an unexpected error in the client itself
USAGE = 2  # bad arguments, an unreadable file, or options the server refused (400)
SERVER = 3  # the server could not be reached, or answered with an error other than 400 and 404
SONG_FAILED = 4  # the song failed to separate
TIMEOUT = 5  # gave up waiting (`separate --timeout`)
NOT_FOUND = 6  # no such song or track (404)
INTERRUPTED = 130  # Ctrl-C, as a shell reports it


class Failure(Exception):
    """A command failed: a stable `code`, a human `message`, and the exit code a script sees."""

    def __init__(self, code: str, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.exit_code = exit_code
