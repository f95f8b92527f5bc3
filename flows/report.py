"""The run report: one self-contained HTML page (inline SVG, no scripts, no external files).

It shows the per-stage funnel (in, made, kept, rejected by reason), documents kept per source
through the stages, timings, score histograms with the thresholds or corpus-wide cut-offs drawn,
the near-duplicate cluster-size distribution, token lengths and packing efficiency, and for every
stage sample documents: a few per reason it dropped them (with the rule, score or survivor that
decided) and a few it kept. Counts come from the stage manifests; distributions are read column by
column from the files holding each stage's kept rows and its rejects (at most `max_values` values
per column); only the sampled rows' text is read.

The charts are hand-written SVG with a `<title>` on every bar (its value on hover): a plotting
library that renders offline (Plotly, Bokeh) would inline a megabyte or more of JavaScript into
every report, for charts this simple.
"""

from __future__ import annotations

import html
import json
import math
import time
from typing import Any

import numpy as np
import pyarrow.parquet as pq

from winnow.flows.inspect import Sample, describe, kept_samples, rejected_samples, run_stages
from winnow.stages import STAGES
from winnow.storage.fs import Location, resolve
from winnow.storage.manifest import MANIFEST, RUN_SUMMARY, kept_files

REPORT = "report.html"
CSS = """body{font-family:system-ui,sans-serif;margin:2em auto;max-width:980px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:14px}td,th{border-bottom:1px solid #ddd;padding:4px 10px;
text-align:right}td:first-child,th:first-child,th:last-child,td.reasons{text-align:left}h2{margin-top:2em}
svg{background:#fafafa;border:1px solid #eee;margin:.5em 0}.note{color:#666;font-size:13px}
table.samples td{text-align:left;vertical-align:top}td.text{font-family:ui-monospace,monospace;font-size:12px;
color:#444;max-width:520px}td.why{color:#8a3b12;font-size:13px}p.alarm{color:#a40000}"""


def _files(out: Location, stage: str, rejects: bool) -> list[Location]:
    """The files holding a stage's kept rows (see `kept_files`), and its rejects when asked."""
    try:
        files = kept_files(out, stage)
    except FileNotFoundError:
        return []
    base = out.join(stage, "rejects")
    if rejects and base.exists():
        files += [loc for loc in base.list_files("part-*.parquet") if loc.path.rsplit("/", 1)[0] == base.path]
    return files


def _values(out: Location, stage: str, column: str, max_values: int, rejects: bool = True) -> np.ndarray:
    """Up to `max_values` non-null values of a column from the rows a stage kept (and its rejects)."""
    parts, n = [], 0
    for loc in _files(out, stage, rejects):
        with loc.open_read() as f:
            pf = pq.ParquetFile(f)
            if column not in pf.schema_arrow.names:
                continue
            values = pf.read(columns=[column]).column(column).drop_null().to_numpy()
        parts.append(values[: max_values - n])
        n += len(parts[-1])
        if n >= max_values:
            break
    return np.concatenate(parts) if parts else np.zeros(0)


