"""Which runs of a task a sweep would do, and why: one (experiment, seed) per run, pending or up to date.

A run is pending when `results/` has no successful result for it, when the configs recorded in its
result (sha256 of each config file) differ from the files now ("config changed"), or when a config
file was modified clearly after the result was written ("config touched": the reference's make
semantics, `touch` a config to rerun it).

Modification times alone cannot be trusted: a fresh clone gives every file the checkout's time, in
whatever order git writes them. So content decides first (the hashes), and a newer config counts as
touched only when it is newer than the result by more than TOUCH_TOLERANCE_S. A checkout writes a
task's files within moments of each other, and in path order (`default_training_params.json` and
`experiments/` before `results/`), while a deliberate `touch` comes minutes or days after the run.
Results without recorded hashes (the reference suite's files) fall back to modification times only.
A quick or shortened run (--quick, --set; peftbench.analysis.variant) is another identity: it never
makes the full run up to date, wherever its file lies.
"""

from __future__ import annotations

import contextlib
import fnmatch
import re
from dataclasses import dataclass
from pathlib import Path

from peftbench.analysis.variant import run_variant
from peftbench.config import read_json_object
from peftbench.errors import BadInput
from peftbench.experiment import Experiment, config_hashes, discover
from peftbench.files import DEFAULT_PARAMS, TEMPORARY_RESULTS
from peftbench.results import TrainStatus, load_result

# seconds by which a config must be newer than its result to count as touched (see the module doc);
# also above the 2 s timestamp granularity of FAT and some network filesystems
TOUCH_TOLERANCE_S = 2.0


@dataclass(frozen=True)
class Run:
    """One execution of an experiment with one seed: one result file."""

    experiment: Experiment
    seed: int

    @property
    def label(self) -> str:
        return f"{self.experiment.experiment_name} (seed {self.seed})"

    @property
    def stem(self) -> str:
        return self.experiment.result_stem(self.seed)

    @property
    def result_path(self) -> Path:
        return self.experiment.result_path(kind=self.experiment.results_kind, seed=self.seed)


@dataclass(frozen=True)
class RunState:
    pending: bool
    reason: str


def run_state(run: Run, *, include_temporary: bool = False) -> RunState:
    """Pending or up to date, with the reason in a few words.

    include_temporary: a successful full run in temporary_results/ (not --quick, no --set) counts
    too. Runs off main or on a modified checkout land there, so without it a sweep on a branch
    would redo every run each time, and could not resume after Ctrl-C.
    """
    state = _judge(run, run.result_path)
    if not state.pending or not include_temporary:
        return state
    for path in _temporary_results(run):
        temporary = _judge(run, path)
        if not temporary.pending:
            return RunState(False, f"{temporary.reason} (temporary_results/{path.name})")
    return state


def _temporary_results(run: Run) -> list[Path]:
    """The run's files in temporary_results/, newest first (`<stem>--<timestamp>.json`)."""
    folder = run.experiment.task_dir / TEMPORARY_RESULTS
    # an exact pattern: a glob on "<stem>--*" would also take seed 1's files for seed 0
    # (the time may carry fractions of a second: only its leading date is fixed)
    pattern = re.compile(re.escape(run.stem) + r"--\d{4}-\d\d-\d\dT[\d-]+\.json")
    found = [p for p in folder.glob(f"{run.stem}--*.json") if pattern.fullmatch(p.name)]
    return sorted(found, key=lambda p: p.name, reverse=True)


def _judge(run: Run, path: Path) -> RunState:
    """Is the result file at `path` an up-to-date result of `run`?"""
    if not path.is_file():
        return RunState(True, "no result")
    try:
        record = load_result(path)
    except BadInput as exc:
        return RunState(True, f"unreadable result: {exc}")
    if record["train_info"]["status"] != TrainStatus.SUCCESS:
        return RunState(True, f"result status is {record['train_info']['status']}")
    variant = run_variant(record["run_info"])
    if variant:
        return RunState(True, f"only a --quick or --set run ({variant})")
    recorded = record["run_info"].get("config_files_sha256")
    if isinstance(recorded, dict):
        current = config_hashes(run.experiment)
        changed = sorted(n for n in set(current) | set(recorded) if current.get(n) != recorded.get(n))
        if changed:
            return RunState(True, f"config changed: {', '.join(changed)}")
    result_mtime = path.stat().st_mtime
    touched = [
        f.name for f in run.experiment.config_files() if f.stat().st_mtime > result_mtime + TOUCH_TOLERANCE_S
    ]
    if touched:
        return RunState(True, f"config touched after the result: {', '.join(touched)}")
    if not isinstance(recorded, dict):
        return RunState(False, "up to date (by file times: the result records no config hashes)")
    return RunState(False, "up to date")


def parse_seeds(text: str | None) -> list[int] | None:
    """'0,1,2' -> [0, 1, 2]; None -> None (each experiment's configured seed)."""
    if text is None:
        return None
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise BadInput(f'--seeds "{text}": expected comma-separated integers, e.g. 0,1,2') from None
    if not seeds or any(s < 0 for s in seeds):
        raise BadInput(f'--seeds "{text}": expected one or more integers >= 0, e.g. 0,1,2')
    return sorted(set(seeds))


def select(experiments: list[Experiment], filters: str | None) -> list[Experiment]:
    """Experiments whose `<method>/<name>` matches any of the comma-separated globs (all without a filter)."""
    if not filters:
        return experiments
    globs = [g.strip() for g in filters.split(",") if g.strip()]
    chosen = [e for e in experiments if any(fnmatch.fnmatchcase(e.experiment_name, g) for g in globs)]
    if not chosen:
        names = ", ".join(e.experiment_name for e in experiments[:5])
        more = ", ..." if len(experiments) > 5 else ""
        raise BadInput(
            f'--filter "{filters}" matches none of the {len(experiments)} experiments '
            f"(<method>/<name>, e.g. {names}{more})"
        )
    return chosen


def plan(
    task_dir: str | Path,
    *,
    filters: str | None = None,
    seeds: list[int] | None = None,
    searched: bool = False,
) -> list[Run]:
    """Every run of the selected experiments; without seeds, each experiment's configured seed.
    `searched`: of the catalogue at its searched settings only (tuning.searched_stand_ins)."""
    if searched:
        from peftbench.tuning import searched_stand_ins

        stand_ins = searched_stand_ins(Path(task_dir))[0]
        if not stand_ins:
            raise BadInput(f"--searched: {task_dir}: no experiment has a finished search (peftbench tune)")
        experiments = select(stand_ins, filters)
    else:
        experiments = select(discover(task_dir), filters)
    if not experiments:
        raise BadInput(f"{task_dir}: no experiment folders under experiments/<method>/<name>")
    return [Run(experiment=exp, seed=seed) for exp in experiments for seed in seeds or [_seed(exp)]]


def _seed(exp: Experiment) -> int:
    """The seed a run of `exp` uses without --seed. Read from the JSON layers rather than by building the
    config, which validates the optimizer against torch and would cost the sweep a torch import."""
    seed: object = 0
    for path in (exp.task_dir / DEFAULT_PARAMS, exp.training_params_path):
        # one broken experiment must not stop the sweep: its own run reports the error
        with contextlib.suppress(BadInput):
            seed = read_json_object(path).get("seed", seed) if path.is_file() else seed
    return seed if isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0 else 0
