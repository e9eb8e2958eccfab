"""labq's four Grafana dashboards, built on the metric contract in docs/metrics.md."""

from __future__ import annotations

from grafana_foundation_sdk.models import dashboard as m

from grafana.panels import Look, Query, Row, bars, board, buckets, graph, grid, label_variable, one
from grafana.panels import single as stat

RATE = "$__rate_interval"
NODE = 'node=~"$node"'
ACCOUNT = 'account=~"$account"'
USER = 'user=~"$user"'

RATIO = Look(unit="percentunit", min=0, max=1)
SECONDS = Look(unit="s")
COUNT = Look(unit="short", decimals=0)
BAD_IF_ANY = Look(unit="short", decimals=0, steps=((None, "green"), (1, "red")))
WARN_IF_ANY = Look(unit="short", decimals=0, steps=((None, "green"), (1, "orange")))
ONE_LEADER = Look(unit="short", decimals=0, steps=((None, "red"), (1, "green"), (2, "red")))
BUDGET = Look(unit="percentunit", min=0, max=1,
              steps=((None, "green"), (0.8, "orange"), (0.9, "red")))
HEALTH = Look(unit="short", decimals=0, steps=((None, "red"), (1, "green")),
              mappings={"0": ("unhealthy", "red"), "1": ("healthy", "green")})
UP = Look(unit="short", decimals=0, steps=((None, "red"), (1, "green")),
          mappings={"0": ("DOWN", "red"), "1": ("UP", "green")})
DRAINED = Look(unit="short", decimals=0, steps=((None, "green"), (1, "orange")),
               mappings={"0": ("no", "green"), "1": ("drained", "orange")})
HIDE_TIME_AND_JOB = {"Time": True, "job": True}


def wait_quantile(q: float, by: str = "", selector: str = "", window: str = "1h") -> str:
    """Admission-wait quantile over `window` (waits are observed only when jobs start, a few an
    hour in a lab, so a short window is mostly empty)."""
    labels = f"le, {by}" if by else "le"
    inner = one(f"rate(labq_admission_wait_seconds_bucket{{{selector}}}[{window}])")
    return f"histogram_quantile({q}, sum by ({labels}) ({inner}))"


def cycle_quantile(q: float) -> str:
    """Each coordinator's own cycles (followers run none: their quantile is NaN)."""
    return (f"histogram_quantile({q}, sum by (le, instance) "
            f"(rate(labq_scheduling_cycle_duration_seconds_bucket[{RATE}])))")


def in_range(metric: str, selector: str) -> str:
    return f"increase({metric}{{{selector}}}[$__range])"


def node_state(states: str) -> str:
    return f'labq_node_state{{state=~"{states}"}}'


def per_hour(metric: str, by: str = "", selector: str = "") -> str:
    grouping = f" by ({by})" if by else ""
    return f"sum{grouping} ({one(f'rate({metric}{{{selector}}}[{RATE}])')}) * 3600"