def histogram_svg(values: np.ndarray, marks: list[tuple[float, str]], title: str, bins: int = 40,
                  log_counts: bool = False, integer: bool = False, span: tuple[float, float] | None = None) -> str:
    """Bars of a histogram with vertical lines at `marks` (value, label); `span`: the x range (default:
    the values' own), so that histograms drawn one above the other line up."""
    w, h, pad = 640, 220, 40
    if len(values) == 0:
        return f'<p class="note">{html.escape(title)}: no values</p>'
    lo, hi = span or (float(values.min()), float(values.max()))
    for x, _ in marks:
        lo, hi = min(lo, x), max(hi, x)
    if integer:
        lo, hi = math.floor(lo) - 0.5, math.ceil(hi) + 0.5
        bins = int(min(bins, hi - lo))
    if hi <= lo:
        hi = lo + 1
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    heights = np.log10(counts + 1) if log_counts else counts.astype(float)
    top = heights.max() or 1
    bw = (w - 2 * pad) / len(counts)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<title>{html.escape(title)}</title>',
           f'<text x="{pad}" y="16" font-size="13">{html.escape(title)} (n = {len(values):,}'
           f'{", log count" if log_counts else ""})</text>']
    for i, (c, height) in enumerate(zip(counts, heights, strict=True)):
        bh = (h - 2 * pad) * height / top
        out.append(f'<rect x="{pad + i * bw:.1f}" y="{h - pad - bh:.1f}" width="{max(bw - 1, 1):.1f}" '
                   f'height="{bh:.1f}" fill="#4a78b5"><title>[{edges[i]:.4g}, {edges[i + 1]:.4g}): {c:,}</title>'
                   '</rect>')
    out.append(f'<line x1="{pad}" y1="{h - pad}" x2="{w - pad}" y2="{h - pad}" stroke="#888"/>')
    for x in np.linspace(lo, hi, 5):
        px = pad + (x - lo) / (hi - lo) * (w - 2 * pad)
        out.append(f'<text x="{px:.1f}" y="{h - pad + 16}" font-size="11" text-anchor="middle">{x:.3g}</text>')
    for x, label in marks:
        px = pad + (x - lo) / (hi - lo) * (w - 2 * pad)
        out.append(f'<line x1="{px:.1f}" y1="{pad - 10}" x2="{px:.1f}" y2="{h - pad}" stroke="#c0392b" '
                   f'stroke-dasharray="4 3"/><text x="{px + 4:.1f}" y="{pad - 2}" font-size="11" fill="#c0392b">'
                   f'{html.escape(label)}</text>')
    out.append("</svg>")
    return "".join(out)


def bars_svg(items: list[tuple[str, float]], title: str, unit: str = "") -> str:
    """Horizontal bars, one per (name, value)."""
    w, row, left = 640, 22, 130
    h = 30 + row * len(items)
    top = max((v for _, v in items), default=0) or 1
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<title>{html.escape(title)}</title><text x="4" y="16" font-size="13">{html.escape(title)}</text>']
    for i, (name, value) in enumerate(items):
        y = 26 + i * row
        bw = (w - left - 90) * value / top
        out.append(f'<text x="{left - 6}" y="{y + 14}" font-size="12" text-anchor="end">{html.escape(name)}</text>'
                   f'<rect x="{left}" y="{y}" width="{bw:.1f}" height="{row - 6}" fill="#4a78b5">'
                   f'<title>{html.escape(name)}: {value:,.6g}{unit}</title></rect>'
                   f'<text x="{left + bw + 4:.1f}" y="{y + 14}" font-size="12">{value:,.4g}{unit}</text>')
    out.append("</svg>")
    return "".join(out)


def describe_counters(stage: str, counters: dict[str, int], reasons: dict[str, int] | None = None) -> str:
    """A stage's counters in one line (those that only repeat a reject reason's count left out), with
    what the stage adds about them (`Stage.describe_counters`)."""
    counters = {k: v for k, v in counters.items() if (reasons or {}).get(k) != v}
    text = ", ".join(f"{name} {n:,}" for name, n in counters.items())
    said = STAGES[stage].describe_counters(counters) if stage in STAGES else ""
    return f"{text} ({said})" if said else text


