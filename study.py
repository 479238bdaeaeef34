"""study.py: every table in docs/results.md is one resumable command.

    python study.py smoke                      # run what is not finished, then print the table
    python study.py smoke --hours 2            # start nothing new after 2 h; the current run saves and stops
    python study.py smoke --table              # the table from whatever has finished (missing cells marked)
    python study.py smoke --dry-run            # the plan: each run, finished or not, and its command
    python study.py smoke --only b             # these runs (and what they need)

A study is a file studies/<name>.py with RUNS, a list of `Run`s (a name, the command: train.py,
finetune_glue.py, data.py or bench.py arguments, what it needs first, the minutes it should
take), `table(results)`: the markdown table from the finished runs' results, and `figure(results)`:
its bars (title, axis label, {group: {series: value}}), drawn to results/<study>.png. Commands
may say {out} (the run's folder), {runs} (the study's folder of run folders) and {data} (DATA_DIR).
--jobs N runs up to N runs at a time (a run starts once its needs have finished).

Each finished run appends one row (its key, command, metrics, wall time, commit, machine) to
results/<study>.jsonl, which is committed; run folders (checkpoints) are not. A run is finished
when a row with its key exists: the key hashes its command and the keys of the runs it needs,
so a changed command runs again and so does everything after it; a finished run whose folder is
gone (a fresh clone) runs again when a run still to do needs it. An interrupted train.py run
(killed, or stopped by --hours) continues with --resume; train.py exits with code 75 when it
stopped at a checkpoint (train.STOPPED)."""

import argparse
import hashlib
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import plots

ROOT = Path(__file__).resolve().parent
STOPPED = 75  # train.py's exit code for a run stopped at a checkpoint (train.STOPPED)


@dataclass
class Run:
    name: str
    command: list  # a script of this repository and its arguments, with {out}, {runs}, {data}
    needs: list = field(default_factory=list)  # names of the runs that must finish first
    minutes: float = 1.0  # the expected wall time on the 2-core CPU (for ETAs)
    metric: str = ""  # the number its progress line shows when it finishes (a key of its metrics)


def studies():
    return sorted(p.stem for p in (ROOT / "studies").glob("*.py") if not p.stem.startswith("_"))


def load(name):
    """studies/<name>.py -> its module, its runs checked: unique names, known needs, no cycle."""
    if name not in studies():
        raise ValueError(f"unknown study {name!r}: choose one of {', '.join(studies())}")
    module = importlib.import_module(f"studies.{name}")
    runs = {}
    for run in module.RUNS:
        if run.name in runs:
            raise ValueError(f"study {name}: two runs are named {run.name!r}")
        runs[run.name] = run
    for run in runs.values():
        missing = [n for n in run.needs if n not in runs]
        if missing:
            raise ValueError(f"study {name}: run {run.name!r} needs {missing}, which the study does not have")
    order(runs, list(runs), name)
    return module, runs


def order(runs, wanted, study):
    """The runs in `wanted` and everything they need, each after its needs (a cycle is an error)."""
    out, state = [], {}

    def visit(name, path):
        if state.get(name) == "done":
            return
        if state.get(name) == "open":
            raise ValueError(f"study {study}: runs need each other in a cycle: {' -> '.join([*path, name])}")
        state[name] = "open"
        for need in runs[name].needs:
            visit(need, [*path, name])
        state[name] = "done"
        out.append(name)

    for name in wanted:
        visit(name, [])
    return out


def keys(runs):
    """name -> the run's key: a hash of its command and of the keys of the runs it needs."""
    out = {}
    for name in order(runs, list(runs), ""):
        run = runs[name]
        text = json.dumps([run.command, sorted(out[n] for n in run.needs)])
        out[name] = hashlib.sha256(text.encode()).hexdigest()[:16]
    return out


def read_results(path):
    """The rows of results/<study>.jsonl (a line cut short by a kill is skipped) -> {key: row}."""
    rows = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            rows[row["key"]] = row
    return rows


def append_result(path, row):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:  # one line, flushed to disk: a kill leaves at most a cut line
        f.write(json.dumps(row) + "\n")
        f.flush()
        os.fsync(f.fileno())


def metrics(folder):
    """A finished run's numbers: the last value of every metric in metrics.jsonl, and the JSON
    results files it wrote (an evaluation's *results*.json)."""
    out = {}
    log = folder / "metrics.jsonl"
    if log.exists():
        for line in log.read_text().splitlines():
            out.update({k: v for k, v in json.loads(line).items() if isinstance(v, int | float)})
    for path in sorted(folder.glob("*results*.json")):
        out[path.stem] = json.loads(path.read_text())
    return out


