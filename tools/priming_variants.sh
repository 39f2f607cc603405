#!/usr/bin/env bash
# The second paper's priming experiment: queue one DVC experiment per Countdown trace variant,
# then run them (each primes the raw model, then measures the primed policy on test).
#   bash tools/priming_variants.sh && dvc queue start && dvc exp show --only-changed
set -euo pipefail
for variant in all_strategies backtracking_only backtracking_verification negative_control empty_cot \
               incorrect_with_behaviours; do
  dvc exp run --queue --name "prime-${variant//_/-}" -S "prime.mix.countdown.variant=${variant}"
done
# what the reflect-retry dialogues add: the same priming without them
dvc exp run --queue --name prime-no-reflections -S prime.mix.countdown.reflection_fraction=0 \
  -S prime.mix.function_calling.reflection_fraction=0
