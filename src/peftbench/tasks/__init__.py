"""The task registry. A task is found by the name of its folder under `benchmarks/`.

Built-in tasks are listed in `BUILTIN`; third-party packages can add tasks through the
`peftbench.tasks` entry-point group (value "module:ClassName"), and a user can register tasks
without packaging them through the environment variable PEFTBENCH_TASKS="name=module:ClassName,..."
(the module must be importable, e.g. via PYTHONPATH). None of these need changes here.
"""

from __future__ import annotations

import importlib
import os
from functools import cache
from importlib.metadata import entry_points

from peftbench.errors import BadInput, did_you_mean
from peftbench.tasks.base import COMMON_METRICS, Example, Metric, Task, TaskData

__all__ = ["COMMON_METRICS", "Example", "Metric", "Task", "TaskData", "available_tasks", "get_task"]

BUILTIN = {
    "tinymath": "peftbench.tasks.tinymath:TinyMath",
    "tinymath-rl": "peftbench.tasks.tinymath_rl:TinyMathRL",
    "MetaMathQA": "peftbench.tasks.metamathqa:MetaMathQA",
}


def available_tasks() -> dict[str, str]:
    tasks = dict(BUILTIN)
    for ep in entry_points(group="peftbench.tasks"):
        tasks.setdefault(ep.name, ep.value)
    for item in filter(None, os.environ.get("PEFTBENCH_TASKS", "").split(",")):
        name, sep, target = item.strip().partition("=")
        if not sep or ":" not in target:
            raise BadInput(f'PEFTBENCH_TASKS: "{item}" is not name=module:ClassName')
        tasks[name] = target
    return tasks


@cache
def get_task(name: str) -> Task:
    tasks = available_tasks()
    if name not in tasks:
        raise BadInput(
            f'unknown task "{name}"{did_you_mean(name, tasks)}; known tasks: {", ".join(sorted(tasks))}'
        )
    module_name, _, class_name = tasks[name].partition(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    return cls()