def cluster_overview() -> m.Dashboard:
    gpus = f"sum({one('labq_gpus_capacity')})"
    allocated = f"sum({one('labq_gpus_allocated')})"
    running, waiting = 'labq_jobs{state="RUNNING"}', 'labq_jobs{state=~"PENDING|HELD"}'
    now = Row("Now", [
        stat("GPUs", "GPUs reported by the node agents.", Query(gpus), COUNT),
        stat("GPUs allocated", "GPUs held by labq jobs.", Query(allocated), COUNT),
        stat("Allocated", "Share of all GPUs held by labq jobs.",
             Query(f"{allocated} / {gpus}"), RATIO),
        stat("Allocated but idle GPUs",
             "GPUs held by a job but below the idle threshold for longer than idle_gpu_after_s: "
             "see the Nodes and GPUs dashboard for who holds them.",
             Query(f"sum({one('labq_gpus_allocated_idle')})"), WARN_IF_ANY),
        stat("Running jobs", "", Query(f"sum({one(running)})"), COUNT),
        stat("Waiting jobs", "PENDING and HELD jobs.", Query(f"sum({one(waiting)})"), COUNT),
        stat("Nodes up", "", Query(f"sum({one('labq_node_up')})"), COUNT),
        stat("Nodes down", "Nodes whose agent stopped reporting and that no admin drained: they "
             "get no new jobs.", Query(f"sum({one(node_state('DOWN'))})"), BAD_IF_ANY),
        stat("Nodes drained", "Nodes an admin drained (`labq admin node drain`): DRAINING while "
             "jobs still run there, DRAINED once none do; no new job starts there. `labq nodes` "
             "says who and why.", Query(f"sum({one(node_state('DRAINING|DRAINED'))})"),
             WARN_IF_ANY),
        stat("Unhealthy GPUs", "GPUs the agents report unhealthy (NVML).",
             Query(f"sum(1 - {one('labq_gpu_healthy')})"), BAD_IF_ANY),
        stat("Leading coordinators", "Exactly one coordinator must lead; 0 means nothing is "
             "scheduled.", Query("sum(labq_coordinator_leader)"), ONE_LEADER),
        stat("Oldest waiting job", "Age of the oldest PENDING or HELD job.",
             Query(f"max({one('labq_pending_oldest_seconds')})"), SECONDS),
        stat("p90 wait to start (1 h)",
             "90 % of the jobs started in the last hour waited less than this.",
             Query(wait_quantile(0.9)), SECONDS),
    ])
    trends = Row("Over time", [
        graph("GPUs", "", [Query(gpus, "total"), Query(allocated, "allocated"),
                           Query(f"sum({one('labq_gpus_allocated_idle')})",
                                 "allocated but idle")], COUNT),
        graph("Jobs by state", "", [Query(f"sum by (state) ({one('labq_jobs')})", "{{state}}")],
              COUNT, stacked=True),
        graph("Mean GPU utilization by node", "",
              [Query(f"avg by (node) ({one('labq_gpu_utilization_ratio')})", "{{node}}")], RATIO),
        graph("GPUs in use by account", "GPU-seconds used per second, i.e. GPUs held.",
              [Query(f"sum by (account) ({one(f'rate(labq_account_gpu_seconds_total[{RATE}])')})",
                     "{{account}}")], Look(unit="short"), stacked=True),
        graph("Waiting jobs by account", "",
              [Query(f"sum by (account) ({one('labq_pending_jobs')})", "{{account}}")],
              COUNT, stacked=True),
        graph("Jobs started per hour by account", "",
              [Query(per_hour("labq_admissions_total", "account"), "{{account}}")],
              Look(unit="short")),
        graph("Jobs ended per hour by outcome", "SUCCEEDED, FAILED, CANCELLED, TIMEOUT.",
              [Query(per_hour("labq_jobs_ended_total", "state"), "{{state}}")],
              Look(unit="short"), stacked=True),
        graph("Nodes by state", "UP, DOWN, and DRAINING/DRAINED for nodes an admin drained.",
              [Query(f"sum by (state) ({one('labq_node_state')})", "{{state}}")], COUNT,
              stacked=True),
    ])
    return board("labq-overview", "labq / Cluster overview",
                 "The lab's GPUs, jobs and queue at a glance.", [now, trends])


