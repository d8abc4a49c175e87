#!/usr/bin/env bash
# Times the main job from nothing, as on a fresh clone: clone HEAD into a temp folder, then world regeneration plus
# the whole `dvc repro`, using this checkout's .venv. Prints JSON: total seconds and seconds per stage.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="$repo/.venv/bin/python"
[ -x "$python" ] || { echo "run \`make venv\` first" >&2; exit 2; }
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone --quiet "$repo" "$work/clone"
cd "$work/clone"
export PATH="$repo/.venv/bin:$PATH" PYTHONPATH="$work/clone:$work/clone/src" SHELL=/bin/bash \
       DVC_NO_ANALYTICS=1 DVC_SITE_CACHE_DIR="$work/dvc-site-cache"
exec "$python" - <<'PY'
"""Run the bootstrap, stamping each "Running stage" line: a stage lasts until the next one starts."""
import json, os, re, subprocess, sys, time

start = time.monotonic()
marks = []
process = subprocess.Popen([sys.executable, "-m", "botify_lab.pipeline.bootstrap", "repro"], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, errors="replace")
for line in process.stdout:
    match = re.match(r"Running stage '([^']+)'", line)
    if match:
        marks.append((match.group(1), time.monotonic() - start))
        print(f"[{marks[-1][1]:7.1f} s] {line.strip()}", file=sys.stderr, flush=True)
status = process.wait()
total = time.monotonic() - start
stages = {name: round((marks[i + 1][1] if i + 1 < len(marks) else total) - began, 1)
          for i, (name, began) in enumerate(marks)}
print(json.dumps({"benchmark": "repro_time", "exit_code": status, "cores": os.cpu_count(),
                  "seconds_total": round(total, 1), "seconds_before_first_stage": round(marks[0][1], 1) if marks else None,
                  "stages": stages, "target_seconds": 600}, indent=2))
sys.exit(status)
PY
