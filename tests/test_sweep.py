"""Sweeps: pending detection, locks, the local backend, Ctrl-C, and real sweeps of toy experiments."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import toyworld

from peftbench import cli
from peftbench.errors import BadInput
from peftbench.experiment import config_hashes
from peftbench.results import atomic_write_json, load_result
from peftbench.sweep import pending
from peftbench.sweep.driver import RunReport, run_sweep
from peftbench.sweep.local import LocalBackend
from peftbench.sweep.locks import claimed, private_dir
from peftbench.sweep.pending import Run, parse_seeds, plan, run_state

TESTS = Path(__file__).resolve().parent
LORA2 = {"peft_type": "LORA", "r": 2, "target_modules": ["q_proj"], "task_type": "CAUSAL_LM"}


class MarkerToyTask(toyworld.ToyTask):
    """The toy task, touching $PEFTBENCH_TEST_MARKER when its data is loaded (training starts next)."""

    def load_data(self, *, task_dir, seed=0):
        marker = os.environ.get("PEFTBENCH_TEST_MARKER")
        if marker:
            Path(marker).touch()
        return super().load_data(task_dir=task_dir, seed=seed)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("toy-model")
    toyworld.build_tiny_model(folder)
    return folder


def make_task(root: Path, model_dir: Path) -> Path:
    """The toy task with three experiments: full-finetuning/toy-default, lora/toy-rank2, lora/toy-rank4."""
    task_dir = toyworld.make_task_dir(root, model_dir=model_dir)
    (task_dir / "experiments" / "lora" / "toy-rank2").mkdir()
    (task_dir / "experiments" / "lora" / "toy-rank2" / "adapter_config.json").write_text(json.dumps(LORA2))
    # git keeps no empty folders: full fine-tuning needs a file to survive a clone
    (task_dir / "experiments" / "full-finetuning" / "toy-default" / "training_params.json").write_text("{}")
    return task_dir


@pytest.fixture
def task_dir(tmp_path) -> Path:
    # pending logic needs no model: the base_model link may dangle
    return make_task(tmp_path, tmp_path / "no-model")


@pytest.fixture
def run_env(monkeypatch) -> None:
    """Subprocesses and Ray workers cannot see a monkeypatched registry: register the toy task by env."""
    monkeypatch.setenv("PEFTBENCH_TASKS", "toytask=toyworld:ToyTask")
    monkeypatch.setenv(
        "PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))
    )
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


def git(repo: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@t", *args],
        cwd=repo,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


def commit_all(repo: Path) -> None:
    """A git repository on main, so that runs in it are main runs and land in results/.

    No .gitignore on purpose: the sweep's logs and locks must not make the checkout dirty by themselves.
    """
    if not (repo / ".git").exists():
        git(repo, "init", "-q", "-b", "main")
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "state")


def write_result(run: Run, *, status: str = "success", hashes: dict | None = None) -> Path:
    """A result record as `peftbench run` writes it, reduced to what pending detection reads."""
    run_info = {"experiment_name": run.experiment.experiment_name, "seed": run.seed}
    if hashes is not False:
        run_info["config_files_sha256"] = hashes or config_hashes(run.experiment)
    record = {
        "run_info": run_info,
        "train_info": {"status": status, "metrics": [{"test accuracy": 0.5}]},
        "meta_info": {},
    }
    atomic_write_json(run.result_path, record)
    return run.result_path


def shift_mtime(path: Path, *, relative_to: Path, seconds: float) -> None:
    t = relative_to.stat().st_mtime + seconds
    os.utime(path, (t, t))


def runs_of(task_dir: Path, **kwargs) -> dict[str, Run]:
    return {f"{r.experiment.experiment_name}#{r.seed}": r for r in plan(task_dir, **kwargs)}


# ---- pending detection -------------------------------------------------------------------------------


def test_no_result_is_pending_and_a_matching_result_is_up_to_date(task_dir):
    run = runs_of(task_dir)["lora/toy-rank4#0"]
    assert run_state(run) == pending.RunState(True, "no result")
    write_result(run)
    assert run_state(run) == pending.RunState(False, "up to date")
    assert run.result_path == task_dir / "results" / "lora--toy-rank4.json"


def test_changed_config_content_is_pending_and_names_the_file(task_dir):
    run = runs_of(task_dir)["lora/toy-rank4#0"]
    result = write_result(run)
    config = run.experiment.adapter_config_path
    config.write_text(json.dumps({**toyworld.LORA, "r": 8}))
    # even with a result that looks newer than the config, the content decides
    shift_mtime(result, relative_to=config, seconds=100)
    state = run_state(run)
    assert state.pending and state.reason == "config changed: adapter_config.json"
    # a new training_params.json is a change too
    config.write_text(json.dumps(toyworld.LORA))
    run.experiment.training_params_path.write_text('{"max_steps": 3}')
    assert run_state(run).reason == "config changed: training_params.json"


def test_touched_config_is_pending_only_beyond_the_tolerance(task_dir):
    runs = runs_of(task_dir)
    for run in runs.values():
        write_result(run)
    lora = runs["lora/toy-rank4#0"]
    config = lora.experiment.adapter_config_path
    # within the tolerance (a checkout writing files out of order): still up to date
    shift_mtime(config, relative_to=lora.result_path, seconds=pending.TOUCH_TOLERANCE_S - 1)
    assert not run_state(lora).pending
    shift_mtime(config, relative_to=lora.result_path, seconds=60)
    assert run_state(lora) == pending.RunState(True, "config touched after the result: adapter_config.json")
    assert [r for r in runs.values() if run_state(r).pending] == [lora]
    # touching the task's defaults makes every experiment pending, as with make
    defaults = task_dir / "default_training_params.json"
    shift_mtime(defaults, relative_to=lora.result_path, seconds=60)
    assert all(run_state(r).pending for r in runs.values())


def test_fresh_clone_of_committed_results_is_up_to_date(tmp_path):
    origin = tmp_path / "origin"
    task_dir = make_task(origin, tmp_path / "no-model")
    for run in plan(task_dir):
        write_result(run)
    commit_all(origin)
    time.sleep(1.1)  # let the clone's files be clearly newer than the originals
    subprocess.run(["git", "clone", "-q", str(origin), str(tmp_path / "clone")], check=True)
    clone_task = tmp_path / "clone" / "benchmarks" / "toytask"
    runs = plan(clone_task)
    assert [run_state(r) for r in runs] == [pending.RunState(False, "up to date")] * 3
    # and `touch` still works in the clone
    target = runs[1]
    shift_mtime(target.experiment.adapter_config_path, relative_to=target.result_path, seconds=60)
    assert [r for r in runs if run_state(r).pending] == [target]


def test_reference_results_without_hashes_fall_back_to_file_times(task_dir):
    run = runs_of(task_dir)["lora/toy-rank4#0"]
    write_result(run, hashes=False)
    state = run_state(run)
    assert not state.pending and "no config hashes" in state.reason
    shift_mtime(run.experiment.adapter_config_path, relative_to=run.result_path, seconds=60)
    assert run_state(run).pending


def test_unreadable_or_unsuccessful_results_are_pending(task_dir):
    run = runs_of(task_dir)["lora/toy-rank4#0"]
    write_result(run, status="canceled")
    assert run_state(run) == pending.RunState(True, "result status is canceled")
    run.result_path.write_text("{ not json")
    state = run_state(run)
    assert (
        state.pending and state.reason.startswith("unreadable result:") and "not valid JSON" in state.reason
    )


def test_temporary_results_count_only_when_asked_and_only_full_runs(task_dir, capsys):
    runs = runs_of(task_dir, seeds=[0, 1], filters="lora/toy-rank4")
    seed0, seed1 = runs["lora/toy-rank4#0"], runs["lora/toy-rank4#1"]
    folder = task_dir / "temporary_results"

    def temporary(run: Run, stamp: str, **run_info) -> None:
        path = write_result(run)
        record = json.loads(path.read_text())
        record["run_info"].update(run_info)
        atomic_write_json(folder / f"{run.stem}--2026-11-29T{stamp}.json", record)
        path.unlink()

    temporary(seed1, "10-00-00", quick=False, cli_overrides={})
    assert run_state(seed1).pending  # by default only results/ counts
    assert run_state(seed1, include_temporary=True) == pending.RunState(
        False, "up to date (temporary_results/lora--toy-rank4--seed1--2026-11-29T10-00-00.json)"
    )
    # seed 1's file is not seed 0's, although its name starts with seed 0's stem
    assert run_state(seed0, include_temporary=True) == pending.RunState(True, "no result")
    temporary(seed0, "11-00-00", quick=True)
    temporary(seed0, "12-00-00-123456", cli_overrides={"max_steps": 1})
    assert run_state(seed0, include_temporary=True).pending
    args = ["list", str(task_dir), "--seeds", "0,1", "--filter", "lora/toy-rank4", "--include-temporary"]
    assert cli.main(args) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "1 pending, 1 up to date"


def test_a_quick_or_shortened_result_never_makes_the_full_run_up_to_date(task_dir):
    """Wherever it lies: `peftbench run` writes only full runs to results/, but a file may be copied."""
    run = runs_of(task_dir, filters="lora/toy-rank4")["lora/toy-rank4#0"]
    path = write_result(run)
    assert run_state(run) == pending.RunState(False, "up to date")
    for run_info, variant in [
        ({"quick": True}, "quick"),
        ({"cli_overrides": {"max_steps": 5}}, "max_steps=5"),
    ]:
        record = json.loads(path.read_text())
        record["run_info"].update({"quick": False, "cli_overrides": {}, **run_info})
        atomic_write_json(path, record)
        assert run_state(run) == pending.RunState(True, f"only a --quick or --set run ({variant})")


def test_seeds_are_runs_of_their_own(task_dir):
    runs = runs_of(task_dir, seeds=[0, 1], filters="lora/toy-rank4")
    assert sorted(runs) == ["lora/toy-rank4#0", "lora/toy-rank4#1"]
    assert runs["lora/toy-rank4#1"].result_path.name == "lora--toy-rank4--seed1.json"
    write_result(runs["lora/toy-rank4#0"])
    assert [run_state(r).pending for r in runs.values()] == [False, True]
    # without --seeds, each experiment's configured seed (here from its training_params.json)
    (task_dir / "experiments" / "lora" / "toy-rank4" / "training_params.json").write_text('{"seed": 3}')
    assert sorted(runs_of(task_dir)) == [
        "full-finetuning/toy-default#0",
        "lora/toy-rank2#0",
        "lora/toy-rank4#3",
    ]


def test_filter_globs_and_their_errors(task_dir):
    assert sorted(runs_of(task_dir, filters="lora/*")) == ["lora/toy-rank2#0", "lora/toy-rank4#0"]
    assert sorted(runs_of(task_dir, filters="full-*/*, lora/*4")) == [
        "full-finetuning/toy-default#0",
        "lora/toy-rank4#0",
    ]
    with pytest.raises(BadInput, match=r'--filter "ia3/\*" matches none of the 3 experiments'):
        plan(task_dir, filters="ia3/*")


@pytest.mark.parametrize("text", ["", "a", "0,-1", "1.5"])
def test_bad_seeds_are_refused(text):
    with pytest.raises(BadInput, match="--seeds"):
        parse_seeds(text)


def test_parse_seeds():
    assert parse_seeds("2, 0,2") == [0, 2]
    assert parse_seeds(None) is None


# ---- commands ----------------------------------------------------------------------------------------


def test_list_shows_each_run_with_its_state(task_dir, capsys):
    runs = runs_of(task_dir)
    write_result(runs["lora/toy-rank2#0"])
    assert cli.main(["list", str(task_dir)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["experiment", "seed", "state", "why"]
    assert out[1].split()[:4] == ["full-finetuning/toy-default", "0", "pending", "no"]
    assert out[2].split()[:4] == ["lora/toy-rank2", "0", "up", "to"]
    assert out[-1] == "2 pending, 1 up to date"
    assert cli.main(["sweep", str(task_dir), "--list", "--seeds", "0,1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "5 pending, 1 up to date"


def test_sweep_with_nothing_pending_runs_nothing(task_dir, capsys):
    for run in plan(task_dir):
        write_result(run)
    assert cli.main(["sweep", str(task_dir), "--jobs", "2"]) == 0
    assert capsys.readouterr().out.startswith("sweep: all 3 runs are up to date")
    assert not (task_dir / "logs").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--jobs", "0"], "--jobs 0: must be at least 1"),
        (["--address", "ray://x:10001"], "--address is for --backend ray"),
        (["--gpus-per-run", "0.5"], "the local backend gives out whole GPUs"),
        (["--cpus-per-run", "0"], "--cpus-per-run 0: must be at least 1"),
        (["--filter", "nope/*"], '--filter "nope/*" matches none'),
    ],
)
def test_bad_sweep_options_are_one_line_errors(task_dir, capsys, args, message):
    assert cli.main(["sweep", str(task_dir), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_not_a_task_folder(tmp_path, capsys):
    assert cli.main(["sweep", str(tmp_path)]) == 2
    assert "not a task folder (no default_training_params.json)" in capsys.readouterr().err


def test_missing_ray_gives_one_clear_line(task_dir, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # makes `import ray` fail
    assert cli.main(["sweep", str(task_dir), "--backend", "ray"]) == 2
    assert "pip install 'peftbench[distributed]'" in capsys.readouterr().err


# ---- locks and the sweep loop ------------------------------------------------------------------------


def test_logs_and_locks_do_not_make_the_checkout_dirty(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "a.txt").write_text("a")
    commit_all(repo)
    folder = private_dir(repo / "benchmarks" / "t" / "logs")
    (folder / "x.log").write_text("log")
    assert git(repo, "status", "--porcelain", "--untracked-files=all") == ""


def test_a_run_lock_is_exclusive(task_dir):
    run, other = plan(task_dir)[:2]
    with claimed(run) as first, claimed(run) as second, claimed(other) as third:
        assert (first, second, third) == (True, False, True)
    with claimed(run) as again:
        assert again  # released


def test_a_second_sweep_skips_locked_runs_and_says_so(task_dir, capsys):
    run = runs_of(task_dir)["lora/toy-rank4#0"]
    with claimed(run):  # as if another sweep were running it
        rc = cli.main(["sweep", str(task_dir), "--filter", "lora/toy-rank4"])
    out = capsys.readouterr().out
    assert rc == 0
    assert "skipped 1 run(s) that another sweep is running: lora/toy-rank4 (seed 0)" in out
    assert not (task_dir / "logs").exists()  # nothing was started


class FakeBackend:
    """Runs nothing: reports what it is given; can block until interrupted."""

    def __init__(self, *, block: bool = False, max_parallel: int = 2) -> None:
        self.max_parallel = max_parallel
        self.started: list[str] = []
        self.release = threading.Event()
        self.block = block
        self.interrupts: list[bool] = []
        self.closed = False

    def execute(self, run, *, quick, log_path):
        self.started.append(run.experiment.experiment_name)
        if self.block:
            self.release.wait(30)
            return RunReport(run, "canceled")
        return RunReport(run, "failed" if "rank2" in run.experiment.experiment_name else "success")

    def interrupt(self, *, hard):
        self.interrupts.append(hard)
        self.release.set()

    def close(self):
        self.closed = True


def test_sweep_loop_reports_each_run_in_order(task_dir):
    runs = plan(task_dir)
    write_result(runs[0])  # done by another sweep after this one planned it
    backend = FakeBackend()
    reports, interrupted = run_sweep(runs, backend=backend, quick=False, force=False, progress=False)
    assert [r.status for r in reports] == ["done elsewhere", "failed", "success"]
    assert sorted(backend.started) == ["lora/toy-rank2", "lora/toy-rank4"]
    assert not interrupted and backend.closed
    reports, _ = run_sweep(runs, backend=FakeBackend(), quick=False, force=True, progress=False)
    assert reports[0].status == "success"  # --force reruns it


@pytest.fixture
def python_sigint_handler():
    """Python's own Ctrl-C handler, as in a terminal. A shell starts background jobs (`make test &`) with
    SIGINT ignored, and Python then installs no handler: a SIGINT would be lost and the test fail."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_cancels_running_runs_and_starts_no_more(task_dir, python_sigint_handler):
    runs = plan(task_dir)
    backend = FakeBackend(block=True, max_parallel=1)
    main = threading.main_thread().ident
    timer = threading.Timer(0.5, lambda: signal.pthread_kill(main, signal.SIGINT))
    timer.start()
    reports, interrupted = run_sweep(runs, backend=backend, quick=False, force=False, progress=False)
    timer.join()
    assert interrupted and backend.interrupts == [False]
    assert [r.status for r in reports] == ["canceled", "not started", "not started"]
    assert len(backend.started) == 1


