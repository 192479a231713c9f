"""The A/B report: `reports/abtest/ds=<ds>/<design>.json|.md` and `<design>_trajectory.png` (the
only writes into the lake), the trajectory plot, the Markdown and the terminal summary."""

from __future__ import annotations

import json

import numpy as np

from foundation import catalog
from foundation.lake import Lake
from growthgr.abtest.estimators import HEADLINE
from growthgr.report import png_bytes

REPORT = "abtest"
METRIC_TITLES = {"new_item_gmv": "new-item GMV", "search_gmv": "overall search GMV",
                 "pvr": "page-view ratio of new items"}
# The paper's online A/B results (GrowthGR vs production, user-side test; TI@30 for items launched
# under the treatment), shown next to the simulated ones: the same metric names, a different platform.
PAPER_PCT = {"new_item_gmv": 5.39, "search_gmv": 0.31, "pvr": 1.54, "ti30": 20.0}


def write_report(lake: Lake, ds: str, result: dict) -> list[str]:
    """`reports/abtest/ds=<ds>/<design>.json`, `.md` and `<design>_trajectory.png` (the only writes
    into the lake)."""
    design = report_name(result)
    keys = [catalog.report_key(REPORT, ds, f"{design}.{ext}") for ext in ("json", "md")]
    lake.store.put_bytes(keys[0], json.dumps(result, indent=2, default=float).encode())
    lake.store.put_bytes(keys[1], markdown(result).encode())
    if "trajectory" in result:
        keys.append(catalog.report_key(REPORT, ds, f"{design}_trajectory.png"))
        lake.store.put_bytes(keys[2], trajectory_png(result))
    return keys


def report_name(r: dict) -> str:
    """`<design>`, or `<design>_retrain` for a closed-loop test (both reports can sit side by side)."""
    return f"{r['design']}_retrain" if r.get("retrain") else r["design"]


# -- the trajectory plot ----------------------------------------------------------------------------

def trajectory_png(r: dict) -> bytes:
    """One panel per headline metric: the cumulative relative effect (%) after each test day, the
    design's estimate and the true global effect, each with its 95% bootstrap band; zero line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    traj = r["trajectory"]
    x = np.arange(1, len(traj["days"]) + 1)
    fig, axes = plt.subplots(1, len(HEADLINE), figsize=(13, 4.6), layout="constrained")
    for ax, metric in zip(axes, HEADLINE, strict=True):
        for block, label, colour in (("estimate", f"{r['design']}-side design estimate", "tab:blue"),
                                     ("global", "true global effect (fully treated vs untreated)", "tab:orange")):
            t = traj[block][metric]
            ax.fill_between(x, t["lo"], t["hi"], color=colour, alpha=0.2, linewidth=0,
                            label=f"{label}: 95% interval")
            ax.plot(x, t["rel_pct"], color=colour, marker="o", markersize=3, label=label)
        ax.axhline(0.0, color="black", linewidth=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"{METRIC_TITLES[metric]} (paper: {PAPER_PCT[metric]:+.2f}%)", fontsize=10)
        ax.set_xlabel(f"test day (cumulative from {traj['days'][0]})")
        ax.set_ylabel("treated vs control (%)")
        ax.grid(alpha=0.3)
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=4, fontsize=8)
    loop = ", retrained daily" if r.get("retrain") else ""
    fig.suptitle(f"A/B `{r['design']}` of release {r['release']}{loop}: cumulative estimates, 95% bootstrap intervals",
                 fontsize=11)
    return png_bytes(fig)


# -- text -------------------------------------------------------------------------------------------

def _fmt(e: dict) -> str:
    if not e.get("available", True):
        return "n/a"
    lo, hi = e["ci95_pct"]
    return f"{e['rel_pct']:+.2f}% [{lo:+.2f}, {hi:+.2f}]"


def markdown(r: dict) -> str:
    """The report as Markdown: headline table (design vs global truth), TI@30, categories, Gini."""
    est, truth = r["estimate"], r["global"]
    loop = " (closed loop: retrained daily)" if r.get("retrain") else ""
    lines = [f"# A/B test `{r['design']}` of release {r['release']}{loop}", "",
             f"{r['days']} simulated days {r['start']}..{r['end']}; treated users {r['treated_users']:.1%}, "
             f"treated new items {r['treated_new_items']:.1%}.", "",
             "| metric | design estimate (95% CI) | units | true global effect (95% CI) | bias (pp) | paper |",
             "|---|---|---|---|---|---|"]
    for k in HEADLINE:
        b = r["bias"][k]["bias_pp"]
        lines.append(f"| {k} | {_fmt(est[k])} | {est[k].get('units', '')} | {_fmt(truth[k])} | {b:+.2f} | "
                     f"{PAPER_PCT[k]:+.2f}% |")
    for cohort in truth["ti30"]:
        e, t = est["ti30"][cohort], truth["ti30"][cohort]
        b = r["bias"].get(f"ti30_{cohort}", {}).get("bias_pp")
        why = e.get("reason") or t.get("reason") or ""
        lines.append(f"| ti30 ({cohort}) | {_fmt(e)} | items | {_fmt(t)} | "
                     f"{'' if b is None else f'{b:+.2f}'} {'' if b is not None else why} | "
                     f"{PAPER_PCT['ti30']:+.2f}% (launched under treatment) |")
    g, tg = est["gini"], truth["gini"]
    lines += [f"| exposure Gini | {g['treated']:.4f} vs {g['control']:.4f} | | {tg['treated']:.4f} vs "
              f"{tg['control']:.4f} | | |", "",
              "## New-item PV and GMV by category (design estimate / true global effect)", "",
              "| category | PV | PV (global) | GMV | GMV (global) |", "|---|---|---|---|---|"]
    for c, e in est["category"].items():
        t = truth["category"][c]
        lines.append(f"| {c} | {_fmt(e['pv'])} | {_fmt(t['pv'])} | {_fmt(e['gmv'])} | {_fmt(t['gmv'])} |")
    lines += trajectory_lines(r)
    lines += retrain_lines(r)
    lines += ["", r["notes"], ""]
    return "\n".join(lines)


def retrain_lines(r: dict) -> list[str]:
    """The closed loop's days per retraining arm: served release, pipeline outcome, next release."""
    if not r.get("retrain"):
        return []
    out = ["", "## Closed loop (`--retrain`): the daily pipeline after every test day, on each arm's lake copy", "",
           "| arm | ds | served release | channel placements (in its pool) | pipeline | seconds | serving next day |",
           "|---|---|---|---|---|---|---|"]
    for arm, days in r["retrain"].items():
        for e in days:
            p = e["pipeline"]
            outcome = ("published" if e["published"] else "ok, nothing new") if p["ok"] else \
                f"FAILED at {p['failed_step']}: keeps the last good release"
            if p.get("skipped"):
                outcome = f"not run ({p['skipped']})"
            share = "" if e["placed_in_pool"] is None else f" ({e['placed_in_pool']:.0%})"
            out.append(f"| {arm} | {e['ds']} | {e['served_release']} | {e['placements']}{share} | {outcome} | "
                       f"{sum(p['seconds'].values()):.0f} | {e['next_release']} |")
    ran = [(arm, e) for arm, days in r["retrain"].items() for e in days if e["pipeline"]["seconds"]]
    if ran:
        steps = list(dict.fromkeys(k for _, e in ran for k in e["pipeline"]["seconds"]))
        out += ["", "Seconds per pipeline step (the daily DAG's tasks, in the order they ran):", "",
                "| step | " + " | ".join(f"{arm} {e['ds']}" for arm, e in ran) + " |", "|---|" + "---|" * len(ran)]
        for step in steps + ["total"]:
            cells = [e["pipeline"]["seconds"].get(step) if step != "total" else sum(e["pipeline"]["seconds"].values())
                     for _, e in ran]
            out.append(f"| {step} | " + " | ".join("" if c is None else f"{c:.1f}" for c in cells) + " |")
    return out


