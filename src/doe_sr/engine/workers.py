"""Local worker processes: how many, on which GPU and cores, their logs, their end.

``doe-sr run --workers N`` starts N ``doe-sr worker`` processes and shows their
progress; ``doe-sr worker`` is the same process started by hand on another machine
against a shared storage. Why separate processes rather than threads: TensorFlow keeps
one runtime per process (devices, memory), so a worker per process is what pins a
worker to a GPU, and a crash or ``kill -9`` of one worker leaves the others, and the
study, intact.

Workers run in their own session, so a Ctrl-C at the terminal reaches ``run`` only,
which then hands exactly one SIGINT to each worker: each marks its current run KILLED
and its trial interrupted before leaving (a second signal during that bookkeeping is
ignored). If ``run`` itself is killed outright, its workers carry on until the queue is
empty. Each session's worker logs carry its start time and pid, so two sessions never
write the same file.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from doe_sr.core.errors import UserError
from doe_sr.engine.queue import local_folder


def visible_gpus() -> list[str]:
    """GPU ids a worker can be pinned to, without importing TensorFlow.

    ``CUDA_VISIBLE_DEVICES`` when set (the user already chose; "" or "-1" means none),
    else the indices ``nvidia-smi`` lists, else none (a CPU machine).
    """
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [g.strip() for g in env.split(",") if g.strip()]
        return [] if ids in ([], ["-1"]) else ids
    import shutil

    if not shutil.which("nvidia-smi"):
        return []
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.stdout.splitlines() if line.strip().isdigit()] if out.returncode == 0 else []


def cpus() -> int:
    """The CPU cores this process may run on (its affinity, where the OS tells it)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def worker_env(index: int, workers: int, gpus: list[str], cpus: int) -> dict[str, str]:
    """Environment variables of local worker ``index`` of ``workers``.

    GPUs: worker i sees only GPU ``gpus[i % len(gpus)]`` (``CUDA_VISIBLE_DEVICES``), so
    each trains on its own card; when workers outnumber cards they share them and
    TensorFlow must allocate GPU memory on demand (``TF_FORCE_GPU_ALLOW_GROWTH``)
    instead of each taking the whole card. CPUs: the cores are split evenly between the
    workers (TensorFlow's intra-op pool, OpenMP), at least one each, so N workers do not
    oversubscribe the machine N-fold.
    """
    env = {"PYTHONUNBUFFERED": "1", "DOE_SR_WORKER_INDEX": str(index)}
    if gpus:
        env["CUDA_VISIBLE_DEVICES"] = gpus[index % len(gpus)]
        if workers > len(gpus):
            env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"
    if workers <= 1:
        return env  # one worker: TensorFlow's defaults already use the whole machine
    share = max(1, cpus // workers)
    env.update({"TF_NUM_INTRAOP_THREADS": str(share), "OMP_NUM_THREADS": str(share),
                "TF_NUM_INTEROP_THREADS": str(min(2, share))})
    return env


def max_workers(gpus: list[str], cpus: int) -> int:
    """The most local workers that can do useful work at once: one per core, or four per GPU.

    Why a cap: each worker is a TensorFlow process of its own (about half a GB of memory
    before it trains), so ``--workers 1000`` on a laptop only thrashes it; past one per
    core (or a few per GPU, sharing its memory) more workers finish nothing sooner.
    """
    return max(2, cpus, 4 * len(gpus))


def check_workers(workers: int, gpus: list[str], cpus: int, force: bool) -> None:
    """Refuse a ``--workers`` below 1, or above :func:`max_workers` unless ``force``d."""
    if workers < 1:
        raise UserError(f"--workers {workers}: give at least 1")
    cap = max_workers(gpus, cpus)
    if workers > cap and not force:
        where = f"{len(gpus)} GPU(s) and {cpus} CPU core(s)" if gpus else f"{cpus} CPU core(s) and no GPU"
        raise UserError(f"--workers {workers}: this machine has {where}, so at most {cap} workers make sense; "
                        f"give --workers {cap} or fewer, or add --force-workers to start {workers} anyway")


def tail(path: Path, lines: int = 15) -> str:
    """The last ``lines`` lines of a worker's log ('' when it cannot be read)."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def session_logs(engine) -> tuple[Path, str]:
    """The worker log folder and this session's prefix (start time and pid: unique per ``run``)."""
    logs = local_folder(engine.study) / "logs" / engine.study.name
    logs.mkdir(parents=True, exist_ok=True)
    campaign = getattr(engine, "campaign", None)
    kind = f"{campaign.kind}-" if campaign is not None and campaign.kind != "array" else ""
    return logs, f"{kind}{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"


def _tracking_for_workers(engine) -> str:
    """The tracking URI a worker is given: a local path made absolute, since workers may start elsewhere."""
    uri = engine.tracking_uri
    return uri if "://" in uri else str(Path(uri).expanduser().resolve())


def _interrupt(procs: list[tuple[subprocess.Popen, Path]]) -> None:
    """Hand exactly one SIGINT to each live worker and wait (up to 2 min each) for its bookkeeping."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for p, _ in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
    for p, _ in procs:
        try:
            p.wait(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()


def launch_workers(engine, workers: int, console, gpus: list[str] | None = None):
    """Start ``workers`` local worker processes, show progress until they exit, return the progress."""
    from doe_sr.engine.progress import Monitor

    gpus = visible_gpus() if gpus is None else gpus
    n_cpus = cpus()
    logs, session = session_logs(engine)
    campaign = engine.campaign  # the array (`doe-sr worker`) or a validation set (`doe-sr validate ... --worker`)
    cmd = [sys.executable, "-m", "doe_sr.cli", *campaign.worker_args, str(Path(engine.study_path).resolve()),
           "--storage", engine.storage_url, "--tracking-uri", _tracking_for_workers(engine),
           *campaign.worker_options]
    where = (f"GPU {', '.join(gpus)}" if gpus else f"{n_cpus} CPU cores")
    console.print(f"{workers} worker(s) on {where}; logs in {logs}/{session}-worker-*.log")
    procs: list[tuple[subprocess.Popen, Path]] = []
    for i in range(workers):
        log_path = logs / f"{session}-worker-{i}.log"
        with open(log_path, "a") as log:
            env = {**os.environ, **worker_env(i, workers, gpus, n_cpus)}
            procs.append((subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                           env=env, start_new_session=True), log_path))
    with Monitor(console, workers=workers, title=f"{campaign.name}",
                 logs=[path for _, path in procs]) as monitor:
        try:
            while any(p.poll() is None for p, _ in procs):
                monitor.update(engine.progress())
                time.sleep(1.0)
        except KeyboardInterrupt:
            _interrupt(procs)
            raise
        monitor.update(engine.progress())
    for i, (p, log_path) in enumerate(procs):
        if p.returncode != 0:
            how = f"signal {-p.returncode}" if p.returncode < 0 else f"exit code {p.returncode}"
            console.print(f"[yellow]worker {i} (pid {p.pid}) stopped with {how}[/]; last lines of {log_path}:\n"
                          f"{tail(log_path)}")
    return engine.refresh()
