"""peftbench tune: equal budgets, validation only, resumable, trials kept apart from results."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from peftbench import tuning
from peftbench.cli import main as cli_main
from peftbench.experiment import resolve_experiment

LORA = "experiments/lora/toy-rank4"


def _tune(task_dir: Path, *args: str) -> int:
    return cli_main(["tune", str(task_dir / LORA), *args])


def test_search_writes_trials_study_and_tuned_experiment(task_dir, capsys):
    assert _tune(task_dir, "--trials", "3") == 0
    exp = resolve_experiment(task_dir / LORA)
    records = tuning.read_trials(exp)
    assert [r["trial"] for r in records] == [0, 1, 2]
    # trial 0 is the experiment as it stands; every trial stays inside two decades around its lr
    assert records[0]["params"] == {"optimizer_kwargs.lr": 1e-2}
    assert all(1e-3 <= r["params"]["optimizer_kwargs.lr"] <= 1e-1 for r in records)
    assert all(r["state"] in ("complete", "pruned") and r["curve"] for r in records)
    assert tuning.study_path(exp).is_file()
    # nothing goes beside the benchmark's results
    assert not any((task_dir / kind).exists() for kind in ("results", "temporary_results"))
    tuned = task_dir / "experiments/lora/toy-rank4-tuned"
    provenance = json.loads((tuned / "tuning.json").read_text())
    best = max((r for r in records if r["state"] == "complete"), key=lambda r: (r["value"], -r["trial"]))
    assert provenance["best_trial"] == best["trial"]
    assert provenance["budget"]["trials"] == 3
    assert provenance["steps_spent"] == sum(r["steps"] for r in records)
    training = json.loads((tuned / "training_params.json").read_text())
    assert training["optimizer_kwargs"]["lr"] == best["params"]["optimizer_kwargs.lr"]
    # only the searched key differs from the source experiment
    source = json.loads((task_dir / LORA / "adapter_config.json").read_text())
    assert json.loads((tuned / "adapter_config.json").read_text()) == source
    out = capsys.readouterr().out
    assert "toy-rank4-tuned" in out
    # the line says when the search kept the source's own settings (its runs then stand for the tuned one)
    assert ("the source's own settings" in out) == (best["params"] == records[0]["params"])
    # and when the best value lies at an edge of its range
    edges = tuning.at_edges(provenance["space"], provenance["best_params"])
    assert ("at an edge of the range searched" in out) == bool(edges)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1e-2, []),  # the centre of 1e-3..1e-1 on the log scale
        (1.2e-3, ["optimizer_kwargs.lr at the bottom"]),  # 0.04 of the log range from the bottom
        (1.7e-3, []),  # 0.115: inside
        (0.09, ["optimizer_kwargs.lr at the top"]),
        (None, []),  # no trial completed
    ],
)
def test_at_edges_on_a_log_range(value, expected):
    space = [{"key": "optimizer_kwargs.lr", "low": 1e-3, "high": 1e-1, "log": True, "type": "float"}]
    best = None if value is None else {"optimizer_kwargs.lr": value}
    assert tuning.at_edges(space, best) == expected


def test_at_edges_on_linear_and_categorical_keys():
    space = [
        {"key": "adapter.lora_dropout", "low": 0.0, "high": 0.5, "log": False, "type": "float"},
        {"key": "adapter.r", "low": 2, "high": 12, "log": False, "type": "int"},
        {"key": "adapter.init_lora_weights", "choices": [True, False]},
    ]
    best = {"adapter.lora_dropout": 0.04, "adapter.r": 7, "adapter.init_lora_weights": False}
    assert tuning.at_edges(space, best) == ["adapter.lora_dropout at the bottom"]
    best = {"adapter.lora_dropout": 0.3, "adapter.r": 12, "adapter.init_lora_weights": True}
    assert tuning.at_edges(space, best) == ["adapter.r at the top"]


def test_test_split_is_never_evaluated(task_dir, monkeypatch):
    import peftbench.train as train_module

    seen: list[str] = []
    original = train_module.evaluate_accuracy

    def spy(*args, examples, **kwargs):
        seen.extend(e.query for e in examples)
        return original(*args, examples=examples, **kwargs)

    monkeypatch.setattr(train_module, "evaluate_accuracy", spy)
    tokenized: list[int] = []
    original_prompts = train_module.tokenize_prompts
    monkeypatch.setattr(
        train_module,
        "tokenize_prompts",
        lambda tok, examples, **kw: tokenized.append(len(examples)) or original_prompts(tok, examples, **kw),
    )
    assert _tune(task_dir, "--trials", "2") == 0
    from peftbench.tasks import get_task

    data = get_task(task_dir.name).load_data(task_dir=task_dir, seed=0)
    test_queries = {e.query for e in data.test} - {e.query for e in data.valid}
    assert seen and test_queries and not test_queries & set(seen)
    assert 0 not in tokenized or len(data.test) == 0  # the test split is not even tokenised


def test_resume_runs_only_what_is_missing(task_dir):
    assert _tune(task_dir, "--trials", "2") == 0
    exp = resolve_experiment(task_dir / LORA)
    first = {r["trial"]: r["created_at"] for r in tuning.read_trials(exp)}
    assert _tune(task_dir, "--trials", "3") == 0
    after = {r["trial"]: r["created_at"] for r in tuning.read_trials(exp)}
    assert sorted(after) == [0, 1, 2]
    assert all(after[n] == first[n] for n in first)  # finished trials were not rerun


def test_dead_running_trial_is_failed_and_rerun_with_its_params(task_dir):
    import optuna

    exp = resolve_experiment(task_dir / LORA)
    space = tuning.load_space(exp)
    budget = tuning.Budget(trials=2, max_steps=4, eval_steps=2)
    study = tuning.open_study(exp, space=space, budget=budget)
    ghost = study.ask()  # the default params: as if a worker died (kill -9) inside the trial
    for param in space:
        param.suggest(ghost)
    assert ghost.params == {"optimizer_kwargs.lr": 1e-2}
    # killed after writing its record and before the study's tell: the record goes with the trial
    stale = tuning.trial_record_path(exp, ghost.number)
    stale.parent.mkdir(parents=True)
    stale.write_text("{}")
    assert tuning.recover_dead_trials(study, exp) == [0]
    assert study.trials[0].state == optuna.trial.TrialState.FAIL
    assert not stale.exists()
    assert _tune(task_dir, "--trials", "2") == 0
    records = tuning.read_trials(exp)
    # the rerun (trial 1) has the dead trial's parameters; the study and the records agree on 2 trials
    assert [r["trial"] for r in records] == [1, 2]
    assert records[0]["params"] == {"optimizer_kwargs.lr": 1e-2}


def _finished(exp) -> list[dict]:
    return [r for r in tuning.read_trials(exp) if r["state"] in ("complete", "pruned")]


def test_kill_9_then_resume(task_dir, tmp_path):
    """A real kill -9 in the middle of a search: the resumed search never reruns a finished trial."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent), *sys.path])}
    code = (
        "import sys, toyworld, pytest\n"
        "mp = pytest.MonkeyPatch(); toyworld.register_toy_task(mp)\n"
        "from peftbench.cli import main\n"
        f"sys.exit(main(['tune', {str(task_dir / LORA)!r}, '--trials', '40']))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code], env=env)
    exp = resolve_experiment(task_dir / LORA)
    deadline = time.monotonic() + 300
    while len(tuning.read_trials(exp)) < 2 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {r["trial"]: r["created_at"] for r in tuning.read_trials(exp)}
    assert len(before) >= 2
    target = len(before) + 1
    assert _tune(task_dir, "--trials", str(target)) == 0
    after = tuning.read_trials(exp)
    assert len(_finished(exp)) == target
    assert all(r["created_at"] == before[r["trial"]] for r in after if r["trial"] in before)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"no_such_key": {"low": 1, "high": 2}}, 'unknown key "no_such_key"'),
        ({"adapter.nope": {"low": 1, "high": 2}}, 'has no field "nope"'),
        ({"batch_size": {"low": 8, "high": 8, "type": "int"}}, "empty range"),
        ({"optimizer_kwargs.lr": {"low": 0, "high": 1, "log": True}}, "log range needs low > 0"),
        ({"batch_size": {"low": 2, "high": 8, "step": 2}}, 'unknown field "step"'),
        ({"adapter.r": {"choices": []}}, "non-empty list"),
        ({"adapter.r": [4, 8]}, "must be an object"),
    ],
)
def test_bad_search_space_is_one_line_exit_2(task_dir, capsys, space, message):
    (task_dir / LORA / "search_space.json").write_text(json.dumps(space))
    assert _tune(task_dir, "--trials", "2") == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "search_space.json" in err and len(err.splitlines()) == 1
    assert not (task_dir / "tuning").exists()


