"""A run folder (train.py's --out-dir): who holds it (run.lock: the pid of the process running
there, made create-exclusive, a dead process's lock taken over), what it must not overlap (the
run's inputs), whether a new run may take it (another run's files: --resume or --overwrite), and
its checkpoints (listed, the latest, all of one run, read without executing pickles, averaged).
Imports nothing of ours."""

import atexit
import contextlib
import os
import pickle
import shutil
import time
from pathlib import Path

import torch


def check_folder(cfg, out, resume, overwrite):
    """Before any work: a run folder is none of the run's inputs, nor inside one, nor holding one."""
    for name in ("dataset", "init_from", "tokenizer"):
        value = getattr(cfg, name, "")
        if not value or not Path(value).exists():
            continue
        path, o = Path(value).resolve(), out.resolve()
        if path == o or path in o.parents or o in path.parents:
            flag = "--" + name.replace("_", "-")
            raise ValueError(f"--out-dir {out} and {flag} {value} overlap: a run folder is never an input or holds one")
    return claimable(out, resume, overwrite)


def claimable(out, resume, overwrite):
    """-> another run's files in the folder. Refused: a folder a live process holds (its run.lock),
    or holding another run's checkpoints or logs, unless --resume or --overwrite."""
    if (holder := lock_holder(out)) is not None:
        raise ValueError(
            f"--out-dir {out} is in use: process {holder} is running there (its run.lock; delete that file if"
            " the process is not a run)"
        )
    theirs = [p.name for p in checkpoints(out)] + [n for n in ("metrics.jsonl", "log.txt") if (out / n).exists()]
    if theirs and not resume and not overwrite:
        raise ValueError(
            f"--out-dir {out} holds another run ({', '.join(theirs[:3])}): continue it with --resume,"
            " choose a fresh --out-dir, or pass --overwrite to replace it"
        )
    return theirs


def claim(out, resume, overwrite):
    """A run folder belongs to one run, held by run.lock (made create-exclusive, holding the pid) for
    the process's life: with `overwrite` another run's folder is moved aside at once, then deleted."""
    if claimable(out, resume, overwrite) and not resume:
        trash = out.with_name(f".{out.name}.replaced-{os.getpid()}")
        os.replace(out, trash)
        shutil.rmtree(trash)
    out.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(out / "run.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:  # ours (an earlier run of this process), or left by a process that died
        if (holder := lock_holder(out)) is not None:
            raise ValueError(f"--out-dir {out} is in use: process {holder} started a run there") from None
        (out / "run.lock").unlink(missing_ok=True)
        fd = os.open(out / "run.lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    os.write(fd, str(os.getpid()).encode())
    os.close(fd)
    atexit.register(release, out)


def release(out):  # run.lock removed, if this process holds it
    with contextlib.suppress(OSError):
        if (Path(out) / "run.lock").read_text() == str(os.getpid()):
            (Path(out) / "run.lock").unlink()


def lock_holder(out):
    """The pid holding the run folder, if another live process holds it (None: free, ours, or stale)."""
    try:
        text, age = (Path(out) / "run.lock").read_text(), time.time() - (Path(out) / "run.lock").stat().st_mtime
    except OSError:
        return None
    if not text.isdigit():  # being written this instant (or left empty by a crash a while ago: stale)
        return "unknown" if age < 10 else None
    pid = int(text)
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    with contextlib.suppress(OSError, IndexError):  # a killed process not yet reaped (a zombie) holds nothing
        if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
            return None
    return pid


def checkpoints(out_dir):
    return sorted(Path(out_dir).glob("ckpt_*.pt"))


def latest_checkpoint(out_dir):
    paths = checkpoints(out_dir)
    if not paths:
        raise FileNotFoundError(f"--resume: no checkpoint (ckpt_*.pt) in {out_dir}")
    return paths[-1]


def check_checkpoints(out_dir, ignore=()):
    """Every checkpoint in a run folder is of one run: the same config (but for the keys in `ignore`, those --resume
    may change) and task settings. A checkpoint of another run copied in is named, before any is used."""
    first = None
    for path in checkpoints(out_dir):
        ck = load_checkpoint(path)
        key = {k: v for k, v in ck.get("config", {}).items() if k not in ignore}, ck.get("task", {})
        if first is None:
            first = path, key
        elif key != first[1]:
            c0, c1 = first[1][0], key[0]
            diff = sorted(k for k in c0.keys() | c1.keys() if c0.get(k) != c1.get(k)) or ["the task's settings"]
            raise ValueError(
                f"{out_dir} holds checkpoints of different runs: {path.name} differs from {first[0].name} in"
                f" {', '.join(diff[:4])} (model {c1.get('model')!r} and {c0.get('model')!r}); keep only one run's"
            )


def load_checkpoint(path):
    """Weights only: tensors and plain containers, never arbitrary pickled objects."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=True)  # tensors read when used
    except pickle.UnpicklingError:  # from None: never torch's advice to unpickle it anyway
        raise RuntimeError(f"cannot read checkpoint {path}: refused as unsafe (objects beyond tensors)") from None
    except Exception as e:
        raise RuntimeError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def average_checkpoints(paths, load=load_checkpoint):
    """The element-wise mean of the models in `paths` (the paper averages the last 5)."""
    avg = None
    for p in paths:
        sd = load(p)["model"]
        if avg is None:
            avg = {k: v.clone().double() for k, v in sd.items()}
        else:
            for k, v in sd.items():
                avg[k] += v.double()
    return {k: (v / len(paths)).to(sd[k].dtype) for k, v in avg.items()}
