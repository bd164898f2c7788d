"""What every peer server shares: its command line and a raised file limit."""

import argparse
import resource
from typing import Any
from urllib.parse import parse_qs

# Enough for the 10,000-connection scenario with some slack.
BACKLOG = 4096


def parse_args(description: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    raise_file_limit()
    return args


def raise_file_limit() -> None:
    """Lift the soft RLIMIT_NOFILE to the hard one: a connection is a descriptor."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY or soft < hard:
        target = 1_048_576 if hard == resource.RLIM_INFINITY else hard
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def room_of(query: str) -> str:
    """The ``room`` query parameter of a request, ``""`` without one."""
    return parse_qs(query).get("room", [""])[0]


def serve_asgi(app: Any, description: str) -> None:
    """Run an ASGI peer on uvicorn with the same settings for every peer (uvloop, httptools,
    quiet logs, a deep accept backlog), on the port given on the command line."""
    import uvicorn

    args = parse_args(description)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        backlog=BACKLOG,
    )
