"""Fair now in words a student understands (`labq priority`, `labq quota`)."""

from __future__ import annotations

from scheduler.policy.fairnow import UserLoad


def _gpus(x: float) -> str:
    return f"{x:.0f}" if abs(x - round(x)) < 0.05 else f"{x:.1f}"


def fair_now_text(load: UserLoad) -> str:
    """One or two sentences: what you and your group hold, your fair shares, your recent
    use, and what that does to your next job's fair-share factor."""
    parts = [f"you hold {_gpus(load.held)} of {_gpus(load.capacity)} GPUs, your fair share "
             f"now is {_gpus(load.entitled)}"]
    if load.account_entitled > 0:
        parts.append(f"your group {load.account} holds {_gpus(load.account_held)}, its "
                     f"share is {_gpus(load.account_entitled)}")
    text = "; ".join(parts) + "."
    if load.past > 0.05 and load.past_weight > 0:
        text += (f" Over recent weeks you averaged {_gpus(load.past)} GPUs, counted at "
                 f"{load.past_weight:g}x.")
    if load.entitled <= 0:
        return text + " With no share, your jobs start only on GPUs nobody else wants."
    level = load.level()
    if level < 1:
        return text + " You are below your share: your next job goes ahead of those above it."
    return text + (f" You are at {level:.1f}x your share: jobs of people below their share "
                   "go first.")
