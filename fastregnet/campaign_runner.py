"""`fastregnet gpu-campaign`: runs the campaign's parts (fastregnet/campaign.py), each in its own process.

A GPU is lent rarely and for minutes, so the run is built to give a verdict whatever happens to it:
- each part runs in a subprocess: a crash, a hang or a sticky CUDA error (a faulted graph capture, an illegal
  address) loses that part, not the run;
- each part has a time box (its share of --budget-s, plus what earlier parts left unused): the part stops starting
  cases when its box is over, and the runner kills it (its whole process group: torch.compile's workers too)
  GRACE_S after that, recording the case it was in and the cases it never reached as cut;
- before anything is timed, the warmup part runs every fastregnet case of the later parts once, untimed, in
  parallel worker processes over the machine's cores, so Triton's compiles (cached on disk, shared by the
  processes) do not eat the parts' time boxes one by one; its records give the compile time;
- every record is written to DIR/campaign.json as it is made; a run cut anywhere keeps all it measured.

Internal entry points (what the runner starts): `python -m fastregnet.campaign_runner part PART DIR DEADLINE DRY`
and `... warm INDEX COUNT DIR DEADLINE DRY`.
"""

from __future__ import annotations

import datetime
import json
import os
import signal
import subprocess
import sys
import tempfile
import time

from .campaign import PARTS, RULE, SHARES, load_doc, save_doc

GRACE_S = 8  # how long past its time box a part may run before the runner kills it


def _package_root() -> str:
    """The folder holding the `fastregnet` package this process imported: the subprocesses import the same one
    (a source checkout, an editable install or site-packages)."""
    return os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _spawn(args: list[str], log_path: str, stdout=subprocess.DEVNULL) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([_package_root()] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep)
                                                             if p])
    with open(log_path, "w") as log:
        return subprocess.Popen([sys.executable, "-m", "fastregnet.campaign_runner", *args], stdout=stdout,
                                stderr=log, env=env, start_new_session=True, text=True)


def _wait(proc: subprocess.Popen, deadline: float) -> bool:
    """Wait for proc until deadline + GRACE_S; kill its process group then. Returns True if it had to be killed."""
    try:
        proc.wait(timeout=max(0.0, deadline + GRACE_S - time.time()))
        return False
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:  # it ended just now
            pass
        proc.wait()
        return True


def _tail(path: str, n: int = 3000) -> str:
    try:
        with open(path, errors="replace") as f:
            return f.read()[-n:]
    except OSError:
        return ""