def test_trials_below_one_and_foreign_study(task_dir, capsys):
    assert _tune(task_dir, "--trials", "0") == 2
    assert "--trials must be at least 1" in capsys.readouterr().err
    assert not (task_dir / "tuning").exists()
    # a study file that belongs to another experiment
    exp = resolve_experiment(task_dir / LORA)
    other = resolve_experiment(task_dir / "experiments/full-finetuning/toy-default")
    budget = tuning.Budget(trials=1, max_steps=4, eval_steps=2)
    tuning.open_study(other, space=tuning.load_space(other), budget=budget)
    tuning.study_path(other).rename(tuning.study_path(exp))
    assert _tune(task_dir, "--trials", "1") == 2
    err = capsys.readouterr().err
    assert "holds the study of full-finetuning/toy-default" in err


def test_changed_space_refuses_the_old_study(task_dir, capsys):
    assert _tune(task_dir, "--trials", "1") == 0
    (task_dir / LORA / "search_space.json").write_text(json.dumps({"adapter.r": {"choices": [2, 4]}}))
    assert _tune(task_dir, "--trials", "2") == 2
    assert "made with another space" in capsys.readouterr().err


def test_adapter_key_search(task_dir):
    (task_dir / LORA / "search_space.json").write_text(json.dumps({"adapter.r": {"choices": [2, 4]}}))
    assert _tune(task_dir, "--trials", "2") == 0
    exp = resolve_experiment(task_dir / LORA)
    records = tuning.read_trials(exp)
    assert {r["params"]["adapter.r"] for r in records} <= {2, 4}
    tuned = json.loads((task_dir / "experiments/lora/toy-rank4-tuned/adapter_config.json").read_text())
    best = json.loads((task_dir / "experiments/lora/toy-rank4-tuned/tuning.json").read_text())
    assert tuned["r"] == best["best_params"]["adapter.r"]


