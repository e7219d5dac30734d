"""Figures of a run and of a sweep, as PNG bytes. Pure: rows in, bytes out.

Both runtimes produce the same rows, so both get the same figures:

- time-series rows ``(time, metric, series, value)`` as the recorder keeps them or as
  read back from ``timeseries.csv`` (strings are accepted and converted);
- instance rows as ``common.analysis.report.instance_rows`` returns them or as read back from
  ``instances.csv`` (``time_to_running`` is a number, or ``""`` when the instance never
  reached running);
- sweep rows as ``common.analysis.sweep.sweep_row`` returns them or as read back from ``sweep.csv``.

Figures are drawn on matplotlib's Agg canvas directly (``Figure`` + ``FigureCanvasAgg``),
never through ``pyplot``, so nothing here touches a global backend or figure registry and
the functions can run in a notebook kernel, a worker process or a thread alike. Writing
the bytes to disk is the caller's business (``sim/output.py``).
"""

from __future__ import annotations

import io
import itertools
import math
from collections import defaultdict

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from common.analysis.stats import percentile

#: Default label of the time axis (a real run passes its own: wall seconds since start).
TIME_LABEL = "simulated time since start (s)"

#: At most this many points are drawn per line; longer series are decimated to a
#: min/max envelope, so peaks and dry spells survive.
MAX_POINTS = 2000

DPI = 100

#: File name -> what the figure shows. ``run_figures`` returns these keys.
RUN_FIGURES = {
    "queue_depth.png": "messages waiting in each queue, per topic, over time",
    "time_to_running.png": "time from request to running: CDF with p50/p95/p99",
    "pool_free.png": "free addresses per pool over time",
    "host_utilisation.png": "vCPU use (all hosts, busiest host) and overcommitted hosts over time",
}


# -- inputs ----------------------------------------------------------------------


def _num(value) -> float | None:
    """A number from a row cell: float/int as is, text parsed, "" or None -> None."""
    if value is None or value == "":
        return None
    if isinstance(value, (int, float)):
        value = float(value)
        return None if math.isnan(value) else value
    try:
        value = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def series_by_name(rows, metric: str) -> dict[str, tuple[list[float], list[float]]]:
    """``{series: (times, values)}`` of one metric, each sorted by time, in the order the
    series first appear."""
    found: dict[str, list[tuple[float, float]]] = {}
    for row in rows:
        t, m, name, value = row[0], row[1], row[2], row[3]
        if m != metric:
            continue
        t, value = _num(t), _num(value)
        if t is None or value is None:
            continue
        found.setdefault(str(name), []).append((t, value))
    out = {}
    for name, points in found.items():
        points.sort(key=lambda p: p[0])
        out[name] = ([p[0] for p in points], [p[1] for p in points])
    return out


def times_to_running(instance_rows) -> tuple[list[float], int]:
    """(sorted times to running, number of instances that never reached running)."""
    values, never = [], 0
    for row in instance_rows:
        v = _num(row.get("time_to_running"))
        if v is None:
            never += 1
        else:
            values.append(v)
    values.sort()
    return values, never


def sampling_interval(rows, metric: str) -> float | None:
    """The most common gap between two samples of ``metric`` (None with fewer than two)."""
    times = sorted({t for t in (_num(row[0]) for row in rows if row[1] == metric) if t is not None})
    gaps: defaultdict[float, int] = defaultdict(int)
    for a, b in itertools.pairwise(times):
        gaps[round(b - a, 6)] += 1
    return max(gaps, key=gaps.__getitem__) if gaps else None


