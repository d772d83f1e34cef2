#!/usr/bin/env bash
# Runs test tiers one after another and ends with where the time went: each tier's time and result.
# Usage: tests/tiers.sh NAME 'COMMAND' [NAME 'COMMAND' ...]   (the Makefile's test and check targets use it)
# The first tier that fails stops the run; the summary still prints, and the exit status is that tier's.
set -uo pipefail

names=() seconds=() results=()
status=0
while [ $# -ge 2 ] && [ "$status" = 0 ]; do
    name=$1 command=$2
    shift 2
    echo "=== tier '$name': $command"
    started=$SECONDS
    bash -c "$command"
    status=$?
    names+=("$name") seconds+=($((SECONDS - started))) results+=("$([ "$status" = 0 ] && echo passed || echo "FAILED ($status)")")
done

echo "=== where the time went"
total=0
for i in "${!names[@]}"; do
    printf '  %-16s %4dm %02ds  %s\n' "${names[$i]}" $((seconds[i] / 60)) $((seconds[i] % 60)) "${results[$i]}"
    total=$((total + seconds[i]))
done
[ $# -eq 0 ] || echo "  (not run: the tiers after the failed one)"
printf '  %-16s %4dm %02ds\n' total $((total / 60)) $((total % 60))
exit "$status"