def build_report(output: str | Location, max_values: int = 1_000_000) -> str:
    """The report's HTML for a run's output directory."""
    out = output if isinstance(output, Location) else resolve(output)
    run_file = out.join(RUN_SUMMARY)
    run: dict[str, Any] = json.loads(run_file.read_bytes()) if run_file.exists() else {"stages": {}}
    stages: dict[str, dict] = dict(run.get("stages") or {})
    if not stages:  # a run that has not finished: the manifests that exist, in the run's order
        try:
            names = run_stages(out)
        except FileNotFoundError:  # nothing has run yet
            names = []
        for name in names:
            m = json.loads(out.join(name, MANIFEST).read_bytes())
            stages[name] = {**m, "extra": m.get("extra") or {}}
    configs = {s["name"]: s for s in (run.get("config") or {}).get("stages", [])}

    body = [f"<h1>winnow run report</h1><p>{html.escape(out.uri)} &middot; generated "
            f"{time.strftime('%Y-%m-%d %H:%M:%S')}</p>", "<h2>Funnel</h2>",
            '<table id="funnel"><tr><th>stage</th><th>in</th><th>made</th><th>kept</th><th>rejected</th>'
            "<th>seconds</th><th>rejected by reason</th><th>counters</th></tr>"]
    for name, c in stages.items():
        reasons = ", ".join(f"{html.escape(r)} {n:,}" for r, n in sorted(c.get("rejected_by_reason", {}).items(),
                                                                         key=lambda kv: -kv[1]))
        counters = describe_counters(name, c.get("counters") or {}, c.get("rejected_by_reason"))
        body.append(f'<tr data-stage="{html.escape(name)}"><td>{html.escape(name)}</td>'
                    f'<td class="in">{c["rows_in"]:,}</td><td class="made">{c.get("rows_added", 0):,}</td>'
                    f'<td class="kept">{c["rows_out"]:,}</td><td class="rejected">{c["rows_rejected"]:,}</td>'
                    f'<td>{c.get("seconds", 0):.1f}</td><td class="reasons">{reasons or "-"}</td>'
                    f'<td class="counters">{html.escape(counters) or "-"}</td></tr>')
    body.append("</table>")
    alarms = run.get("alarms")
    if alarms is None:
        alarms = over_removal(out, stages, configs)
    if alarms:
        body.append(_alarms_section(alarms))
    if stages:
        body.append(bars_svg([(n, c["rows_out"]) for n, c in stages.items()], "documents kept after each stage"))
        body.append(bars_svg([(n, c.get("seconds", 0)) for n, c in stages.items()], "time per stage", " s"))

    sections: dict[str, list[str]] = {}  # section title -> figures, in the order stages first ask for them
    for name in stages:
        stage = STAGES.get(name)
        if stage is None:  # a stage this winnow does not define (an old run's): its table row is all we show
            continue
        extra = stages[name].get("extra") or {}
        for plot in stage.plots:
            values = _values(out, name, plot.column, max_values, rejects=not plot.kept_only)
            if plot.above is not None:
                values = values[values > plot.above]
            marks = [] if plot.kept_only else stage.report_marks(configs.get(name, {}), extra)
            sections.setdefault(plot.section, []).append(histogram_svg(
                values, marks, plot.title or f"{name}: {plot.column}", log_counts=plot.log_counts,
                integer=plot.integer))
        said = stage.summary(out.uri, extra)
        if said:
            line, charts = said
            sections.setdefault(name, []).append(f'<p id="{html.escape(name)}-summary">{html.escape(line)}</p>')
            sections[name] += [bars_svg(bars, title) for title, bars in charts]
    for title, figures in sections.items():
        body.append(f"<h2>{html.escape(title)}</h2>")
        body += figures
    if stages:
        body.append(_per_source(stages))
        body.append("<h2>Samples</h2>")
        body += [_samples_section(out, name, stages[name]) for name in stages]
    return html_page("winnow report", body)


def html_page(title: str, body: list[str]) -> str:
    """A self-contained page in the report's style."""
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{CSS}</style></head><body>{''.join(body)}</body></html>")


def table_html(header: list[str], rows: list[list], table_id: str = "") -> str:
    """A table; floats to four significant digits, integers with thousands separators."""
    def cell(v) -> str:
        text = f"{v:,}" if isinstance(v, int) else f"{v:.4g}" if isinstance(v, float) else str(v)
        return f"<td>{html.escape(text)}</td>"

    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(f"<tr>{''.join(cell(v) for v in row)}</tr>" for row in rows)
    return f'<table{f" id={chr(34)}{table_id}{chr(34)}" if table_id else ""}><tr>{head}</tr>{body}</table>'