class Runner:
    """The parent process: the time boxes, the subprocesses, and the merge of what they leave in campaign.json."""

    def __init__(self, out_dir: str, budget_s: float, parts, dry_run: bool, log=print):
        unknown = [p for p in parts if p not in PARTS]
        if unknown:
            raise ValueError(f"unknown campaign parts {unknown}; known: {', '.join(PARTS)}")
        os.makedirs(out_dir, exist_ok=True)
        self.path = os.path.join(out_dir, "campaign.json")
        self.parts = [p for p in PARTS if p in parts]  # always in priority order
        self.dry_run, self.log, self.budget_s = dry_run, log, budget_s
        self.start = time.time()
        self.end = self.start + budget_s
        self.logs = tempfile.mkdtemp(prefix="fastregnet-campaign-")  # the parts' stderr, echoed after each
        save_doc(self.path, {"campaign": {
            "budget_s": budget_s, "parts": self.parts, "dry_run": dry_run, "grace_s": GRACE_S,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "rule": RULE},
            "parts": {}})

    def _begin(self, part: str) -> float:
        """Open the part's entry with its time box; returns its deadline (wall clock)."""
        remaining = [p for p in self.parts if p not in load_doc(self.path)["parts"]]
        share = SHARES[part] / sum(SHARES[p] for p in remaining)
        now = time.time()
        deadline = now + share * max(0.0, self.end - now)
        doc = load_doc(self.path)
        doc["parts"][part] = {"status": "starting", "time_box_s": round(deadline - now, 1), "records": []}
        save_doc(self.path, doc)
        return deadline

    def _finish(self, part: str, started: float, killed: bool, returncode: int, log_path: str) -> None:
        """Merge the part's outcome: what its process wrote, and what the runner saw (killed, crashed)."""
        doc = load_doc(self.path)
        entry = doc["parts"][part]
        if killed:
            entry["status"] = "cut by its time box (process killed)"
            planned, index = entry.get("cases_planned"), entry.pop("current_case_index", None)
            entry["records"].append({"case": entry.pop("current_case", None) or "(starting up)", "status": "cut",
                                     "reason": f"still running {GRACE_S} s after the part's time box: killed",
                                     "cases_not_run": planned - index - 1 if index is not None else planned})
        elif entry["status"] in ("starting", "running"):  # the process died without finishing its entry
            entry["status"] = "error"
            entry["error"] = f"the part's process exited with status {returncode} before finishing"
            entry["stderr_tail"] = _tail(log_path)
        entry["seconds"] = round(time.time() - started, 1)
        save_doc(self.path, doc)

    def run_part(self, part: str) -> None:
        deadline = self._begin(part)
        started = time.time()
        if part == "warmup":
            self._warm(deadline)
            return
        log_path = os.path.join(self.logs, f"{part}.log")
        proc = _spawn(["part", part, self.path, repr(deadline), str(int(self.dry_run))], log_path)
        killed = _wait(proc, deadline)
        self._finish(part, started, killed, proc.returncode, log_path)
        self.log(_tail(log_path, 20000).rstrip())

    def _warm(self, deadline: float) -> None:
        """Every warm part's fastregnet cases once, split over worker processes (Triton's on-disk cache is shared,
        so each process later finds its kernels compiled)."""
        started = time.time()
        workers = 2 if self.dry_run else max(1, min(8, (os.cpu_count() or 2) // 2))
        cache = _triton_cache_files()
        procs = []
        for i in range(workers):
            log_path = os.path.join(self.logs, f"warm{i}.log")
            procs.append((_spawn(["warm", str(i), str(workers), self.path, repr(deadline), str(int(self.dry_run))],
                                 log_path, stdout=subprocess.PIPE), log_path))
        records, cut = [], False
        for i, (proc, log_path) in enumerate(procs):
            killed = _wait(proc, deadline)
            cut |= killed
            lines = [json.loads(line) for line in proc.stdout.read().splitlines() if line.startswith("{")]
            bad = [r for r in lines if r.get("status") in ("error", "FAIL")]
            records.append({"case": f"warm-up worker {i + 1} of {workers}", "status": "cut" if killed else "ok",
                            "cases_run": len([r for r in lines if r.get("status") != "skipped"]),
                            "cases_failed": [{k: r.get(k) for k in ("part", "case", "error")} for r in bad],
                            "seconds": round(time.time() - started, 1), "returncode": proc.returncode,
                            **({"stderr_tail": _tail(log_path)} if proc.returncode else {})})
        doc = load_doc(self.path)
        entry = doc["parts"]["warmup"]
        entry["records"] = records + [{"case": "compile time", "status": "ok", "workers": workers,
                                       "seconds": round(time.time() - started, 1),
                                       "triton_cache_files_added": _triton_cache_files() - cache}]
        entry["status"] = "cut by its time box (workers killed)" if cut else "done"
        entry["seconds"] = round(time.time() - started, 1)
        save_doc(self.path, doc)
        self.log(f"[warmup] {workers} workers, {entry['seconds']} s, status {entry['status']}")

    def run(self) -> dict:
        for part in self.parts:
            self.run_part(part)
        doc = load_doc(self.path)
        doc["campaign"]["seconds"] = round(time.time() - self.start, 1)
        save_doc(self.path, doc)
        return doc


def _triton_cache_files() -> int:
    """Files in Triton's on-disk cache (each compiled variant adds a few): how much the warm-up compiled."""
    root = os.environ.get("TRITON_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".triton", "cache")
    return sum(len(files) for _, _, files in os.walk(root)) if os.path.isdir(root) else 0


def _child(argv: list[str]) -> int:
    """A part's process, or a warm-up worker's."""
    from . import campaign

    def log(s):
        print(s, file=sys.stderr, flush=True)

    if argv[0] == "part":
        part, path, deadline, dry = argv[1], argv[2], float(argv[3]), argv[4] == "1"
        c = campaign.Campaign(path, part, deadline, dry, log=log)
        try:
            cut = campaign.RUNNERS[part](c)
            c.entry["status"] = "cut by its time box" if cut else "done"
        except Exception as e:  # a part that breaks is reported; the runner goes on to the next
            import traceback

            c.entry["status"] = "error"
            c.entry["error"] = f"{type(e).__name__}: {e}"
            c.entry["traceback"] = traceback.format_exc()[-4000:]
        c.save()
        return 0
    index, count, path, deadline, dry = int(argv[1]), int(argv[2]), argv[3], float(argv[4]), argv[5] == "1"
    seen = 0  # the round-robin count runs on across the parts, so each worker gets a share of each
    for part in campaign.WARM_PARTS:
        c = campaign.Campaign(path, part, deadline, dry, log=log, warm=(index, count))
        c.warm_seen = seen
        try:
            campaign.RUNNERS[part](c)
        except Exception as e:
            print(json.dumps({"part": part, "case": "(part)", "status": "error", "error": f"{type(e).__name__}: {e}"}),
                  flush=True)
        seen = c.warm_seen
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
