class KvantError(Exception):
    """A problem the user can fix; the CLI prints it as one line, without a traceback."""


class NetworkError(KvantError):
    """A host kvant needs (the Hub, PyPI, a server) could not be reached: an environment problem, not bad input."""
    exit_code = 3  # see the exit-code table in `kvant --help`


class DataMissing(KvantError):
    """Evaluation data a task needs is not on this machine (no data folder given, or one without the task's files):
    an environment problem, not bad input."""
    exit_code = 3  # see the exit-code table in `kvant --help`


class IntegrityError(KvantError):
    """An artifact's files do not match its kvant.json (tampered, truncated, missing or unlisted)."""
    exit_code = 4  # see the exit-code table in `kvant --help`
