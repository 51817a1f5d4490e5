#!/usr/bin/env bash
# verify SRC OUT of two builds side by side, alternating, in three page-cache states (neither cached, the source
# cached, both cached); whole-process wall time and peak RSS from /usr/bin/time. Needs root (drop_caches).
#   scripts/ab_verify_page_cache.sh BEFORE_TREE AFTER_TREE SRC OUT [RUNS] [PYTHON]
# A tree is a folder holding a marlin_convert/ package (e.g. `git archive <rev> marlin_convert | tar -x -C DIR`).
set -euo pipefail
before=$(realpath "$1") after=$(realpath "$2") src=$(realpath "$3") out=$(realpath "$4") runs=${5:-3} py=${6:-python3}
run() {  # side tree state
  cd /tmp; sync; echo 3 > /proc/sys/vm/drop_caches
  case $3 in
    both) cat "$src"/*.safetensors "$out"/*.safetensors > /dev/null ;;
    src) cat "$src"/*.safetensors > /dev/null ;;
  esac
  /usr/bin/time -f "$3 $1 %e s %M KB" env PYTHONPATH="$2" "$py" -c \
    "import sys; sys.argv = ['marlin-convert'] + sys.argv[1:]; from marlin_convert.cli import entry; entry()" \
    verify "$src" "$out" > /dev/null 2> /tmp/ab_verify_page_cache.err || { cat /tmp/ab_verify_page_cache.err; exit 1; }
  tail -1 /tmp/ab_verify_page_cache.err
}
"$py" -c "import torch, numpy" && /usr/bin/time -f "interpreter with torch: %M KB" "$py" -c "import torch, numpy, marlin_convert.cli"
for state in none src both; do
  for _ in $(seq "$runs"); do run before "$before" $state; run after "$after" $state; done
done