def test_local_backend_splits_cores_and_builds_the_run_command(task_dir, monkeypatch):
    monkeypatch.setattr("peftbench.sweep.local.available_cores", lambda: 8)
    backend = LocalBackend(jobs=3)
    assert backend.threads == 2 and backend.max_parallel == 3
    run = runs_of(task_dir, seeds=[2])["lora/toy-rank4#2"]
    cmd = backend.command(run, quick=True)
    assert cmd[:4] == [sys.executable, "-m", "peftbench", "run"]
    assert cmd[4:] == [str(run.experiment.path), "--seed", "2", "--threads", "2", "--quick"]
    assert LocalBackend(jobs=16).threads == 1
    assert LocalBackend(jobs=2, cpus_per_run=3).threads == 3


def test_local_backend_gives_each_run_its_own_gpus(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,2")
    backend = LocalBackend(jobs=4, gpus_per_run=2)
    assert backend.max_parallel == 1 and backend.gpu_pool.get() == ["0", "1"]
    assert LocalBackend(jobs=4, gpus_per_run=1).max_parallel == 3
    with pytest.raises(BadInput, match="--gpus-per-run 4: this machine shows 3 GPU"):
        LocalBackend(jobs=1, gpus_per_run=4)


@pytest.mark.parametrize(
    ("rc", "stdout", "stopping", "status"),
    [
        (0, '{"status": "success", "test accuracy": 0.25, "result": "r.json"}\n', False, "success"),
        (1, '{"status": "canceled", "error": "loss is nan", "result": "c.json"}\n', False, "failed"),
        (1, '{"status": "canceled", "error": "manually canceled", "result": "c.json"}\n', True, "canceled"),
        (2, "", False, "bad input"),
        (-9, "", False, "crashed"),  # killed for memory: no result, the sweep goes on
        (-2, "", True, "canceled"),
        (130, "", True, "canceled"),  # Ctrl-C before training started: nothing to save
        # cancelled by a signal, its record written: by the sweep (canceled) or by someone else (failed)
        (130, '{"status": "canceled", "error": "terminated by SIGINT during training"}\n', True, "canceled"),
        (143, '{"status": "canceled", "error": "terminated by SIGTERM during training"}\n', False, "failed"),
    ],
)
def test_local_backend_maps_each_way_a_run_ends_to_a_status(tmp_path, task_dir, rc, stdout, stopping, status):
    log = tmp_path / "run.log"
    log.write_text("peftbench run: error: x.json: bad value\n")
    backend = LocalBackend(jobs=1)
    backend._stopping = stopping
    report = backend._report(plan(task_dir)[0], rc=rc, stdout=stdout, wall=1.0, log_path=log)
    assert report.status == status
    if status == "success":
        assert report.test_accuracy == 0.25 and report.result == Path("r.json")
    if status == "failed":
        assert report.message == json.loads(stdout)["error"]
    if status == "bad input":
        assert report.message == "x.json: bad value"
    if status == "crashed":
        assert report.message == "exit code -9"


def test_a_ray_worker_refuses_configs_that_differ_from_the_drivers(task_dir):
    from peftbench.sweep.ray_backend import run_remote  # the task body itself needs no Ray

    exp = plan(task_dir)[1].experiment
    kwargs = {"task_dir": str(task_dir), "seed": 0, "quick": False, "threads": 1}
    with pytest.raises(BadInput, match=r"config files of lora/toy-rank2 differ from the driver's"):
        run_remote(experiment_path=str(exp.path), hashes={"adapter_config.json": "0" * 64}, **kwargs)
    missing = task_dir / "experiments" / "lora" / "elsewhere"
    with pytest.raises(BadInput, match=r"no folder .*/elsewhere; every node needs the benchmark"):
        run_remote(experiment_path=str(missing), hashes={}, **kwargs)


# ---- real sweeps (subprocesses) ----------------------------------------------------------------------


def results_in(folder: Path) -> dict[str, dict]:
    return {p.name: load_result(p) for p in sorted(folder.glob("*.json"))} if folder.is_dir() else {}


@pytest.mark.slow
def test_local_sweep_in_parallel_with_a_failure_then_reruns_only_what_is_pending(
    tmp_path, model_dir, run_env, capsys
):
    task_dir = make_task(tmp_path, model_dir)
    broken = task_dir / "experiments" / "lora" / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({**toyworld.LORA, "peft_type": "LORAX"}))
    commit_all(tmp_path)

    rc = cli.main(["sweep", str(task_dir), "--jobs", "2"])
    out = capsys.readouterr().out
    assert rc == 1, out  # the broken experiment failed; the others still ran
    assert "local: 2 at once" in out
    results = results_in(task_dir / "results")
    assert sorted(results) == [
        "full-finetuning--toy-default.json",
        "lora--toy-rank2.json",
        "lora--toy-rank4.json",
    ]
    assert all(r["train_info"]["status"] == "success" for r in results.values())
    assert all(r["run_info"]["cli_overrides"] == {} and r["run_info"]["seed"] == 0 for r in results.values())
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("lora/", "full-"))}
    assert rows["lora/broken"][1:3] == ["0", "bad"]
    assert rows["lora/toy-rank4"][1:3] == ["0", "success"]
    assert 'unknown or missing "peft_type"' in out  # the failed run's log tail
    assert len(list((task_dir / "logs").glob("*.log"))) == 4

    # all up to date (the broken one left aside): nothing runs
    selection = "full-finetuning/*,lora/toy-*"
    assert cli.main(["sweep", str(task_dir), "--filter", selection]) == 0
    assert "all 3 runs are up to date" in capsys.readouterr().out

    # a touched config reruns exactly that experiment
    rank2 = task_dir / "results" / "lora--toy-rank2.json"
    shift_mtime(task_dir / "experiments/lora/toy-rank2/adapter_config.json", relative_to=rank2, seconds=60)
    before = {p.name: p.stat().st_mtime_ns for p in (task_dir / "results").glob("*.json")}
    assert cli.main(["sweep", str(task_dir), "--filter", selection, "--jobs", "2"]) == 0
    assert "sweep: 1 of 3 runs to do" in capsys.readouterr().out
    after = {p.name: p.stat().st_mtime_ns for p in (task_dir / "results").glob("*.json")}
    assert [name for name in after if after[name] != before[name]] == ["lora--toy-rank2.json"]

    # seeds: seed 0 is up to date, seed 1 is a run and a result file of its own
    assert cli.main(["sweep", str(task_dir), "--filter", "lora/toy-rank4", "--seeds", "0,1"]) == 0
    assert "sweep: 1 of 2 runs to do" in capsys.readouterr().out
    seed1 = load_result(task_dir / "results" / "lora--toy-rank4--seed1.json")
    assert seed1["run_info"]["seed"] == 1
    assert seed1["train_info"]["test_correct"] is not None


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["local", pytest.param("ray", marks=pytest.mark.ray)])
def test_ctrl_c_leaves_a_cancelled_result_and_the_summary(tmp_path, model_dir, run_env, monkeypatch, backend):
    task_dir = make_task(tmp_path, model_dir)
    long = task_dir / "experiments" / "lora" / "toy-rank2" / "training_params.json"
    long.write_text('{"max_steps": 1000000, "eval_steps": 1000000}')
    marker = tmp_path / "training-started"
    monkeypatch.setenv("PEFTBENCH_TASKS", "toytask=test_sweep:MarkerToyTask")
    monkeypatch.setenv("PEFTBENCH_TEST_MARKER", str(marker))
    sweep = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "peftbench",
            "sweep",
            str(task_dir),
            "--filter",
            "lora/*",
            "--jobs",
            "1",
            "--backend",
            backend,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.2)
    assert marker.exists(), sweep.communicate()
    time.sleep(3)  # well inside the training loop
    sweep.send_signal(signal.SIGINT)
    out, err = sweep.communicate(timeout=120)
    assert sweep.returncode == 130, err
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith("lora/")}
    assert rows["lora/toy-rank2"][2] == "canceled"
    assert rows["lora/toy-rank4"][2:4] == ["not", "started"]
    (cancelled,) = results_in(task_dir / "cancelled_results").values()
    assert cancelled["train_info"]["status"] == "canceled"
    message = cancelled["run_info"]["error_msg"]
    # a local run names the signal and the phase; Ray cancels its task with a KeyboardInterrupt of its own
    assert message.startswith("terminated by SIGINT during training (step ") or (
        backend == "ray" and message == "manually canceled"
    )
    assert not results_in(task_dir / "temporary_results") and not results_in(task_dir / "results")
    # the next sweep knows both are still pending
    assert all(run_state(r).pending for r in plan(task_dir, filters="lora/*"))