def test_tuned_experiments_are_not_tuned_again(task_dir, capsys):
    assert _tune(task_dir, "--trials", "1") == 0
    assert cli_main(["tune", str(task_dir / "experiments/lora/toy-rank4-tuned")]) == 2
    assert "a tuned experiment" in capsys.readouterr().err
    names = [e.experiment_name for e in tuning.select_experiments([str(task_dir)])]
    assert names == ["full-finetuning/toy-default", "lora/toy-rank4"]


def test_a_tuned_experiment_that_kept_the_source_settings_repeats_it(task_dir):
    # the search kept the source's own values: the tuned experiment's runs would be the source's
    exp = resolve_experiment(task_dir / LORA)
    tuned = task_dir / "experiments/lora/toy-rank4-tuned"
    assert not tuning.repeats_source(exp)  # no search yet
    shutil.copytree(task_dir / LORA, tuned)
    assert not tuning.repeats_source(exp)  # a folder made by hand, not by a search
    (tuned / "tuning.json").write_text("{}")
    optimizer = tuning.load_train_config(exp).optimizer_kwargs  # a tuned file writes the object whole
    for lr, same in ((optimizer["lr"], True), (optimizer["lr"] * 1.5, False)):
        (tuned / "training_params.json").write_text(json.dumps({"optimizer_kwargs": {**optimizer, "lr": lr}}))
        assert tuning.repeats_source(exp) is same
    (tuned / "training_params.json").write_text(json.dumps({"optimizer_kwargs": optimizer}))
    adapter = json.loads((tuned / "adapter_config.json").read_text())
    (tuned / "adapter_config.json").write_text(json.dumps({**adapter, "r": adapter["r"] * 2}))
    assert not tuning.repeats_source(exp)


