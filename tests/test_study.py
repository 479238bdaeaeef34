"""study.py on studies/smoke.py (a data run and two tiny GPT runs): kills, --hours, changed
commands, failures and bad input."""

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import require

import study
from study import Run

ROOT = Path(__file__).resolve().parent.parent
pytestmark = require("tinyshakespeare/input.txt")


def smoke(tmp, *args):
    """study.py smoke in-process, its folders under tmp -> its exit code."""
    return study.main(["smoke", "--out", str(tmp / "runs"), "--results", str(tmp / "results"), *args])


def table(tmp):  # what --table prints
    module, runs = study.load("smoke")
    key, done = study.keys(runs), study.read_results(tmp / "results" / "smoke.jsonl")
    return module.table({n: done[key[n]] for n in runs if key[n] in done})


def files(folder):  # name -> (size, mtime) of everything in a run folder
    return {p.name: (p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir()}


def started_mid_run(tmp, **popen):
    """python study.py smoke as a process, once its dropout-0 run has saved a checkpoint."""
    argv = [sys.executable, "study.py", "smoke", "--out", str(tmp / "runs"), "--results", str(tmp / "results")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(argv, cwd=ROOT, env=env, **popen)
    deadline = time.time() + 180  # a loaded machine starts slowly
    while not list((tmp / "runs" / "dropout-0").glob("ckpt_*.pt")) and time.time() < deadline:
        time.sleep(0.01)
    return proc


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("whole")
    assert smoke(tmp) == 0
    return tmp, table(tmp)


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_killed_and_started_again_ends_with_the_uninterrupted_table(uninterrupted, tmp_path):
    """SIGKILL to the study and its run mid-run, then the same command: the table of an
    uninterrupted study, no finished run redone (its row and folder untouched)."""
    want = uninterrupted[1]
    assert want.count("| - |") == 0 and len(want.splitlines()) == 4
    proc = started_mid_run(tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    os.killpg(proc.pid, signal.SIGKILL)  # the study and the run it started
    proc.wait()
    rows = (tmp_path / "results" / "smoke.jsonl").read_text().splitlines()
    assert [json.loads(r)["run"] for r in rows] == ["prep"]  # killed during dropout-0
    prep = files(tmp_path / "runs" / "prep")
    assert smoke(tmp_path) == 0
    assert table(tmp_path) == want
    after = (tmp_path / "results" / "smoke.jsonl").read_text().splitlines()
    assert after[0] == rows[0] and len(after) == 3 and files(tmp_path / "runs" / "prep") == prep
    assert "--resume" in (tmp_path / "runs" / "dropout-0" / "log.txt").read_text()  # it went on from its checkpoint


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_jobs_run_independent_runs_together_with_the_same_table_and_a_figure(uninterrupted, tmp_path, capsys):
    """--jobs 2: both GPT runs (each needs only prep) start before either finishes; the table is the
    uninterrupted study's, and the figure results/smoke.png is drawn."""
    assert smoke(tmp_path, "--jobs", "2") == 0 and table(tmp_path) == uninterrupted[1]
    out = capsys.readouterr().out
    lines = [x for x in out.splitlines() if x.startswith("[smoke] dropout")]
    assert [x.split(":")[1].strip().split(";")[0].split(" in ")[0] for x in lines[:2]] == ["started", "started"]
    png = tmp_path / "results" / "smoke.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and f"figure: {png}" in out
    assert (uninterrupted[0] / "results" / "smoke.png").exists()  # one job at a time draws it too


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_sigterm_to_the_study_stops_its_run_at_a_checkpoint(tmp_path):
    """SIGTERM to study.py (not to its run) is passed on: the run saves and exits 75, so does the study."""
    proc = started_mid_run(tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    proc.send_signal(signal.SIGTERM)
    out = proc.communicate(timeout=180)[0]
    # dropout-0, unless it finished before the signal came
    stopped = re.search(r"\[smoke\] (dropout-0(?:\.1)?): stopped at a checkpoint", out)
    assert proc.returncode == study.STOPPED and stopped
    assert "stopped (SIGTERM; continue with --resume)" in (tmp_path / "runs" / stopped[1] / "log.txt").read_text()


@pytest.mark.slow  # subprocesses or a chain of runs: `pytest -m 'not slow'` skips it
def test_hours_stops_and_the_next_call_finishes(uninterrupted, tmp_path, capsys):
    """--hours: nothing new starts after the deadline (the current train.py run gets the time left
    as --time-limit and stops at a checkpoint, exit 75); the next call finishes the study."""
    assert smoke(tmp_path, "--hours", "1e-9") == study.STOPPED  # at most the first run (prep) starts
    results = tmp_path / "results" / "smoke.jsonl"
    assert not results.exists() or [json.loads(r)["run"] for r in results.read_text().splitlines()] == ["prep"]
    assert smoke(tmp_path, "--hours", "0.0003") == study.STOPPED  # ~1 s: the deadline passes in the next run
    assert table(tmp_path).splitlines()[-1] == "| dropout-0.1 | - | - |"
    capsys.readouterr()
    assert smoke(tmp_path) == 0 and table(tmp_path) == uninterrupted[1]
    out = capsys.readouterr().out  # progress lines: what started, what finished, its metric, the time left
    assert "[smoke] dropout-0.1: started; " in out and "min of runs left" in out
    assert re.search(r"\[smoke\] dropout-0.1: finished in \d+ s, val_loss 3\.\d+", out)


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_a_changed_command_runs_again_and_so_do_the_runs_after_it(uninterrupted, monkeypatch, capsys):
    """The key hashes a run's command and its needs' keys: change prep's and all three are to run."""
    whole, _ = uninterrupted
    args = ["smoke", "--out", str(whole / "runs"), "--results", str(whole / "results"), "--dry-run"]
    study.main(args)
    assert capsys.readouterr().out.count("finished") == 3
    import studies.smoke as S

    changed = [
        Run(r.name, [*r.command, "--val-fraction", "0.2"] if r.name == "prep" else r.command, r.needs) for r in S.RUNS
    ]
    monkeypatch.setattr(S, "RUNS", changed)
    study.main(args)
    plan = capsys.readouterr().out
    assert plan.count("to run") == 3 and "--val-fraction 0.2" in plan
    monkeypatch.setattr(S, "RUNS", [*changed[:2], Run("dropout-0.1", [*S.GPT, "--dropout", "0.2"], ["prep"])])
    study.main([*args[:-1], "--only", "dropout-0", "--dry-run"])
    assert "dropout-0.1" not in capsys.readouterr().out  # --only: that run and what it needs


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_a_failed_run_is_reported_and_does_not_block_independent_runs(monkeypatch, tmp_path, capsys):
    import studies.smoke as S

    bad = Run("bad", ["train.py", "--lr", "-1", "--out-dir", "{out}"])
    after = Run("after-bad", ["train.py", "--out-dir", "{out}"], needs=["bad"])
    monkeypatch.setattr(S, "RUNS", [bad, after, S.RUNS[0]])
    code = study.main(["smoke", "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")])
    out = capsys.readouterr().out
    assert code == 1 and "bad: FAILED (exit 2)" in out and "lr (--lr) must be > 0, got -1.0" in out
    assert "after-bad: skipped, it needs ['bad']" in out
    assert [json.loads(r)["run"] for r in (tmp_path / "results" / "smoke.jsonl").read_text().splitlines()] == ["prep"]


def rows_for(tmp, names):  # results/smoke.jsonl with these runs finished (a clone's: no run folders)
    _, runs = study.load("smoke")
    key = study.keys(runs)
    for name in names:
        study.append_result(tmp / "results" / "smoke.jsonl", {"key": key[name], "run": name, "metrics": {}})


def test_a_fresh_clone_redoes_the_finished_runs_whose_folders_a_run_to_do_reads(tmp_path, capsys):
    """Run folders are not committed: a clone with prep and dropout-0 finished (their rows) but no
    folders plans prep again (dropout-0.1 reads its folder), and not dropout-0 (nothing reads it)."""
    rows_for(tmp_path, ["prep", "dropout-0"])
    states = lambda: [re.search("finished|to redo|to run", x).group() for x in capsys.readouterr().out.splitlines()]  # noqa: E731
    smoke(tmp_path, "--dry-run")
    assert states() == ["to redo", "finished", "to run"]
    (tmp_path / "runs" / "prep").mkdir(parents=True)  # its folder back: nothing to redo
    smoke(tmp_path, "--dry-run")
    assert states() == ["finished", "finished", "to run"]
    rows_for(tmp_path, ["dropout-0.1"])  # everything finished: no folder is needed, nothing is redone
    (tmp_path / "runs" / "prep").rmdir()
    smoke(tmp_path, "--dry-run")
    assert states() == ["finished"] * 3


@pytest.mark.slow  # a training run or several: `pytest -m 'not slow'` skips it
def test_a_fresh_clone_finishes_the_study(uninterrupted, tmp_path, capsys):
    """The committed rows of prep and dropout-0 and no run folders: prep runs again, then dropout-0.1,
    and the table is the uninterrupted study's (prep's data are the same)."""
    lines = (uninterrupted[0] / "results" / "smoke.jsonl").read_text().splitlines()
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "smoke.jsonl").write_text("".join(x + "\n" for x in lines if '"dropout-0.1"' not in x))
    assert smoke(tmp_path) == 0 and table(tmp_path) == uninterrupted[1]
    out = capsys.readouterr().out
    assert "[smoke] prep: started again (its folder, which a later run reads, is gone)" in out
    assert "dropout-0:" not in out and "[smoke] dropout-0.1: finished" in out


def test_bad_input_is_named_before_anything_runs(monkeypatch, tmp_path):
    import studies.smoke as S

    out = ["--out", str(tmp_path / "runs"), "--results", str(tmp_path / "results")]
    with pytest.raises(ValueError, match="unknown study 'nope': choose one of .*smoke"):
        study.main(["nope", *out])
    with pytest.raises(ValueError, match=r"--only: study smoke has no run \['x'\]: choose from prep, dropout-0"):
        study.main(["smoke", *out, "--only", "x"])
    with pytest.raises(ValueError, match="--hours must be > 0, got 0.0"):
        study.main(["smoke", *out, "--hours", "0"])
    with pytest.raises(ValueError, match="--jobs must be >= 1, got 0"):
        study.main(["smoke", *out, "--jobs", "0"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "study.json").write_text(json.dumps({"study": "t5-transfer"}))
    with pytest.raises(ValueError, match="holds the runs of study 't5-transfer'"):
        study.main(["smoke", "--out", str(tmp_path / "other"), "--results", str(tmp_path / "results")])
    monkeypatch.setattr(S, "RUNS", [Run("a", ["x"], ["b"]), Run("b", ["x"], ["a"])])
    with pytest.raises(ValueError, match="cycle: a -> b -> a"):
        study.main(["smoke", *out])
    monkeypatch.setattr(S, "RUNS", [Run("a", ["x"], ["c"])])
    with pytest.raises(ValueError, match=r"run 'a' needs \['c'\], which the study does not have"):
        study.main(["smoke", *out])
    assert not (tmp_path / "runs").exists() and not (tmp_path / "results").exists()


def test_commands_continue_their_own_train_runs_and_name_where_results_go(tmp_path):
    """A train.py run into {out} gets --overwrite, or --resume once it has a checkpoint; an
    evaluation of another run's folder gets neither; results are read from --out-dir / --out."""
    train_run = Run("t", ["train.py", "--preset", "tiny", "--out-dir", "{out}"])
    evaluate = Run("e", ["train.py", "--out-dir", "{runs}/t", "--evaluate"], ["t"])
    prep = Run("p", ["data.py", "lm", "--out", "{out}"])
    argv = study.command_line(train_run, tmp_path, tmp_path)
    assert argv[-1] == "--overwrite" and argv[-2] == str(tmp_path / "t")
    (tmp_path / "t").mkdir()
    (tmp_path / "t" / "ckpt_0000010.pt").write_bytes(b"")
    assert study.command_line(train_run, tmp_path, tmp_path)[-1] == "--resume"
    argv = study.command_line(evaluate, tmp_path, tmp_path)
    assert argv[-1] == "--evaluate" and study.results_folder(argv, None) == tmp_path / "t"
    assert study.results_folder(study.command_line(prep, tmp_path, tmp_path), None) == tmp_path / "p"
    soon = time.time() + 3600  # --hours: a training run gets --time-limit, an evaluation or an export never
    assert study.with_deadline(study.command_line(train_run, tmp_path, tmp_path), soon)[-2] == "--time-limit"
    assert "--time-limit" not in study.with_deadline(study.command_line(evaluate, tmp_path, tmp_path), soon)
    assert "--time-limit" not in study.with_deadline(study.command_line(prep, tmp_path, tmp_path), soon)


@pytest.mark.parametrize("name", study.studies())
def test_every_study_loads_plans_and_tables_with_nothing_finished(name, tmp_path, capsys):
    """Each studies/*.py: its runs form a plan (known needs, no cycle), every command is a script of
    the repository, and its table renders with no finished run (every cell '-')."""
    module, runs = study.load(name)
    assert all((study.ROOT / r.command[0]).is_file() for r in runs.values())
    assert study.main([name, "--out", str(tmp_path / "runs"), "--dry-run"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == len(runs) and "| - |" in module.table({})