def machine():
    """The CPU model, the cores this process may use of all, and OMP_NUM_THREADS when set."""
    from machine import cpu_name  # (machine.py imports torch: only when a row is written)

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    threads = os.environ.get("OMP_NUM_THREADS")
    return f"{cpu_name()}, {usable} of {os.cpu_count()} CPUs" + (f", OMP_NUM_THREADS={threads}" if threads else "")


def commit():
    try:
        sha = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True)
        return sha.stdout.strip() or None
    except OSError:
        return None


def command_line(run, out_root, data_dir):
    """The run's argv, placeholders filled. A train.py run that trains into its own folder ({out})
    continues there when it has checkpoints (--resume), else starts over (--overwrite)."""
    values = {"out": str(out_root / run.name), "runs": str(out_root), "data": str(data_dir)}
    argv = [part.format(**values) for part in run.command]
    if argv[0] == "train.py" and "{out}" in run.command and not {"--evaluate", "--export-hf"} & set(argv):
        argv += ["--resume"] if list((out_root / run.name).glob("ckpt_*.pt")) else ["--overwrite"]
    return [sys.executable, *argv]


def results_folder(argv, default):  # where a command writes its results: its --out-dir / --out
    for flag in ("--out-dir", "--out"):
        if flag in argv[:-1]:
            return Path(argv[argv.index(flag) + 1])
    return default


def with_deadline(argv, deadline):
    """A train.py run that trains gets the hours left as --time-limit (an evaluation or an export does not:
    they take no such flag)."""
    only = {"--evaluate", "--export-hf", "--plot", "--sample"}
    if deadline is None or Path(argv[1]).name != "train.py" or only & set(argv):
        return argv
    return [*argv, "--time-limit", f"{max(deadline - time.time(), 1.0) / 3600:.6f}"]


def start(argv, log_path, deadline):
    """Start one command (with_deadline), its output appended to log_path -> its Popen."""
    argv = with_deadline(argv, deadline)
    with open(log_path, "a") as log:
        return subprocess.Popen(argv, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)


def wait_any(procs):
    """The name of a finished process of procs {name: Popen} (the first in order when several are)."""
    while True:
        for name, proc in procs.items():
            if proc.poll() is not None:
                return name
        time.sleep(0.2)


def tail(path, n=10):
    return "\n".join(path.read_text(errors="replace").splitlines()[-n:]) if path.exists() else ""


def draw(module, results, path):
    """The study's figure (its `figure(results)`: a title, an axis label and the bars, or None while
    nothing it shows has finished) -> path, a PNG beside results/<study>.jsonl."""
    spec = module.figure(results) if hasattr(module, "figure") else None
    if spec:
        print(f"figure: {plots.bars(path, *spec)}")


def gone(pending, runs, finished, out_root, data_dir):
    """The finished runs to run again: those whose folder (a fresh clone has none: run folders are not
    committed) a pending run reads, directly or through another such run."""
    redo, stack = set(), list(pending)
    while stack:
        for n in runs[stack.pop()].needs:
            argv = command_line(runs[n], out_root, data_dir)
            if n not in redo and finished(n) and not results_folder(argv, out_root / n).exists():
                redo.add(n)
                stack.append(n)
    return redo


