"""Who is online in each session: a user is online while one of their connections is
subscribed. Callers broadcast a `presence` frame only when a join or leave changes the set.
"""

from __future__ import annotations


class PresenceTracker:
    """Per session, the connections of each online user."""

    def __init__(self) -> None:
        self._sessions: dict[str, dict[str, set[str]]] = {}

    def join(self, session: str, user: str, conn_id: str) -> list[str] | None:
        """Record `conn_id` of `user` in `session`.

        Returns the new sorted online list when `user` was not online before, else None
        (another connection of the same user, or the same connection again).
        """
        users = self._sessions.setdefault(session, {})
        conns = users.get(user)
        if conns is not None:
            conns.add(conn_id)
            return None
        users[user] = {conn_id}
        return sorted(users)

    def leave(self, session: str, user: str, conn_id: str) -> list[str] | None:
        """Forget `conn_id` of `user` in `session`.

        Returns the new sorted online list (possibly empty) when that was the user's last
        connection, else None (an unknown connection changes nothing).
        """
        users = self._sessions.get(session)
        if users is None:
            return None
        conns = users.get(user)
        if conns is None or conn_id not in conns:
            return None
        conns.discard(conn_id)
        if conns:
            return None
        del users[user]
        if not users:
            del self._sessions[session]
            return []
        return sorted(users)

    def leave_all(self, user: str, conn_id: str) -> dict[str, list[str]]:
        """Forget `conn_id` everywhere (a disconnect): each changed session's online list."""
        changed: dict[str, list[str]] = {}
        for session in [s for s, users in self._sessions.items() if conn_id in users.get(user, ())]:
            online = self.leave(session, user, conn_id)
            if online is not None:
                changed[session] = online
        return changed

    def online(self, session: str) -> list[str]:
        """The sorted users online in `session`."""
        return sorted(self._sessions.get(session, ()))

    def is_online(self, session: str, user: str) -> bool:
        return user in self._sessions.get(session, {})

    def sessions(self) -> list[str]:
        """The sessions with someone online (empty sessions are forgotten)."""
        return list(self._sessions)
