#!/usr/bin/env bash
# Mutation testing of one package, locally (not in CI): mutmut 3 mutates vlmaudit/PACKAGE/ and runs
# only the tests that cover it (tests/PACKAGE/ plus the extra files named below), in a scratch copy
# so the checkout stays clean and each package keeps its own mutmut cache.
#
#   scripts/mutation.sh calibrate              # mutate, test, print the summary line
#   scripts/mutation.sh calibrate results      # list the survivors of the last run
#   scripts/mutation.sh calibrate show NAME    # the diff of one mutant
#   MUTATION_DIR=DIR scripts/mutation.sh ...   # scratch copy under DIR (default: /tmp/vlmaudit-mutation)
#   MUTATION_CHILDREN=N ...                    # parallel mutants (default 1: runs under nice -n 19)
# Config: [tool.mutmut] in pyproject.toml; this script only swaps only_mutate and the test selection.
set -euo pipefail

pkg=${1:?usage: scripts/mutation.sh PACKAGE [run|results|show NAME]}
shift
action=${1:-run}
[ $# -gt 0 ] && shift
root=$(cd "$(dirname "$0")/.." && pwd)
work=${MUTATION_DIR:-/tmp/vlmaudit-mutation}/$pkg
[ -d "$root/vlmaudit/$pkg" ] || { echo "error: no package vlmaudit/$pkg" >&2; exit 2; }

# tests beyond tests/PACKAGE/ that exercise the package (kept short: every mutant runs the tests covering it)
case $pkg in
  # head: the end_to_end tests (train-head, distill, scan with a trained head) take minutes per mutant; the
  # unit tests of tests/head/ cover the same code (a mutant only an end_to_end test kills counts as survived)
  head) extra=(-m "not gpu and not real_weights and not end_to_end") ;;
  *) extra=() ;;  # e.g. rulebook) extra=(tests/report/test_coverage.py) ;; (slow: it scans)
esac
# tests that run `vlmaudit` in a child process or deliver Ctrl-C to the test process: children
# import mutmut's trampolined copy outside mutmut's control (a Ctrl-C test waited 300 s) and mutmut's
# runner handles SIGINT itself (a "DID NOT RAISE KeyboardInterrupt"); left out of every selection
# (their behaviour stays pinned in the normal suite)
children=(
  tests/report/test_completeness.py::test_ctrl_c_leaves_a_run_that_reports_incomplete
  tests/report/test_dashboard.py::test_dashboard_in_a_real_pseudo_terminal
  tests/scan/test_budgets.py::test_huge_pngs_are_decoded_under_a_memory_budget
  tests/scan/test_concurrent_writers.py::test_two_processes_scanning_the_same_shards_into_one_out
  tests/scan/test_crash_safety.py::test_sigkill_then_resume_equals_an_uninterrupted_run
  tests/scan/test_crash_safety.py::test_ctrl_c_exits_130_and_resumes
  tests/scan/test_crash_safety.py::test_pipe_command_dies_with_a_killed_scan
  tests/scan/test_crash_safety.py::test_a_pipe_command_gets_the_environment_a_shell_would
  tests/scan/test_crash_safety.py::test_ctrl_c_while_children_start_is_delivered_after_they_have
  tests/scan/test_crash_safety.py::test_ctrl_c_held_under_the_default_action_still_ends_the_process
  tests/scan/test_crash_safety.py::test_loader_workers_stop_on_ctrl_c_again
  tests/scan/test_crash_safety.py::test_decoding_workers_fork_with_ctrl_c_held
  tests/scan/test_machine_faults.py::test_loader_workers_die_with_a_killed_parent
  tests/scan/test_machine_faults.py::test_a_full_disk_is_one_line_and_nothing_marked_done
  tests/scan/test_parquet_shards.py::test_memory_stays_flat_however_large_the_row_group
)

if [ "$action" = run ]; then
  mkdir -p "$work"
  # tracked and untracked-but-not-ignored files; mutants/ and the mutmut cache survive between runs
  (cd "$root" && git ls-files -co --exclude-standard -z | tar --null -T - -cf -) | (cd "$work" && tar -xf -)
  selection=$(printf '"%s", ' "tests/$pkg" "${extra[@]}"; printf '"--deselect", "%s", ' "${children[@]}")
  python - "$work/pyproject.toml" "vlmaudit/$pkg/*" "[${selection%, }]" <<'PY'
import re, sys
path, only, selection = sys.argv[1:]
text = open(path).read()
text = re.sub(r'(?m)^only_mutate = .*$', f'only_mutate = ["{only}"]', text)
text = re.sub(r'(?m)^pytest_add_cli_args_test_selection = .*$', f'pytest_add_cli_args_test_selection = {selection}', text)
open(path, "w").write(text)
PY
fi
cd "$work"
if [ "$action" = run ] && [ -d mutants/vlmaudit ]; then
  # mutmut copies the unmutated modules once: drop copies that differ from the checkout so they are copied again
  (cd vlmaudit && find . -name '*.py') | while read -r f; do
    case $f in ./$pkg/*) continue ;; esac
    cmp -s "vlmaudit/$f" "mutants/vlmaudit/$f" || rm -f "mutants/vlmaudit/$f"
  done
fi
unset PYTHONPATH
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false OMP_NUM_THREADS=1
case $action in
  run) nice -n 19 mutmut run --max-children "${MUTATION_CHILDREN:-1}" "$@" ;;
  results) mutmut results "$@" ;;
  show) mutmut show "$@" ;;
  *) mutmut "$action" "$@" ;;
esac
