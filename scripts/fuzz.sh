#!/usr/bin/env bash
# Fuzzes every fuzz target of s3persist (go test -fuzz), one after another, and prints the
# executions of each. Exits non-zero if any target finds a failing input; go test writes
# that input to testdata/fuzz/<FuzzName>/ of its package, where it stays as a regression
# test that `go test` (and so CI) runs from then on.
#
#   bash scripts/fuzz.sh [-time 3m] [-parallel 2] [FuzzName ...]
#
# -time is the fuzzing time of each target (default 3m, or $S3PERSIST_FUZZ_TIME): any
# go test -fuzztime value, such as 30s or 100000x. -parallel is the number of fuzzing
# worker processes (default 2, or $S3PERSIST_FUZZ_PARALLEL). Names restrict the run to
# those targets. The seed corpora alone run with the ordinary tests, without this script.
#
# Written for bash 3.2 too (macOS).
set -euo pipefail

cd "$(dirname "$0")/.."

fuzztime="${S3PERSIST_FUZZ_TIME:-3m}"
parallel="${S3PERSIST_FUZZ_PARALLEL:-2}"
only=()
while (($#)); do
	case "$1" in
	-time | --time)
		fuzztime="${2:?-time needs a value}"
		shift 2
		;;
	-parallel | --parallel)
		parallel="${2:?-parallel needs a value}"
		shift 2
		;;
	-h | --help)
		sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'
		exit 0
		;;
	-*)
		printf 'fuzz.sh: unknown option %s (see -h)\n' "$1" >&2
		exit 2
		;;
	*)
		only+=("$1")
		shift
		;;
	esac
done

# Packages of the root module with fuzz targets, and their targets ("pkg target" lines).
targets=()
for pkg in $(go list ./...); do
	for t in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		if ((${#only[@]})); then
			keep=
			for o in "${only[@]}"; do [[ "$o" == "$t" ]] && keep=1; done
			[[ -n "$keep" ]] || continue
		fi
		targets+=("$pkg $t")
	done
done
((${#targets[@]})) || {
	printf 'fuzz.sh: no fuzz target matches %s\n' "${only[*]-}" >&2
	exit 2
}
printf 'fuzz.sh: %d targets, %s each, %s workers\n' "${#targets[@]}" "$fuzztime" "$parallel"

log="$(mktemp)"
trap 'rm -f "$log"' EXIT
summary=()
failed=()
total=0
for entry in "${targets[@]}"; do
	pkg="${entry% *}"
	t="${entry#* }"
	printf '\n==> %s (%s)\n' "$t" "$pkg"
	status=0
	go test -run '^$' -fuzz "^${t}\$" -fuzztime "$fuzztime" -parallel "$parallel" "$pkg" 2>&1 | tee "$log" || status=$?
	# go test prints "fuzz: elapsed: 3m0s, execs: 123456 (685/sec), new interesting: ..."
	# every few seconds; the last such line holds the total.
	execs="$(grep -o 'execs: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || true)"
	execs="${execs:-0}"
	total=$((total + execs))
	if ((status != 0)); then
		failed+=("$t")
		summary+=("$(printf '%-22s %12s execs  FAILED (%s)' "$t" "$execs" "$(grep -o 'testdata/fuzz/[^ ]*' "$log" | tail -n 1 || echo 'see output above')")")
	else
		summary+=("$(printf '%-22s %12s execs  ok' "$t" "$execs")")
	fi
done

printf '\n==> fuzz summary (%s each, -parallel %s)\n' "$fuzztime" "$parallel"
printf '%s\n' "${summary[@]}"
printf '%-22s %12s execs\n' total "$total"
if ((${#failed[@]})); then
	printf 'fuzz.sh: %d target(s) found a failing input: %s\n' "${#failed[@]}" "${failed[*]}" >&2
	printf 'fuzz.sh: the inputs are under testdata/fuzz/; run go test in the package to reproduce them.\n' >&2
	exit 1
fi
