"""Where the event loop's time goes, from a py-spy profile in raw collapsed form.

    py-spy record -r 250 -f raw --threads -p <server pid> -d 14 -o profile.txt
    python -m benchmarks.pyspy_shares profile.txt

Each sample of the main thread is put in the first category that matches, scanning its
stack from the innermost frame outwards; samples of the writer thread are counted apart,
and idle worker threads (waiting on their queue) are left out.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path

Rule = tuple[str, Callable[[str], bool]]

RULES: tuple[Rule, ...] = (
    (
        "writing frames to sockets (Flusher, transport.write)",
        lambda f: "Flusher._flush" in f or "WebSocket.flush" in f,
    ),
    (
        "hub fan-out: ordering, folding, queue appends",
        lambda f: "tidings/server/hub.py" in f or "WebSocket.push" in f,
    ),
    (
        "store results, publishing, acks",
        lambda f: any(k in f for k in ("Node._sent", "Node._settle", "sqlite.py", "broker")),
    ),
    (
        "reading and parsing client frames",
        lambda f: any(
            k in f
            for k in ("data_received", "websockets/", "protocol/messages.py", "connection.py")
        ),
    ),
)
LOOP = "the event loop itself: scheduling, callbacks, waiting"
IDLE_WORKER = "_worker (concurrent/futures/thread.py"


def classify(frames: list[str]) -> str:
    for frame in reversed(frames):
        for name, matches in RULES:
            if matches(frame):
                return name
    return LOOP


def shares(lines: Iterable[str]) -> tuple[Counter[str], int]:
    """Main-thread samples by category, and the writer thread's busy samples."""
    main: Counter[str] = Counter()
    writer = 0
    for line in lines:
        stack, _, count = line.rstrip().rpartition(" ")
        if not stack:
            continue
        thread, *frames = stack.split(";")
        n = int(count)
        if thread.endswith(": MainThread"):
            main[classify(frames)] += n
        elif "writer" in thread and not frames[-1].startswith(IDLE_WORKER):
            writer += n
    return main, writer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("profile", type=Path)
    args = parser.parse_args()
    main_samples, writer = shares(args.profile.read_text().splitlines())
    total = sum(main_samples.values()) or 1
    for name, n in main_samples.most_common():
        print(f"{100 * n / total:5.1f} %  {name}")
    print(f"writer thread busy: {writer} samples ({100 * writer / total:.0f} % of the main's)")


if __name__ == "__main__":
    main()