def curves_svg(curves: list[tuple[str, np.ndarray, np.ndarray]], title: str, x_label: str, y_label: str,
               diagonal: bool = False) -> str:
    """Lines on [0, 1] x [0, 1], one per (name, xs, ys); `diagonal`: the chance line of a ROC curve."""
    w, h, pad = 420, 360, 44
    colours = ["#4a78b5", "#c0392b", "#27ae60", "#8e44ad"]

    def at(x: float, y: float) -> str:
        return f"{pad + x * (w - 2 * pad):.1f},{h - pad - y * (h - 2 * pad):.1f}"

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" role="img">',
           f'<title>{html.escape(title)}</title><text x="{pad}" y="18" font-size="13">{html.escape(title)}</text>',
           f'<rect x="{pad}" y="{pad}" width="{w - 2 * pad}" height="{h - 2 * pad}" fill="none" stroke="#888"/>',
           f'<text x="{w / 2}" y="{h - 8}" font-size="12" text-anchor="middle">{html.escape(x_label)}</text>',
           f'<text x="12" y="{h / 2}" font-size="12" text-anchor="middle" transform="rotate(-90 12 {h / 2})">'
           f'{html.escape(y_label)}</text>']
    for v in (0, 0.5, 1):
        out.append(f'<text x="{pad + v * (w - 2 * pad):.1f}" y="{h - pad + 14}" font-size="11" '
                   f'text-anchor="middle">{v:g}</text><text x="{pad - 4}" y="{h - pad - v * (h - 2 * pad) + 4:.1f}" '
                   f'font-size="11" text-anchor="end">{v:g}</text>')
    if diagonal:
        out.append(f'<polyline points="{at(0, 0)} {at(1, 1)}" fill="none" stroke="#bbb" stroke-dasharray="4 3"/>')
    for i, (name, xs, ys) in enumerate(curves):
        step = max(len(xs) // 400, 1)  # a few hundred points draw the curve
        points = " ".join(at(x, y) for x, y in zip(xs[::step], ys[::step], strict=True))
        colour = colours[i % len(colours)]
        out.append(f'<polyline points="{points} {at(xs[-1], ys[-1])}" fill="none" stroke="{colour}" '
                   f'stroke-width="2"><title>{html.escape(name)}</title></polyline>'
                   f'<text x="{w - pad - 4}" y="{pad + 16 + 14 * i}" font-size="12" text-anchor="end" '
                   f'fill="{colour}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "".join(out)


def over_removal(out: Location, stages: dict[str, dict], configs: dict[str, dict], clusters: int = 5,
                 members: int = 3) -> list[dict]:
    """Sources a dedup stage removed more than its `alarm_fraction` of (within the run or against the run
    index), each with the stage's largest clusters among them: a cluster of one template (a cookie banner, a
    boilerplate page) rather than one document shows in its members' text."""
    alarms, before = [], None
    for name, counts in stages.items():
        kept, fraction = counts.get("kept_by_source") or {}, configs.get(name, {}).get("alarm_fraction")
        if fraction is not None and before is not None:
            heavy = {source: n for source, n in before.items() if n and (n - kept.get(source, 0)) / n > fraction}
            if heavy:
                alarms.append({"stage": name, "alarm_fraction": fraction, "sources": [
                    {"source": source, "in": n, "removed": n - kept.get(source, 0)} for source, n in heavy.items()],
                    "clusters": _largest_clusters(out, name, set(heavy), clusters, members)})
        before = kept
    return alarms


def _largest_clusters(out: Location, stage: str, sources: set[str], n: int, members: int) -> list[dict]:
    """The survivors with the most documents removed in their favour (from the given sources), a few removed
    members each, with a text snippet."""
    base = out.join(stage, "rejects")
    rows: dict[str, list[tuple[str, str]]] = {}
    for loc in base.list_files("part-*.parquet") if base.exists() else []:
        with loc.open_read() as f:
            table = pq.read_table(f, columns=["id", "source", "reject_detail", "text"])
        for doc_id, source, detail, text in zip(*(table.column(c).to_pylist() for c in table.schema.names),
                                                strict=True):
            if source in sources and detail and detail.startswith("duplicate of "):
                survivor = detail.removeprefix("duplicate of ").split(" (cluster")[0]
                rows.setdefault(survivor, []).append((doc_id, " ".join((text or "").split())[:160]))
    largest = sorted(rows.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:n]
    return [{"survivor": survivor, "removed": len(found),
             "members": [{"id": i, "text": t} for i, t in found[:members]]} for survivor, found in largest]


def _alarms_section(alarms: list[dict]) -> str:
    items = []
    for alarm in alarms:
        sources = ", ".join(f"{html.escape(s['source'])} ({s['removed']:,} of {s['in']:,})" for s in alarm["sources"])
        clusters = "".join(
            f"<tr><td>{html.escape(c['survivor'])}</td><td>{c['removed']:,}</td><td class=\"text\">"
            + "<br>".join(f"{html.escape(m['id'])}: {html.escape(m['text'])}" for m in c["members"]) + "</td></tr>"
            for c in alarm["clusters"])
        items.append(f'<p class="alarm"><b>{html.escape(alarm["stage"])}</b> removed more than '
                     f'{alarm["alarm_fraction"]:.0%} of {sources}. Its largest clusters:</p><table class="samples">'
                     f"<tr><th>kept document</th><th>removed</th><th>some removed members</th></tr>{clusters}</table>")
    return '<h2 id="alarms">Over-removal alarms</h2>' + "".join(items)


def _per_source(stages: dict[str, dict]) -> str:
    """Documents kept after each stage, one row per source (the input file, or the config's `source`)."""
    counts = {name: c.get("kept_by_source") or {} for name, c in stages.items()}
    sources = sorted({source for by_source in counts.values() for source in by_source})
    head = "".join(f"<th>{html.escape(name)}</th>" for name in counts)
    rows = "".join(f"<tr><td>{html.escape(source)}</td>"
                   + "".join(f"<td>{counts[name].get(source, 0):,}</td>" for name in counts) + "</tr>"
                   for source in sources)
    return (f'<h2>By source</h2><p class="note">documents kept after each stage</p>'
            f'<table id="sources"><tr><th>source</th>{head}</tr>{rows}</table>')


def _sample_rows(samples: list[Sample]) -> str:
    return "".join(f'<tr><td>{html.escape(s.reason or "kept")}</td><td>{html.escape(s.id)}<br>'
                   f'<span class="note">{html.escape(s.source)}</span></td>'
                   f'<td class="why">{html.escape((s.detail or "") if s.reason else describe(s.annotations))}</td>'
                   f'<td class="text">{html.escape(s.snippet)}</td></tr>' for s in samples)


def _samples_section(out: Location, name: str, counts: dict, per_reason: int = 3, kept: int = 3) -> str:
    """A few documents the stage dropped for each reason, and a few it kept, with what decided."""
    try:
        dropped = rejected_samples(out, name, n=per_reason) if counts.get("rows_rejected") else []
        kept_rows = kept_samples(out, name, n=kept) if counts.get("rows_out") else []
    except (FileNotFoundError, KeyError):  # an unfinished stage, or kept rows without text (packed tokens)
        dropped, kept_rows = [], []
    if not dropped and not kept_rows:
        return f'<section class="samples" id="samples-{html.escape(name)}"><h3>{html.escape(name)}</h3>' \
               '<p class="note">no documents to show</p></section>'
    return (f'<section class="samples" id="samples-{html.escape(name)}"><h3>{html.escape(name)}</h3>'
            '<table class="samples"><tr><th>outcome</th><th>document</th><th>what decided</th><th>text</th></tr>'
            f"{_sample_rows(dropped)}{_sample_rows(kept_rows)}{_cut_rows(out, name, kept)}</table></section>")


def _cut_rows(out: Location, name: str, n: int, max_chars: int = 1500) -> str:
    """Kept documents a stage cut units out of (its `dup_removed` column: offset in the kept text, text
    removed), shown with the removed text put back, struck out."""
    rows: list[str] = []
    try:
        files = kept_files(out, name)
    except FileNotFoundError:
        return ""
    for loc in files:
        with loc.open_read() as f:
            pf = pq.ParquetFile(f)
            if "dup_removed" not in pf.schema_arrow.names:
                return ""
            table = pf.read(columns=["id", "text", "dup_removed"])
        for doc_id, text, cuts in zip(*(table.column(c).to_pylist() for c in ("id", "text", "dup_removed")),
                                      strict=True):
            if not cuts or len(rows) >= n:
                continue
            segments, at = [], 0  # (text, whether it was cut), in the order of the original document
            for cut in sorted(cuts, key=lambda c: c["at"]):
                segments += [(text[at:cut["at"]], False), (cut["text"], True)]
                at = max(at, cut["at"])
            segments.append((text[at:], False))
            shown, budget = [], max_chars
            for piece, was_cut in segments:
                piece, budget = piece[:budget], budget - len(piece)
                shown.append(f"<del>{html.escape(piece)}</del>" if was_cut else html.escape(piece))
                if budget <= 0:
                    shown.append("…")
                    break
            rows.append(f'<tr class="cut"><td>kept, cut</td><td>{html.escape(doc_id)}</td><td class="why">'
                        f'{len(cuts)} repeated unit(s) removed</td><td class="text">{"".join(shown)}</td></tr>')
        if len(rows) >= n:
            break
    return "".join(rows)


def write_report(output: str | Location) -> Location:
    """Build the report and write it to OUTPUT/report.html."""
    out = output if isinstance(output, Location) else resolve(output)
    loc = out.join(REPORT)
    loc.write_bytes_atomic(build_report(out).encode())
    return loc
