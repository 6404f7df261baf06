"""Turns the JSON lines of tests/bench/peers.sh into Markdown tables (stdout) and two plots.

Usage: report.py RESULTS.jsonl IMAGE_DIR [--no-plots]

Plots: relay p99 latency against offered rate, and server RSS against idle connections, one
line per system. Tables: absolute figures per system and Switchboard's ratio to each peer.
"""

import json
import sys

SYSTEMS = ["switchboard", "socketio", "centrifugo", "centrifugo-same-work"]
LABEL = {"switchboard": "Switchboard", "socketio": "socket.io + redis-adapter", "centrifugo": "Centrifugo (Redis engine)",
         "centrifugo-same-work": "Centrifugo, same work (history, presence, join/leave)"}
# For plot ticks.
SHORT = {"switchboard": "Switchboard", "socketio": "socket.io", "centrifugo": "Centrifugo",
         "centrifugo-same-work": "Centrifugo\nsame work"}


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    machine = next((r for r in rows if r["scenario"] == "machine"), None)
    return machine, [r for r in rows if r["scenario"] != "machine"]


def by(rows, scenario, **match):
    return [r for r in rows if r["scenario"] == scenario and all(r.get(k) == v for k, v in match.items())]


def idle_points(rows, system):
    pts = [r for r in by(rows, "idle", system=system) if "skipped" not in r]
    return sorted(pts, key=lambda r: r["connections"])


def rate_points(rows, system):
    pts = by(rows, "relay", system=system, mode="rate")
    return sorted(pts, key=lambda r: r["offered_per_second"])


def fmt_ms(x):
    return f"{x:.2f}" if x < 100 else f"{x:,.0f}"