def decimate(times, values, max_points: int = MAX_POINTS):
    """At most ``max_points`` points: per bucket the minimum and the maximum, in time
    order, so a downsampled line keeps its peaks and its troughs."""
    n = len(times)
    if n <= max_points:
        return list(times), list(values)
    buckets = max(1, max_points // 2)
    size = math.ceil(n / buckets)
    out_t, out_v = [], []
    for start in range(0, n, size):
        stop = min(n, start + size)
        lo = min(range(start, stop), key=values.__getitem__)
        hi = max(range(start, stop), key=values.__getitem__)
        for i in sorted({lo, hi}):
            out_t.append(times[i])
            out_v.append(values[i])
    return out_t, out_v


def first_time_at_or_below(times, values, level: float) -> float | None:
    """The first sampled time the value is <= ``level`` (e.g. a pool at 0 free)."""
    for t, v in zip(times, values, strict=True):
        if v <= level:
            return t
    return None


# -- drawing helpers -----------------------------------------------------------------


def _figure(width=9.0, height=4.8, rows=1, sharex=True, height_ratios=None):
    fig = Figure(figsize=(width, height), dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    if rows == 1:
        return fig, [fig.add_subplot(1, 1, 1)]
    axes = fig.subplots(rows, 1, sharex=sharex, gridspec_kw={"height_ratios": height_ratios} if height_ratios else None)
    return fig, list(axes)


def png(fig) -> bytes:
    """The figure as PNG bytes (Agg)."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def _title(text: str, subtitle: str) -> str:
    return f"{text}\n{subtitle}" if subtitle else text


def _empty_note(ax, text):
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4")


# -- the four figures of a run ---------------------------------------------------------


def queue_depth_png(series, *, subtitle: str = "", time_label: str = TIME_LABEL) -> bytes:
    """Ready (published, not yet delivered) messages per topic over time."""
    fig, (ax,) = _figure()
    lines = series_by_name(series, "queue_depth")
    peak = 0.0
    for name, (t, v) in lines.items():
        t, v = decimate(t, v)
        peak = max(peak, max(v, default=0.0))
        ax.step(t, v, where="post", label=f"{name}: peak {max(v, default=0):,.0f}", linewidth=1.2)
    step = sampling_interval(series, "queue_depth")
    sampled = f" (sampled every {step:g} s)" if step else ""
    ax.set_title(_title(f"Queue depth per topic{sampled}", subtitle))
    ax.set_xlabel(time_label)
    ax.set_ylabel("messages waiting (ready, undelivered)")
    ax.set_ylim(bottom=0, top=max(1.0, peak * 1.08))
    if not lines:
        _empty_note(ax, "no queue-depth samples")
    elif peak == 0:
        _empty_note(ax, "every queue was empty at every sample: consumers kept up")
    if lines:
        ax.legend(loc="upper right", fontsize="small", title="topic")
    ax.grid(alpha=0.3)
    return png(fig)


def time_to_running_png(instance_rows, *, subtitle: str = "") -> bytes:
    """CDF of time to running, with p50, p95 and p99 marked (nearest rank, as in the summary)."""
    fig, (ax,) = _figure()
    values, never = times_to_running(instance_rows)
    ax.set_title(_title("Time to running (request accepted -> instance running)", subtitle))
    ax.set_xlabel("time to running (s)")
    ax.set_ylabel("fraction of instances that reached running")
    ax.set_ylim(0, 1.02)
    if not values:
        _empty_note(ax, f"no instance reached running ({never:,} never did)")
        return png(fig)
    _cdf(ax, values, label=f"{len(values):,} reached running" + (f"; {never:,} never did" if never else ""))
    colours = {50: "tab:green", 95: "tab:orange", 99: "tab:red"}
    for q, colour in colours.items():
        p = percentile(values, q)
        ax.axvline(p, color=colour, linestyle="--", linewidth=1, label=f"p{q} = {p:,.1f} s")
    ax.set_xlim(left=0)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return png(fig)


def _cdf(ax, values, label, **style):
    n = len(values)
    # evenly spaced ranks, first and last kept
    picks = sorted({round(i * (n - 1) / (MAX_POINTS - 1)) for i in range(MAX_POINTS)}) if n > MAX_POINTS else range(n)
    xs = [values[i] for i in picks]
    ys = [(i + 1) / n for i in picks]
    ax.step(xs, ys, where="post", label=label, **style)


#: Pools drawn and labelled one by one; past this many, the most drained ones are and the
#: rest are drawn grey under one legend entry (a VLAN cloud has a pool per project).
MAX_LABELLED_POOLS = 5


def pool_free_png(series, *, subtitle: str = "", time_label: str = TIME_LABEL) -> bytes:
    """Free addresses per pool over time, the pool's size dotted, dry spells shaded. With
    many pools the most drained are labelled and the others drawn grey."""
    fig, (ax,) = _figure()
    free = series_by_name(series, "pool_free")
    sizes = {name: v[-1] for name, (_, v) in series_by_name(series, "pool_size").items() if v}
    title = "Free addresses per pool" + (f" ({len(free)} pools)" if len(free) > MAX_LABELLED_POOLS else "")
    ax.set_title(_title(title, subtitle))
    ax.set_xlabel(time_label)
    ax.set_ylabel("free addresses (count)")
    if not free:
        _empty_note(ax, "no pool samples")
        return png(fig)

    def drained(name):  # lowest share of the pool left free at any sample
        size = sizes.get(name) or max(free[name][1]) or 1
        return min(free[name][1]) / size

    ranked = sorted(free, key=drained)
    labelled = set(ranked if len(free) <= MAX_LABELLED_POOLS + 1 else ranked[:MAX_LABELLED_POOLS])
    others = [name for name in free if name not in labelled]
    for index, name in enumerate(others):
        t, v = decimate(*free[name])
        ax.step(t, v, where="post", color="0.6", linewidth=0.8, alpha=0.6,
                label=f"{len(others)} other pools" if index == 0 else None)
    for index, name in enumerate(n for n in free if n in labelled):
        t, v = free[name]
        colour = f"C{index % 10}"
        size = sizes.get(name)
        low = min(v)
        label = f"{name}: min free {low:,.0f}" + (f" of {size:,.0f}" if size is not None else "")
        dt, dv = decimate(t, v)
        ax.step(dt, dv, where="post", color=colour, label=label, linewidth=1.3)
        if size is not None:
            ax.axhline(size, color=colour, linestyle=":", linewidth=1)
        dry = first_time_at_or_below(t, v, 0)
        if dry is not None:
            _shade_dry(ax, t, v, colour)
            ax.annotate(f"{name} ran dry at t={dry:,.0f} s", xy=(dry, 0), xytext=(8, 18),
                        textcoords="offset points", color=colour, fontsize="small",
                        arrowprops={"arrowstyle": "->", "color": colour})
    ax.plot([], [], color="0.3", linestyle=":", linewidth=1, label="pool size (dotted, same colour)")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return png(fig)


def _shade_dry(ax, t, v, colour):
    start = None
    for ti, vi in zip(t, v, strict=True):
        if vi <= 0 and start is None:
            start = ti
        elif vi > 0 and start is not None:
            ax.axvspan(start, ti, color=colour, alpha=0.12, linewidth=0)
            start = None
    if start is not None:
        ax.axvspan(start, t[-1], color=colour, alpha=0.12, linewidth=0)


def host_utilisation_png(series, *, subtitle: str = "", time_label: str = TIME_LABEL) -> bytes:
    """vCPUs claimed over vCPUs (all hosts and the busiest host), and overcommitted hosts."""
    fig, (top, bottom) = _figure(height=6.4, rows=2, height_ratios=(3, 2))
    use = series_by_name(series, "host_vcpu_use")
    over = series_by_name(series, "hosts_overcommitted")
    top.set_title(_title("Host utilisation", subtitle))
    labels = {"all (fraction)": "all hosts", "max host (fraction)": "busiest host"}
    top_peak = 1.0
    for name, (t, v) in use.items():
        dt, dv = decimate(t, v)
        top_peak = max(top_peak, max(v, default=0.0))
        top.step(dt, dv, where="post", label=f"{labels.get(name, name)}: peak {max(v, default=0):.2f}", linewidth=1.3)
    top.axhline(1.0, color="0.3", linestyle="--", linewidth=1, label="capacity (claimed = host vCPUs)")
    top.set_ylabel("vCPUs claimed / vCPUs")
    top.set_ylim(0, top_peak * 1.1)
    top.legend(loc="upper right", fontsize="small")
    top.grid(alpha=0.3)
    peak_over = 0.0
    for t, v in over.values():
        dt, dv = decimate(t, v)
        peak_over = max(peak_over, max(v, default=0.0))
        bottom.step(dt, dv, where="post", color="tab:red", label=f"overcommitted hosts at the sample: peak {max(v, default=0):,.0f}", linewidth=1.3)
    bottom.set_ylabel("hosts (count)")
    bottom.set_xlabel(time_label)
    bottom.set_ylim(0, max(1.0, peak_over * 1.1))
    bottom.set_title("hosts with more vCPUs claimed than they have", fontsize="medium")
    if over:
        bottom.legend(loc="upper right", fontsize="small")
    if not use and not over:
        _empty_note(top, "no host samples")
    bottom.grid(alpha=0.3)
    return png(fig)


def run_figures(series, instance_rows, *, subtitle: str = "", time_label: str = TIME_LABEL) -> dict[str, bytes]:
    """The four figures of a run: ``{file name: PNG bytes}`` (keys as in ``RUN_FIGURES``)."""
    series = list(series)
    return {
        "queue_depth.png": queue_depth_png(series, subtitle=subtitle, time_label=time_label),
        "time_to_running.png": time_to_running_png(instance_rows, subtitle=subtitle),
        "pool_free.png": pool_free_png(series, subtitle=subtitle, time_label=time_label),
        "host_utilisation.png": host_utilisation_png(series, subtitle=subtitle, time_label=time_label),
    }


# -- comparing runs (notebooks, sweeps) -------------------------------------------------


def compare_cdf_png(groups: dict, *, title: str, xlabel: str = "time to running (s)", subtitle: str = "",
                    logx: bool = False) -> bytes:
    """Time-to-running CDFs of several runs on one axis: ``{label: instance rows}``.
    Each label gets its p99 marked. ``logx``: a log time axis, for runs far apart (a
    real run's fraction of a second against an uncalibrated sim's boot times)."""
    fig, (ax,) = _figure()
    ax.set_title(_title(title, subtitle))
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of instances that reached running")
    ax.set_ylim(0, 1.02)
    for index, (label, rows) in enumerate(groups.items()):
        values, never = times_to_running(rows)
        if not values:
            continue
        colour = f"C{index % 10}"
        p99 = percentile(values, 99)
        extra = f", {never:,} never ran" if never else ""
        _cdf(ax, values, label=f"{label} (p50 {_seconds(percentile(values, 50))} s, p99 {_seconds(p99)} s{extra})",
             color=colour)
        ax.axvline(p99, color=colour, linestyle=":", linewidth=1)
    if logx:
        ax.set_xscale("log")
    else:
        ax.set_xlim(left=0)
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return png(fig)


def _seconds(value: float | None) -> str:
    """Whole seconds from 100 up, three significant digits below (0.137, 20.4)."""
    if value is None:
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def compare_series_png(groups: dict, metric: str, series_name: str, *, title: str, ylabel: str,
                       subtitle: str = "", time_label: str = TIME_LABEL, reference: dict | None = None,
                       mark_level: float | None = None) -> bytes:
    """One time series (``metric``/``series_name``) from several runs on one axis:
    ``{label: time-series rows}``. ``reference`` maps a label to a level drawn dotted
    in the same colour (a pool's size); ``mark_level`` marks the first time each run
    reaches that level or below (a pool running dry at 0)."""
    fig, (ax,) = _figure()
    ax.set_title(_title(title, subtitle))
    ax.set_xlabel(time_label)
    ax.set_ylabel(ylabel)
    for index, (label, rows) in enumerate(groups.items()):
        colour = f"C{index % 10}"
        t, v = series_by_name(rows, metric).get(series_name, ([], []))
        if not t:
            continue
        dt, dv = decimate(t, v)
        ax.step(dt, dv, where="post", color=colour, label=label, linewidth=1.3)
        if reference and label in reference:
            ax.axhline(reference[label], color=colour, linestyle=":", linewidth=1)
        if mark_level is not None:
            hit = first_time_at_or_below(t, v, mark_level)
            if hit is not None:
                ax.plot([hit], [mark_level], marker="v", color=colour, markersize=9, linestyle="none")
                ax.annotate(f"t={hit:,.0f} s", xy=(hit, mark_level), xytext=(4, 10), textcoords="offset points",
                            color=colour, fontsize="small")
    ax.set_ylim(bottom=0)
    ax.legend(loc="best", fontsize="small")
    ax.grid(alpha=0.3)
    return png(fig)


def sweep_png(rows, x: str, panels, *, group: str | None = None, title: str, xlabel: str,
              subtitle: str = "", logx: bool = False, group_label=None, xline: tuple | None = None,
              group_order=None) -> bytes:
    """Metrics of a sweep against one swept parameter, a line per value of ``group``.

    ``rows``: sweep rows (dicts). ``panels``: a list of ``(ylabel, [(column, style), ...])``
    drawn as stacked axes sharing x; ``style`` is a short label for the column within the
    panel ("p95") or "" when the panel has one column. Several seeds per point are
    averaged; the range over seeds is drawn as a vertical bar. ``xline``: ``(x, label)``
    drawn as a vertical dashed line on every panel (a capacity). ``group_order``: the
    group values in the order to draw them (default: sorted).
    """
    panels = list(panels)
    fig, axes = _figure(height=2.6 + 2.2 * len(panels), rows=len(panels)) if len(panels) > 1 else _figure()
    if logx:
        for ax in axes:
            ax.set_xscale("log")
    group_label = group_label or (lambda value: f"{group} = {value}")
    groups: dict = defaultdict(lambda: defaultdict(list))
    for row in rows:
        gx = _num(row.get(x))
        if gx is None:
            continue
        groups[row.get(group) if group else ""][gx].append(row)
    markers = ["o", "s", "^", "D", "v", "P"]
    linestyles = ["-", "--", ":", "-."]
    for ax, (ylabel, columns) in zip(axes, panels, strict=True):
        order = list(group_order) if group_order is not None else sorted(groups, key=_sort_key)
        order += [g for g in sorted(groups, key=_sort_key) if g not in order]
        for gi, gvalue in enumerate(g for g in order if g in groups):
            by_x = groups[gvalue]
            colour = f"C{gi % 10}"
            for ci, (column, style) in enumerate(columns):
                xs, means, lows, highs = [], [], [], []
                for gx in sorted(by_x):
                    ys = [y for y in (_num(r.get(column)) for r in by_x[gx]) if y is not None]
                    if not ys:
                        continue
                    xs.append(gx)
                    means.append(sum(ys) / len(ys))
                    lows.append(min(ys))
                    highs.append(max(ys))
                if not xs:
                    continue
                name = group_label(gvalue) if group else ""
                label = ", ".join(part for part in (name, style) if part) or column
                ax.errorbar(xs, means, yerr=[[m - lo for m, lo in zip(means, lows, strict=True)], [hi - m for m, hi in zip(means, highs, strict=True)]],
                            color=colour, marker=markers[ci % len(markers)], linestyle=linestyles[ci % len(linestyles)],
                            capsize=3, linewidth=1.3, label=label)
        if xline is not None:
            ax.axvline(xline[0], color="0.4", linestyle="--", linewidth=1, label=xline[1])
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        handles, _ = ax.get_legend_handles_labels()
        if handles:
            ax.legend(fontsize="small", loc="best")
        ax.set_ylim(bottom=0)
    axes[0].set_title(_title(title, subtitle))
    axes[-1].set_xlabel(xlabel)
    if logx:
        ticks = _log_ticks(sorted({gx for by_x in groups.values() for gx in by_x if gx > 0}))
        for ax in axes:
            ax.minorticks_off()
            ax.set_xticks(ticks, [f"{v:.3g}" for v in ticks])
    return png(fig)


def _sort_key(value):
    number = _num(value)
    return (0, number, "") if number is not None else (1, 0.0, str(value))


def _log_ticks(xs):
    """The data's own x values when they are few and well apart (a sweep's values), else
    1-2-5 steps across their range."""
    if not xs:
        return []
    if len(xs) <= 8 and all(b / a >= 1.4 for a, b in itertools.pairwise(xs)):
        return xs
    lo, hi = xs[0], xs[-1]
    ticks = []
    decade = 10.0 ** math.floor(math.log10(lo))
    while decade <= hi * 10:
        for m in (1, 2, 5):
            t = m * decade
            if lo / 1.5 <= t <= hi * 1.5:
                ticks.append(t)
        decade *= 10
    return ticks or xs
