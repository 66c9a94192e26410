"""Which process ran a cell, for the executor tests: the marks in its env.json that only the executor named can
leave (harness/records/store.py ``process_facts``), held against the driver's process id (run.json's
``driver_pid``). ``env.json["executor"]`` alone would not do: it is the config value, copied whatever ran the cell."""

from __future__ import annotations

import re


def ran_apart(env: dict, driver_pid: int, executor: str) -> list[str]:
    """What in a cell's env.json says it did not run as ``executor`` runs cells; [] when it holds what only that
    executor leaves. process: a process of its own, started by the driver. ray: a process of its own, started by a
    Ray worker that is not the driver, whose id and process id the cell recorded."""
    problems = []
    if env["pid"] == driver_pid:
        problems.append(f"the cell ran in the driver's own process ({driver_pid})")
    worker = env.get("ray")
    if executor == "process":
        if env["parent_pid"] != driver_pid:
            problems.append(f"the cell's parent is process {env['parent_pid']}, not the driver {driver_pid}")
        if worker is not None:
            problems.append(f"the cell was started by Ray worker {worker}")
    elif executor == "ray":
        if worker is None or not re.fullmatch(r"[0-9a-f]+", worker.get("worker_id") or ""):
            problems.append(f"no Ray worker id recorded ({worker})")
        elif env["parent_pid"] != worker["worker_pid"]:
            problems.append(f"the cell's parent {env['parent_pid']} is not the Ray worker {worker['worker_pid']}")
        if env["parent_pid"] == driver_pid:
            problems.append(f"the cell was started by the driver ({driver_pid}), not by a Ray worker")
    else:
        raise ValueError(f"no marks known for executor {executor!r}")
    return problems