def tables(machine, rows):
    out = []
    if machine:
        out.append(
            f"Machine: {machine['cpus']} × {machine['model']}, {machine['mem_gib']:.0f} GiB; "
            f"1-min load {machine['loadavg_1m_at_start']:.2f} at start; nofile {machine['nofile']}; "
            f"{machine['versions']}."
        )
        out.append("")
    # Idle density.
    sizes = sorted({r["connections"] for r in by(rows, "idle")})
    # The same-work Centrifugo differs in its channels only, so peers.sh runs no idle for it.
    idle_systems = [s for s in SYSTEMS if by(rows, "idle", system=s)]
    out.append("Idle density: server RSS growth per connected and joined idle connection (KiB), "
               "and the server's whole RSS (MiB), one process with Redis.")
    out.append("")
    out.append("| Connections | " + " | ".join(LABEL[s] for s in idle_systems) + " |")
    out.append("| --- | " + " | ".join("---" for _ in idle_systems) + " |")
    for n in sizes:
        cells = []
        for s in idle_systems:
            r = next(iter(by(rows, "idle", system=s, connections=n)), None)
            if r is None:
                cells.append("—")
            elif "skipped" in r:
                cells.append("not run (descriptor limit)")
            else:
                cells.append(f"{r['kib_per_connection']:.1f} KiB ({r['rss_after_bytes'] / 1048576:.0f} MiB)")
        out.append(f"| {n:,} | " + " | ".join(cells) + " |")
    out.append("")
    # Joins.
    out.append("| Joins, 5,000 connections, 256 in flight, Redis | " + " | ".join(LABEL[s] for s in SYSTEMS) + " |")
    out.append("| --- | " + " | ".join("---" for _ in SYSTEMS) + " |")
    j = {s: next(iter(by(rows, "joins", system=s)), None) for s in SYSTEMS}
    out.append("| joins/s | " + " | ".join(f"{j[s]['joins_per_second']:,.0f}" if j[s] and "skipped" not in j[s] else "—" for s in SYSTEMS) + " |")
    out.append("| join p50 / p99 (ms) | " + " | ".join(
        f"{j[s]['join_latency']['p50_ms']:.2f} / {j[s]['join_latency']['p99_ms']:.2f}" if j[s] and "skipped" not in j[s] else "—" for s in SYSTEMS) + " |")
    out.append("| connects/s (upgrade + handshake) | " + " | ".join(
        f"{j[s]['connects_per_second']:,.0f}" if j[s] and "skipped" not in j[s] else "—" for s in SYSTEMS) + " |")
    out.append("| server / Redis CPU during joins | " + " | ".join(
        f"{j[s]['cpu_during_joins']['server_cpu_percent']:.0f}% / {j[s]['cpu_during_joins']['redis_cpu_percent']:.0f}%" if j[s] and "skipped" not in j[s] else "—" for s in SYSTEMS) + " |")
    out.append("")
    # Relay at fixed rates.
    rates = sorted({r["offered_per_second"] for r in by(rows, "relay", mode="rate")})
    out.append("Cross-process relay (sender on server 1, receiver on server 2, through Redis), latency "
               "from each message's intended send time: p50 / p99 / max in ms; delivered/s; server CPU "
               "(both processes, % of one core).")
    out.append("")
    out.append("| Offered/s | " + " | ".join(LABEL[s] for s in SYSTEMS) + " |")
    out.append("| --- | " + " | ".join("---" for _ in SYSTEMS) + " |")
    for rate in rates:
        cells = []
        for s in SYSTEMS:
            r = next(iter(by(rows, "relay", system=s, mode="rate", offered_per_second=rate)), None)
            if r is None:
                cells.append("—")
                continue
            l = r["latency"]
            lost = r["sent"] - r["received"]
            cells.append(f"{fmt_ms(l['p50_ms'])} / {fmt_ms(l['p99_ms'])} / {fmt_ms(l['max_ms'])}; "
                         f"{r['achieved_per_second']:,.0f}/s{f', {lost:,} late or lost' if lost else ''}; "
                         f"CPU {r['cpu']['server_cpu_percent']:.0f}%")
        out.append(f"| {rate:,.0f} | " + " | ".join(cells) + " |")
    m = {s: next(iter(by(rows, "relay", system=s, mode="max")), None) for s in SYSTEMS}
    out.append("| maximum (window 64 per pair) | " + " | ".join(
        f"**{m[s]['relayed_per_second']:,.0f}/s**, p99 {fmt_ms(m[s]['latency_under_saturation']['p99_ms'])} ms; "
        f"server CPU {m[s]['cpu']['server_cpu_percent']:.0f}%, Redis {m[s]['cpu']['redis_cpu_percent']:.0f}%" if m[s] else "—"
        for s in SYSTEMS) + " |")
    out.append("")
    # Steal: a run slowed by the hypervisor shows here, not as slower software.
    steal_rows = []
    for rate in rates + ["maximum"]:
        cells = []
        for s in SYSTEMS:
            if rate == "maximum":
                r = m[s]
            else:
                r = next(iter(by(rows, "relay", system=s, mode="rate", offered_per_second=rate)), None)
            cpus = (r or {}).get("cpu", {}).get("cpus")
            cells.append(" / ".join(f"{cpus[c]['steal']:.1f}" for c in sorted(cpus)) if cpus else "—")
        steal_rows.append(f"| {rate if rate == 'maximum' else f'{rate:,.0f}'} | " + " | ".join(cells) + " |")
    if any("—" not in row.split("|", 2)[2] for row in steal_rows):
        out.append("Steal (time the hypervisor gave to others) on each CPU during the relay runs, "
                   "% (cpu0 / cpu1):")
        out.append("")
        out.append("| Offered/s | " + " | ".join(LABEL[s] for s in SYSTEMS) + " |")
        out.append("| --- | " + " | ".join("---" for _ in SYSTEMS) + " |")
        out.extend(steal_rows)
        out.append("")
    out.append("CPU per operation, µs of one core: server processes + Redis = total (joins from the "
               "join run; relayed messages from the maximum run and from the 10,000/s run).")
    out.append("")
    out.append("| Per operation | " + " | ".join(LABEL[s] for s in SYSTEMS) + " |")
    out.append("| --- | " + " | ".join("---" for _ in SYSTEMS) + " |")
    for operation, costs in cpu_per_operation(rows).items():
        out.append(f"| {operation} | " + " | ".join(
            f"{costs[s][0]:.1f} + {costs[s][1]:.1f} = {sum(costs[s]):.1f}" if s in costs else "—"
            for s in SYSTEMS) + " |")
    out.append("")
    # Ratios.
    out.append("| Ratio (Switchboard ÷ peer) | vs socket.io | vs Centrifugo | vs Centrifugo, same work |")
    out.append("| --- | --- | --- | --- |")

    def ratio(a, b, fmt="{:.2f}×"):
        return fmt.format(a / b) if a is not None and b else "—"

    def largest_common_idle():
        common = None
        for s in idle_systems:
            ns = {r["connections"] for r in idle_points(rows, s)}
            common = ns if common is None else common & ns
        return max(common) if common else None

    n = largest_common_idle()
    if n:
        kib = {s: next(r for r in idle_points(rows, s) if r["connections"] == n)["kib_per_connection"] for s in idle_systems}
        out.append(f"| memory per idle connection at {n:,} (lower is better) | "
                   f"{ratio(kib['switchboard'], kib['socketio'])} (1/{kib['socketio'] / kib['switchboard']:.1f}) | "
                   f"{ratio(kib['switchboard'], kib['centrifugo'])} | — |")
    mx = {s: (m[s]["relayed_per_second"] if m[s] else None) for s in SYSTEMS}
    out.append(f"| maximum cross-process relay rate | {ratio(mx['switchboard'], mx['socketio'])} | {ratio(mx['switchboard'], mx['centrifugo'])} | "
               f"{ratio(mx['switchboard'], mx['centrifugo-same-work'])} |")
    js = {s: (j[s]["joins_per_second"] if j[s] and "skipped" not in j[s] else None) for s in SYSTEMS}
    out.append(f"| joins/s | {ratio(js['switchboard'], js['socketio'])} | {ratio(js['switchboard'], js['centrifugo'])} | "
               f"{ratio(js['switchboard'], js['centrifugo-same-work'])} |")
    p99 = {}
    for s in SYSTEMS:
        r = next(iter(by(rows, "relay", system=s, mode="rate", offered_per_second=10000.0)), None)
        p99[s] = r["latency"]["p99_ms"] if r else None
    out.append(f"| relay p99 at 10,000/s (lower is better) | {ratio(p99['switchboard'], p99['socketio'], '{:.3f}×')} | "
               f"{ratio(p99['switchboard'], p99['centrifugo'], '{:.3f}×')} | "
               f"{ratio(p99['switchboard'], p99['centrifugo-same-work'], '{:.3f}×')} |")
    return "\n".join(out)


