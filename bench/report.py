#!/usr/bin/env python3
"""Parsing and reporting for bench/run (standard library only).

  report.py h2load FILE          -> JSON of one h2load run
  report.py wrk FILE             -> JSON of one wrk run (with --latency percentiles)
  report.py report RAW META OUT_JSON OUT_MD
                                 -> the result files; prints the ratios last

RAW holds one JSON object per line, written by bench/run: load runs
({"kind":"load", phase, scenario, target, round, rps, requests, ...}) and single
measurements ({"kind":"latency"|"rss"|"fill"|"relay", ...}; "relay" is the JSON line
tests/relay_soak.rs prints).

Every throughput ratio is the median of the per-round ratios: rounds are interleaved, so
each round's candidate and baseline ran back to back under the same conditions, and one
noisy round cannot flip the result.
"""

import json
import re
import statistics
import sys


def parse_h2load(text):
    out = {"tool": "h2load"}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", text)
    if not m:
        raise SystemExit("h2load output without a 'finished in' line:\n" + text[-2000:])
    out["secs"], out["rps"] = float(m.group(1)), float(m.group(2))
    m = re.search(
        r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
        r"(\d+) failed, (\d+) errored, (\d+) timeout",
        text,
    )
    if m:
        total, _, done, ok, failed, errored, timeout = map(int, m.groups())
        out.update(requests=ok, done=done, errors=failed + errored + timeout)
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", text)
    if m:
        out["non2xx"] = sum(map(int, m.groups()[1:]))
    return out


UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6}


