#!/usr/bin/env bash
# Runs the README's walkthrough of the Get Started guide (its code block, as written) against the running stack and
# checks what it printed: every answer a success, and the balance at the end 680 as the README says.
set -euo pipefail
cd "$(dirname "$0")/.."

out="$(.ci/readme-block.py section 'Walkthrough: the Get Started guide over REST' | bash -euo pipefail 2>&1)"
printf '%s\n' "$out"
python3 - "$out" <<'PY'
import json
import sys

answers = [json.loads(line) for line in sys.argv[1].splitlines() if line.startswith("{")]
assert len(answers) == 6, f"expected the walkthrough's 6 answers, got {len(answers)}"
failed = [a for a in answers if a.get("success") is not True]
assert not failed, f"answers that are not a success: {failed}"
last = answers[-1]
assert (last["balance"], last["reserved"], last["available"]) == (680, 0, 680), f"the final balance: {last}"
print("[ci] walkthrough: %d answers, final balance %d as the README says" % (len(answers), last["balance"]))
PY
