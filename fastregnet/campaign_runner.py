"""`fastregnet gpu-campaign`: runs the campaign's parts (fastregnet/campaign.py), each in its own process.

A GPU is lent rarely and for minutes, so the run is built to give a verdict whatever happens to it:
- each part runs in a subprocess: a crash, a hang or a sticky CUDA error (a faulted graph capture, an illegal
  address) loses that part, not the run; an error in the runner itself is recorded against the part it was
  running, and the next part still runs;
- each part has a time box (its share of --budget-s, plus what earlier parts left unused): the part stops starting
  cases when its box is over, and the runner kills it (its whole process group: torch.compile's workers too)
  GRACE_S after that, recording the case it was in and how many it never reached; a part whose box would open
  after the budget is over is recorded as cut without starting;
- before anything is timed, the warmup part runs the later parts' fastregnet cases once, untimed, in parallel
  worker processes over the machine's cores, so Triton's compiles (cached on disk, shared by the processes) do
  not eat the parts' time boxes one by one; its records give the compile time;
- each part appends every record to its journal as it is made (DIR/.journal-PART.jsonl, O(1) per record); the
  runner, campaign.json's only writer, merges it after the part ends, so a run cut anywhere keeps what it
  measured; every part's log goes to DIR/campaign.log.

Internal entry points (what the runner starts): `python -m fastregnet.campaign_runner part PART DIR DEADLINE DRY`
and `... warm INDEX COUNT PARTS DIR DEADLINE DRY`. FASTREGNET_CAMPAIGN_FAULT=PART:crash|hang makes that part's
process crash or hang at its start (the tests use it to check that the runner survives both).
"""

from __future__ import annotations

import datetime
import os
import signal
import subprocess
import sys
import time
import traceback

from .campaign import PARTS, RULE, SHARES, WARM_PARTS, load_doc, read_journal, save_doc

GRACE_S = 8  # how long past its time box a part may run before the runner kills it
KILL_WAIT_S = 5  # how long to wait for a killed process group to go (one stuck in the driver is left behind)


def _package_root() -> str:
    """The folder holding the `fastregnet` package this process imported: the subprocesses import the same one
    (a source checkout, an editable install or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    """Linux: the child gets SIGKILL when the runner dies (the device tool's timeout, Ctrl-C), so no part keeps the
    GPU busy after the run is over."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(args: list[str], log_path: str) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([_package_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                             if p])
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "fastregnet.campaign_runner", *args],
                                stdout=subprocess.DEVNULL, stderr=log, env=env, start_new_session=True,
                                preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):  # it ended just now
        pass
    try:
        proc.wait(timeout=KILL_WAIT_S)
    except subprocess.TimeoutExpired:  # stuck in the driver: leave it, the run goes on
        pass


