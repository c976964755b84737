#!/usr/bin/env bash
# Data-parallel training over a slow network (BENCHMARKS.md, "Data-parallel over a slow
# network"): two "machines" made of network namespaces joined by a veth pair capped by
# `tc tbf` at each RATE, one `pretune launch` per namespace (2 nodes × 1 rank, the master on
# the first namespace's address), BERT-mini MLM+NSP on the baseline's corpus (as
# scripts/bench-ddp.sh: global batch 32 × 128, fp32, 1 thread per rank), with the reducer's
# overlap (dist.overlap = true, DDP's 25 MiB buckets) and without it (one bucket reduced after
# the backward), alternating, ROUNDS rounds. VARIANTS="label=overlap:bucket_mb ..." picks
# others (default "overlap-25=true:25 after-backward=false:25"). Prints one JSON line per run: tokens/s, each
# rank's waited communication per update, and the reducer's exposed time (rank 0, steps > 1).
# Needs root (namespaces) and a release build.
#   scripts/bench-ddp-network.sh [STEPS] [ROUNDS] [RATES...]   (RATES default: none 10gbit 1gbit 100mbit)
set -euo pipefail
cd "$(dirname "$0")/.."
export LIBTORCH_USE_PYTORCH=1
STEPS=${1:-30}
ROUNDS=${2:-2}
shift 2 || true
RATES=${*:-none 10gbit 1gbit 100mbit}
WORK=${WORK:-$PWD/runs/bench-ddp-network}
P=$(realpath "${PRETUNE:-target/release/pretune}")
[ "$(id -u)" = 0 ] || { echo "bench-ddp-network: needs root for network namespaces" >&2; exit 1; }
mkdir -p "$WORK"
. scripts/bench-mini-config.sh
mini_config "$WORK/config.toml" bench-ddp-network "$STEPS" "[dist]" "timeout_s = 600"
A=ptbench-a B=ptbench-b
cleanup() { ip netns del "$A" 2>/dev/null || true; ip netns del "$B" 2>/dev/null || true; }
trap cleanup EXIT
cleanup
ip netns add "$A"; ip netns add "$B"
ip link add ptb-a type veth peer name ptb-b
ip link set ptb-a netns "$A"; ip link set ptb-b netns "$B"
ip -n "$A" addr add 10.99.0.1/24 dev ptb-a; ip -n "$B" addr add 10.99.0.2/24 dev ptb-b
for ns in "$A" "$B"; do ip -n "$ns" link set lo up; done
ip -n "$A" link set ptb-a up; ip -n "$B" link set ptb-b up
shape() { # RATE: tbf on both ends (burst: at least one timer tick's worth at the rate)
  for pair in "$A:ptb-a" "$B:ptb-b"; do
    ns=${pair%%:*}; dev=${pair##*:}
    tc -n "$ns" qdisc del dev "$dev" root 2>/dev/null || true
    case "$1" in
      none) ;;
      10gbit) tc -n "$ns" qdisc add dev "$dev" root tbf rate 10gbit burst 8mb latency 50ms ;;
      1gbit) tc -n "$ns" qdisc add dev "$dev" root tbf rate 1gbit burst 1mb latency 50ms ;;
      *) tc -n "$ns" qdisc add dev "$dev" root tbf rate "$1" burst 256kb latency 200ms ;;
    esac
  done
}
exposed() {
  .venv/bin/python - "$1/events.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if '"buckets"' in l]
rows = [r["buckets"] for r in rows if r.get("step", 0) > 1]
if rows:
    print(f'"exposed_ms": {sum(r["exposed_ms"] for r in rows) / len(rows):.1f}, "buckets": {sum(len(r["launched_ms"]) for r in rows) / len(rows):.1f}')
else:
    print('"exposed_ms": null')
PY
}
for round in $(seq 1 "$ROUNDS"); do
  for rate in $RATES; do
    shape "$rate"
    for v in ${VARIANTS:-overlap-25=true:25 after-backward=false:25}; do
      label=${v%%=*}; rest=${v#*=}; overlap=${rest%%:*}; mb=${rest##*:}
      port=$((29600 + RANDOM % 1000))
      rm -rf "$WORK/node0" "$WORK/node1"
      for node in 1 0; do
        ns=$([ $node = 0 ] && echo "$A" || echo "$B")
        ip netns exec "$ns" "$P" launch --nnodes 2 --node-rank $node --nproc 1 --master-addr 10.99.0.1 --master-port $port \
          "$WORK/config.toml" --set run.out_dir="\"$WORK/node$node\"" --set dist.overlap=$overlap --set dist.bucket_mb=$mb \
          --set run.threads=1 --set train.batch_size=16 --set train.log_every=5 --set objective.sentence_pair='"nsp"' >"$WORK/node$node.out" 2>"$WORK/node$node.err" &
      done
      wait
      tps=$(awk '/throughput/ {print $2; exit}' "$WORK/node0.out")
      waited=$(cat "$WORK/node0.err" "$WORK/node1.err" | grep -o 'allreduce_ms_per_step=[0-9.]*' | cut -d= -f2 | xargs printf '%.0f ' | xargs)
      echo "{\"round\": $round, \"rate\": \"$rate\", \"variant\": \"$label\", \"overlap\": $overlap, \"bucket_mb\": $mb, \"steps\": $STEPS, \"tokens_per_s\": ${tps:-null}, \"waited_ms_per_step_by_rank\": \"$waited\", $(exposed "$WORK/node0"), \"cpu\": \"$cpu\"}"
    done
  done
done