def cpu_per_operation(rows):
    """{operation: {system: (server µs, Redis µs)}}: % of one core over operations per second.

    The figure that compares systems fairly on a machine whose load core saturates before the
    servers do. Joins from the join run; relayed messages from the maximum and 10,000/s runs.
    """
    def per_op(cpu, rate):
        return (cpu["server_cpu_percent"] * 1e4 / rate, cpu["redis_cpu_percent"] * 1e4 / rate)
    found = {"join": {}, "relayed message, maximum": {}, "relayed message, 10,000/s": {}}
    for s in SYSTEMS:
        j = next(iter(by(rows, "joins", system=s)), None)
        if j and "skipped" not in j and j.get("joins_per_second"):
            found["join"][s] = per_op(j["cpu_during_joins"], j["joins_per_second"])
        m = next(iter(by(rows, "relay", system=s, mode="max")), None)
        if m and m.get("relayed_per_second"):
            found["relayed message, maximum"][s] = per_op(m["cpu"], m["relayed_per_second"])
        r = next(iter(by(rows, "relay", system=s, mode="rate", offered_per_second=10000)), None)
        if r and "redis_cpu_percent" in r["cpu"] and r.get("achieved_per_second"):
            found["relayed message, 10,000/s"][s] = per_op(r["cpu"], r["achieved_per_second"])
    return found


def plots(rows, image_dir):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"switchboard": "tab:blue", "socketio": "tab:orange", "centrifugo": "tab:green",
              "centrifugo-same-work": "tab:olive"}
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for s in SYSTEMS:
        pts = rate_points(rows, s)
        if not pts:
            continue
        x = [r["offered_per_second"] for r in pts]
        ax.plot(x, [r["latency"]["p99_ms"] for r in pts], "o-", color=colors[s], label=f"{LABEL[s]} p99")
        ax.plot(x, [r["latency"]["p50_ms"] for r in pts], "o--", color=colors[s], alpha=0.6, label=f"{LABEL[s]} p50")
    ax.axhline(2.0, color="grey", linestyle=":", linewidth=1, label="target: p99 ≤ 2 ms at 10,000/s")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("offered relay rate (messages/s), 2 server processes + Redis")
    ax.set_ylabel("latency from intended send (ms)")
    ax.set_title("Cross-process relay latency against offered rate")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(f"{image_dir}/peers-latency.png")
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=110)
    for s in SYSTEMS:
        pts = idle_points(rows, s)
        if not pts:
            continue
        ax.plot([r["connections"] for r in pts], [r["rss_after_bytes"] / 1048576 for r in pts], "o-",
                color=colors[s], label=LABEL[s])
    ax.set_xlabel("idle joined connections (one process)")
    ax.set_ylabel("server RSS (MiB)")
    ax.set_title("Server memory against idle connections")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(f"{image_dir}/peers-memory.png")
    plt.close(fig)

    # CPU per operation: server and Redis stacked, one group per operation.
    costs = cpu_per_operation(rows)
    fig, axes = plt.subplots(1, len(costs), figsize=(9, 3.6), dpi=110)
    for ax, (operation, by_system) in zip(axes, costs.items()):
        names = [s for s in SYSTEMS if s in by_system]
        server = [by_system[s][0] for s in names]
        redis = [by_system[s][1] for s in names]
        x = range(len(names))
        ax.bar(x, server, color=[colors[s] for s in names], label="server")
        ax.bar(x, redis, bottom=server, color=[colors[s] for s in names], alpha=0.45, hatch="//",
               label="Redis")
        ax.set_xticks(list(x), [SHORT[s] for s in names], fontsize=7)
        ax.set_title(operation, fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
    axes[0].set_ylabel("µs of one core (server solid, Redis hatched)")
    fig.suptitle("CPU per operation: server processes + Redis (lower is better)")
    fig.tight_layout()
    fig.savefig(f"{image_dir}/peers-cpu.png")
    plt.close(fig)


def main():
    machine, rows = load(sys.argv[1])
    print(tables(machine, rows))
    if "--no-plots" not in sys.argv:
        plots(rows, sys.argv[2])


if __name__ == "__main__":
    main()