def _wait(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for proc until deadline + GRACE_S; kill its process group then. Returns True if it had to be killed."""
    try:
        proc.wait(timeout=max(0.0, deadline + GRACE_S - time.time()))
        return False
    except subprocess.TimeoutExpired:
        _kill(proc)
        return True


def _read(path: str) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()
    except OSError:
        return ""


class Runner:
    """The parent process: the time boxes, the subprocesses, and the merge of their journals into campaign.json."""

    def __init__(self, out_dir: str, budget_s: float, parts, dry_run: bool, log=print):
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown campaign parts {unknown}; known: {', '.join(PARTS)}")
        os.makedirs(out_dir, exist_ok=True)
        self.out_dir = out_dir
        self.path = os.path.join(out_dir, "campaign.json")
        self.log_path = os.path.join(out_dir, "campaign.log")
        self.parts = [p for p in PARTS if p in parts]  # always in priority order
        self.dry_run, self.log, self.budget_s = dry_run, log, budget_s
        self.start = time.time()
        self.end = self.start + budget_s
        self.live: list[subprocess.Popen] = []
        open(self.log_path, "w").close()
        self.doc = {"campaign": {
            "budget_s": budget_s, "parts": self.parts, "dry_run": dry_run, "grace_s": GRACE_S,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rule": RULE},
            "parts": {}}
        self._save()

    def _save(self) -> None:
        save_doc(self.path, self.doc)

    def _journal(self, name: str) -> str:
        path = os.path.join(self.out_dir, f".journal-{name}.jsonl")
        open(path, "w").close()
        return path

    def _append_log(self, title: str, path: str) -> None:
        text = _read(path)
        with open(self.log_path, "a") as f:
            f.write(f"===== {title} =====\n{text}\n")
        os.unlink(path)
        if text.strip():
            self.log(text.rstrip()[-20000:])

    def _time_box(self, part: str) -> float:
        """The part's deadline (wall clock): its share of what is left of the budget."""
        remaining = [p for p in self.parts if p not in self.doc["parts"]]
        share = SHARES[part] / sum(SHARES[p] for p in remaining)
        now = time.time()
        return now + share * max(0.0, self.end - now)

    def run_part(self, part: str) -> None:
        started = time.time()
        deadline = self._time_box(part)
        entry = self.doc["parts"][part] = {"status": "starting", "time_box_s": round(deadline - started, 1),
                                           "records": []}
        self._save()
        try:
            if deadline - started < 1.0:
                entry["status"] = "cut by its time box (not started: the budget was spent)"
                entry["records"].append({"case": "(part)", "status": "cut", "reason": "no time left in the budget"})
            elif part == "warmup":
                self._warm(entry, deadline)
            else:
                self._child(part, entry, deadline)
        except Exception as e:  # the runner's own error costs this part only
            entry["status"] = "error"
            entry["error"] = f"runner: {type(e).__name__}: {e}"
            entry["traceback"] = traceback.format_exc()[-4000:]
        entry["seconds"] = round(time.time() - started, 1)
        self._save()

    def _child(self, part: str, entry: dict, deadline: float) -> None:
        journal = self._journal(part)
        log_path = os.path.join(self.out_dir, f".log-{part}.txt")
        proc = _spawn(["part", part, self.path, repr(deadline), str(int(self.dry_run))], log_path)
        self.live.append(proc)
        killed = _wait(proc, deadline)
        self.live.remove(proc)
        meta, records = read_journal(journal)
        os.unlink(journal)
        entry["records"] = records
        status = meta.pop("status", None)
        current, index = meta.pop("current_case", None), meta.pop("current_case_index", None)
        entry.update(meta)
        if status is not None:  # the part finished (a kill while its process was exiting changes nothing)
            entry["status"] = status
        elif killed:
            entry["status"] = "cut by its time box (process killed)"
            planned = entry.get("cases_planned")
            entry["records"].append({"case": current or "(starting up)", "status": "cut",
                                     "reason": f"still running {GRACE_S} s after the part's time box: killed",
                                     "cases_not_run": planned - index - 1 if index is not None else planned})
        else:  # the process died without finishing
            entry["status"] = "error"
            entry["error"] = f"the part's process exited with status {proc.returncode} before finishing"
            entry["stderr_tail"] = _read(log_path)[-3000:]
            if current is not None:
                entry["records"].append({"case": current, "status": "error",
                                         "error": "the part's process died during this case (see stderr_tail)"})
        self._append_log(f"part {part}", log_path)

    def _warm(self, entry: dict, deadline: float) -> None:
        """The warm parts' fastregnet cases once, split over worker processes (Triton's on-disk cache is shared,
        so each process later finds its kernels compiled)."""
        started = time.time()
        workers = 2 if self.dry_run else max(1, min(8, (os.cpu_count() or 2) // 2))
        parts = ",".join(p for p in WARM_PARTS if p in self.parts) or "none"
        cache = _triton_cache_files()
        procs = []
        for i in range(workers):
            journal, log_path = self._journal(f"warm{i}"), os.path.join(self.out_dir, f".log-warm{i}.txt")
            proc = _spawn(["warm", str(i), str(workers), parts, self.path, repr(deadline), str(int(self.dry_run))],
                          log_path)
            self.live.append(proc)
            procs.append((proc, journal, log_path))
        cut = False
        for i, (proc, journal, log_path) in enumerate(procs):
            killed = _wait(proc, deadline)
            self.live.remove(proc)
            cut |= killed
            _, lines = read_journal(journal)
            os.unlink(journal)
            bad = [r for r in lines if r.get("status") in ("error", "FAIL")]
            entry["records"].append({
                "case": f"warm-up worker {i + 1} of {workers}", "status": "cut" if killed else "ok",
                "cases_run": len([r for r in lines if r.get("status") not in ("skipped", "cut")]),
                "cases_failed": [{k: r.get(k) for k in ("case", "error")} for r in bad],
                "seconds": round(time.time() - started, 1), "returncode": proc.returncode,
                **({"stderr_tail": _read(log_path)[-3000:]} if proc.returncode else {})})
            self._append_log(f"warm-up worker {i + 1}", log_path)
        entry["records"].append({"case": "compile time", "status": "ok", "workers": workers,
                                 "seconds": round(time.time() - started, 1),
                                 "triton_cache_files_added": _triton_cache_files() - cache})
        entry["status"] = "cut by its time box (workers killed)" if cut else "done"
        self.log(f"[warmup] {workers} workers, {entry['records'][-1]['seconds']} s, status {entry['status']}")

    def run(self) -> dict:
        try:
            for part in self.parts:
                self.run_part(part)
        finally:  # an interrupted runner leaves no part running on the GPU
            for proc in list(self.live):
                _kill(proc)
        self.doc["campaign"]["seconds"] = round(time.time() - self.start, 1)
        self._save()
        return self.doc


def _triton_cache_files() -> int:
    """Files in Triton's on-disk cache (each compiled variant adds a few): how much the warm-up compiled."""
    root = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return sum(len(files) for _, _, files in os.walk(root)) if os.path.isdir(root) else 0


def _inject_fault(part: str) -> None:
    """FASTREGNET_CAMPAIGN_FAULT=PART:crash|hang (tests): this part's process dies or hangs as it starts."""
    target, _, fault = os.environ.get("FASTREGNET_CAMPAIGN_FAULT", "").partition(":")
    if target == part and fault == "crash":
        os._exit(3)
    if target == part and fault == "hang":
        time.sleep(10**6)


def _child(argv: list[str]) -> int:
    """A part's process, or a warm-up worker's."""
    from . import campaign

    def log(s):
        print(s, file=sys.stderr, flush=True)

    if argv[0] == "part":
        part, doc_path, deadline, dry = argv[1], argv[2], float(argv[3]), argv[4] == "1"
        journal = os.path.join(os.path.dirname(doc_path), f".journal-{part}.jsonl")
        c = campaign.Campaign(doc_path, journal, part, deadline, dry, log=log)
        c.meta(status=None, pid=os.getpid())
        _inject_fault(part)
        campaign.run_part(c)
        return 0
    index, count, parts, doc_path, deadline, dry = (int(argv[1]), int(argv[2]), argv[3].split(","), argv[4],
                                                    float(argv[5]), argv[6] == "1")
    journal = os.path.join(os.path.dirname(doc_path), f".journal-warm{index}.jsonl")
    _inject_fault("warmup")
    campaign.warm_up(doc_path, journal, index, count, parts, deadline, dry, log)
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))


def summary(doc: dict) -> str:
    """One line per part: status, records by status, seconds."""
    lines = []
    for part, entry in doc["parts"].items():
        counts: dict[str, int] = {}
        for r in entry["records"]:
            counts[r.get("status", "?")] = counts.get(r.get("status", "?"), 0) + 1
        tally = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        lines.append(f"{part:<12} {entry['status']:<38} {entry.get('seconds', 0):>7.1f} s  {tally}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------------------
# command line
# ----------------------------------------------------------------------------------------------------------------

MAX_BUDGET_S = 86400


def _budget(text: str) -> int:
    import argparse

    from .cli_args import positive_int

    value = positive_int(text)
    if value > MAX_BUDGET_S:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_BUDGET_S} s (a day), got {text[:20]}"
                                         f"{'...' if len(text) > 20 else ''}")
    return value