def trajectory_lines(r: dict) -> list[str]:
    """The trajectory at days 1, 7, 14, ... and the last day (the plot has every day)."""
    if "trajectory" not in r:
        return []
    traj, n = r["trajectory"], len(r["trajectory"]["days"])
    shown = sorted({0, n - 1, *range(6, n, 7)})
    out = ["", f"## Trajectory: cumulative estimate after each test day (design / true global effect; plot: "
           f"`{report_name(r)}_trajectory.png`)", "",
           "| day | ds | " + " | ".join(f"{k} | {k} (global)" for k in HEADLINE) + " |",
           "|---|---|" + "---|---|" * len(HEADLINE)]
    for d in shown:
        cells = []
        for k in HEADLINE:
            for block in ("estimate", "global"):
                t = traj[block][k]
                cells.append(_fmt({"rel_pct": t["rel_pct"][d], "ci95_pct": [t["lo"][d], t["hi"][d]]}))
        out.append(f"| {d + 1} | {traj['days'][d]} | " + " | ".join(cells) + " |")
    return out


def summary_lines(r: dict) -> list[str]:
    """A few lines for the terminal."""
    out = [f"abtest {r['design']} {r['start']}..{r['end']} ({r['days']} days), release {r['release']}"]
    for k in HEADLINE:
        out.append(f"  {k:<14} estimate {_fmt(r['estimate'][k]):<34} global {_fmt(r['global'][k]):<34} "
                   f"bias {r['bias'][k]['bias_pp']:+.2f} pp")
    for cohort, e in r["estimate"]["ti30"].items():
        out.append(f"  ti30 {cohort:<22} estimate {_fmt(e):<34} global {_fmt(r['global']['ti30'][cohort])}"
                   + (f"  ({e['reason']})" if not e.get("available", True) else ""))
    for arm, days in (r.get("retrain") or {}).items():
        ok = sum(e["published"] for e in days)
        out.append(f"  closed loop {arm}: {ok}/{len(days)} days published a release; serving "
                   f"{days[-1]['next_release'] if days else '-'} at the end")
    return out
