#!/usr/bin/env bash
# Times the main job from nothing, as on a fresh clone: clone HEAD into a temp folder, then `make repro`'s bootstrap
# (the world regenerated, then every stage, several at a time), using this checkout's .venv (its install time
# excluded). Prints JSON: total seconds, the world's, each stage's (from its start to its end, while another stage may
# share the cores), the longest chain of stages that read each other, at those seconds (however they were scheduled,
# the stages as they ran could not have ended sooner: the world plus that chain is the run's floor at that speed), the
# stages at a time (`jobs`) and the machine's load average before and after, since a timing taken on a busy machine
# misleads, and a reference timing before and after (a fixed pure-Python loop), since this virtual machine's speed drifts by a fifth
# from day to day: compare two runs' `seconds_total_in_references`, not their seconds, on the same processor only
# (`processor`, also printed: the loop and the pipeline speed up by different factors across processors).
# `bench/repro_time.sh DIR` keeps the clone (its outputs, dvc.lock) in DIR instead of a temp folder it removes.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="$repo/.venv/bin/python"
[ -x "$python" ] || { echo "run \`make venv\` first" >&2; exit 2; }
if [ $# -ge 1 ]; then
  work="$(mkdir -p "$1" && cd "$1" && pwd)"
  [ ! -e "$work/clone" ] || { echo "$work/clone exists already" >&2; exit 2; }
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
git clone --quiet "$repo" "$work/clone"
cd "$work/clone"
export PATH="$repo/.venv/bin:$PATH" PYTHONPATH="$work/clone:$work/clone/src" SHELL=/bin/bash \
       DVC_NO_ANALYTICS=1 DVC_SITE_CACHE_DIR="$work/dvc-site-cache"
exec "$python" - <<'PY'
"""Run the bootstrap, stamping each stage's start and end; the bootstrap times each stage (stages run at once)."""
import json, os, re, subprocess, sys, time



def reference_seconds() -> float:
    """Best of five timings of a fixed pure-Python loop: this machine's single-core speed at the time of the run. A
    virtual machine's speed drifts from day to day (the same world stage took 108 s one day and 136 s another), so
    divide the totals of two runs by their reference before comparing code."""
    timings = []
    for _ in range(5):
        started = time.perf_counter()
        sum(i * i % 7 for i in range(2_000_000))
        timings.append(time.perf_counter() - started)
    return min(timings)


def processor() -> dict:
    """The processor's name and whether it has AVX-512: the reference loop compares runs on one processor only (a
    processor 1.7 times as fast on it ran the pipeline 1.2 times as fast), so a run says which one it ran on."""
    from botify_lab.kernels import processor_info

    info = processor_info()
    return {"model": info.get("model name"), "avx512": "avx512f" in info.get("flags", "").split()}


load_before = os.getloadavg()
reference_before = reference_seconds()
if load_before[0] > 0.5:
    print(f"warning: load average {load_before[0]:.2f} before the run: other work shares the "
          f"{os.cpu_count()} cores, so these times are not an idle machine's", file=sys.stderr, flush=True)
start = time.monotonic()
timings_file = os.path.join(os.path.dirname(os.getcwd()), "timings.json")  # beside the clone
tail = []  # the run's last lines, shown when it fails
process = subprocess.Popen([sys.executable, "-m", "botify_lab.pipeline.bootstrap", "repro", "--timings", timings_file],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace")
for line in process.stdout:
    tail = [*tail[-39:], line]
    if re.search(r"Running stage '|\| done in |\| failed |world regenerated", line):
        print(f"[{time.monotonic() - start:7.1f} s] {line.strip()}", file=sys.stderr, flush=True)
status = process.wait()
if status != 0:
    print(f"the run failed (exit {status}); its last lines:", "".join(tail), sep="\n", file=sys.stderr, flush=True)
total = time.monotonic() - start
timings = {}
if os.path.exists(timings_file):
    with open(timings_file, encoding="utf-8") as handle:
        timings = json.load(handle)
    os.remove(timings_file)
print(json.dumps({"benchmark": "repro_time", "exit_code": status, "cores": os.cpu_count(), "processor": processor(),
                  "seconds_total": round(total, 1), "seconds_world": timings.get("world_seconds"),
                  "seconds_stages": timings.get("seconds"), "jobs": timings.get("jobs"),
                  "stages": timings.get("stage_seconds", {}),
                  "seconds_longest_chain": timings.get("longest_chain_seconds"),
                  "longest_chain": timings.get("longest_chain", []), "target_seconds": 600,
                  "reference_seconds": [round(reference_before, 3), round(reference_seconds(), 3)],
                  "seconds_total_in_references": round(total / reference_before),
                  "load_average_before": [round(value, 2) for value in load_before],
                  "load_average_after": [round(value, 2) for value in os.getloadavg()]}, indent=2))
sys.exit(status)
PY