def users_and_budgets() -> m.Dashboard:
    spent = one(f"labq_budget_spent_billed_seconds{{{ACCOUNT}}}")
    limit = one(f"labq_budget_limit_billed_seconds{{{ACCOUNT}}}")
    budgets = Row("Budgets (billed GPU-hours: GPU-hours x the GPU model's billing weight)", [
        bars("Budget spent", "Share of each budget spent in its current period; jobs are held "
             "(BudgetExhausted) when spent + committed + their own cost would pass the limit.",
             Query(f"{spent} / {limit}", "{{account}} {{user}} ({{period}})", instant=True),
             BUDGET),
        grid("Budgets", "Account budgets have an empty user.",
             [Query(f"{spent} / 3600"), Query(f"{limit} / 3600"),
              Query(f"({limit} - {spent}) / 3600")], Look(unit="short", decimals=1),
             w=12, organize={"excludeByName": HIDE_TIME_AND_JOB, "renameByName": {
                 "Value #A": "spent", "Value #B": "limit", "Value #C": "left"}}),
    ])
    usage = Row("Usage", [
        graph("GPUs in use by user", "GPU-seconds used per second, i.e. GPUs held "
              "(all accounts: per-user usage has no account label).",
              [Query("sum by (user) "
                     f"({one(f'rate(labq_user_gpu_seconds_total{{{USER}}}[{RATE}])')})",
                     "{{user}}")], Look(unit="short"), stacked=True),
        graph("GPU utilization by user", "Mean utilization of the GPUs each user's jobs hold "
              "(as their agents report it); a user holding none has no line.",
              [Query(f"sum by (user) ({one(f'labq_user_gpus_utilized{{{USER}}}')}) / "
                     f"(sum by (user) ({one(f'labq_user_gpus_allocated{{{USER}}}')}) > 0)",
                     "{{user}}")], RATIO),
        graph("GPUs held by user", "", [Query(
            f"sum by (user) ({one(f'labq_user_gpus_allocated{{{USER}}}')})", "{{user}}")],
              COUNT, stacked=True),
        graph("Billing rate by account", "Billed GPU-hours charged per hour.",
              [Query(f"sum by (account) ("
                     f"{one(f'rate(labq_account_billed_units_total{{{ACCOUNT}}}[{RATE}])')})",
                     "{{account}}")], Look(unit="short"), stacked=True),
        bars("GPU-hours in the time range by user", "",
             Query("sort_desc(sum by (user) "
                   f"({one(in_range('labq_user_gpu_seconds_total', USER))}) / 3600)",
                   "{{user}}", instant=True), Look(unit="short", decimals=1), w=8),
        bars("Billed GPU-hours in the time range by user", "",
             Query("sort_desc(sum by (user) "
                   f"({one(in_range('labq_user_billed_units_total', USER))}) / 3600)",
                   "{{user}}", instant=True), Look(unit="short", decimals=1), w=8),
        bars("Billed GPU-hours in the time range by account", "",
             Query("sort_desc(sum by (account) "
                   f"({one(f'increase(labq_account_billed_units_total{{{ACCOUNT}}}[$__range])')})"
                   " / 3600)", "{{account}}", instant=True), Look(unit="short", decimals=1),
             w=8),
    ])
    fairness = Row("Fair share and queue", [
        graph("Fair-share factor", "The factor priority uses (0-1): low after heavy recent use.",
              [Query(one(f"labq_fairshare_factor{{{ACCOUNT}, {USER}}}"),
                     "{{account}} / {{user}}")],
              RATIO),
        graph("Effective usage", "Decayed usage as a share of the parent account's "
              "(Slurm's EffectvUsage).",
              [Query(one(f"labq_effective_usage_ratio{{{ACCOUNT}, {USER}}}"),
                     "{{account}} / {{user}}")],
              RATIO),
        graph("Waiting jobs by user", "",
              [Query(f"sum by (account, user) ({one(f'labq_pending_jobs{{{ACCOUNT}, {USER}}}')})",
                     "{{account}} / {{user}}")], COUNT, stacked=True),
        graph("Oldest waiting job by account", "",
              [Query(one(f"labq_pending_oldest_seconds{{{ACCOUNT}}}"), "{{account}}")], SECONDS),
        graph("Jobs started and preempted per hour", "",
              [Query(per_hour("labq_admissions_total", "account", ACCOUNT), "started {{account}}"),
               Query(per_hour("labq_preemptions_total", "account", ACCOUNT),
                     "preempted {{account}}")], Look(unit="short")),
        graph("p90 wait to start by account (1 h)", "",
              [Query(wait_quantile(0.9, "account", ACCOUNT), "{{account}}")], SECONDS),
    ])
    account = label_variable("account", "Account", '{__name__=~"labq_.*"}')
    user = label_variable("user", "User", "labq_user_gpus_allocated")
    return board("labq-users", "labq / Users and budgets",
                 "Who used the GPUs, how busy they kept them, what it cost against each budget, "
                 "and fair share.", [budgets, usage, fairness], [account, user])


