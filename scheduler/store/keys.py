"""The Redis key schema, written down in one place.

Every key labq uses is built here and passed to scripts in KEYS, never built inside Lua.

    {p}ids                      string   last job id handed out (INCRBY in blocks)
    {p}job:{id}                 hash     one job (fields: see model.Job.to_fields)
    {p}jobs:waiting             zset     PENDING/budget-HELD job ids, score = submitted_at
    {p}jobs:held                zset     jobs a person holds (not scheduled), score = submitted_at
    {p}jobs:active              set      STARTING/RUNNING job ids (they hold GPUs)
    {p}jobs:done                zset     terminal job ids, score = ended_at
    {p}array:{id}               hash     one job array: its template job fields, script, index
                                         set (indices), remaining indices not made tasks yet,
                                         cancelled ones, throttle, hold (see store.arrays)
    {p}arrays                   set      ids of arrays with remaining indices
    {p}arrays:all               zset     every array id, score = submitted_at (retention)
    {p}stored                   hash     user -> how many of their jobs the store keeps (submit
                                         adds, each task of an array too; retention subtracts)
    {p}jobs:changed             list     ids of waiting jobs a person changed (`labq update`,
                                         requeue, release): the leader forgets its cached
                                         copy and the reasons it wrote
    {p}submit:{token}           string   ids made by one submit request (idempotent retries)
    {p}nodes                    set      node names ever seen
    {p}node:{name}              hash     node state and its last heartbeat report, written by
                                         the node's agent (heartbeat.lua); any drained_by,
                                         drain_reason, drained_at an earlier labq kept here are
                                         never read (drains below)
    {p}node:{name}:alloc        hash     gpu index -> job id holding it
    {p}node:{name}:runs         hash     job id -> start record JSON (noderun.StartRecord)
    {p}node:{name}:stops        hash     job id -> stop request (CANCELLED, TIMEOUT, PREEMPTED)
    {p}node:{name}:status       hash     job id -> RunStatus JSON, written by the node's agent
    {p}node:{name}:wake         list     pushed when runs/stops change: the agent BLPOPs it
    {p}wake                     list     pushed by agents when a status changes: the leader BLPOPs
    {p}drains                   hash     node name -> an admin's drain JSON {"by", "reason", "at"}
                                         (node maintenance): coordinator-only, out of every
                                         agent's ACL patterns, so no node lifts or forges its
                                         own drain
    {p}usage                    hash     user:{u}:billed, user:{u}:gpu_s, account:{a}:... totals;
                                         decayed:{a}|{u}, decayed_t:{a}|{u}, half_life_s;
                                         day:{unix day}:{a}|{u} billed that UTC day,
                                         dgpu:{unix day}:{a}|{u} GPU-seconds that UTC day
    {p}stats                    hash     persisted metric counters (see metrics_families):
                                         admissions|{a}, preemptions|{a}, evictions|{a}|{reason},
                                         wait|{a}|{le} (admission wait histogram bucket, not
                                         cumulative; le = bound or +Inf), wait_sum|{a},
                                         ended|{state}|{code}|{a} (jobs ended, by terminal state
                                         and the reason's first word), waiting|{u} (the user's
                                         waiting jobs, for the pending cap)
    {p}history:{day}            hash     job id -> compact JSON record of a finished job that
                                         left the hot store (retention), by the UTC day it
                                         ended (unix day); expires retention_history_s later
    {p}history:{day}:user:{u}   set      ids of that day's history records of user u (same
                                         expiry as the day's hash): one user's history reads
                                         only their records
    {p}history:{day}:account:{a} set     ids of that day's history records charged to account a
    {p}history:where:{n}        hash     job id -> the unix day of its history record, for ids
                                         whose number // 10000 is n (`labq show` of a job that
                                         left the hot store); expires with its latest day
    {p}log:{id}                 string   no longer written (job output is the user's file);
                                         retention deletes any an older version left
    {p}accounts                 hash     account name -> AccountConfig JSON
    {p}users                    hash     user name -> UserConfig JSON
    {p}budgets                  hash     "account:{a}" / "user:{u}" -> BudgetConfig JSON
    {p}accounts:version         string   bumped by every account/user change (compare-and-set)
    {p}token:{id}               hash     an API token: user, hash (sha256 of its secret), created,
                                         expires (see store.tokens); expires with it
    {p}tokens                   set      ids of API tokens
    {p}leader                   string   coordinator id holding the leader lease (PX ttl)
    {p}epoch                    string   fencing epoch, incremented on every new lease
    {p}schema                   string   the store's labq schema version (store.schema)
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Keys:
    prefix: str = "labq:"

    @property
    def ids(self) -> str:
        return f"{self.prefix}ids"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    @property
    def waiting(self) -> str:
        return f"{self.prefix}jobs:waiting"

    @property
    def held(self) -> str:
        return f"{self.prefix}jobs:held"

    @property
    def active(self) -> str:
        return f"{self.prefix}jobs:active"

    @property
    def done(self) -> str:
        return f"{self.prefix}jobs:done"

    def array(self, array_id: str) -> str:
        return f"{self.prefix}array:{array_id}"

    @property
    def arrays(self) -> str:
        return f"{self.prefix}arrays"

    @property
    def arrays_all(self) -> str:
        return f"{self.prefix}arrays:all"

    @property
    def stored(self) -> str:
        return f"{self.prefix}stored"

    @property
    def changed(self) -> str:
        return f"{self.prefix}jobs:changed"

    def submit_token(self, token: str) -> str:
        return f"{self.prefix}submit:{token}"

    @property
    def nodes(self) -> str:
        return f"{self.prefix}nodes"

    def node(self, name: str) -> str:
        return f"{self.prefix}node:{name}"

    def node_alloc(self, name: str) -> str:
        return f"{self.prefix}node:{name}:alloc"

    def node_runs(self, name: str) -> str:
        return f"{self.prefix}node:{name}:runs"

    def node_stops(self, name: str) -> str:
        return f"{self.prefix}node:{name}:stops"

    def node_status(self, name: str) -> str:
        return f"{self.prefix}node:{name}:status"

    def node_wake(self, name: str) -> str:
        return f"{self.prefix}node:{name}:wake"

    @property
    def wake(self) -> str:
        return f"{self.prefix}wake"

    @property
    def drains(self) -> str:
        return f"{self.prefix}drains"

    @property
    def usage(self) -> str:
        return f"{self.prefix}usage"

    @property
    def stats(self) -> str:
        return f"{self.prefix}stats"

    def history(self, day: int) -> str:
        return f"{self.prefix}history:{day}"

    def history_user(self, day: int, user: str) -> str:
        return f"{self.prefix}history:{day}:user:{user}"

    def history_account(self, day: int, account: str) -> str:
        return f"{self.prefix}history:{day}:account:{account}"

    def history_where(self, job_id: str) -> str:
        """The id -> day index bucket of `job_id` (an array task `17_5` with its array, 17)."""
        head = job_id.partition("_")[0]
        return f"{self.prefix}history:where:{int(head) // 10000 if head.isdigit() else 0}"

    def log(self, job_id: str) -> str:
        return f"{self.prefix}log:{job_id}"

    @property
    def accounts(self) -> str:
        return f"{self.prefix}accounts"

    @property
    def users(self) -> str:
        return f"{self.prefix}users"

    @property
    def budgets(self) -> str:
        return f"{self.prefix}budgets"

    @property
    def accounts_version(self) -> str:
        return f"{self.prefix}accounts:version"

    def token(self, token_id: str) -> str:
        return f"{self.prefix}token:{token_id}"

    @property
    def tokens(self) -> str:
        return f"{self.prefix}tokens"

    @property
    def leader(self) -> str:
        return f"{self.prefix}leader"

    @property
    def epoch(self) -> str:
        return f"{self.prefix}epoch"

    @property
    def schema(self) -> str:
        return f"{self.prefix}schema"