@pytest.mark.ray
def test_ray_sweep_on_a_local_instance(tmp_path, model_dir, run_env, capsys):
    ray = pytest.importorskip("ray")
    task_dir = make_task(tmp_path, model_dir)
    broken = task_dir / "experiments" / "lora" / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text(json.dumps({**toyworld.LORA, "peft_type": "LORAX"}))
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        rc = cli.main(["sweep", str(task_dir), "--backend", "ray"])
    finally:
        ray.shutdown()
    out = capsys.readouterr().out
    assert rc == 1, out  # the broken one
    assert "sweep: 4 of 4 runs to do; ray: 2 CPU(s)" in out and "1 CPU(s) and 0 GPU(s) per run" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("lora/", "full-"))}
    assert rows["lora/broken"][2:4] == ["bad", "input"] and 'unknown or missing "peft_type"' in out
    assert [rows[e][2] for e in ("full-finetuning/toy-default", "lora/toy-rank2", "lora/toy-rank4")] == [
        "success"
    ] * 3
    # not a git checkout: never main runs, so written by the driver into temporary_results/
    results = results_in(task_dir / "temporary_results")
    names = sorted(n.rsplit("--", 1)[0] for n in results)
    assert names == ["full-finetuning--toy-default", "lora--toy-rank2", "lora--toy-rank4"]
    assert all(r["train_info"]["status"] == "success" for r in results.values())
    assert all(r["run_info"]["config_files_sha256"] for r in results.values())
    logs = {p.name.split("--")[1]: p.read_text() for p in (task_dir / "logs").glob("*.log")}
    assert len(logs) == 4 and "success, written to" in logs["toy-rank4"] and "BadInput" in logs["broken"]
    # off main, a sweep resumes from temporary results when told to
    args = ["sweep", str(task_dir), "--filter", "full-*/*,lora/toy-*", "--include-temporary"]
    assert cli.main(args) == 0
    assert "all 3 runs are up to date" in capsys.readouterr().out


