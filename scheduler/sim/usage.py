"""Decayed billed usage per (account, user) for fair share, accrued continuously in
virtual time and decayed with a half-life. Kept as integrals scaled by 2^(t/h), so reading
every user's usage costs O(users), not O(running jobs)."""

from __future__ import annotations

import math

LN2 = math.log(2.0)


class Usage:
    """Decayed billed usage per (account, user), accrued continuously in virtual time."""

    def __init__(self, half_life: float) -> None:
        self.h = half_life
        self.ref = 0.0  # scaled values are relative to 2^(ref/h)
        self.acc: dict[tuple[str, str], float] = {}  # scaled integral up to self.at[key]
        self.rate: dict[tuple[str, str], float] = {}
        self.at: dict[tuple[str, str], float] = {}
        self.g_at: dict[tuple[str, str], float] = {}  # 2^((at - ref)/h) of each key's `at`

    def _g(self, t: float) -> float:
        return float(2.0 ** ((t - self.ref) / self.h))

    def _settle(self, key: tuple[str, str], t: float) -> None:
        rate = self.rate.get(key, 0.0)
        g = self._g(t)
        if rate:
            self.acc[key] = self.acc.get(key, 0.0) + rate * self.h / LN2 * (g - self.g_at[key])
        self.at[key], self.g_at[key] = t, g

    def add_rate(self, key: tuple[str, str], t: float, delta: float) -> None:
        if t - self.ref > 200 * self.h:  # keep 2^(t/h) finite
            self._rebase(t)
        self._settle(key, t)
        self.rate[key] = self.rate.get(key, 0.0) + delta

    def _rebase(self, t: float) -> None:
        for key in list(self.at):
            self._settle(key, t)
        scale = self._g(t)
        self.acc = {k: v / scale for k, v in self.acc.items()}
        self.ref = t
        self.g_at = {k: self._g(at) for k, at in self.at.items()}

    def at_time(self, t: float) -> dict[tuple[str, str], float]:
        g, h = self._g(t), self.h
        acc, rates, g_at = self.acc, self.rate, self.g_at
        out = {}
        for key in self.at:
            value = acc.get(key, 0.0)
            rate = rates.get(key, 0.0)
            if rate:
                value += rate * h / LN2 * (g - g_at[key])
            out[key] = max(0.0, value / g)
        return out
