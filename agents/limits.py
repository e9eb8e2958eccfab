"""The resource limits a job gets: those of a fresh login of its user, never the agent's.

A login on a Debian/Ubuntu node (sshd or login under systemd, then pam_limits) starts from the
kernel's and systemd's defaults (`FRESH_LOGIN`: 1024 open files, soft, of 524288; no core
files, soft; an 8 MiB stack, soft; 8 MiB of locked memory; processes and pending signals
half the kernel's `threads-max`, as the kernel gives init) and applies
`/etc/security/limits.conf`, then `/etc/security/limits.d/*.conf` in C order, for that user,
as pam_limits does: an entry for the user beats one for a group (`@group`, `@gid:gid`), which
beats the wildcard (`*`); among equals the last one read wins. The agent itself may run with
raised limits (systemd's `LimitNOFILE=`, a root shell's): none of those reach a job.
"""

from __future__ import annotations

import contextlib
import grp
import os
import resource
from collections.abc import Iterable
from dataclasses import dataclass, field

INFINITY = resource.RLIM_INFINITY
RLIMIT_LOCKS = getattr(resource, "RLIMIT_LOCKS", 10)  # (Linux's; Python does not name it)
LIMITS_CONF = "/etc/security/limits.conf"
LIMITS_DIR = "/etc/security/limits.d"
MIB = 1 << 20

# pam_limits' item names, with what its values count in (bytes from KiB, seconds from
# minutes): `nice` is special (20 - value), `priority` is the session's nice value.
_ITEMS: dict[str, tuple[int, int]] = {
    "core": (resource.RLIMIT_CORE, 1024), "data": (resource.RLIMIT_DATA, 1024),
    "fsize": (resource.RLIMIT_FSIZE, 1024), "memlock": (resource.RLIMIT_MEMLOCK, 1024),
    "nofile": (resource.RLIMIT_NOFILE, 1), "rss": (resource.RLIMIT_RSS, 1024),
    "stack": (resource.RLIMIT_STACK, 1024), "cpu": (resource.RLIMIT_CPU, 60),
    "nproc": (resource.RLIMIT_NPROC, 1), "as": (resource.RLIMIT_AS, 1024),
    "locks": (RLIMIT_LOCKS, 1), "sigpending": (resource.RLIMIT_SIGPENDING, 1),
    "msgqueue": (resource.RLIMIT_MSGQUEUE, 1), "nice": (resource.RLIMIT_NICE, 1),
    "rtprio": (resource.RLIMIT_RTPRIO, 1),
}
_NOT_RLIMITS = {"maxlogins", "maxsyslogins", "nonewprivs", "chroot"}
_USER, _GROUP, _DEFAULT = 0, 1, 4  # pam_limits' LIMITS_DEF_USER, _GROUP, _DEFAULT


def _read_int(path: str, default: int) -> int:
    try:
        with open(path) as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return default