DATA_SOURCES = {
    "PEFTBENCH_METAMATHQA": "/mirror/metamathqa",
    "PEFTBENCH_GSM8K": "/mirror/gsm8k",
    "PEFTBENCH_FORGETTING_TEXTS": "/mirror/forgetting.jsonl",
    "PEFTBENCH_CACHE": "/mirror/cache",
    "PEFTBENCH_TASKS": "mytasks.module",
    "HF_ENDPOINT": "https://hf-mirror.example",
    "HF_HUB_OFFLINE": "TRUE",  # not the "1" that conftest sets before Ray starts
}


def test_worker_env_takes_every_peftbench_variable_and_the_hub_settings_but_no_secret():
    from peftbench.sweep.ray_backend import worker_env

    environ = {**DATA_SOURCES, "PEFTBENCH_FUTURE_MIRROR": "/x", "PEFTBENCH_PROGRESS_FILE": "/p"}
    environ |= {"HF_TOKEN": "hf_secret", "CUDA_VISIBLE_DEVICES": "0", "HOME": "/home/u"}
    assert worker_env(environ) == {**DATA_SOURCES, "PEFTBENCH_FUTURE_MIRROR": "/x"}


@pytest.mark.ray
def test_ray_workers_see_the_drivers_data_sources(monkeypatch):
    ray = pytest.importorskip("ray")
    from peftbench.sweep.ray_backend import RayBackend

    def environ_of_worker() -> dict[str, str]:  # defined here: Ray ships it by value, not by module
        import os

        return dict(os.environ)

    # set after ray.init, as on a cluster whose nodes were started without them: a worker inherits
    # nothing from the driver's environment, only what the task's runtime_env carries
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        for key, value in DATA_SOURCES.items():
            monkeypatch.setenv(key, value)
        environ = ray.remote(max_calls=1)(environ_of_worker)
        plain = ray.get(environ.remote())
        seen = ray.get(environ.options(**RayBackend(address=None).task_options()).remote())
    finally:
        ray.shutdown()
    # the test can tell: without forwarding, none of the values arrive
    assert all(plain.get(key) != value for key, value in DATA_SOURCES.items())
    assert {k: seen.get(k) for k in DATA_SOURCES} == DATA_SOURCES


