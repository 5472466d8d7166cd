"""Plotly figures as plain dicts (``{"data": [...], "layout": {...}}``) for the pages' plotly.js.

Built by hand rather than with ``plotly.graph_objects``: validating 5,000 points through it
costs more than the rest of a page. The browser draws them with the plotly.js file the plotly
package ships, served by the dashboard itself or inlined in a report: no network at run time.
SVG traces, not WebGL: they draw without a GPU (headless browsers, remote desktops).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from atm_core.dashboard.queries import Point, iso, seconds_between

PALETTE = (
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
    "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
)  # fmt: skip
DIGITS = 5  # scores in plots: plenty to draw, half the JSON of full floats
ALL_POINTS_UP_TO = 300  # a method's box shows every score up to this many, else outliers only
PARTITION_BARS = 30

Figure = dict[str, Any]


def colors(methods: Sequence[str]) -> dict[str, str]:
    """One color per method, the same in every plot of a page."""
    return {method: PALETTE[i % len(PALETTE)] for i, method in enumerate(methods)}


def layout(x_title: str, y_title: str, **extra: Any) -> dict[str, Any]:
    return {
        "margin": {"l": 60, "r": 20, "t": 10, "b": 50},
        "height": 320,
        "xaxis": {"title": {"text": x_title}, "automargin": True},
        "yaxis": {"title": {"text": y_title}, "automargin": True},
        "legend": {"orientation": "h", "y": -0.25},
        "hovermode": "closest",
        "paper_bgcolor": "rgba(0,0,0,0)",
        **extra,
    }


def datarun_figures(
    points: list[Point], methods: Sequence[str], partitions: list[dict[str, Any]], metric: str
) -> dict[str, Figure]:
    """The datarun page's plots (see :func:`best_so_far` for what the curves count)."""
    palette = colors(sorted(methods))
    by_time, by_count = best_so_far(points, metric)
    return {
        "best_by_time": by_time,
        "best_by_classifier": by_count,
        "method_scores": method_scores(points, sorted(methods), palette, metric),
        "score_vs_seconds": score_vs_seconds(points, palette, metric),
        "hyperpartitions": partition_bars(partitions, palette),
    }


def finished_in_order(points: list[Point]) -> list[Point]:
    """Complete classifiers in the order they finished (end time, then id)."""
    done = [p for p in points if p.status == "complete" and p.judgment is not None]
    return sorted(done, key=lambda p: (p.end_time is None, p.end_time or 0, p.id))


def best_so_far(points: list[Point], metric: str) -> tuple[Figure, Figure]:
    """The best judgment metric after each complete classifier, in the order they finished:
    one point per complete classifier, against the time it finished and against how many had
    finished (there beside each classifier's own score; left out of the time plot, where 5,000
    more SVG markers would double its drawing time)."""
    done = finished_in_order(points)
    best: list[float] = []
    for point in done:
        best.append(point.judgment if not best else max(best[-1], point.judgment))
    best = [round(value, DIGITS) for value in best]
    ids = [p.id for p in done]

    def curve(x: list[Any]) -> dict[str, Any]:
        return {
            "type": "scatter",
            "mode": "lines",
            "name": "best so far",
            "x": x,
            "y": best,
            "customdata": ids,
            "line": {"shape": "hv", "width": 2, "color": "#1f77b4"},
            "hovertemplate": "best so far after #%{customdata}<br>%{y:.4f}<extra></extra>",
        }

    counts = list(range(1, len(done) + 1))
    each = {
        "type": "scatter",
        "mode": "markers",
        "name": "each classifier",
        "x": counts,
        "y": [round(p.judgment, DIGITS) for p in done],
        "customdata": ids,
        "marker": {"size": 4, "color": "#b0b0b0"},
        "hovertemplate": "classifier #%{customdata}<br>%{y:.4f}<extra></extra>",
    }
    by_time = layout("finished at (UTC)", metric)
    by_time["xaxis"]["type"] = "date"
    by_time["showlegend"] = False
    return (
        {"data": [curve([iso(p.end_time) for p in done])], "layout": by_time},
        {
            "data": [each, curve(counts)],
            "layout": layout("complete classifiers, in the order they finished", metric),
        },
    )