def claim(out_root, name):
    """A study folder belongs to one study (study.json names it)."""
    mark = out_root / "study.json"
    if mark.exists() and json.loads(mark.read_text()).get("study") != name:
        raise ValueError(
            f"--out {out_root} holds the runs of study {json.loads(mark.read_text())['study']!r}: give another folder"
        )
    out_root.mkdir(parents=True, exist_ok=True)
    if not mark.exists():
        mark.write_text(json.dumps({"study": name}))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", help="a file of studies/: " + ", ".join(studies()))
    p.add_argument("--out", help="the folder of run folders (default out/studies/<study>)")
    p.add_argument("--results", default=str(ROOT / "results"), help="where <study>.jsonl is kept (default results/)")
    p.add_argument("--hours", type=float, help="start nothing new after H hours; the current run stops at a checkpoint")
    p.add_argument("--only", nargs="+", metavar="RUN", help="these runs (and the runs they need)")
    p.add_argument("--jobs", type=int, default=1, help="runs at a time, each once its needs have finished")
    p.add_argument("--table", action="store_true", help="print the table from the finished runs and exit")
    p.add_argument("--dry-run", action="store_true", help="print the plan and exit")
    a = p.parse_args(argv)
    if a.hours is not None and a.hours <= 0:
        raise ValueError(f"--hours must be > 0, got {a.hours}")
    if a.jobs < 1:
        raise ValueError(f"--jobs must be >= 1, got {a.jobs}")
    module, runs = load(a.study)
    unknown = [n for n in a.only or [] if n not in runs]
    if unknown:
        raise ValueError(f"--only: study {a.study} has no run {unknown}: choose from {', '.join(runs)}")
    key, results_path = keys(runs), Path(a.results) / f"{a.study}.jsonl"
    done, redo = read_results(results_path), set()  # redo: finished runs whose folders a later run reads are gone
    finished = lambda name: key[name] in done and name not in redo  # noqa: E731
    if a.table:
        print(module.table({n: done[key[n]] for n in runs if finished(n)}))
        draw(module, {n: done[key[n]] for n in runs if finished(n)}, Path(a.results) / f"{a.study}.png")
        return 0
    out_root = Path(a.out or ROOT / "out" / "studies" / a.study)
    data_dir = Path(os.environ.get("DATA_DIR", "data")).resolve()
    plan = order(runs, a.only or list(runs), a.study)
    redo |= gone([n for n in plan if not finished(n)], runs, finished, out_root, data_dir)
    if a.dry_run:
        for name in plan:
            state = "finished" if finished(name) else "to redo" if name in redo else "to run"
            print(f"{name:20s} {state:9s} {' '.join(command_line(runs[name], out_root, data_dir)[1:])}")
        return 0
    claim(out_root, a.study)
    deadline = time.time() + a.hours * 3600 if a.hours else None
    failed, stopped, measured, expected = set(), False, 0.0, 0.0
    speed = lambda: measured / expected if expected >= 1 else 1.0  # noqa: E731 (measured, once a minute of runs)
    pending, procs = [n for n in plan if not finished(n)], {}  # procs: name -> (Popen, argv, start time)
    forward = lambda signum, frame: [proc.send_signal(signum) for proc, _, _ in procs.values()]  # noqa: E731
    before = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}  # passed on to the runs
    try:
        while procs or (pending and not stopped):
            for name in list(pending):  # start what may start, in the plan's order
                run = runs[name]
                if stopped or len(procs) >= a.jobs:
                    break
                if any(n in failed for n in run.needs):
                    print(f"[{a.study}] {name}: skipped, it needs {[n for n in run.needs if not finished(n)]}")
                    failed.add(name)
                    pending.remove(name)
                    continue
                if not all(finished(n) for n in run.needs):
                    continue  # its needs are running or waiting
                if deadline is not None and time.time() >= deadline:
                    stopped = True
                    break
                left = sum(runs[n].minutes for n in plan if not finished(n) and n not in failed)
                again = " again (its folder, which a later run reads, is gone)" if name in redo else ""
                print(
                    f"[{a.study}] {name}: started{again}; {left * speed():.1f} min of runs left at the measured speed",
                    flush=True,
                )
                argv = command_line(run, out_root, data_dir)
                procs[name] = (start(argv, out_root / f"{name}.log", deadline), argv, time.time())
                pending.remove(name)
            if not procs:
                break
            name = wait_any({n: proc for n, (proc, _, _) in procs.items()})
            (proc, argv, t0), run = procs.pop(name), runs[name]
            code, wall, log_path = proc.returncode, time.time() - t0, out_root / f"{name}.log"
            if code == STOPPED:
                print(
                    f"[{a.study}] {name}: stopped at a checkpoint after {wall:.0f} s; run the study again to continue"
                )
                stopped = True
                continue
            if code != 0:
                print(f"[{a.study}] {name}: FAILED (exit {code}); the end of {log_path}:\n{tail(log_path)}")
                failed.add(name)
                continue
            measured, expected = measured + wall / 60, expected + run.minutes
            row = {"study": a.study, "run": name, "key": key[name], "command": run.command, "needs": run.needs}
            row |= {"metrics": metrics(results_folder(argv, out_root / name)), "wall_s": round(wall, 1)}
            row |= {"commit": commit(), "machine": machine()}
            row["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
            append_result(results_path, row)
            done[key[name]] = row
            redo.discard(name)
            shown = row["metrics"].get(run.metric)
            print(
                f"[{a.study}] {name}: finished in {wall:.0f} s"
                + (f", {run.metric} {shown:.4g}" if shown is not None else "")
            )
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
    remaining = [n for n in plan if not finished(n)]
    if remaining:
        eta = sum(runs[n].minutes for n in remaining) * speed()
        print(f"[{a.study}] not finished: {', '.join(remaining)} (about {eta:.1f} min)")
    print(module.table({n: done[key[n]] for n in runs if finished(n)}))
    draw(module, {n: done[key[n]] for n in runs if finished(n)}, Path(a.results) / f"{a.study}.png")
    return 1 if failed else (STOPPED if stopped else 0)


if __name__ == "__main__":
    sys.exit(main())
