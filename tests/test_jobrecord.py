"""The job-record family: a Job is its JobSpec (the request, declared once) and more, and gives
it back; a new job is made from a spec by name, not by a hand-written copy."""

from __future__ import annotations

from dataclasses import fields

from scheduler.model import REQUEST_FIELDS, Job, JobSpec, JobState
from scheduler.store.records import job_from_spec

SPEC = JobSpec(user="alice", account="lab", command=["python", "x.py"], gpus=4,
               gpu_type="A100", time_limit_s=600, qos="high", name="n", workdir="/w",
               env={"A": "1"}, requeue=True, submitter="root", output="o-%j", error="e-%j",
               script="#!/bin/sh\n", submit_dir="/s", dependency="afterok:3", nodes=2)


def test_every_request_field_is_a_job_field_of_the_same_type() -> None:
    assert issubclass(Job, JobSpec)  # the request fields are declared once, on JobSpec
    job_types = {f.name: f.type for f in fields(Job)}
    for field in fields(JobSpec):
        assert field.name in job_types, field.name
        assert job_types[field.name] == field.type, field.name
    assert tuple(f.name for f in fields(JobSpec)) == REQUEST_FIELDS


def test_a_job_gives_back_the_spec_it_was_made_of() -> None:
    job = Job.from_spec(SPEC, "17", 1000.0)
    assert (job.id, job.state, job.submitted_at) == ("17", JobState.PENDING, 1000.0)
    assert job.spec == SPEC
    assert job.gpus_per_node == SPEC.gpus_per_node == 2


def test_a_stored_job_is_made_from_its_spec_as_before() -> None:
    job = job_from_spec(SPEC, "17", 1000.0)
    assert job == Job(
        id="17", user="alice", account="lab", state=JobState.PENDING, gpus=4,
        command=["python", "x.py"], submitted_at=1000.0, time_limit_s=600, gpu_type="A100",
        qos="high", name="n", workdir="/w", env={"A": "1"}, requeue=True, submitter="root",
        reason="Submitted", output="o-%j", error="e-%j", script="#!/bin/sh\n",
        submit_dir="/s", dependency="afterok:3", nodes=2)
    assert job_from_spec(JobSpec("bob", "lab", ["true"]), "1", 0.0).submitter == "bob"