def method_scores(
    points: list[Point], methods: Sequence[str], palette: dict[str, str], metric: str
) -> Figure:
    """One box per method of the datarun: the judgment metrics of its complete classifiers."""
    scores: dict[str, list[float]] = {method: [] for method in methods}
    ids: dict[str, list[int]] = {method: [] for method in methods}
    for point in points:
        if point.status == "complete" and point.judgment is not None:
            scores.setdefault(point.method, []).append(round(point.judgment, DIGITS))
            ids.setdefault(point.method, []).append(point.id)
    data = [
        {
            "type": "box",
            "name": f"{method} ({len(values)})",
            "y": values,
            "customdata": ids[method],
            "boxpoints": "all" if len(values) <= ALL_POINTS_UP_TO else "outliers",
            "jitter": 0.4,
            "pointpos": 0,
            "marker": {"size": 4, "color": palette.get(method, "#444")},
            "hovertemplate": "classifier #%{customdata}<br>%{y:.4f}<extra></extra>",
        }
        for method, values in scores.items()
    ]
    return {
        "data": data,
        "layout": layout("method (complete classifiers)", metric, showlegend=False),
    }


def score_vs_seconds(points: list[Point], palette: dict[str, str], metric: str) -> Figure:
    """Each complete classifier's judgment metric against its time from start to finish (its
    CV fits, final fit and storage), one trace per method."""
    traces: dict[str, dict[str, list[Any]]] = {}
    for point in points:
        seconds = seconds_between(point.start_time, point.end_time)
        if point.status != "complete" or point.judgment is None or seconds is None:
            continue
        trace = traces.setdefault(point.method, {"x": [], "y": [], "ids": []})
        trace["x"].append(max(seconds, 0.001))
        trace["y"].append(round(point.judgment, DIGITS))
        trace["ids"].append(point.id)
    data = [
        {
            "type": "scatter",
            "mode": "markers",
            "name": method,
            "x": trace["x"],
            "y": trace["y"],
            "customdata": trace["ids"],
            "marker": {"size": 5, "color": palette.get(method, "#444"), "opacity": 0.7},
            "hovertemplate": "classifier #%{customdata}<br>%{x:.2f} s<br>%{y:.4f}<extra></extra>",
        }
        for method, trace in sorted(traces.items())
    ]
    plot_layout = layout("seconds per classifier (log scale)", metric)
    plot_layout["xaxis"].update(type="log", tickformat="~g")  # 0.2, 0.5, 1, not "2 5 1"
    return {"data": data, "layout": plot_layout}


def partition_bars(partitions: list[dict[str, Any]], palette: dict[str, str]) -> Figure:
    """Classifiers per hyperpartition (the most tried first): where the selector spent the
    budget."""
    tried = sorted(
        (p for p in partitions if p["classifiers"]), key=lambda p: (-p["classifiers"], p["id"])
    )[:PARTITION_BARS][::-1]
    data = [
        {
            "type": "bar",
            "orientation": "h",
            "x": [p["classifiers"] for p in tried],
            "y": [p["label"] for p in tried],
            "marker": {"color": [palette.get(p["method"], "#444") for p in tried]},
            "text": ["" if p["best"] is None else f"best {p['best']:.4f}" for p in tried],
            "textposition": "auto",
            "hovertemplate": "%{y}: %{x} classifiers<extra></extra>",
        }
    ]
    plot_layout = layout("classifiers", "", showlegend=False)
    plot_layout["height"] = max(200, 40 + 22 * len(tried))
    plot_layout["margin"]["l"] = 10
    return {"data": data, "layout": plot_layout}


def confusion_figure(matrix: list[list[int]], classes: list[str]) -> Figure:
    return {
        "data": [
            {
                "type": "heatmap",
                "z": matrix,
                "x": classes,
                "y": classes,
                "colorscale": [[0, "#f5f8fc"], [1, "#6aa3d8"]],
                "textfont": {"color": "#101828"},
                "texttemplate": "%{z}",
                "hovertemplate": "true %{y}, predicted %{x}: %{z}<extra></extra>",
                "showscale": False,
            }
        ],
        "layout": layout(
            "predicted class",
            "true class",
            yaxis={"title": {"text": "true class"}, "autorange": "reversed", "type": "category"},
            xaxis={"title": {"text": "predicted class"}, "type": "category"},
        ),
    }


def roc_figure(curves: list[dict[str, Any]]) -> Figure:
    data = [
        {
            "type": "scatter",
            "mode": "lines",
            "name": f"{curve['label']} (AUC {curve['auc']:.3f})",
            "x": curve["fpr"],
            "y": curve["tpr"],
        }
        for curve in curves
    ]
    data.append(
        {
            "type": "scatter",
            "mode": "lines",
            "name": "chance",
            "x": [0, 1],
            "y": [0, 1],
            "line": {"dash": "dot", "color": "#999"},
            "hoverinfo": "skip",
        }
    )
    return {"data": data, "layout": layout("false positive rate", "true positive rate")}
