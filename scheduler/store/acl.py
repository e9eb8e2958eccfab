"""The store's ACL users: the coordinator's, and one per node agent that reaches only its node.

`labq up` writes these rules to the embedded Valkey's ACL file; for your own Redis/Valkey,
`python -m scheduler.store.acl --node gpu1 --node gpu2` prints the `ACL SETUSER` lines (README,
"Deploying on a real cluster"). Redis/Valkey >= 7 checks every command a script runs against
the caller's rules too, so an agent's EVALSHA cannot reach past its keys either.

An agent's rules: read and write its node's keys (`{p}node:{name}`, `{p}node:{name}:*`) with
the few commands its code and scripts use; outside them, only what its scripts must write, each
in a selector of its own: SADD to `{p}nodes` (heartbeat.lua), LPUSH and LTRIM to the
coordinator's wake list `{p}wake` (report_runs.lua). Everything else (a job, the usage, another
node) is NOPERM. A node's liveness is the heartbeat time in its own hash, so no agent can keep
another node alive. An admin's drain of a node is not in the node's hash (its agent writes
that) but in the drains hash `{p}drains`, which no agent pattern matches: a node can neither
lift its drain nor forge one.
"""

from __future__ import annotations

import argparse
import hashlib
import re

from scheduler.store.keys import Keys

COORDINATOR_USER = "labq-coordinator"
# Characters a node name or key prefix may have: nothing ACL key patterns would read as glob.
_SAFE = re.compile(r"[A-Za-z0-9_.:@-]*")


class AclError(ValueError):
    """A name cannot be written into an ACL key pattern safely."""


def agent_user(node: str) -> str:
    return f"labq-agent-{node}"


def _safe(what: str, text: str) -> str:
    if not _SAFE.fullmatch(text):
        raise AclError(f"{what} {text!r}: only letters, digits and _ . : @ - may be used where "
                       "the store's ACL rules name keys")
    return text


def coordinator_rules(keys: Keys) -> list[str]:
    """Every labq key, every command but the dangerous ones (KEYS, FLUSHALL, CONFIG, ACL...);
    INFO only for the store's memory (/metrics, LabqStoreNearlyFull)."""
    prefix = _safe("key prefix", keys.prefix)
    return ["resetkeys", f"~{prefix}*", "resetchannels", "-@all", "+@all", "-@dangerous",
            "+info"]


def agent_rules(keys: Keys, node: str) -> list[str]:
    _safe("key prefix", keys.prefix)
    own = [f"~{keys.node(_safe('node name', node))}", f"~{keys.node(node)}:*"]
    shared = [keys.nodes, keys.wake]
    return [
        "resetkeys", *own, "resetchannels", "-@all",
        "+ping", "+evalsha", "+script|load",  # its scripts (redis-py loads them on a miss)
        "+hgetall", "+hget", "+hset", "+hdel", "+hkeys", "+hexists",  # runs, stops, status
        "+blpop", "+del",  # its wake list
        # EVALSHA of heartbeat.lua / report_runs.lua declares these keys beside its own...
        "(" + " ".join([*own, *(f"%RW~{k}" for k in shared), "+evalsha"]) + ")",
        # ...and inside them, only these writes reach the shared keys.
        f"(%W~{keys.nodes} +sadd)", f"(%W~{keys.wake} +lpush +ltrim)",
    ]


def password_hash(password: str) -> str:
    """The `#<sha256>` form ACL rules take, so a rule never holds the password itself."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def acl_file(keys: Keys, coordinator_password: str, agent_passwords: dict[str, str]) -> str:
    """An ACL file: the default user off, the coordinator, one user per node agent."""
    lines = ["user default off resetpass resetkeys resetchannels -@all"]
    lines.append(" ".join(["user", COORDINATOR_USER, "on", "resetpass",
                           password_hash(coordinator_password), *coordinator_rules(keys)]))
    for node, password in sorted(agent_passwords.items()):
        lines.append(" ".join(["user", agent_user(node), "on", "resetpass",
                               password_hash(password), *agent_rules(keys, node)]))
    return "\n".join(lines) + "\n"


def setuser_lines(keys: Keys, nodes: list[str],
                  secrets: dict[str, str] | None = None) -> list[str]:
    """`ACL SETUSER` commands for redis-cli on an external store. `secrets` maps a user to its
    password (written as its `#<sha256>`); a user without one gets a `#HASH` placeholder."""
    def line(user: str, rules: list[str]) -> str:
        secret = password_hash(secrets[user]) if secrets and user in secrets else "#HASH"
        quoted = [f'"{r}"' if " " in r else r for r in rules]  # selectors: one argument each
        return " ".join(["ACL SETUSER", user, "on", "resetpass", secret, *quoted])

    return [line(COORDINATOR_USER, coordinator_rules(keys)),
            *(line(agent_user(node), agent_rules(keys, node)) for node in nodes)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m scheduler.store.acl",
        description="Print the ACL SETUSER lines labq needs on your own Redis/Valkey.")
    parser.add_argument("--prefix", default="labq:", help="key prefix (redis_prefix)")
    parser.add_argument("--node", action="append", default=[], help="a GPU node's name "
                        "(repeat for each node)")
    parser.add_argument("--password-dir", default=None, help="a folder with coordinator.pass "
                        "and agent-<node>.pass: print their hashes instead of #HASH")
    args = parser.parse_args(argv)
    secrets = {}
    if args.password_dir:
        from pathlib import Path

        from scheduler.store import read_secret

        folder = Path(args.password_dir)
        secrets[COORDINATOR_USER] = read_secret(folder / "coordinator.pass")
        for node in args.node:
            secrets[agent_user(node)] = read_secret(folder / f"agent-{node}.pass")
    try:
        for line in setuser_lines(Keys(args.prefix), args.node, secrets):
            print(line)
    except AclError as exc:
        parser.error(str(exc))


if __name__ == "__main__":
    main()
