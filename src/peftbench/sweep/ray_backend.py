"""Ray backend: each run a Ray task with its own CPUs and GPUs, on a local instance or a cluster.

Workers return the result record to the driver, which writes it: workers never write to the
benchmark folder, so they need no shared filesystem for results. They do read the experiment's
configs (and a base model kept in the task folder) at the driver's path: every node needs the
benchmark at the same path (the same checkout, or a shared folder). A worker checks that its
configs hash like the driver's, so a stale node fails its run clearly instead of training the
wrong thing. Ray is an optional extra (`pip install 'peftbench[distributed]'`), imported lazily.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from peftbench.errors import BadInput
from peftbench.experiment import Experiment, config_hashes
from peftbench.files import RESULT_DIRS
from peftbench.progress import PROGRESS_FILE_ENV
from peftbench.results import TrainStatus, final_metrics, write_result
from peftbench.sweep.driver import BAD_INPUT, CRASHED, RunReport
from peftbench.sweep.locks import private_dir
from peftbench.sweep.pending import Run
from peftbench.sweep.view import progress_path_for
from peftbench.tasks.base import TEST_ACCURACY

# Environment that decides how a worker finds tasks, data, models and caches. Every PEFTBENCH_*
# variable (data mirrors such as PEFTBENCH_METAMATHQA, PEFTBENCH_CACHE, PEFTBENCH_TASKS, ...) goes with
# each task, plus these. Not forwarded: credentials (HF_TOKEN: runtime_env is visible in Ray's
# dashboard; log in on each node instead), CUDA_VISIBLE_DEVICES (Ray assigns GPUs), and the
# per-run progress file (set by the task itself).
FORWARDED_PREFIX = "PEFTBENCH_"
FORWARDED_ENV = (
    "PYTHONPATH",
    "XDG_CACHE_HOME",
    "HF_HOME",
    "HF_HUB_CACHE",
    "HF_DATASETS_CACHE",
    "HF_ENDPOINT",
    "HF_HUB_OFFLINE",
    "HF_DATASETS_OFFLINE",
)


def worker_env(environ: Mapping[str, str] = os.environ) -> dict[str, str]:
    """The driver's variables that a Ray worker needs, for the task's runtime_env."""
    return {
        key: value
        for key, value in environ.items()
        if (key.startswith(FORWARDED_PREFIX) and key != PROGRESS_FILE_ENV) or key in FORWARDED_ENV
    }


def run_remote(
    *,
    experiment_path: str,
    task_dir: str,
    seed: int,
    quick: bool,
    threads: int,
    hashes: dict[str, str],
    progress_file: str | None = None,
) -> dict[str, Any]:
    """The body of one Ray task: train without writing, return the record and where it belongs.

    The run writes its progress to `progress_file`, a path on the driver's machine: the sweep shows it
    when the worker shares that filesystem (a local instance, a shared folder); elsewhere the writes
    fail quietly and the sweep shows the run without its step.
    """
    import torch

    from peftbench.run import execute

    torch.set_num_threads(threads)
    if progress_file:
        # max_calls=1 gives each run a fresh worker process: the variable cannot leak into another run
        os.environ[PROGRESS_FILE_ENV] = progress_file
    host = socket.gethostname()
    exp = Experiment(path=Path(experiment_path), task_dir=Path(task_dir))
    if not exp.path.is_dir():
        raise BadInput(
            f"Ray node {host}: no folder {experiment_path}; every node needs the benchmark at the "
            "driver's path (same checkout or a shared folder)"
        )
    if config_hashes(exp) != hashes:
        raise BadInput(
            f"Ray node {host}: the config files of {exp.experiment_name} differ from the driver's; "
            "update the checkout on that node"
        )
    outcome = execute(exp, seed=seed, quick=quick, write=False)
    return {
        "record": outcome.record,
        "completions": outcome.completions,
        "result": outcome.path.relative_to(exp.task_dir).as_posix(),
        "node": host,
    }


def _import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise BadInput(
            "--backend ray needs Ray, which is not installed: pip install 'peftbench[distributed]'"
        ) from None
    return ray


class RayBackend:
    def __init__(
        self,
        *,
        address: str | None,
        jobs: int | None = None,
        cpus_per_run: int | None = None,
        gpus_per_run: float = 0,
    ) -> None:
        ray = _import_ray()
        self._ray = ray
        self.cpus = cpus_per_run or 1
        self.gpus = gpus_per_run
        # Ray schedules by resources; the driver only caps how many runs are claimed at once
        self.max_parallel = jobs or 10_000
        self._owns = not ray.is_initialized()
        if self._owns:
            options: dict[str, Any] = {"log_to_driver": False}
            if address is None:
                options["include_dashboard"] = False
            ray.init(address=address, **options)
        self._check_resources(cluster=address is not None)
        # max_calls=1: a fresh worker process per run, as with the local backend, so that the memory
        # a run measures (process RSS on a CPU) and torch's global settings do not carry over
        self._remote = ray.remote(max_calls=1)(run_remote)
        self._lock = threading.Lock()
        self._refs: set[Any] = set()
        self._stopping = False

    def _check_resources(self, *, cluster: bool) -> None:
        total = self._ray.cluster_resources()
        short = [
            f"{what} {need} per run, the Ray instance has {total.get(key, 0):g}"
            for what, key, need in [
                ("--cpus-per-run", "CPU", self.cpus),
                ("--gpus-per-run", "GPU", self.gpus),
            ]
            if need and total.get(key, 0) < need
        ]
        if short and not cluster:
            self.close()
            raise BadInput("; ".join(short))
        for line in short:  # an autoscaling cluster may still add such nodes
            print(f"sweep: warning: {line}")

    def describe(self) -> str:
        total = self._ray.cluster_resources()
        return (
            f"ray: {total.get('CPU', 0):g} CPU(s), {total.get('GPU', 0):g} GPU(s) in the instance; "
            f"{self.cpus} CPU(s) and {self.gpus:g} GPU(s) per run"
        )

    def task_options(self) -> dict[str, Any]:
        """Ray options of one run. The environment goes with each task, not with ray.init: a Ray
        instance that the caller started or a cluster's workers would not see it otherwise."""
        return {
            "num_cpus": self.cpus,
            "num_gpus": self.gpus,
            "runtime_env": {"env_vars": worker_env()},
        }

    def execute(self, run: Run, *, quick: bool, log_path: Path) -> RunReport:
        ray = self._ray
        exp = run.experiment
        private_dir(log_path.parent)  # before the task starts: it writes its progress file there
        with self._lock:
            if self._stopping:
                return RunReport(run, "not started")
            ref = self._remote.options(**self.task_options()).remote(
                experiment_path=str(exp.path),
                task_dir=str(exp.task_dir),
                seed=run.seed,
                quick=quick,
                threads=self.cpus,
                hashes=config_hashes(exp),
                progress_file=str(progress_path_for(log_path)),
            )
            self._refs.add(ref)
        tic = time.perf_counter()
        report = RunReport(run, CRASHED, log=log_path)
        with open(log_path, "w", encoding="utf-8") as log:
            log.write(f"ray task {ref.task_id().hex()} for {run.label}\n")
            try:
                out = ray.get(ref)
            except ray.exceptions.TaskCancelledError:
                report.status = TrainStatus.CANCELED
            except ray.exceptions.RayTaskError as exc:
                cause = getattr(exc, "cause", None)
                if isinstance(cause, BadInput):
                    report.status, report.message = BAD_INPUT, str(cause).splitlines()[0]
                else:
                    report.message = f"{type(cause or exc).__name__}: {cause or exc}".splitlines()[0]
                log.write(str(exc) + "\n")
            except ray.exceptions.RayError as exc:  # worker or node died (e.g. killed for memory)
                report.message = f"{type(exc).__name__}: {exc}".splitlines()[0]
                log.write("".join(traceback.format_exception(exc)))
            else:
                try:
                    self._store(report, out, log=log)
                except (OSError, ValueError) as exc:  # the record could not be written here
                    report.message = f"{type(exc).__name__}: {exc}"
                    log.write(report.message + "\n")
            finally:
                with self._lock:
                    self._refs.discard(ref)
            report.wall_time = time.perf_counter() - tic
            log.write(f"--- {report.status} after {report.wall_time:.1f} s ---\n")
        return report

    def _store(self, report: RunReport, out: dict[str, Any], *, log: Any) -> None:
        """Write the record that a worker returned; only into the task's own result folders."""
        task_dir = report.run.experiment.task_dir
        relative = Path(out["result"])
        if len(relative.parts) != 2 or relative.parts[0] not in RESULT_DIRS:
            raise ValueError(f"worker returned an unexpected result path {relative}")
        record = out["record"]
        path = task_dir / relative
        write_result(path, record, out.get("completions"))
        status = record["train_info"]["status"]
        log.write(f"node {out['node']}: {status}, written to {path}\n")
        report.result = path
        report.test_accuracy = final_metrics(record).get(TEST_ACCURACY.key)
        if status == TrainStatus.SUCCESS:
            report.status = TrainStatus.SUCCESS
        else:
            report.status = TrainStatus.CANCELED if self._stopping else TrainStatus.FAILED
            report.message = record["run_info"].get("error_msg") or ""

    def interrupt(self, *, hard: bool) -> None:
        with self._lock:
            self._stopping = True
            refs = list(self._refs)
        for ref in refs:
            # force=False raises KeyboardInterrupt in the task: the runner ends it as canceled and
            # returns its record, which execute() writes to cancelled_results/
            self._ray.cancel(ref, force=hard)

    def close(self) -> None:
        if self._owns and self._ray.is_initialized():
            self._ray.shutdown()