def nodes_and_gpus() -> m.Dashboard:
    def by_node(metric: str) -> str:
        return f"sum by (node) ({one(f'{metric}{{{NODE}}}')})"

    def by_gpu(metric: str) -> str:
        return f"max by (node, gpu) ({metric}{{{NODE}}})"

    gpu_legend = "{{node}} GPU {{gpu}}"
    nodes = Row("Nodes", [
        grid("Nodes", "Each node's state: UP, DOWN (its agent is silent), or DRAINING / "
             "DRAINED when an admin drained it (`labq nodes` says who and why).",
             [Query(f"max by (node) (labq_node_up{{{NODE}}})"),
              Query(f"max by (node) (labq_node_heartbeat_age_seconds{{{NODE}}})"),
              Query(by_node("labq_gpus_capacity")),
              Query(by_node("labq_gpus_allocated")),
              Query(by_node("labq_gpus_idle")),
              Query(by_node("labq_gpus_allocated_idle")),
              Query(f"max by (node, state) (labq_node_state{{{NODE}}} == 1)")],
             Look(unit="short", decimals=0), organize={"excludeByName": {
                 "Time": True, "Value #G": True}, "renameByName": {
                 "Value #A": "up", "Value #B": "heartbeat age (s)", "Value #C": "GPUs",
                 "Value #D": "allocated", "Value #E": "free", "Value #F": "allocated but idle"}}),
        grid("Drains", "Who drained each node (`labq admin node drain`); the reason is in "
             "`labq nodes`. `labq admin node resume NODE` lifts a drain.",
             [Query(f"max by (node, drained_by) (labq_node_drained{{{NODE}}})")], DRAINED,
             w=12, organize={"excludeByName": {"Time": True}, "renameByName": {
                 "Value": "drained", "drained_by": "drained by"}}),
        graph("Node state over time", "1 while the node shows the state.",
              [Query(f"max by (node, state) (labq_node_state{{{NODE}}}) == 1",
                     "{{node}} {{state}}")], COUNT, w=12),
        graph("Heartbeat age", "Seconds since each node's agent last reported; the node is "
              "marked DOWN after node_timeout_s.",
              [Query(f"max by (node) (labq_node_heartbeat_age_seconds{{{NODE}}})", "{{node}}")],
              SECONDS),
        graph("GPUs allocated by node", "",
              [Query(by_node("labq_gpus_allocated"), "{{node}}")], COUNT, stacked=True),
    ])
    gpus = Row("GPUs", [
        graph("GPU utilization", "", [Query(by_gpu("labq_gpu_utilization_ratio"), gpu_legend)],
              RATIO),
        graph("GPU memory used", "", [Query(by_gpu("labq_gpu_memory_used_bytes"), gpu_legend)],
              Look(unit="bytes")),
        graph("GPU memory used (share)", "",
              [Query(f"{by_gpu('labq_gpu_memory_used_bytes')} / "
                     f"{by_gpu('labq_gpu_memory_total_bytes')}", gpu_legend)], RATIO),
        graph("Power", "", [Query(by_gpu("labq_gpu_power_watts"), gpu_legend)],
              Look(unit="watt")),
        graph("Temperature", "", [Query(by_gpu("labq_gpu_temperature_celsius"), gpu_legend)],
              Look(unit="celsius")),
        stat("GPU health", "As the agent reports it (NVML).",
             Query(by_gpu("labq_gpu_healthy"), gpu_legend, instant=True), HEALTH, w=12, h=8),
        stat("Processes labq did not start", "Per GPU: processes in no labq job's cgroup or "
             "process tree. Such a GPU gets no new job until they are gone "
             "(foreign_gpu_policy = avoid); `labq nodes` lists them.",
             Query(by_gpu("labq_gpu_foreign_processes"), gpu_legend, instant=True),
             WARN_IF_ANY, w=12, h=8),
    ])
    idle = Row("Allocated but idle", [
        stat("Allocated but idle GPUs", "GPUs held by a job whose utilization stayed below "
             "idle_gpu_threshold for idle_gpu_after_s.",
             Query(f"sum({one(f'labq_gpus_allocated_idle{{{NODE}}}')})"), WARN_IF_ANY, w=6, h=8),
        graph("Allocated but idle GPUs by node", "",
              [Query(by_node("labq_gpus_allocated_idle"), "{{node}}")], COUNT, w=18),
        grid("Allocated GPUs: seconds below the idle threshold", "Every allocated GPU with its "
             "holder; 0 while busy. `labq nodes` and `labq show JOB` say which job.",
             [Query("sort_desc(max by (node, gpu, model, account, user) "
                    f"(labq_gpu_allocated_idle_seconds{{{NODE}}}))")],
             Look(unit="s", steps=((None, "green"), (600, "orange"), (1800, "red"))),
             organize={"excludeByName": {"Time": True}, "renameByName": {
                 "Value": "idle for"}}),
    ])
    node = label_variable("node", "Node", "labq_node_up")
    return board("labq-nodes", "labq / Nodes and GPUs",
                 "Each node and GPU as its agent reports it, and GPUs held but idle.",
                 [nodes, gpus, idle], [node])