def test_the_demos_filter_names_one_committed_experiment_each_with_a_full_result():
    """`make demo` sweeps DEMO_FILTER: each name must still exist, and have the committed full result
    that its quick run is shown beside in the report."""
    import re

    repo = Path(__file__).resolve().parent.parent
    makefile = (repo / "Makefile").read_text(encoding="utf-8")
    demo_filter = re.search(r"^DEMO_FILTER \?= (.+)$", makefile, re.MULTILINE).group(1)
    names = demo_filter.split(",")
    runs = plan(repo / "benchmarks" / "tinymath", filters=demo_filter)
    assert sorted(r.experiment.experiment_name for r in runs) == sorted(names)
    assert all(r.result_path.is_file() for r in runs)


def test_the_summary_of_a_quick_sweep_labels_its_runs_as_quick(tmp_path):
    from peftbench.experiment import resolve_experiment
    from peftbench.sweep.driver import RunReport, summary_table
    from peftbench.sweep.pending import Run

    exp_dir = tmp_path / "benchmarks" / "toytask" / "experiments" / "lora" / "r8"
    exp_dir.mkdir(parents=True)
    (exp_dir.parents[2] / "default_training_params.json").write_text("{}")
    report = RunReport(run=Run(resolve_experiment(exp_dir), 0), status="success", test_accuracy=0.25)
    assert "lora/r8 [quick]" in summary_table([report], quick=True)
    full = summary_table([report])
    assert "lora/r8" in full and "[quick]" not in full
