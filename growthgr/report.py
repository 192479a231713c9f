"""`growthgr report`: one self-contained HTML page of everything a day's run measured.

The page is assembled from what the subsystems already write into the lake, so it never
restates a figure: for every subsystem under `reports/<subsystem>/ds=<ds>/` (ItemLTV, MultiGR,
the dense retriever, the A/B tests, ...) its markdown files become HTML (tables included),
its PNG plots are embedded as data URIs and a JSON file without a markdown twin becomes a
table of its scalar fields; then the day's gate results (`validation/gate_results/ds=<ds>/`) and
the serving release's manifest. The gate results are plain tables (each gate's counts, each suite's
outcome, every failed rule with table, partition, column and details) with relative links to the GX
Data Docs pages in `validation/data_docs/`: GX's index lists its validations with scripts from CDNs,
so offline the report is where a person reads them. The pipeline section is the day's step durations
(`catalog.pipeline_step_key`, written by `growthgr.pipeline.timed`): a table and a bar plot. The
learning curves section has one small loss-vs-epoch plot per model trained that day (the per-epoch
table `reports/curves/ds=<ds>/<model>/epochs.csv` of `models.training.learning_curves`). Known
subsystems come first in `ORDER`, any other one after them, so a new report shows up without
touching this module.

The page has no external reference (no script, no stylesheet, no image URL): it opens
offline, from S3 or attached to a mail. Written to `catalog.report_key("summary", ds,
"index.html")`.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING

from foundation import catalog
from foundation.lake import Lake

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

REPORT = "summary"                                   # reports/summary/ds=<ds>/index.html
ORDER = ("itemltv", "multigr", "dense", catalog.CURVES, "abtest", "pipeline")   # sections first, in this order
TITLES = {"itemltv": "ItemLTV (uplift model, new-item pool)", "multigr": "MultiGR (generative retriever)",
          "dense": "Dense retriever", catalog.CURVES: "Learning curves", "abtest": "A/B tests in the simulated platform",
          "pipeline": "Pipeline timings"}
EPOCHS = "epochs.csv"                                # a training's per-epoch means in reports/curves/ds=<ds>/<model>/
FAILURE_FIELDS = ("table", "partition", "column", "rule", "details")   # a stored failed rule (expectations.gate.Failure)


@dataclass
class Section:
    """One heading of the page and its HTML fragments, in order."""

    title: str
    anchor: str
    parts: list[str] = field(default_factory=list)


def markdown_html(text: str) -> str:
    """Markdown (tables included) -> HTML; raw HTML in the input is escaped."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False, "breaks": True}).enable("table").render(text)


