"""Tools for testing applications built on Tidings against faults.

* `tidings.testing.history` — a history checker: record sends and deliveries, then find
  lost acked writes, refused writes that were stored, duplicates, gaps, reorders and
  observers that disagree.
* `tidings.testing.proxy` — a fault-injecting TCP proxy (cut, stall, delay, drop or
  duplicate WebSocket frames, on command or at random with a seed).
"""

from tidings.testing.history import Anomaly, Counts, History, Identity, Kind

__all__ = ["Anomaly", "Counts", "History", "Identity", "Kind"]
