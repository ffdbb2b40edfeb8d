#!/usr/bin/env bash
# Makes the git repository examples/code-change.yaml works on (its `repo` input): a bare clone of
# a one-commit repository whose README.md is the example's patch context, under DIR. Prints the
# bare repository's path. Used by ops/ci-gate.sh and ops/studio-test.sh.
#
#   repo="$(bash ops/demo-repo.sh DIR)"
set -euo pipefail
dir="$1"
git init --quiet --initial-branch main "$dir/demo"
printf '# demo\n\nHello.\n' >"$dir/demo/README.md"
git -C "$dir/demo" add README.md
git -C "$dir/demo" -c user.name=runledger-ops -c user.email=ops@example.org commit --quiet -m initial
git clone --quiet --bare "$dir/demo" "$dir/demo.git"
echo "$dir/demo.git"
