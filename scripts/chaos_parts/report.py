"""The chaos run's report: what was injected, what held (each invariant with its figures), and every
violation in full, as Markdown (BENCHMARKS.md takes it as it is)."""

from __future__ import annotations


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f} ms"


def _jobs(f: dict) -> str:
    s = f.get("statuses") or {}
    return (f"{sum(s.values())} jobs: {s.get('done', 0)} done, {s.get('failed', 0)} failed, "
            f"{s.get('cancelled', 0)} cancelled; {f.get('acknowledged', 0)} acknowledged by a submit")


def _health(f: dict) -> str:
    h = f.get("health")
    if h is None:
        return "-"
    lat = h.latencies
    back = f"; the web app killed {len(h.recoveries)} times, back within {max(h.recoveries):.1f} s at worst" \
        if h.recoveries else ""
    return (f"{len(lat)} checks: p50 {ms(pct(lat, 0.5))}, p99 {ms(pct(lat, 0.99))}, "
            f"max {ms(max(lat) if lat else None)}{back}")


def _pages(f: dict) -> str:
    runs = f.get("pages") or []
    return f"{len(runs)} page runs: p50 {ms(pct(runs, 0.5))}, p99 {ms(pct(runs, 0.99))}, max {ms(max(runs, default=None))}"


def _rss(f: dict) -> str:
    rss = f.get("rss") or {}
    execs = [mb for name, mb in rss.items() if name.startswith("executor")]
    starts = f.get("starts") or {}
    return (f"executors max {max(execs, default=0):.0f} MB, web app {rss.get('web', 0):.0f} MB; "
            f"starts: {sum(n for k, n in starts.items() if k.startswith('executor'))} executor, {starts.get('web', 0)} web")


def _hostile(f: dict) -> str:
    seen = f.get("hostile") or {}
    bad = sum(1 for p in seen.values() if p)
    return f"{len(seen)} cases ({f.get('rounds', 0)} full rounds), {bad} with a problem"


def _visitors(f: dict) -> str:
    actions = ", ".join(f"{k} {v}" for k, v in sorted((f.get("actions") or {}).items()))
    refused = ", ".join(f"{k} {v}" for k, v in sorted((f.get("refused") or {}).items()))
    pages = f.get("gallery_s") or []
    return (f"{actions}; refused (one line): {refused or 'none'}; gallery page read p50 {ms(pct(pages, 0.5))}, "
            f"p99 {ms(pct(pages, 0.99))}")


ROWS = [  # (what held, prefixes of its violations, figures)
    ("every job done, failed with one line or cancelled, exactly once",
     ("jobs neither", "done jobs", "results of jobs", "failed jobs", "jobs claimed", "jobs ended", "jobs whose"), _jobs),
    ("no result without its job", ("results without",), lambda f: "-"),
    ("no acknowledged job lost", ("acknowledged jobs",), lambda f: "-"),
    ("the queue drained after the faults", ("the queue did not",),
     lambda f: "-" if f.get("drain seconds") is None else f"in {f['drain seconds']:.0f} s"),
    ("health check answered within the bound", ("health:", "the web app did not"), _health),
    ("pages ran to their end within the bound, no exception shown", ("page ",), _pages),
    ("RSS of each process within the bound", ("memory:",), _rss),
    ("hostile inputs read or refused in bounds, one line", ("hostile",), _hostile),
    ("visitors: nothing but one-line refusals", ("visitor:",), _visitors),
    ("no process exited by itself or logged a traceback", ("executor", "web ", "traceback"), lambda f: "-"),
]


def report(args, command: str, f: dict, violations: list[str]) -> str:
    lines = [f"### Chaos run: {args.backend}, {args.minutes:g} minutes, {args.executors} executors, seed {args.seed}",
             "", f"Machine: {f.get('machine at start')}; at the end: {f.get('machine_at_end', '-')}",
             f"Command: `{command}`",
             f"Store: {f.get('store', '-')}; faults every {args.fault_every:g} s on average; {args.visitors} visitors, "
             f"an action every {args.visit_every:g} s each on average, a page visitor and a hostile visitor", "",
             "| fault | injected |", "| --- | --- |"]
    for kind, n in sorted((f.get("injected") or {}).items()):
        lines.append(f"| {kind} | {n} |")
    for note, n in sorted((f.get("notes") or {}).items()):
        lines.append(f"| ({note}) | {n} |")
    lines += ["", "| what held | verdict | figures |", "| --- | --- | --- |"]
    for label, prefixes, figures in ROWS:
        broken = [v for v in violations if v.startswith(prefixes)]
        lines.append(f"| {label} | {'BROKEN (' + str(len(broken)) + ')' if broken else 'held'} | {figures(f)} |")
    if f.get("failures"):
        lines += ["", "Failed jobs' errors (most common): " + "; ".join(f"{n}x `{e}`" for e, n in f["failures"])]
    lines += ["", f"Violations: {len(violations)}" + (":" if violations else "")]
    lines += [f"- {v}" for v in violations]
    return "\n".join(lines)