def scheduler_health() -> m.Dashboard:
    coordinators = Row("Coordinators", [
        stat("Leading coordinators", "Exactly one must lead (a lease in Redis); 0: nothing is "
             "scheduled; the followers take over within the lease time.",
             Query("sum(labq_coordinator_leader)"), ONE_LEADER, w=6, h=6),
        stat("Last cycle (leader)", "Duration of the leader's last scheduling cycle.",
             Query("max(labq_scheduling_cycle_last_seconds and on (instance) "
                   "(labq_coordinator_leader == 1))"), SECONDS, w=6, h=6),
        grid("Coordinators", "Every coordinator Prometheus scrapes, its versions and whether "
             "it reaches the store.",
             [Query("max by (instance) (labq_coordinator_leader)"),
              Query("max by (instance) (labq_scheduling_cycle_last_seconds)"),
              Query("max by (instance) (labq_store_up)"),
              Query("max by (instance, version, python) (labq_build_info)")],
             Look(unit="short"), w=12, h=6, organize={"excludeByName": {
                 "Time": True, "Value #D": True}, "renameByName": {
                 "Value #A": "leader", "Value #B": "last cycle (s)",
                 "Value #C": "store up"}}),
    ])
    store = Row("Store", [
        stat("Store answers", "Coordinators that reached the store (Redis/Valkey) at their "
             "last scrape, of all scraped; fewer: LabqStoreDown.",
             Query("sum(labq_store_up) / count(labq_store_up)"), Look(
                 unit="percentunit", min=0, max=1, steps=((None, "red"), (1, "green"))),
             w=6, h=6),
        graph("Store memory", "Used, and the store's maxmemory (0: no ceiling): at it, writes "
              "are refused (LabqStoreNearlyFull warns at 80 %).",
              [Query("max(labq_store_memory_used_bytes)", "used"),
               Query("max(labq_store_memory_max_bytes)", "maxmemory")],
              Look(unit="bytes"), w=18, h=6),
    ])
    cycles = Row("Scheduling cycles", [
        graph("Cycle duration quantiles", "Per coordinator; followers run no cycles.",
              [Query(cycle_quantile(q), f"p{int(q * 100)} {{{{instance}}}}")
               for q in (0.5, 0.9, 0.99)], SECONDS),
        buckets("Cycle duration", "How many cycles fell in each duration bucket.",
                f"sum by (le) (increase(labq_scheduling_cycle_duration_seconds_bucket[{RATE}]))",
                "s"),
        graph("Last cycle by coordinator", "",
              [Query("labq_scheduling_cycle_last_seconds", "{{instance}}")], SECONDS, w=24),
    ])
    admissions = Row("Admissions", [
        graph("Started, preempted and evicted per hour",
              "Evictions are running jobs labq ended: NodeLost, IdleGpu, TimeLimit.",
              [Query(per_hour("labq_admissions_total"), "started"),
               Query(per_hour("labq_preemptions_total"), "preempted"),
               Query(per_hour("labq_evictions_total", "reason"), "evicted: {{reason}}")],
              Look(unit="short")),
        graph("Jobs ended per hour by outcome", "Final state and reason code (the reason's "
              "first word: NonZeroExitCode, Signal, NodeLost, TimeLimit, ...).",
              [Query(per_hour("labq_jobs_ended_total", "state, reason"),
                     "{{state}} {{reason}}")], Look(unit="short")),
        graph("Wait to start quantiles (1 h window)", "From submit (or requeue) to start.",
              [Query(wait_quantile(q), f"p{int(q * 100)}") for q in (0.5, 0.9, 0.99)], SECONDS),
        buckets("Wait to start", "How many jobs started after each wait.",
                f"sum by (le) ({one(f'increase(labq_admission_wait_seconds_bucket[{RATE}])')})",
                "s", w=24),
    ])
    agents = Row("Agents", [
        graph("Heartbeat age by node", "Seconds since each agent last reported.",
              [Query("max by (node) (labq_node_heartbeat_age_seconds)", "{{node}}")], SECONDS),
        graph("Nodes up", "", [Query(f"sum({one('labq_node_up')})", "up"),
                               Query(f"count({one('labq_node_up')})", "known")], COUNT),
    ])
    return board("labq-scheduler", "labq / Scheduler health",
                 "The coordinators: leader, store, scheduling cycles, admissions, job outcomes "
                 "and agents.", [coordinators, store, cycles, admissions, agents])


DASHBOARDS = {
    "labq-overview.json": cluster_overview,
    "labq-users.json": users_and_budgets,
    "labq-nodes.json": nodes_and_gpus,
    "labq-scheduler.json": scheduler_health,
}
