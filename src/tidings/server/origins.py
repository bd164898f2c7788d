"""Which browser origins may open a WebSocket: the allow-list, or same-origin on a
host name the operator vouches for.

Same-origin used to mean "the Origin's host:port equals the Host header". Under DNS
rebinding both come from the attacker's page (`evil.example` resolving to 127.0.0.1),
so they agree and prove nothing. Same-origin now also needs the Origin's host to be one
of `allowed_hosts` (default: the loopback names and the bind host), names an attacker
cannot make a victim's browser use for their own page.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from tidings.server.config import Config

LOOPBACK = ("localhost", "127.0.0.1", "::1")
#: Bind addresses that name no host (any interface): they add nothing to the defaults.
_WILDCARD = ("", "0.0.0.0", "::")


def allowed_hosts(config: Config) -> frozenset[str]:
    """The host names (and host:port pairs) same-origin may use, lower-cased."""
    if config.allowed_hosts:
        return frozenset(h.strip().lower().strip("[]") for h in config.allowed_hosts)
    hosts = set(LOOPBACK)
    if config.host not in _WILDCARD:
        hosts.add(config.host.lower().strip("[]"))
    return frozenset(hosts)


def origin_allowed(config: Config, origin: str | None, host: str | None) -> bool:
    if origin is None:
        return True  # not a browser
    allowed = config.allowed_origins
    if "*" in allowed or origin in allowed:
        return True
    try:
        url = urlsplit(origin)
        name = (url.hostname or "").lower()
        port = url.port
    except ValueError:
        return False  # a malformed Origin (bad port, brackets) is no origin of ours
    # Same origin: the Origin's host:port equals the Host header...
    bare = url.netloc.lower()
    if host is None or bare != host.strip().lower():
        return False
    # ...and names a host the operator allows (the Host header alone is the attacker's).
    hosts = allowed_hosts(config)
    return name in hosts or (port is not None and f"{name}:{port}" in hosts)
