"""The history routes of the API, mixed into `Api`: ended jobs over a time range from the hot
store and the per-day history, usage reports, and one job's efficiency."""

from __future__ import annotations

from aiohttp import web


class HistoryRoutes:
    """Needs the `Api` it is mixed into: its store, settings and caller."""

    def history_routes(self) -> list[web.RouteDef]:
        return []
