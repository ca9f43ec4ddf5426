"""What can go wrong, as the exit statuses the command documents, and the one-line messages."""

from __future__ import annotations

import urllib.error
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

EXIT_OK, EXIT_USAGE, EXIT_REJECTED, EXIT_FAILED, EXIT_STOPPED, EXIT_SERVER, EXIT_CTRL_C = 0, 1, 2, 3, 4, 5, 130
EXIT_STATUS_HELP = ("Exit status: 0 done, 1 usage or local file error, 2 rejected by validation, 3 a node failed, "
                    "4 stopped (--timeout, or interrupted on the server), 5 server unreachable / HTTP error / "
                    "not JSON, 130 Ctrl-C. Ctrl-C and --timeout withdraw the prompt this client queued.")


class ClientError(Exception):
    """A problem on our side: bad arguments, an unreadable workflow or file, a disk error (exit status 1)."""


class ServerError(Exception):
    """The server could not be reached, took too long to answer one request, answered with an HTTP
    error or with something that is not the JSON expected (exit status 5). One-line message."""


class NoAnswer(ServerError):
    """A request got no answer within --request-timeout (the server may still have acted on it)."""


class HTTPStatusError(ServerError):
    def __init__(self, route: str, error: urllib.error.HTTPError):
        try:
            self.body = error.read().decode("utf-8", "replace")
        except OSError:
            self.body = ""
        self.code = error.code
        detail = f": {one_line(self.body)}" if self.body.strip() else ""
        super().__init__(f"{route} -> HTTP {error.code} {error.reason}{detail}")


class WorkflowRejected(Exception):
    """POST /prompt answered 400: the workflow failed validation (exit status 2)."""

    def __init__(self, message: str, response: dict):
        super().__init__(message)
        self.response = response


class WorkflowFailed(Exception):
    """The prompt ran and a node raised (exit status 3)."""

    def __init__(self, message: str, entry: dict):
        super().__init__(message)
        self.entry = entry


class WorkflowStopped(Exception):
    """The prompt was interrupted on the server, or did not finish in time (exit status 4)."""


class TimedOut(WorkflowStopped):
    """--timeout passed before the prompt finished (exit status 4; the prompt is withdrawn)."""


@contextmanager
def local(what: str) -> Iterator[None]:
    """A failure of this machine's disk is ours (exit status 1), not the server's."""
    try:
        yield
    except OSError as error:
        raise ClientError(f"{what}: {error.strerror or error}") from None




def read_local(path: Path) -> bytes:
    with local(f"cannot read {path}"):
        return path.read_bytes()


def one_line(value: Any, limit: int = 200) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
