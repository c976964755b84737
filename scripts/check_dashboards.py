"""Validates Grafana dashboards offline against a live Prometheus (ENV.md §2):

1. structure: each dashboard loads through grafana-foundation-sdk's Grafana 11.6 models and
   re-encodes without dropping a key (the SDK silently drops unknown ones, so a typo shows);
2. layout: unique panel ids, x + w <= 24, no two panels overlap;
3. variables: every query variable (`label_values(SELECTOR, LABEL)`) has values, and at least
   as many as `--min-values NAME=N` asks (a 2-rank run among the scraped ones: `rank=2`);
4. data: every panel query, with Grafana's variables substituted ("All": `.*`), returns at
   least one series; panels whose description starts with "Optional:" (device memory on CUDA)
   may return none.

    .venv/bin/python scripts/check_dashboards.py http://127.0.0.1:9090 grafana/dashboards/*.json [--min-values rank=2]
Exit status 1 with one line per problem.
"""
import json
import re
import sys
import urllib.parse
import urllib.request

from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import Dashboard


def key_paths(x, p=""):
    out = set()
    if isinstance(x, dict):
        for k, v in x.items():
            out.add(f"{p}/{k}")
            out |= key_paths(v, f"{p}/{k}")
    elif isinstance(x, list):
        for v in x:
            out |= key_paths(v, f"{p}[]")
    return out


def query(prom, expr):
    url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    return body.get("status"), body.get("data", {}).get("result", [])


def label_values(prom, selector, label):
    """Grafana's `label_values(SELECTOR, LABEL)` through Prometheus' series API."""
    url = f"{prom}/api/v1/series?" + urllib.parse.urlencode({"match[]": selector})
    with urllib.request.urlopen(url, timeout=10) as r:
        series = json.load(r).get("data", [])
    return sorted({s[label] for s in series if label in s})


def main():
    args = sys.argv[1:]
    min_values = {}
    while "--min-values" in args:
        i = args.index("--min-values")
        name, n = args[i + 1].split("=")
        min_values[name] = int(n)
        del args[i:i + 2]
    prom, files = args[0], args[1:]
    problems, checked = [], 0
    for f in files:
        d = json.load(open(f))
        out = json.loads(JSONEncoder(sort_keys=True).encode(Dashboard.from_json(d)))
        dropped = sorted(key_paths(d) - key_paths(out))
        if dropped:
            problems.append(f"{f}: keys the Grafana 11.6 model does not know: {dropped}")
        for v in d.get("templating", {}).get("list", []):
            if v.get("type") != "query":
                continue
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"label_values\((.*),\s*(\w+)\)", q)
            if not m:
                problems.append(f"{f}: variable {v['name']}: not a label_values query: {q}")
                continue
            values = label_values(prom, m.group(1).replace("$run_id", ".*").replace("$rank", ".*"), m.group(2))
            if len(values) < max(1, min_values.get(v["name"], 1)):
                problems.append(f"{f}: variable {v['name']} has values {values}, want at least {max(1, min_values.get(v['name'], 1))}")
        panels = d.get("panels", [])
        ids = [p.get("id") for p in panels]
        if len(set(ids)) != len(ids) or None in ids:
            problems.append(f"{f}: panel ids must be unique and set: {ids}")
        cells = {}
        for p in panels:
            g = p["gridPos"]
            if g["x"] + g["w"] > 24:
                problems.append(f"{f}: panel {p.get('title')!r} is wider than the grid")
            for x in range(g["x"], g["x"] + g["w"]):
                for y in range(g["y"], g["y"] + g["h"]):
                    if (x, y) in cells:
                        problems.append(f"{f}: panels {cells[(x, y)]!r} and {p.get('title')!r} overlap")
                        break
                    cells[(x, y)] = p.get("title")
            optional = p.get("description", "").startswith("Optional:")
            for t in p.get("targets", []):
                expr = t["expr"].replace("$__rate_interval", "1m").replace("$__interval", "15s")
                expr = expr.replace("$run_id", ".*").replace("$rank", ".*")
                status, result = query(prom, expr)
                checked += 1
                if status != "success" or (not result and not optional):
                    problems.append(f"{f}: panel {p.get('title')!r}: `{expr}` returned {status} with {len(result)} series")
    for p in problems:
        print(p)
    print(f"{len(files)} dashboards, {checked} queries, {len(problems)} problems")
    sys.exit(1 if problems else 0)


if __name__ == "__main__":
    main()