def test_sweep_searched_runs_each_searched_experiment_at_its_searched_settings(task_dir, capsys):
    from peftbench.errors import BadInput
    from peftbench.sweep.pending import plan

    with pytest.raises(BadInput, match="no experiment has a finished search"):
        plan(task_dir, searched=True)
    assert _tune(task_dir, "--trials", "1") == 0  # one trial: the source's own settings win
    names = lambda runs: [(r.experiment.experiment_name, r.seed) for r in runs]  # noqa: E731
    # full-finetuning/toy-default is not searched; the search kept lora's settings: the source runs
    source = [("lora/toy-rank4", 0), ("lora/toy-rank4", 1)]
    assert names(plan(task_dir, searched=True, seeds=[0, 1])) == source
    tuned = task_dir / "experiments/lora/toy-rank4-tuned/training_params.json"
    params = json.loads(tuned.read_text())
    params["optimizer_kwargs"]["lr"] *= 2
    tuned.write_text(json.dumps(params))
    assert names(plan(task_dir, searched=True)) == [("lora/toy-rank4-tuned", 0)]
    assert cli_main(["list", str(task_dir), "--searched"]) == 0
    assert "lora/toy-rank4-tuned" in capsys.readouterr().out


def test_a_task_search_leaves_out_experiments_whose_results_are_kept_apart(task_dir):
    # a reference_parity experiment files its runs in parity_results/: a measurement, not a catalogue entry
    source = task_dir / "experiments/lora/toy-rank4"
    parity = source.with_name("toy-rank4-reference-parity")
    shutil.copytree(source, parity)
    params = parity / "training_params.json"
    settings = json.loads(params.read_text()) if params.exists() else {}
    params.write_text(json.dumps({**settings, "reference_parity": True}))
    names = [e.experiment_name for e in tuning.select_experiments([str(task_dir)])]
    assert names == ["full-finetuning/toy-default", "lora/toy-rank4"]
    assert [e.experiment_name for e in tuning.select_experiments([str(parity)])] == [
        "lora/toy-rank4-reference-parity"
    ]


def test_study_prunes_a_trial_behind_at_the_first_checkpoint(task_dir):
    """The study's pruner (successive halving from the first validation checkpoint): a trial whose
    validation accuracy trails the best third there stops; a new leader goes on."""
    import optuna

    exp = resolve_experiment(task_dir / LORA)
    space = tuning.load_space(exp)
    study = tuning.open_study(exp, space=space, budget=tuning.Budget(trials=4, max_steps=4, eval_steps=2))
    decisions = []
    for value in (0.5, 0.9, 0.1, 0.95):
        trial = study.ask()
        for param in space:
            param.suggest(trial)
        trial.report(value, 2)
        decisions.append(trial.should_prune())
        state = optuna.trial.TrialState.PRUNED if decisions[-1] else optuna.trial.TrialState.COMPLETE
        study.tell(trial, None if decisions[-1] else value, state=state)
    assert decisions == [False, False, True, False]
    summary = tuning.summarise_study(study)
    assert summary["pruned"] == 1 and summary["pruned_at"] == {2: 2}


