"""The one exception type a user sees: it names the file and the fix."""


class DataError(Exception):
    """Bad or missing input. The message is one line naming the file and the fix.

    Command-line entry points catch it and print ``error: <message>`` without a
    traceback, exiting with status 2.
    """

    def __init__(self, message: str, *, path=None, fix: str | None = None):
        parts = [message]
        if path is not None:
            parts[0] = f"{path}: {message}"
        if fix:
            parts.append(f"fix: {fix}")
        super().__init__(" — ".join(parts))
        self.path = None if path is None else str(path)
        self.fix = fix