def image_html(name: str, png: bytes) -> str:
    """An embedded PNG; a wide one (> 1000 px, e.g. a row of panels) takes the page's width."""
    data = base64.b64encode(png).decode("ascii")
    wide = png[:8] == b"\x89PNG\r\n\x1a\n" and int.from_bytes(png[16:20], "big") > 1000
    cls = " class='wide'" if wide else ""
    return (f'<figure{cls}><img alt="{html.escape(name)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(name)}</figcaption></figure>")


def _scalars(obj: object, prefix: str = "") -> Iterable[tuple[str, object]]:
    """The scalar leaves of nested dicts as (dotted key, value); lists are summarised by length."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _scalars(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        if all(not isinstance(v, (dict, list)) for v in obj) and len(obj) <= 8:
            yield prefix, ", ".join(map(str, obj))
        else:
            yield prefix, f"[{len(obj)} entries]"
    else:
        yield prefix, obj


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def json_html(name: str, data: object, max_rows: int = 60) -> str:
    """A JSON document as a two-column table of its scalar fields (the first `max_rows`), folded
    (`<details>`): the markdown tables and plots are what a reader looks at first."""
    rows = list(_scalars(data))
    body = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(_fmt(v))}</td></tr>" for k, v in rows[:max_rows])
    more = f"<p class='note'>{len(rows) - max_rows} more fields in {html.escape(name)}</p>" if len(rows) > max_rows else ""
    return (f"<details><summary>{html.escape(name)} ({len(rows)} fields)</summary>"
            f"<table><tr><th>field</th><th>value</th></tr>{body}</table>{more}</details>")


def subsystem_section(lake: Lake, subsystem: str, ds: date) -> Section | None:
    """The section of one subsystem's report directory for `ds` (None when it has no file)."""
    prefix = catalog.report_prefix(subsystem, ds) + "/"
    keys = sorted(k for k in lake.store.list(prefix) if "/" not in k[len(prefix):])
    if not keys:
        return None
    section = Section(TITLES.get(subsystem, subsystem), subsystem)
    markdown = {k.rsplit(".", 1)[0] for k in keys if k.endswith(".md")}
    pngs = [k for k in keys if k.endswith(".png")]
    # a plot `<stem>_<name>.png` follows its markdown `<stem>.md` (the longest such stem); others go last
    owner = {k: max((m for m in markdown if k.startswith(m + "_")), key=len, default=None) for k in pngs}
    for key in keys:
        if key.endswith(".md"):
            section.parts.append(markdown_html(lake.store.get_bytes(key).decode("utf-8")))
            stem = key.rsplit(".", 1)[0]
            section.parts += [image_html(k[len(prefix):], lake.store.get_bytes(k)) for k in pngs if owner[k] == stem]
    for key in keys:
        name = key[len(prefix):]
        if key.endswith(".json") and key.rsplit(".", 1)[0] not in markdown:
            try:
                section.parts.append(json_html(name, json.loads(lake.store.get_bytes(key))))
            except json.JSONDecodeError as exc:
                section.parts.append(f"<p class='bad'>{html.escape(name)}: not JSON ({html.escape(str(exc))})</p>")
    for key in pngs:
        if owner[key] is None:
            section.parts.append(image_html(key[len(prefix):], lake.store.get_bytes(key)))
    return section


def timing_records(lake: Lake, ds: date) -> list[dict]:
    """The day's pipeline step records (`growthgr.pipeline.timed`), in the order they started."""
    prefix = catalog.pipeline_steps_prefix(ds)
    records = [json.loads(lake.store.get_bytes(k)) for k in sorted(lake.store.list(prefix)) if k.endswith(".json")]
    return sorted(records, key=lambda r: (r.get("started") or "", r.get("step", "")))


def timings_png(records: list[dict]) -> bytes:
    """Horizontal bars: seconds per step in run order (failed steps red)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r["step"] for r in records]
    seconds = [float(r.get("seconds") or 0.0) for r in records]
    colours = ["tab:green" if r.get("status") == "ok" else "tab:red" for r in records]
    fig, ax = plt.subplots(figsize=(8, 0.35 * len(records) + 1.4), constrained_layout=True)
    bars = ax.barh(range(len(records)), seconds, color=colours)
    ax.bar_label(bars, labels=[f"{v:.1f} s" for v in seconds], fontsize=8, padding=2)
    ax.set_yticks(range(len(records)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("duration (seconds)")
    ax.set_xlim(0, max(seconds + [1.0]) * 1.18)
    ax.set_title(f"Pipeline steps of ds={records[0].get('ds')} (green ok, red failed), total {sum(seconds):.0f} s",
                 fontsize=10)
    return png_bytes(fig)


def png_bytes(fig) -> bytes:
    """A figure as reproducible PNG bytes (no software stamp), closed after."""
    import io

    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()


def timings_parts(lake: Lake, ds: date) -> list[str]:
    """Table + bar plot of the day's step durations (empty when no step recorded one)."""
    records = timing_records(lake, ds)
    if not records:
        return []
    rows = "".join(
        f"<tr class='{'passed' if r.get('status') == 'ok' else 'failed'}'><td>{html.escape(str(r.get('step')))}</td>"
        f"<td>{html.escape(str(r.get('status')))}</td><td>{float(r.get('seconds') or 0):.1f}</td>"
        f"<td>{html.escape(str(r.get('started', ''))[:19])}</td><td>{html.escape(str(r.get('error') or ''))[:300]}</td></tr>"
        for r in records)
    total = sum(float(r.get("seconds") or 0) for r in records)
    table = ("<table><tr><th>step</th><th>status</th><th>seconds</th><th>started (UTC)</th><th>error</th></tr>"
             f"{rows}<tr><td><b>total</b></td><td></td><td><b>{total:.1f}</b></td><td></td><td></td></tr></table>")
    note = ("<p class='note'>Latest run of each step for this ds, as recorded by <code>growthgr.pipeline.timed</code> "
            "(Airflow tasks, <code>growthgr pipeline step</code>, the A/B closed loop).</p>")
    return [note, table, image_html("pipeline_timings.png", timings_png(records))]


def curve_tables(lake: Lake, ds: date) -> dict[str, pd.DataFrame]:
    """The per-epoch table of every model trained on `ds`, by model name (sorted)."""
    import pandas as pd

    prefix = catalog.report_prefix(catalog.CURVES, ds) + "/"
    keys = sorted(k for k in lake.store.list(prefix) if k.endswith("/" + EPOCHS) and k[len(prefix):].count("/") == 1)
    return {k[len(prefix):].split("/")[0]: pd.read_csv(io.BytesIO(lake.store.get_bytes(k))) for k in keys}


def curve_png(model: str, table: pd.DataFrame) -> bytes:
    """One small plot of a model's curves: every `*loss` column (all metric columns when none is a
    loss) against the epoch, validation dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = [c for c in table.columns if c != "epoch"]
    shown = [c for c in metrics if c.endswith("loss")] or metrics
    fig, ax = plt.subplots(figsize=(4.2, 2.6), constrained_layout=True)
    for column in shown:
        ax.plot(table["epoch"], table[column], marker="o", markersize=3,
                linestyle="--" if column.startswith("val") else "-", label=column)
    ax.set_xlabel("epoch")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_title(model, fontsize=10)
    if shown:
        ax.legend(fontsize=7)
    ax.tick_params(labelsize=7)
    return png_bytes(fig)


def curves_parts(lake: Lake, ds: date) -> list[str]:
    """A note and one plot per model trained on `ds` (empty when none logged a curve)."""
    tables = curve_tables(lake, ds)
    if not tables:
        return []
    note = ("<p class='note'>Per-epoch means of what each training logged (Lightning's CSV logger; every "
            f"logged step in <code>{html.escape(catalog.report_prefix(catalog.CURVES, ds))}/&lt;model&gt;/metrics.csv</code>). "
            "MoPO's epoch is a pi_old refresh window.</p>")
    return [note, *(image_html(f"{model}", curve_png(model, table)) for model, table in tables.items())]


def html_table(header: Iterable[str], rows: Iterable[tuple[str, list[str]]], cls: str = "") -> str:
    """A table from already-escaped cells; each row is (its class, its cells)."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join(f"<tr class='{c}'>" + "".join(f"<td>{v}</td>" for v in cells) + "</tr>" for c, cells in rows)
    return f"<table class='{cls}'><tr>{head}</tr>{body}</table>"


def gate_verdict(result: dict) -> str:
    """passed, FAILED, or running (a gate that started and never stored its outcome)."""
    if result.get("status") == "running":
        return "running"
    return "passed" if result.get("passed") else "FAILED"


def docs_pages(lake: Lake, dataset: str, ds: date) -> dict[str, str]:
    """The keys of a gate's GX Data Docs: `index` and one validation page per suite (by suite name,
    e.g. `raw.clicks` -> `validations/raw/clicks/<run>/<time>/<batch>.html`); empty without docs."""
    prefix = catalog.data_docs_prefix(dataset, ds) + "/"
    keys = sorted(k for k in lake.store.list(prefix) if k.endswith(".html"))
    pages = {"index": prefix + "index.html"} if prefix + "index.html" in keys else {}
    for key in keys:
        parts = key[len(prefix):].split("/")
        if parts[0] == "validations" and len(parts) >= 5:       # validations/<suite path>/<run name>/<run time>/<file>
            pages[".".join(parts[1:-3])] = key               # the newest run of a suite sorts last
    return pages


def link(key: str, here: str, label: str) -> str:
    """An `<a>` to lake key `key`, relative to the folder `here` of the page that holds it."""
    return f"<a href='{html.escape(posixpath.relpath(key, here))}'>{html.escape(label)}</a>"


def gates_section(lake: Lake, ds: date) -> Section | None:
    """The day's stored gate results as plain tables, readable offline (GX Data Docs load their
    tables and styles from CDNs): one row per gate with its counts and a link to its Data Docs, one
    row per suite (table) with a link to its GX validation page, and every failed rule with its
    table, partition, column and what was observed."""
    prefix = catalog.gate_result_key(ds, "x").rsplit("/", 1)[0] + "/"
    keys = sorted(k for k in lake.store.list(prefix) if k.endswith(".json"))
    if not keys:
        return None
    here = posixpath.dirname(catalog.report_key(REPORT, ds, "index.html"))
    gates, suites, failed = [], [], []
    for key in keys:
        result = json.loads(lake.store.get_bytes(key))
        name = str(result.get("dataset") or key.rsplit("/", 1)[1].removesuffix(".json"))
        verdict, failures = gate_verdict(result), result.get("failures") or []
        pages = docs_pages(lake, name, ds)
        docs = link(pages["index"], here, "Data Docs") if "index" in pages else ""
        gates.append((verdict.lower(), [html.escape(name), verdict, str(len(result.get("suites") or [])),
                                        str(result.get("n_expectations", "")), str(len(failures)),
                                        html.escape(str(result.get("validated_at", ""))[:19]), docs]))
        for suite in result.get("suites") or []:
            n_failed = sum(1 for f in failures if f.get("table") == suite)
            page = link(pages[suite], here, "validation page") if suite in pages else ""
            suites.append(("failed" if n_failed else "passed", [html.escape(name), html.escape(suite),
                                                                "FAILED" if n_failed else "passed", str(n_failed), page]))
        for f in failures:
            failed.append(("failed", [html.escape(name), *(html.escape(str(f.get(c, ""))) for c in FAILURE_FIELDS)]))
    parts = [html_table(("gate", "result", "suites", "expectations", "failed rules", "validated at (UTC)",
                         "GX Data Docs"), gates, "gates")]
    if failed:
        parts += ["<h3>Failed rules</h3>", html_table(("gate", *FAILURE_FIELDS), failed, "failed-rules")]
    if suites:
        parts += ["<h3>Suites</h3>", html_table(("gate", "suite", "result", "failed rules", "GX validation page"),
                                                suites, "suites")]
    return Section("Data-quality and model gates", "gates", parts)


def release_section(manifest: dict | None) -> Section | None:
    """The serving release: id, day, files and the metrics recorded in its manifest."""
    if not manifest:
        return None
    return Section("Serving release", "release", [json_html(str(manifest.get("release_id", "manifest")), manifest)])


def collect(lake: Lake, ds: date, manifest: dict | None = None) -> list[Section]:
    """Every section of the page for `ds`, known subsystems first."""
    found = {k.split("/")[1] for k in lake.store.list("reports/") if f"/ds={ds}/" in k}
    names = [s for s in ORDER if s in found] + sorted(found - set(ORDER) - {REPORT})
    sections = []
    for name in names:
        section = subsystem_section(lake, name, ds)
        if name == catalog.CURVES:
            section = Section(TITLES[name], name, parts) if (parts := curves_parts(lake, ds)) else None
        if name == "pipeline":
            timings = timings_parts(lake, ds)
            section = section or (Section(TITLES[name], name) if timings else None)
            if section:
                section.parts = timings + section.parts
        if section:
            sections.append(section)
    return sections + [s for s in (gates_section(lake, ds), release_section(manifest)) if s]


_STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{border-bottom:2px solid #2a6;padding-bottom:.2em} h2{margin-top:2em;color:#175}
table{border-collapse:collapse;margin:.8em 0;font-size:.85em} td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}
td:first-child,th:first-child{text-align:left} th{background:#eef5f0} tr.failed td{background:#fdd}
table.failed-rules td,table.failed-rules th,table.suites td,table.suites th{text-align:left}
img{max-width:100%;border:1px solid #ddd} figure{display:inline-block;margin:.5em;max-width:48%;vertical-align:top}
figure.wide{display:block;max-width:100%}
figcaption{font-size:.8em;color:#555} summary{cursor:pointer;margin:.6em 0;color:#175} .note{color:#666;font-size:.85em} .bad{color:#a00} nav a{margin-right:1em}
"""


def render(sections: list[Section], ds: date, title: str = "GrowthGR daily report") -> str:
    """The self-contained page."""
    nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in sections)
    body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>{"".join(s.parts)}</section>'
                   for s in sections) or "<p class='bad'>no report was found for this day</p>"
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    return (f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)} {ds}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}: ds={ds}</h1>"
            f"<p class='note'>generated {stamp} from the lake's reports zone</p><nav>{nav}</nav>{body}</body></html>")


def write_report(lake: Lake, ds: date, manifest: dict | None = None) -> str:
    """Render the page for `ds` into the lake; returns its key."""
    sections = collect(lake, ds, manifest)
    page = render(sections, ds)
    key = catalog.report_key(REPORT, ds, "index.html")
    lake.store.put_bytes(key, page.encode("utf-8"))
    log.info("report ds=%s: %d sections, %.0f kB -> %s", ds, len(sections), len(page) / 1024, lake.store.url(key))
    return key


def page_stats(page: str) -> dict[str, int]:
    """What a reader (or a test) checks first: how many tables, embedded images and sections."""
    return {"tables": len(re.findall(r"<table", page)), "images": len(re.findall(r"<img ", page)),
            "sections": len(re.findall(r"<section ", page))}