def test_lint_reports_a_bad_search_space_and_accepts_a_tuned_pair(task_dir):
    from peftbench.maintainer.lint import lint

    (task_dir / LORA / "search_space.json").write_text(json.dumps({"adapter.r": {"low": 8, "high": 4}}))
    findings = [f for f in lint([task_dir]) if f.rule == "search-space"]
    assert len(findings) == 1 and "empty range" in findings[0].message
    (task_dir / LORA / "search_space.json").unlink()
    assert _tune(task_dir, "--trials", "1") == 0  # the default wins: the tuned config equals its source
    assert not [f for f in lint([task_dir]) if f.rule == "near-duplicate"]


@pytest.fixture
def worker_env(monkeypatch) -> None:
    """Worker processes and Ray tasks cannot see a monkeypatched registry: register the toy task by env."""
    tests = str(Path(__file__).parent)
    monkeypatch.setenv("PEFTBENCH_TASKS", "toytask=toyworld:ToyTask")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [tests, os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")


def _two_searches_done(task_dir: Path, capsys) -> None:
    out = capsys.readouterr().out
    for name in ("lora/toy-rank4", "full-finetuning/toy-default"):
        exp = resolve_experiment(task_dir / "experiments" / name)
        assert len(tuning.read_trials(exp)) == 2
        assert (exp.path.with_name(exp.name + "-tuned") / "tuning.json").is_file()
        assert f"tune: {name}: 2 trials" in out


def test_two_experiments_in_two_worker_processes(task_dir, worker_env, capsys):
    assert cli_main(["tune", str(task_dir), "--trials", "2", "--jobs", "2"]) == 0
    _two_searches_done(task_dir, capsys)


def _proc_stat(pid: int | str) -> tuple[str, int] | None:
    """(state, parent pid) of a process from Linux's /proc, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _proc_stat(pid)
    return stat is not None and stat[0] != "Z"


def _children(pid: int) -> list[int]:
    """Pids of the live processes whose parent is `pid`."""
    found = []
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _proc_stat(entry.name)
        if stat is not None and stat[1] == pid and stat[0] != "Z":
            found.append(int(entry.name))
    return found


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
def test_sigterm_to_tune_ends_its_workers_and_the_search_resumes(task_dir, worker_env, capsys):
    """`kill PID` of a `tune --jobs 2` must not leave its workers searching (and holding the locks)."""
    args = ["tune", str(task_dir), "--trials", "60", "--jobs", "2"]
    code = f"import sys\nfrom peftbench.cli import main\nsys.exit(main({args!r}))\n"
    proc = subprocess.Popen([sys.executable, "-c", code])
    exps = [
        resolve_experiment(task_dir / "experiments" / n)
        for n in ("lora/toy-rank4", "full-finetuning/toy-default")
    ]
    deadline = time.monotonic() + 300
    while (
        not all(tuning.read_trials(e) for e in exps) and time.monotonic() < deadline and proc.poll() is None
    ):
        time.sleep(0.2)
    workers = [pid for pid in _children(proc.pid) if "spawn_main" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(workers) == 2
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)
    deadline = time.monotonic() + 60
    while any(_alive(pid) for pid in workers):
        assert time.monotonic() < deadline, "a search worker outlived its parent"
        time.sleep(0.2)
    done = {e.name: len(_finished(e)) for e in exps}
    assert all(n < 60 for n in done.values())  # stopped mid-search, not finished
    # the locks went with the workers: the same command resumes both searches to the new budget
    target = max(done.values()) + 1
    assert cli_main(["tune", str(task_dir), "--trials", str(target), "--jobs", "2"]) == 0
    assert [len(_finished(e)) for e in exps] == [target, target]


@pytest.mark.ray
def test_ray_backend_on_a_local_instance(task_dir, worker_env, capsys):
    ray = pytest.importorskip("ray")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        assert cli_main(["tune", str(task_dir), "--trials", "2", "--backend", "ray"]) == 0
    finally:
        ray.shutdown()
    _two_searches_done(task_dir, capsys)
