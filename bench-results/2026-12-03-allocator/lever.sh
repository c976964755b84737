#!/usr/bin/env bash
# Allocator lever: glibc binary (0a2e2d1) vs jemalloc binary, alternating, both precisions.
cd /work/main
export LIBTORCH_USE_PYTORCH=1 PATH=$PWD/.venv/bin:$PATH
T=.bench-data/cache/wordpiece-16000-f00c4219dbc5/tokenizer.json
for b in old new; do for wl in finetune pretrain; do /tmp/$b-pretune bench $wl --tokenizer $T --warmup 1 --steps 1 --out /tmp/lever/run-$b >/dev/null 2>&1; done; done
for round in 1 2; do
for prec in fp32 bf16; do
for wl in finetune pretrain; do
for b in old new; do
  [ $round = 2 ] && b=$([ $b = old ] && echo new || echo old)
  out=$(/tmp/$b-pretune bench $wl --tokenizer $T --warmup 3 --steps 24 --precision $prec --out /tmp/lever/run-$b 2>/dev/null)
  echo "$out" > /tmp/lever/raw-$round-$prec-$wl-$b.json
  echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); t=d['timing']; print(json.dumps({'round':$round,'prec':'$prec','wl':'$wl','bin':'$b','rss':d['peak_rss_mb'],'med':t['s_per_step_median'],'min':t['s_per_step_min'],'tps':d['tokens_per_s'],'wait':t['data_wait_share']}))" | tee -a /tmp/lever/results.jsonl
done; done; done; done
