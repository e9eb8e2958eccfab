"""Fair now in words a student understands (`labq priority`, `labq quota`)."""

from __future__ import annotations

from scheduler.policy.fairengine import Ranking
from scheduler.policy.fairnow import FAIR_NOW, UserLoad


def _gpus(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def fair_now_text(load: UserLoad, past_factor: float | None = None,
                  past_weight: float = 0.0) -> str:
    """A few sentences: what you and your group hold, your fair shares now, what that does
    to your next job, and how much your recent use counts (`past_factor`: your Fair Tree
    factor on decayed usage, 1 = the lightest user lately)."""
    parts = [f"you hold {_gpus(load.held)} of {_gpus(load.capacity)} GPUs, your fair share "
             f"now is {_gpus(load.entitled)}"]
    if load.account_entitled > 0:
        parts.append(f"your group {load.account} holds {_gpus(load.account_held)}, its "
                     f"share is {_gpus(load.account_entitled)}")
    text = "; ".join(parts) + "."
    if load.entitled <= 0:
        text += " With no share, your jobs start only on GPUs nobody else wants."
    elif load.level() < 1:
        text += (" You are below your share: your next job goes ahead of every job of "
                 "people at or above theirs.")
    else:
        text += (f" You are at {load.level():.1f}x your share: jobs of people below their "
                 "share go first.")
    if past_factor is not None and past_weight > 0:
        lately = ("less than most" if past_factor >= 0.67 else
                  "about as much as others" if past_factor >= 0.34 else "more than most")
        text += (f" Over recent weeks you used {lately} (fair-share factor "
                 f"{past_factor:.2f} on past use), which counts for {past_weight:.0%} of "
                 "your fair-share factor.")
    return text


def standing_texts(ranking: Ranking) -> dict[tuple[str, str], str]:
    """`fair_now_text` for every (account, user) with a job pending or running in the
    ranked snapshot (what `/v1/quota` and `/v1/priority` show)."""
    inputs = ranking.snapshot.shares
    weight = inputs.past_weight if inputs is not None and inputs.algorithm == FAIR_NOW else 0.0
    table = ranking.table if weight > 0 else None
    return {key: fair_now_text(load, table.factor(*key) if table is not None else None, weight)
            for key, load in ranking.loads.items()}
