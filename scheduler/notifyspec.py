"""`--notify` and Slurm's `--mail-type`, read into labq's canonical list of events.

labq's own spelling: `--notify begin,end,fail,timeout,requeue`, or `all`, or `none`; stored
as the events in `NotifyEvent`'s order, comma-separated ("" = none). Slurm's `--mail-type`
values map onto them (TIME_LIMIT is labq's `timeout`); the ones labq has no event for
(TIME_LIMIT_50/80/90, ARRAY_TASKS, INVALID_DEPEND, STAGE_OUT) are accepted and left out, with
a note. Standard library only: the CLI and the server both read requests with it.
"""

from __future__ import annotations

from scheduler.model import NotifyEvent

EVENTS = tuple(e.value for e in NotifyEvent)
ALLOWED = (*EVENTS, "all", "none")
_SLURM = {"BEGIN": "begin", "END": "end", "FAIL": "fail", "REQUEUE": "requeue",
          "TIME_LIMIT": "timeout", "ALL": "all", "NONE": "none"}
_SLURM_IGNORED = ("TIME_LIMIT_50", "TIME_LIMIT_80", "TIME_LIMIT_90", "ARRAY_TASKS",
                  "INVALID_DEPEND", "STAGE_OUT")


class NotifyError(ValueError):
    """An event labq does not know; the message names the allowed ones."""


def parse_notify(text: str, flag: str = "--notify") -> str:
    """The canonical event list of `begin,end` / `all` / `none` ("" for none)."""
    chosen: set[str] = set()
    for word in (w.strip().lower() for w in str(text).split(",")):
        if not word:
            continue
        if word == "all":
            chosen.update(EVENTS)
        elif word == "none":
            chosen.clear()
        elif word in EVENTS:
            chosen.add(word)
        else:
            shown = word if len(word) <= 24 else word[:24] + "..."
            raise NotifyError(f"{flag}: unknown event {shown!r}: choose from "
                              f"{', '.join(ALLOWED)}")
    return ",".join(e for e in EVENTS if e in chosen)


def from_mail_type(text: str) -> tuple[str, list[str]]:
    """Slurm's `--mail-type` value as labq's `--notify` text, and the values it left out
    (accepted by Slurm, no labq event): each is one note for stderr."""
    kept, ignored = [], []
    for word in (w.strip().upper() for w in str(text).split(",")):
        if not word:
            continue
        if word in _SLURM:
            kept.append(_SLURM[word])
        elif word in _SLURM_IGNORED:
            ignored.append(word)
        else:
            shown = word if len(word) <= 24 else word[:24] + "..."
            raise NotifyError(f"--mail-type: unknown type {shown!r}: choose from "
                              f"{', '.join([*_SLURM, *_SLURM_IGNORED])}")
    return ",".join(kept), ignored
