#!/usr/bin/env bash
# Alternating rounds: allocator x workload; one JSON line per run into /tmp/alloc/results.jsonl
cd /work/main
export LIBTORCH_USE_PYTORCH=1 PATH=$PWD/.venv/bin:$PATH
T=.bench-data/cache/wordpiece-16000-f00c4219dbc5/tokenizer.json
L=/usr/lib/x86_64-linux-gnu
for round in 1 2; do
for wl in finetune pretrain; do
for alloc in glibc jemalloc_nodecay tcmalloc jemalloc_default; do
  case $alloc in
    glibc) pre=""; conf="";;
    jemalloc_nodecay) pre=$L/libjemalloc.so.2; conf="dirty_decay_ms:-1,muzzy_decay_ms:-1";;
    jemalloc_default) pre=$L/libjemalloc.so.2; conf="";;
    tcmalloc) pre=$L/libtcmalloc_minimal.so.4; conf="";;
  esac
  out=$(MALLOC_CONF=$conf LD_PRELOAD=$pre target/release/pretune bench $wl --tokenizer $T --warmup 3 --steps ${STEPS:-24} --out /tmp/alloc/run 2>/dev/null)
  echo "$out" | python3 -c "import json,sys; d=json.load(sys.stdin); t=d['timing']; print(json.dumps({'round':$round,'wl':'$wl','alloc':'$alloc','rss':d['peak_rss_mb'],'med':t['s_per_step_median'],'min':t['s_per_step_min'],'tps':d['tokens_per_s']}))" | tee -a /tmp/alloc/results.jsonl
done; done; done
