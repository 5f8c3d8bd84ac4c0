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


class TrainingDiverged(DataError):
    """The training loss became NaN or infinite: the run stopped with the last good checkpoint kept.

    A :class:`DataError` so that every command line prints it as one ``error:`` line (exit 2);
    the message says where the loss diverged and which checkpoint was kept.
    """


def reading(path, what: str = "file"):
    """Context manager: an ``OSError`` while reading ``path`` becomes a one-line :class:`DataError`.

    ``with reading(path, "Adience fold file"): ...`` turns a permission problem, a folder where
    a file belongs or an I/O error into ``<path>: <what> is not readable (...) — fix: ...``.
    """
    import contextlib

    @contextlib.contextmanager
    def guard():
        try:
            yield
        except PermissionError:
            raise DataError(f"{what} is not readable (permission denied)", path=path,
                            fix="make it readable for this user (check its owner and chmod u+r, and u+x on its "
                                "folders), or copy the data somewhere readable") from None
        except IsADirectoryError:
            raise DataError(f"{what} is a folder, not a file", path=path, fix="point at the folder that holds it") \
                from None
        except FileNotFoundError:
            raise DataError(f"{what} not found", path=path, fix="check the path (and the --data-dir)") from None
        except OSError as err:
            raise DataError(f"{what} cannot be read ({err.strerror or err})", path=path,
                            fix="check the disk and the file (copy it again if it is damaged)") from None

    return guard()