def fresh_login() -> dict[int, tuple[int, int]]:
    """What a fresh login gets before limits.conf: the kernel's limits for init (processes
    and pending signals: threads-max / 2; an 8 MiB stack and no core file, soft; 8 MiB
    locked; 819200 bytes of message queues) with systemd's DefaultLimitNOFILE=1024:524288
    (at most the kernel's nr_open)."""
    tasks = max(1, _read_int("/proc/sys/kernel/threads-max", 2 * 63_000) // 2)
    nr_open = _read_int("/proc/sys/fs/nr_open", 1 << 20)
    limits = {r: (INFINITY, INFINITY) for r in (
        resource.RLIMIT_CPU, resource.RLIMIT_FSIZE, resource.RLIMIT_DATA, resource.RLIMIT_RSS,
        resource.RLIMIT_AS, RLIMIT_LOCKS, resource.RLIMIT_RTTIME)}
    limits.update({
        resource.RLIMIT_STACK: (8 * MIB, INFINITY),
        resource.RLIMIT_CORE: (0, INFINITY),
        resource.RLIMIT_NPROC: (tasks, tasks),
        resource.RLIMIT_SIGPENDING: (tasks, tasks),
        resource.RLIMIT_NOFILE: (min(1024, nr_open), min(524288, nr_open)),
        resource.RLIMIT_MEMLOCK: (8 * MIB, 8 * MIB),
        resource.RLIMIT_MSGQUEUE: (819200, 819200),
        resource.RLIMIT_NICE: (0, 0),
        resource.RLIMIT_RTPRIO: (0, 0),
    })
    return limits


@dataclass
class LoginLimits:
    """A job's limits: resource -> (soft, hard), the session's nice value (limits.conf's
    `priority`, None: unchanged), and the lines of limits.conf that were skipped, and why."""

    rlimits: dict[int, tuple[int, int]]
    nice: int | None = None
    skipped: list[str] = field(default_factory=list)


def config_files(conf: str = LIMITS_CONF, conf_dir: str = LIMITS_DIR) -> list[str]:
    """limits.conf, then limits.d's `*.conf` in C order (as pam_limits reads them)."""
    files = [conf]
    with contextlib.suppress(OSError):
        files += [os.path.join(conf_dir, name) for name in sorted(os.listdir(conf_dir))
                  if name.endswith(".conf") and not name.startswith(".")]
    return files


def _min(a: int, b: int) -> int:
    """The smaller of two limits (RLIM_INFINITY, which Python gives as -1, is the largest)."""
    if a == INFINITY:
        return b
    if b == INFINITY:
        return a
    return min(a, b)


def _value(item: str, text: str, scale: int) -> int:
    if text in ("unlimited", "infinity") or (text == "-1" and item not in ("nice", "priority")):
        return INFINITY
    number = int(text, 10)
    if item == "nice":
        return 20 - max(-20, min(19, number))
    if number < 0:
        raise ValueError(text)
    return number * scale if number * scale < 2**63 - 1 else INFINITY


def _domain_rank(domain: str, user: str, uid: int, groups: set[str], gids: set[int]
                 ) -> int | None:
    """How specific `domain` is for this user (lower wins), or None if it is not theirs."""
    if domain == "*":
        return _DEFAULT if uid != 0 else None  # ("*" never applies to root)
    is_group = domain.startswith("@")
    name = domain[1:] if is_group else domain
    if ":" in name:  # a uid (or, after @, gid) range: MIN:MAX, MIN:, :MAX, or exactly N:N
        low, _, high = name.partition(":")
        if (low and not low.isdigit()) or (high and not high.isdigit()):
            return None
        ids = gids if is_group else {uid}
        lo, hi = int(low or 0), int(high) if high else None
        hit = any(i >= lo and (hi is None or i <= hi) for i in ids)
        return (_GROUP if is_group else _USER) if hit else None
    if is_group:
        return _GROUP if name in groups else None
    if domain.startswith("%"):
        return None  # maxlogins only
    return _USER if domain == user else None


def login_limits(user: str, uid: int, gid: int, files: Iterable[str] | None = None,
                 base: dict[int, tuple[int, int]] | None = None) -> LoginLimits:
    """The limits a fresh login of `user` gets (see the module docstring)."""
    gids = set(os.getgrouplist(user, gid)) if uid else {gid}
    groups = set()
    for g in gids:
        with contextlib.suppress(KeyError):
            groups.add(grp.getgrgid(g).gr_name)
    limits = dict(base if base is not None else fresh_login())
    rank: dict[tuple[str, str], int] = {}
    result = LoginLimits(limits)
    for path in config_files() if files is None else files:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                lines = handle.read().splitlines()
        except OSError:
            continue
        for number, raw in enumerate(lines, 1):
            words = raw.split("#", 1)[0].split()
            if not words:
                continue
            where = f"{path}:{number}"
            if len(words) != 4:
                result.skipped.append(f"{where}: expected DOMAIN TYPE ITEM VALUE")
                continue
            domain, kind, item, text = words
            level = _domain_rank(domain, user, uid, groups, gids)
            if level is None or item in _NOT_RLIMITS:
                continue
            if kind not in ("soft", "hard", "-") or (item not in _ITEMS and item != "priority"):
                result.skipped.append(f"{where}: unknown type {kind!r} or item {item!r}")
                continue
            try:
                value = (int(text, 10) if item == "priority"
                         else _value(item, text, _ITEMS[item][1]))
            except ValueError:
                result.skipped.append(f"{where}: bad value {text!r}")
                continue
            for which in (("soft", "hard") if kind == "-" else (kind,)):
                if rank.get((item, which), 99) < level:
                    continue  # a more specific entry was read before: it stays
                rank[(item, which)] = level
                if item == "priority":
                    result.nice = max(-20, min(19, value))
                    continue
                res = _ITEMS[item][0]
                soft, hard = limits[res]
                limits[res] = (value, hard) if which == "soft" else (soft, value)
    for res, (soft, hard) in limits.items():
        if res == resource.RLIMIT_NOFILE:  # the kernel refuses more than nr_open
            cap = _read_int("/proc/sys/fs/nr_open", 1 << 20)
            soft, hard = _min(soft, cap), _min(hard, cap)
        limits[res] = (_min(soft, hard), hard)  # (pam_limits lowers a soft limit above hard)
    return result


def apply_limits(limits: dict[int, tuple[int, int]], nice: int | None = None) -> None:
    """Set these limits on this process, before it drops root (a hard limit may rise only
    with CAP_SYS_RESOURCE: without it, as for an unprivileged runner, a hard limit stays at
    most what it is). Raises OSError, saying which, if one cannot be set."""
    names = {res: name for name, (res, _) in _ITEMS.items()}
    for res, (soft, hard) in sorted(limits.items()):
        try:
            resource.setrlimit(res, (soft, hard))
            continue
        except (OSError, ValueError):
            hard = _min(hard, resource.getrlimit(res)[1])  # (not allowed to raise it)
            soft = _min(soft, hard)
        try:
            resource.setrlimit(res, (soft, hard))
        except (OSError, ValueError) as exc:
            raise OSError(f"cannot set the job's {names.get(res, res)} limit to "
                          f"{soft}:{hard}: {exc}") from None
    if nice is not None:
        with contextlib.suppress(OSError):
            os.setpriority(os.PRIO_PROCESS, 0, nice)
