"""Many workers on one study, some SIGKILLed and restarted (issue 20), at about 200 trials.

N ``autocomp search`` processes share one storage; ``--kill`` of them are SIGKILLed once each, at
evenly spaced moments of the run (a random offset lands inside a trial), and started again. At
the end it prints what the run must hold (``autocomp.study.audit``): duplicate plans among
COMPLETE trials, trials left RUNNING, FAIL trials without a reason, artifacts whose sha256 does
not match their record, and how often each baseline completed; then how the failures read.
Exit status 1 when any of those is off.

Not a timed test: the tests run the same at 4 workers and ~20 trials
(``tests/pipeline/test_robustness.py::test_four_workers_two_of_them_killed_and_restarted``).

Example::

    python experiments/bench_workers.py --trials 200 --workers 4 --kill 2                 # SQLite in OUT
    python experiments/bench_workers.py --trials 200 --storage postgresql://u@host/db      # a clean database
"""

from __future__ import annotations

import argparse
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import optuna

from autocomp.study.audit import audit_study
from autocomp.study.failures import common_reasons
from autocomp.study.records import trial_failure

CLI = [sys.executable, "-m", "autocomp.cli", "search", "--no-progress", "--train-threads", "1"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=200, help="trials in all (split evenly over the workers)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--kill", type=int, default=2, help="workers SIGKILLed once each and restarted")
    p.add_argument("--storage", default=None, help="default: a SQLite file in --out")
    p.add_argument("--out", default=None, help="run directory (default: a new temporary one)")
    p.add_argument("--teacher-epochs", type=int, default=2)
    p.add_argument("--heartbeat", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="bench_workers-"))
    out.mkdir(parents=True, exist_ok=True)
    url = args.storage or f"sqlite:///{out.resolve() / 'study.db'}"
    each = -(-args.trials // args.workers)
    cmd = CLI + ["--storage", url, "--study-name", "w", "--run-dir", str(out / "run"), "--n-trials", str(each),
                 "--teacher-epochs", str(args.teacher_epochs), "--heartbeat", str(args.heartbeat),
                 "--seed", str(args.seed)]
    started = time.monotonic()
    logs = [open(out / f"worker{i}.log", "w") for i in range(args.workers + args.kill)]  # noqa: SIM115
    procs = [subprocess.Popen(cmd, stdout=logs[i], stderr=subprocess.STDOUT) for i in range(args.workers)]
    rng = random.Random(args.seed)
    for victim in range(args.kill):
        target = args.trials * (victim + 1) // (args.kill + 1)
        while _finished(url) < target and procs[victim].poll() is None:
            time.sleep(0.5)
        time.sleep(rng.uniform(0.0, 1.0))
        procs[victim].send_signal(signal.SIGKILL)  # the autocomp process itself, no wrapper
        procs[victim].wait()
        print(f"killed worker {victim} at {_finished(url)} finished trials; restarted", flush=True)
        procs.append(subprocess.Popen(cmd, stdout=logs[args.workers + victim], stderr=subprocess.STDOUT))
    codes = [proc.wait() for proc in procs[args.kill:]]
    for f in logs:
        f.close()
    study = optuna.load_study(study_name="w", storage=_storage(url))
    audit = audit_study(study, url)
    print(f"{args.workers} workers, {args.kill} killed once and restarted, {time.monotonic() - started:.0f} s, "
          f"exit codes of the rest {codes}")
    print(audit.line())
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    for reason, n in common_reasons((trial_failure(t) or "" for t in failed), top=5):
        print(f"  failed ({n}x): {reason}")
    print(f"  states: {dict(Counter(t.state.name for t in study.trials))}; run directory {out}")
    return 0 if audit.clean and not any(codes) else 1


def _storage(url: str) -> optuna.storages.BaseStorage:
    if url.startswith("journal:"):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(url.removeprefix("journal:")))
    return optuna.storages.get_storage(url)


def _finished(url: str) -> int:
    try:
        trials = optuna.load_study(study_name="w", storage=_storage(url)).get_trials(deepcopy=False)
    except Exception:  # not created yet, or the database busy for a moment
        return 0
    return sum(t.state in (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED) for t in trials)


if __name__ == "__main__":
    sys.exit(main())
