"""Turning a client's request into a JobSpec: good input passes, bad input gets one clear line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from scheduler.config import Settings
from scheduler.model import JobSpec, Node, NodeState
from scheduler.server.fits import node_shapes
from scheduler.server.validation import InputError, array_spec, build_spec, check_user_name


def make_node(name: str, gpus: int, model: str, state: NodeState = NodeState.UP) -> Node:
    return Node(
        name=name, state=state, gpus_total=gpus, gpu_model=model, last_heartbeat=0.0,
        gpus=[], allocations={},
    )


NODES: list[Node] = [
    make_node("a100-box", 4, "NVIDIA A100-SXM4-80GB"),
    make_node("rtx-box", 8, "NVIDIA GeForce RTX 3090"),
]


def settings(**overrides: Any) -> Settings:
    return Settings(home=Path("/nonexistent/labq-home"), **overrides)


def body(**fields: Any) -> dict[str, Any]:
    base: dict[str, Any] = {"command": ["python", "train.py"]}
    base.update(fields)
    return base


# ------------------------------------------------------------------------------ good input


def test_minimal_request_gets_defaults() -> None:
    spec = build_spec(body(), "alice", NODES, settings())
    assert spec == JobSpec(
        user="alice", account="default", command=["python", "train.py"], gpus=1, gpu_type=None,
        time_limit_s=3600, qos="normal", name="", workdir="/", env={}, requeue=False,
        submitter="alice",
    )


def test_full_request_is_carried_into_the_spec() -> None:
    spec = build_spec(
        body(
            gpus=4, gpu_type="a100", time="2h", qos="scavenger", account="vision-lab",
            name="sweep 1", workdir="/home/alice/run", env={"SEED": "7", "_X": ""},
            requeue=True,
        ),
        "alice", NODES, settings(),
    )
    assert spec == JobSpec(
        user="alice", account="vision-lab", command=["python", "train.py"], gpus=4,
        gpu_type="a100", time_limit_s=7200, qos="scavenger", name="sweep 1",
        workdir="/home/alice/run", env={"SEED": "7", "_X": ""}, requeue=True,
        submitter="alice",
    )


@pytest.mark.parametrize(
    ("fields", "attr", "expected"),
    [
        pytest.param({"gpus": "2"}, "gpus", 2, id="gpus-as-text"),
        pytest.param({"gpus": 8}, "gpus", 8, id="gpus-fill-largest-node"),
        pytest.param({"gpu_type": "RTX 3090", "gpus": 8}, "gpu_type", "RTX 3090",
                     id="type-by-family-with-space"),
        pytest.param({"gpu_type": "NVIDIA A100-SXM4-80GB"}, "gpu_type",
                     "NVIDIA A100-SXM4-80GB", id="type-by-exact-model"),
        pytest.param({"time": "90"}, "time_limit_s", 5400, id="time-plain-minutes"),
        pytest.param({"time": "7-00:00:00"}, "time_limit_s", 7 * 86400, id="time-at-maximum"),
        pytest.param({"time": 30}, "time_limit_s", 1800, id="time-as-number"),
        pytest.param({"gpu_type": ""}, "gpu_type", None, id="empty-type-means-any"),
    ],
)
def test_good_field_values(fields: dict[str, Any], attr: str, expected: Any) -> None:
    spec = build_spec(body(**fields), "bob", NODES, settings())
    assert getattr(spec, attr) == expected


def test_default_time_limit_and_account_come_from_settings() -> None:
    spec = build_spec(
        body(), "bob", NODES, settings(default_time_limit_s=600, default_account="physics")
    )
    assert (spec.time_limit_s, spec.account) == (600, "physics")


def test_gpu_count_checked_against_nodes_of_requested_type_only() -> None:
    # 8 GPUs exist on the RTX node, but the largest A100 node has 4.
    with pytest.raises(InputError, match=r"largest node of type a100 has 4 GPUs"):
        build_spec(body(gpus=8, gpu_type="a100"), "bob", NODES, settings())


def test_down_nodes_still_count_as_registered() -> None:
    nodes = [make_node("only", 2, "NVIDIA H100 80GB HBM3", NodeState.DOWN)]
    spec = build_spec(body(gpus=2, gpu_type="h100"), "bob", nodes, settings())
    assert spec.gpus == 2


# ------------------------------------------------------------------------------ bad input

BAD_CASES: list[Any] = [
    pytest.param(body(gpus=0), NODES, r"--gpus 0: a job needs at least 1 GPU", id="zero-gpus"),
    pytest.param(body(gpus=-2), NODES, r"--gpus -2: a job needs at least 1 GPU",
                 id="negative-gpus"),
    pytest.param(body(gpus="two"), NODES, r"--gpus 'two' must be a whole number",
                 id="gpus-not-a-number"),
    pytest.param(body(gpus=True), NODES, r"--gpus True must be a whole number", id="gpus-bool"),
    pytest.param(body(gpus=9), NODES, r"--gpus 9: the largest node has 8 GPUs",
                 id="more-gpus-than-any-node"),
    pytest.param(body(gpu_type="h100"), NODES, r"unknown --gpu-type 'h100': this cluster has "
                 r".*A100.*RTX3090", id="unknown-gpu-type"),
    pytest.param(body(time="soon"), NODES, r"cannot read time limit 'soon'",
                 id="unparsable-time"),
    pytest.param(body(time="0"), NODES, r"time limit .0. must be at least one second",
                 id="zero-time"),
    pytest.param(body(time="8d"), NODES, r"--time 8d: longer than the cluster's maximum of "
                 r"7-00:00:00", id="too-long-time"),
    pytest.param(body(command=[]), NODES, r"empty command", id="empty-command-list"),
    pytest.param({"gpus": 1}, NODES, r"empty command", id="missing-command"),
    pytest.param(body(command="python train.py"), NODES, r"empty command",
                 id="command-is-a-string"),
    pytest.param(body(command=["  ", "x"]), NODES, r"first word of the command is blank",
                 id="blank-first-word"),
    pytest.param(body(command=["python", 3]), NODES, r"empty command",
                 id="command-with-non-string"),
    pytest.param(body(env={"1BAD": "x"}), NODES, r"bad --env '1BAD'", id="env-key-digit-first"),
    pytest.param(body(env={"MY-VAR": "x"}), NODES, r"bad --env 'MY-VAR'", id="env-key-dash"),
    pytest.param(body(env={"OK": 5}), NODES, r"bad --env 'OK'", id="env-value-not-text"),
    pytest.param(body(env=["A=1"]), NODES, r"--env must be given as K=V", id="env-not-a-map"),
    pytest.param(body(env={"CUDA_VISIBLE_DEVICES": "0"}), NODES,
                 r"--env CUDA_VISIBLE_DEVICES: labq sets it", id="reserved-env-cuda"),
    pytest.param(body(env={"LABQ_JOB_ID": "1"}), NODES, r"--env LABQ_JOB_ID: labq sets LABQ_",
                 id="reserved-env-job-id"),
    pytest.param(body(qos="urgent"), NODES, r"unknown --qos 'urgent': choose one of normal, "
                 r"scavenger", id="bad-qos"),
    pytest.param(body(workdir="home/alice"), NODES, r"--workdir 'home/alice' must be an "
                 r"absolute path", id="relative-workdir"),
    pytest.param(body(account="bad account"), NODES, r"bad --account 'bad account'",
                 id="account-with-space"),
    pytest.param(body(name="two\nlines"), NODES, r"--name must be one line", id="multiline-name"),
    pytest.param(body(name="x" * 129), NODES, r"at most 128 characters", id="name-too-long"),
    pytest.param(body(), [], r"no GPU node has registered yet", id="no-nodes-registered"),
]


@pytest.mark.parametrize(("request_body", "nodes", "pattern"), BAD_CASES)
def test_bad_input_gets_one_line_input_error(
    request_body: dict[str, Any], nodes: list[Node], pattern: str
) -> None:
    with pytest.raises(InputError, match=pattern) as info:
        build_spec(request_body, "alice", nodes, settings())
    assert "\n" not in str(info.value)


def test_overflowing_time_is_an_input_error() -> None:
    with pytest.raises(InputError):
        build_spec(body(time="9" * 400 + "s"), "alice", NODES, settings())


def test_sub_second_time_is_refused() -> None:
    with pytest.raises(InputError):
        build_spec(body(time="0.4s"), "alice", NODES, settings())


def test_fractional_gpu_count_is_refused() -> None:
    with pytest.raises(InputError, match=r"--gpus"):
        build_spec(body(gpus=1.5), "alice", NODES, settings())


def test_max_time_limit_comes_from_settings() -> None:
    pattern = r"--time 2h: longer than the cluster's maximum of 1:00:00"
    with pytest.raises(InputError, match=pattern):
        build_spec(body(time="2h"), "alice", NODES, settings(max_time_limit_s=3600))


def test_custom_qos_names_from_settings() -> None:
    spec = build_spec(body(qos="debug"), "alice", NODES, settings(qos_names=("debug",)))
    assert spec.qos == "debug"
    with pytest.raises(InputError, match=r"unknown --qos 'normal'"):
        build_spec(body(qos="normal"), "alice", NODES, settings(qos_names=("debug",)))


# ------------------------------------------------------------------------------ arrays, users


@pytest.mark.parametrize(("value", "count"), [(None, 1), ("0-4", 5), ("1,3,5-7%2", 5),
                                              ("0-999", 1_000)])
def test_array_spec_accepts(value: Any, count: int) -> None:
    request = {} if value is None else {"array": value}
    array = array_spec(request, settings().max_array_size)
    assert (len(array.indices) if array else 1) == count


@pytest.mark.parametrize("value", [5, "0-1000", "many", "0-9%0", ["0-3"]])
def test_array_spec_rejects(value: Any) -> None:
    with pytest.raises(InputError, match=r"--array"):
        array_spec({"array": value}, settings().max_array_size)


def test_root_is_refused_at_submit_saying_what_to_do() -> None:
    with pytest.raises(InputError, match=r"never runs a job as root.*--as USER"):
        build_spec(body(), "root", NODES, settings())


def test_a_batch_script_needs_an_interpreter_line_and_fits_the_limit() -> None:
    spec = build_spec(body(command=[], script="#!/bin/sh\necho hi\n"), "alice", NODES,
                      settings())
    assert spec.script.startswith("#!/bin/sh") and spec.command == []
    with pytest.raises(InputError, match=r"#! and the path to an interpreter"):
        build_spec(body(command=[], script="echo hi\n"), "alice", NODES, settings())
    with pytest.raises(InputError, match=r"max_script_bytes"):
        build_spec(body(command=[], script="#!/bin/sh\n" + "#" * 300_000), "alice", NODES,
                   settings())


@pytest.mark.parametrize("name", ["alice", "a.b-c_d", "user@lab", "_svc"])
def test_check_user_name_accepts(name: str) -> None:
    assert check_user_name(name) == name


@pytest.mark.parametrize("name", ["", "-dash-first", "has space", "a:b", "x" * 65, "a/b"])
def test_check_user_name_rejects(name: str) -> None:
    with pytest.raises(InputError, match=r"bad user name"):
        check_user_name(name)


def test_huge_whole_numbers_are_refused_in_one_short_line() -> None:
    for value in (10**4000, -(10**30), "9" * 5000):
        with pytest.raises(InputError) as caught:
            build_spec(body(gpus=value), "alice", NODES, settings())
        message = str(caught.value)
        assert "\n" not in message and len(message) < 120, message


# ------------------------------------------------------------------------------ --nodes


def test_nodes_counts_only_nodes_with_the_gpus_per_node_of_the_type() -> None:
    nodes = [*NODES, make_node("a100-two", 4, "NVIDIA A100-SXM4-80GB"),
             make_node("a100-small", 2, "NVIDIA A100-SXM4-80GB")]
    with pytest.raises(InputError, match=r"--nodes 3 --gpus 4: this cluster has 2 node\(s\) "
                                         r"of type a100 with 4 GPUs"):
        build_spec(body(gpus=4, nodes=3, gpu_type="a100"), "bob", nodes, settings())
    with pytest.raises(InputError, match=r"--nodes 0: a job runs on at least 1 node"):
        build_spec(body(nodes=0), "bob", nodes, settings())
    with pytest.raises(InputError, match=r"--nodes 1.5 must be a whole number"):
        build_spec(body(nodes=1.5), "bob", nodes, settings())
    with pytest.raises(InputError, match=r"on each of its --nodes"):
        build_spec(body(gpus=8, nodes=2, gpu_type="a100"), "bob", nodes, settings())


def test_one_node_is_the_default_and_its_gpus_are_the_jobs() -> None:
    spec = build_spec(body(gpus=3), "bob", NODES, settings())
    assert (spec.nodes, spec.gpus, spec.gpus_per_node) == (1, 3, 3)


def test_a_job_across_nodes_counts_its_gpus_on_every_node() -> None:
    nodes = [*NODES, make_node("a100-two", 4, "NVIDIA A100-SXM4-80GB")]
    spec = build_spec(body(gpus=4, nodes=2, gpu_type="a100"), "bob", nodes, settings())
    assert (spec.nodes, spec.gpus, spec.gpus_per_node) == (2, 8, 4)


# ------------------------------------------------------------------------------ the wire type


def test_the_server_reads_a_submit_as_the_wire_type_the_cli_sends() -> None:
    """What the CLI sends (`SubmitRequest.to_json`) parses back into the same request, and a
    request and its JSON body make the same spec; unknown fields are ignored, as before."""
    from scheduler.wire import SubmitRequest

    sent = SubmitRequest(command=["python", "train.py"], gpus=2, time="2h", name="run",
                         env={"SEED": "1"}, requeue=True, token="t1", array="0-3")
    assert SubmitRequest.from_json(sent.to_json()) == sent
    assert SubmitRequest.from_json({**sent.to_json(), "colour": "blue"}) == sent
    assert build_spec(sent, "alice", NODES, settings()) == \
        build_spec(sent.to_json(), "alice", NODES, settings())
    spec = array_spec(sent, 100)
    assert spec is not None and list(spec.indices) == [0, 1, 2, 3]
    assert SubmitRequest.from_json({}).command is None  # refused by the validation:
    with pytest.raises(InputError, match="empty command"):
        build_spec(SubmitRequest.from_json({}), "alice", NODES, settings())


# ---------------------------------------------------------------------------- CPUs, memory, notify


def sized(name: str, gpus: int, cpus: int, mem: int) -> Node:
    return Node(name, NodeState.UP, gpus, "NVIDIA A100-SXM4-80GB", 0.0, [], {}, cpus=cpus,
                memory_mb=mem)


def test_cpus_and_memory_are_kept_as_asked_and_defaults_fill_in_per_gpu() -> None:
    spec = build_spec(body(cpus=4, mem="16G"), "alice", NODES, settings())
    assert (spec.cpus, spec.cpus_per_gpu, spec.mem, spec.mem_per_gpu) == (4, 0, 16384, 0)
    spec = build_spec(body(cpus_per_gpu=2, mem_per_gpu="512M"), "alice", NODES, settings())
    assert (spec.cpus, spec.cpus_per_gpu, spec.mem, spec.mem_per_gpu) == (0, 2, 0, 512)
    spec = build_spec(body(), "alice", NODES, settings())
    assert (spec.cpus, spec.cpus_per_gpu, spec.mem, spec.mem_per_gpu) == (0, 0, 0, 0)  # share
    spec = build_spec(body(cpus=3), "alice", NODES,
                      settings(def_cpus_per_gpu=6, def_mem_per_gpu=4096))
    assert (spec.cpus, spec.cpus_per_gpu, spec.mem, spec.mem_per_gpu) == (3, 0, 0, 4096)


@pytest.mark.parametrize(("fields", "message"), [
    ({"cpus": 0}, "--cpus 0: give at least 1 CPU"),
    ({"cpus": "two"}, "--cpus 'two' must be a whole number"),
    ({"cpus": 2, "cpus_per_gpu": 2}, "give --cpus or --cpus-per-gpu, not both"),
    ({"mem": "lots"}, "--mem 'lots': give a size such as 16G, 512M or 2048 (MiB)"),
    ({"mem": 1.5}, "--mem must be a size such as 16G or 512M"),
    ({"mem": "1G", "mem_per_gpu": "1G"}, "give --mem or --mem-per-gpu, not both"),
    ({"notify": "begin,lunch"}, "--notify: unknown event 'lunch': choose from begin, end, "
                                "fail, timeout, requeue, all, none"),
    ({"notify": 3}, "--notify must be text"),
])
def test_bad_cpus_memory_or_notify_is_one_line(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(InputError) as caught:
        build_spec(body(**fields), "alice", NODES, settings())
    assert str(caught.value) == message


def test_notify_is_kept_in_its_canonical_order() -> None:
    assert build_spec(body(notify="end,BEGIN"), "alice", NODES, settings()).notify == "begin,end"
    assert build_spec(body(notify="all"), "alice", NODES, settings()).notify == \
        "begin,end,fail,timeout,requeue"
    assert build_spec(body(notify="none"), "alice", NODES, settings()).notify == ""


def test_a_job_no_node_could_ever_hold_is_refused_naming_the_resource() -> None:
    nodes = [sized("a", 4, 16, 65536), sized("b", 8, 32, 131072)]
    with pytest.raises(InputError) as caught:
        build_spec(body(mem="200G"), "alice", nodes, settings())
    assert str(caught.value) == ("not enough memory: the job asks for 200G on a node; the "
                                 "largest node has 128G")
    with pytest.raises(InputError) as caught:
        build_spec(body(cpus_per_gpu=8, gpus=8), "alice", nodes, settings())
    assert str(caught.value) == ("not enough CPUs: the job asks for 64 CPUs on a node; the "
                                 "largest node has 32 CPUs")
    with pytest.raises(InputError, match="not enough CPUs"):  # 2 nodes of 24 CPUs: only b
        build_spec(body(cpus=24, nodes=2), "alice", nodes, settings())
    assert build_spec(body(cpus=32, mem="128G"), "alice", nodes, settings()).cpus == 32


def test_shapes_decide_as_the_nodes_they_stand_for() -> None:
    """The API keeps the nodes' shapes (a submit's checks walk a few shapes, not 1,000 nodes):
    every check counts a shape's nodes as the nodes themselves would count."""
    nodes = ([sized(f"a{i}", 4, 16, 65536) for i in range(500)]
             + [sized(f"b{i}", 8, 32, 131072) for i in range(300)])
    shapes = node_shapes(nodes)
    assert sorted((s.gpus_total, s.count) for s in shapes) == [(4, 500), (8, 300)]
    asks = [body(gpus=8, nodes=300), body(gpus=8, nodes=301), body(gpus=4, nodes=800),
            body(gpus=4, nodes=801), body(cpus=24, nodes=300), body(cpus=24, nodes=301),
            body(mem="100G", gpus=2, nodes=300), body(mem="100G", nodes=301)]
    for ask in asks:
        outcomes = []
        for given in (nodes, shapes):
            try:
                spec = build_spec(ask, "alice", given, settings())
                outcomes.append(("ok", spec.nodes, spec.gpus, spec.cpus, spec.mem))
            except InputError as exc:
                outcomes.append(("refused", str(exc)))
        assert outcomes[0] == outcomes[1], ask
    refused = [a for a in asks
               if isinstance(_try(a, shapes), str)]
    assert len(refused) == 4  # each second ask of a pair is one node too many
    assert _try(body(gpus=8, nodes=301), shapes) == (
        "--nodes 301 --gpus 8: this cluster has 300 node(s) with 8 GPUs")


def _try(ask: dict[str, Any], nodes: Any) -> Any:
    try:
        return build_spec(ask, "alice", nodes, settings())
    except InputError as exc:
        return str(exc)