def parse_wrk(text):
    out = {"tool": "wrk"}
    m = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m),", text)
    if not m:
        raise SystemExit("wrk output without a request count:\n" + text[-2000:])
    out["requests"] = int(m.group(1))
    secs = float(m.group(2)) * {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[m.group(3)]
    out["secs"] = secs
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    out["rps"] = float(m.group(1)) if m else out["requests"] / secs
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["errors"] = sum(map(int, m.groups())) if m else 0
    for pct, value, unit in re.findall(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", text, re.M):
        out[f"p{pct}_us"] = float(value) * UNITS[unit]
    return out


# ------------------------------------------------------------------------------------------
# The report
# ------------------------------------------------------------------------------------------

# (label, scenario, candidate, baseline, SPEC minimum ratio or None when informative only).
# Targets are SPEC section 4's. "-uds" targets reach the decider over Unix sockets (the
# shipped envoy/envoy-grpc-uds.yaml and nginx/nginx-uds.conf), the others over loopback TCP.
# "noop-identity" is the do-nothing server answering with what authgate's allow carries:
# SPEC 4's nginx baseline ("returns the same identity headers"); for Envoy, whose SPEC baseline
# is the plain do-nothing server, it shows what forwarding an identity costs Envoy itself.
PAIRS = [
    ("gRPC Check, direct (h2load)", "grpc", "authgate", "noop", 1.0),
    ("HTTP /authz, direct (wrk)", "http", "authgate", "noop", None),
    ("Envoy + authgate vs Envoy + noop ext_authz (TCP)", "envoy", "authgate", "noop", 1.0),
    ("Envoy + authgate vs Envoy + noop ext_authz (both Unix sockets)",
     "envoy", "authgate-uds", "noop-uds", 1.0),
    ("Envoy + authgate over Unix sockets vs Envoy + noop over TCP",
     "envoy", "authgate-uds", "noop", 1.0),
    ("Envoy + authgate (TCP) vs Envoy jwt_authn", "envoy", "authgate", "jwt", 1.0),
    ("Envoy + authgate (Unix sockets) vs Envoy jwt_authn", "envoy", "authgate-uds", "jwt", 1.0),
    ("Envoy + authgate: Unix sockets vs TCP", "envoy", "authgate-uds", "authgate", None),
    ("Envoy: noop with identity vs noop (what forwarding an identity costs Envoy)",
     "envoy", "noop-identity", "noop", None),
    ("Envoy + authgate vs Envoy + noop with identity (TCP)",
     "envoy", "authgate", "noop-identity", None),
    ("nginx auth_request: authgate vs noop with identity headers (TCP)",
     "nginx", "authgate", "noop-identity", 0.97),
    ("nginx auth_request: authgate vs noop with identity headers (both Unix sockets)",
     "nginx", "authgate-uds", "noop-identity-uds", 0.97),
    ("nginx auth_request: authgate over a Unix socket vs noop with identity headers over TCP",
     "nginx", "authgate-uds", "noop-identity", 0.97),
    ("nginx + authgate: Unix socket vs TCP", "nginx", "authgate-uds", "authgate", None),
    ("nginx: noop with identity headers vs noop (what forwarding an identity costs nginx)",
     "nginx", "noop-identity", "noop", None),
    ("nginx auth_request: authgate vs noop without identity headers (TCP)",
     "nginx", "authgate", "noop", None),
]

# SPEC 4: "no more CPU per Check" than the do-nothing server (a ratio), the memory bounds.
TARGETS = {"cpu_ratio": 1.0, "idle_mib": 20.0, "filled_mib": 64.0, "relay_socket_kib": 16.0}


def load(raw_path):
    with open(raw_path) as f:
        return [json.loads(line) for line in f if line.strip()]


def runs(records, phase, scenario, target):
    return sorted(
        (r for r in records
         if r.get("kind") == "load" and r["phase"] == phase
         and r["scenario"] == scenario and r["target"] == target),
        key=lambda r: r["round"],
    )


def fmt(x, digits=0):
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"


def fmt_ratio(x, digits):
    return "n/a" if x is None else f"{x:.{digits}f}"


def verdict(ok):
    return "n/a" if ok is None else ("pass" if ok else "FAIL")


def round_ratios(a, b, value):
    """value(candidate) / value(baseline) for each round both ran (pairs ran back to back);
    a round is left out when the baseline's value is missing or zero, or the candidate's
    missing (a candidate at zero counts: a ratio of 0)."""
    b_by_round = {r["round"]: value(r) for r in b}
    return [value(x) / b_by_round[x["round"]] for x in a
            if b_by_round.get(x["round"]) and value(x) is not None]


def cpu_per_request_us(r, name):
    """CPU seconds of process `name` during the run, per request served, in microseconds."""
    cpu = r.get("cpu", {}).get(name)
    served = r.get("allow_delta") if name == "authz" and r.get("allow_delta") else r["requests"]
    if cpu is None or not served:
        return None
    return cpu / served * 1e6


def report(raw_path, meta_path, out_json, out_md):
    records = load(raw_path)
    with open(meta_path) as f:
        meta = json.load(f)
    phases = [p for p in meta["phases"]]
    result = {"meta": meta, "throughput": [], "metrics": [], "records": records}
    problems = []

    for phase in phases:
        for label, scen, cand, base, target in PAIRS:
            a, b = runs(records, phase, scen, cand), runs(records, phase, scen, base)
            if not a or not b:
                continue
            a_rps = statistics.mean(r["rps"] for r in a)
            b_rps = statistics.mean(r["rps"] for r in b)
            per_round = round_ratios(a, b, lambda r: r["rps"])
            ratio = statistics.median(per_round) if per_round else None
            ok = None if target is None or ratio is None else ratio >= target
            busy = {
                t: statistics.mean(r["busy"] for r in rs)
                for t, rs in ((cand, a), (base, b))
                if all("busy" in r for r in rs)
            }
            bad = sum(r.get("non2xx", 0) + r.get("errors", 0) for r in a + b)
            if bad:
                problems.append(f"{phase} {label}: {bad} failed or non-2xx responses")
            for r in a:
                if "allow_delta" in r and r["allow_delta"] < 0.99 * r["requests"]:
                    problems.append(
                        f"{phase} {label} round {r['round']}: authgate counted "
                        f"{r['allow_delta']} allows for {r['requests']} requests"
                    )
            result["throughput"].append({
                "phase": phase, "label": label, "scenario": scen,
                "candidate": cand, "baseline": base,
                "candidate_rps": a_rps, "baseline_rps": b_rps, "ratio": ratio,
                "round_ratios": per_round, "target": target, "pass": ok,
                "server_busy": busy, "failed_responses": bad,
            })

        # CPU per check from the direct gRPC runs (server saturated); judged, like the
        # throughput, on the median of the per-round ratios.
        a, b = runs(records, phase, "grpc", "authgate"), runs(records, phase, "grpc", "noop")
        if a and b:
            ca = statistics.mean(filter(None, (cpu_per_request_us(r, "authz") for r in a)))
            cb = statistics.mean(filter(None, (cpu_per_request_us(r, "authz") for r in b)))
            per_round = round_ratios(a, b, lambda r: cpu_per_request_us(r, "authz"))
            ratio = statistics.median(per_round) if per_round else ca / cb
            result["metrics"].append({
                "phase": phase, "label": "CPU per gRPC Check (us)", "candidate": ca,
                "baseline": cb, "ratio": ratio,
                "target": f"ratio <= {TARGETS['cpu_ratio']:g} (no more than noop)",
                "pass": ratio <= TARGETS["cpu_ratio"], "unit": "us",
            })
        a, b = runs(records, phase, "http", "authgate"), runs(records, phase, "http", "noop")
        if a and b:
            ca = statistics.mean(filter(None, (cpu_per_request_us(r, "authz") for r in a)))
            cb = statistics.mean(filter(None, (cpu_per_request_us(r, "authz") for r in b)))
            result["metrics"].append({
                "phase": phase, "label": "CPU per HTTP /authz (us)", "candidate": ca,
                "baseline": cb, "ratio": ca / cb, "target": None, "pass": None, "unit": "us",
            })

        lat = {(r["transport"], r["target"]): r for r in records
               if r.get("kind") == "latency" and r["phase"] == phase}
        for transport, label in (("grpc", "gRPC Check"), ("http", "HTTP /authz")):
            a, b = lat.get((transport, "authgate")), lat.get((transport, "noop"))
            if not a or not b:
                continue
            for pct in ("p50_us", "p99_us"):
                if pct not in a or pct not in b:
                    continue
                result["metrics"].append({
                    "phase": phase,
                    "label": f"unloaded {pct[:3]} of {label} (us)",
                    "candidate": a[pct], "baseline": b[pct], "ratio": a[pct] / b[pct],
                    "target": None, "pass": None, "unit": "us",
                })

    rss = {(r["what"], r["target"]): r for r in records if r.get("kind") == "rss"}
    noop_idle = rss.get(("idle", "noop"))
    for what, label in (("idle", "idle RSS at start (MiB)"),
                        ("after-login", "idle RSS after one login (MiB)"),
                        ("after-5-logins", "idle RSS after 1 + 4 concurrent logins (MiB)")):
        a = rss.get((what, "authgate"))
        if not a or not noop_idle:
            continue
        a_mib, b_mib = a["kib"] / 1024, noop_idle["kib"] / 1024
        result["metrics"].append({
            "phase": a.get("phase", "EdDSA"), "label": label, "candidate": a_mib,
            "baseline": b_mib, "ratio": a_mib / b_mib,
            "target": f"<= {TARGETS['idle_mib']:g} MiB",
            "pass": a_mib <= TARGETS["idle_mib"], "unit": "MiB",
        })
    for f in (r for r in records if r.get("kind") == "fill"):
        before_kib = f.get("before_fill_kib", f["login_kib"])
        mib, before = f["rss_kib"] / 1024, before_kib / 1024
        all_cached = f["cached"] >= f["tokens"]
        per_entry = (f["rss_kib"] - before_kib) * 1024 / max(f["cached"], 1)
        f["bytes_per_cached_token"] = per_entry
        result["metrics"].append({
            "phase": f["phase"],
            "label": f"RSS after {f['tokens'] // 1000}k distinct tokens, cache_bytes "
                     f"{f['cache_bytes']}: {f['cached']} cached, {per_entry:.0f} B each (MiB)",
            "candidate": mib, "baseline": before, "ratio": mib / before,
            "target": f"<= {TARGETS['filled_mib']:g} MiB, all cached",
            "pass": mib <= TARGETS["filled_mib"] and all_cached, "unit": "MiB",
        })
        if f["allowed"] != f["tokens"]:
            problems.append(f"cache fill: {f['allowed']} of {f['tokens']} tokens allowed")

    # The socket.io relay (tests/relay_soak.rs, run by bench/run): authgate as its own
    # process, N idle relayed sockets, then frames through the relay and straight to the
    # backend (the same test client: the baseline of the frame rates).
    for r in (r for r in records if r.get("kind") == "relay"):
        kib = r["bytes_per_idle_socket"] / 1024
        result["metrics"].append({
            "phase": "relay",
            "label": f"memory per idle relayed socket, {r['sockets']} sockets (KiB)",
            "candidate": kib, "baseline": None, "ratio": None,
            "target": f"<= {TARGETS['relay_socket_kib']:g} KiB",
            "pass": kib <= TARGETS["relay_socket_kib"], "unit": "KiB",
        })
        result["metrics"].append({
            "phase": "relay", "label": "authgate CPU per relayed frame (us)",
            "candidate": r["authgate_cpu_us_per_frame"], "baseline": None, "ratio": None,
            "target": None, "pass": None, "unit": "us",
        })
        for way, label in (("to_client", "backend -> client"), ("to_backend", "client -> backend")):
            a, b = r["relay_frames_per_s"][way], r["direct_frames_per_s"][way]
            result["metrics"].append({
                "phase": "relay",
                "label": f"frames/s {label}: through the relay vs straight to the backend",
                "candidate": a, "baseline": b, "ratio": a / b if b else None,
                "target": None, "pass": None, "unit": "/s",
            })

    result["problems"] = problems
    with open(out_json, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")

    md = []
    md.append(f"# authgate end-to-end benchmark, {meta['date']}")
    md.append("")
    md.append(
        f"commit `{meta['commit']}`"
        f"{' plus uncommitted changes to ' + meta['dirty'] if meta.get('dirty') else ''}; "
        f"{meta['mode']} run: {meta['rounds']} interleaved round(s) of {meta['duration']} s per "
        f"target; servers pinned to CPU {meta['server_cpu']}, load generator to CPU "
        f"{meta['load_cpu']} ({meta['nproc']} CPUs, {meta['cpu_model']}). Baselines: "
        f"`noop_authz` (same tonic/axum stack, answers OK to everything; \"noop-identity\": the "
        f"same, answering with what authgate's allow carries), Envoy `jwt_authn`."
    )
    md.append("")
    md.append("| scenario | algorithm | authgate | baseline | ratio | SPEC target | result |")
    md.append("|---|---|---:|---:|---:|---|---|")
    for t in result["throughput"]:
        md.append(
            f"| {t['label']} | {t['phase']} | {fmt(t['candidate_rps'])} rps | "
            f"{fmt(t['baseline_rps'])} rps ({t['baseline']}) | {fmt_ratio(t['ratio'], 3)} | "
            f"{'>= ' + format(t['target'], 'g') if t['target'] else 'none (informative)'} | "
            f"{verdict(t['pass'])} |"
        )
    for m in result["metrics"]:
        d = 1 if m["unit"] != "us" or m["candidate"] < 100 else 0
        md.append(
            f"| {m['label']} | {m['phase']} | {fmt(m['candidate'], d)} | "
            f"{fmt(m['baseline'], d)} | {fmt_ratio(m['ratio'], 2)} | "
            f"{m['target'] or 'none (informative)'} | "
            f"{verdict(m['pass'])} |"
        )
    md.append("")
    md.append("A throughput ratio is the median over the rounds of that round's candidate rps / "
              "baseline rps (rounds interleave the targets, so each pair ran back to back); the "
              "rps columns are means over the rounds. For the other rows the baseline is "
              "`noop_authz` (latency, CPU, idle RSS), the "
              "same authgate just before the fill (RSS with tokens; bytes per token = RSS growth "
              "over tokens cached), or the same frames sent straight to the backend (relay). "
              "CPU per check is process CPU "
              "time (utime+stime) over requests served while the server core was saturated. "
              "Relay rows come from `tests/relay_soak.rs` (release authgate, debug test client: "
              "the frame rates are the client's pace, the ratio and authgate's CPU per frame "
              "are what counts).")
    md.append("")
    md.append("## Run details")
    md.append("")
    md.append("| scenario | algorithm | per-round ratios | server processes' CPU | "
              "server core busy | load core busy |")
    md.append("|---|---|---|---|---|---|")
    for t in result["throughput"]:
        def pct(key, field):
            rs = runs(records, t["phase"], t["scenario"], key)
            vals = [r[field] for r in rs if field in r]
            return f"{statistics.mean(vals) * 100:.0f}%" if vals else "n/a"
        cols = [" / ".join(pct(k, f) for k in (t["candidate"], t["baseline"]))
                for f in ("busy", "server_core_busy", "load_core_busy")]
        md.append(
            f"| {t['label']} | {t['phase']} | "
            f"{', '.join(f'{x:.3f}' for x in t['round_ratios'])} | {' | '.join(cols)} |"
        )
    md.append("")
    md.append("CPU columns are candidate / baseline, as a share of one core over the run: the "
              "server-side processes' own CPU time (the decider; plus Envoy or the nginx worker "
              "and the upstream nginx worker in proxy rows), then the whole server and load "
              "cores from /proc/stat (other programs running there show up as the difference). "
              "A load core near 100% means the load generator, not the server, set the pace.")
    md.append("")
    md.append(f"Load: {meta['load']}.")
    if problems:
        md.append("")
        md.append("**Problems:** " + "; ".join(problems))
    with open(out_md, "w") as f:
        f.write("\n".join(md) + "\n")

    print()
    print(f"results: {out_json}")
    print(f"         {out_md}")
    for p in problems:
        print(f"PROBLEM: {p}")
    print()
    for m in result["metrics"]:
        print(f"{m['phase']:6} {m['label']:<60} authgate {fmt(m['candidate'], 1):>9}  "
              f"baseline {fmt(m['baseline'], 1):>9}  ratio {fmt_ratio(m['ratio'], 2)}  "
              f"{verdict(m['pass'])}")
    for t in result["throughput"]:
        print(f"{t['phase']:6} {t['label']:<66} {fmt(t['candidate_rps']):>8} / "
              f"{fmt(t['baseline_rps']):>8} rps  median ratio {fmt_ratio(t['ratio'], 3)}  "
              f"{'(>= ' + format(t['target'], 'g') + ') ' if t['target'] else ''}{verdict(t['pass'])}")


def main(argv):
    if len(argv) >= 3 and argv[1] == "h2load":
        print(json.dumps(parse_h2load(open(argv[2]).read())))
    elif len(argv) >= 3 and argv[1] == "wrk":
        print(json.dumps(parse_wrk(open(argv[2]).read())))
    elif len(argv) == 6 and argv[1] == "report":
        report(*argv[2:])
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