def add_parser(sub) -> None:
    p = sub.add_parser("gpu-campaign", help="the GPU session's one command: correctness, whole-model and kernel "
                                            "figures and tuning, each part time-boxed in its own process, into "
                                            "DIR/campaign.json")
    p.add_argument("--out", required=True, help="directory for campaign.json and tuned_configs.json (created)")
    p.add_argument("--budget-s", type=_budget, default=450,
                   help="total seconds for all parts (default 450); the run ends within a few seconds of it")
    p.add_argument("--part", nargs="+", choices=PARTS, default=list(PARTS), help="parts to run (default: all)")
    p.add_argument("--dry-run", action="store_true",
                   help="every part on the CPU through the Triton interpreter at tiny shapes (what CI runs)")
    p.set_defaults(func=_cmd_campaign)


def _cmd_campaign(args) -> int:
    import torch

    if args.dry_run:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            raise ValueError("--dry-run runs the kernels through the Triton interpreter: set TRITON_INTERPRET=1 "
                             "before triton is imported")
        os.environ["TRITON_INTERPRET"] = "1"  # inherited by the part processes, which define the kernels
    elif not torch.cuda.is_available():
        raise ValueError("no CUDA GPU here: gpu-campaign needs one (use --dry-run to check it on the CPU)")
    runner = Runner(args.out, args.budget_s, args.part, args.dry_run,
                    log=lambda s: s and print(s, file=sys.stderr, flush=True))
    doc = runner.run()
    print(summary(doc))
    print(f"JSON written to {runner.path}")
    bad = [r for e in doc["parts"].values() for r in e["records"] if r.get("status") in ("FAIL", "error")]
    return 1 if bad or any(e["status"] == "error" for e in doc["parts"].values()) else 0
