"""The model gate of a day's MultiGR, in one place: which checks, their figures, the failure messages,
and the gate's record in a release. The application stores the result like every gate
(`catalog.gate_result_key(ds, "multigr")`) and refuses to publish without it.

The checks (`gate_checks`), on the evaluation report of the day's checkpoint
(`reports/multigr/ds=<ds>/daily.json`, written by `lineage.evaluate`): the report is of the current
checkpoint (its sha256), metrics are finite, 100% of decoded SIDs are valid, every held-out day up
to ds has samples, and search Recall@10 on the held-out days is not below the serving release's by
more than `multigr.daily.max_recall_drop`.
"""

from __future__ import annotations

import json
import math
from datetime import date

from foundation import catalog
from foundation.lake import Lake
from models.checkpoint import object_write

NAME = "multigr"
SUITE = "multigr_daily"
GATE_METRIC = ("search", "recall@10")


def headline(report: dict) -> dict:
    """The deterministic part of an evaluation report (no timings): what a release manifest records."""
    keep = ("eval_days", "evaluated_days", "pending_eval_days", "missing_eval_days", "sid_snapshot", "sid_version",
            "label_window_end", "requests", "scored_requests", "metrics", "decoded_sids", "valid_sid_fraction")
    return {k: report[k] for k in keep if k in report}


def _non_finite(value, path: str = "") -> list[str]:
    if isinstance(value, bool) or value is None:
        return []
    if isinstance(value, (int, float)):
        return [] if math.isfinite(value) else [path]
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in _non_finite(v, f"{path}.{k}" if path else str(k))]
    return []


def gate_figure(report: dict | None) -> float | None:
    """The gated figure (search Recall@10) of an evaluation, None without held-out samples."""
    label, metric = GATE_METRIC
    return (report or {}).get("metrics", {}).get(label, {}).get(metric)


def gate_checks(candidate: dict, serving: dict | None, max_recall_drop: float) -> dict[str, dict]:
    """The model gate of a day's MultiGR, from its evaluation (`daily.evaluate_daily`) and, when comparable,
    the serving model's on the same held-out requests. Each check: passed, value(s), limit, details.

    finite_metrics: every metric is finite; valid_sids: the valid-SID fraction is exactly 1.0 (and
    some SID was decoded); held_out_days: every held-out day up to ds has samples; recall: search
    Recall@10 >= the serving model's - `max_recall_drop` (passes without a comparison when no
    serving model was scored or no held-out day has samples yet)."""
    bad = _non_finite({"metrics": candidate.get("metrics", {}), "valid_sid_fraction": candidate["valid_sid_fraction"]})
    fraction = candidate["valid_sid_fraction"]
    value, base = gate_figure(candidate), gate_figure(serving)
    limit = None if base is None else base - max_recall_drop
    days = candidate["evaluated_days"]
    return {
        "finite_metrics": {"passed": not bad, "non_finite": bad},
        "valid_sids": {"passed": fraction == 1.0 and candidate["decoded_sids"] > 0, "value": fraction, "limit": 1.0,
                       "decoded_sids": candidate["decoded_sids"]},
        "held_out_days": {"passed": not candidate["missing_eval_days"], "missing": candidate["missing_eval_days"],
                          "pending": candidate["pending_eval_days"]},
        "recall": {"passed": limit is None or (value is not None and value >= limit - 1e-12),
                   "metric": " ".join(GATE_METRIC), "value": value, "serving": base, "limit": limit,
                   "max_recall_drop": max_recall_drop, "days": days,
                   "skipped": None if limit is not None else ("no held-out day has samples yet" if not days
                                                               else "no serving model scored")},
    }


def report_checks(report: dict, max_recall_drop: float) -> dict[str, dict]:
    """`gate_checks` of a stored evaluation report (a skipped comparison says why the report skipped it)."""
    checks = gate_checks(report["candidate"], report["serving"], max_recall_drop)
    if checks["recall"]["skipped"] and report.get("serving_skipped"):
        checks["recall"]["skipped"] = report["serving_skipped"]
    return checks


def failure(name: str, check: dict, report: dict) -> tuple[str, str, str]:
    """(column, rule, details) of a failed check."""
    if name == "finite_metrics":
        return ",".join(check["non_finite"]), "finite", "non-finite metrics"
    if name == "valid_sids":
        return ("valid_sid_fraction", "valid_sid_fraction == 1.0",
                f"{check['value']} of {check['decoded_sids']} SIDs decoded by the constrained decoder are in "
                f"{catalog.ITEM_SIDS.key(report['candidate']['sid_snapshot'])} (limit 1.0)")
    if name == "held_out_days":
        return ("samples/gr_samples", "held_out_days",
                f"held-out days {check['missing']} of the lineage have no samples/gr_samples: run the gr_samples "
                "Spark job for them")
    return (check["metric"], "max_recall_drop",
            f"candidate {check['value']} < limit {check['limit']:.4f} = serving {check['serving']:.4f} "
            f"(release {report['serving_release']}) - max_recall_drop {check['max_recall_drop']} "
            f"on held-out days {check['days']}")


def check(lake: Lake, ds: date, max_recall_drop: float) -> dict:
    """The gate of the day's MultiGR: {"failures": [(column, rule, details)], "n_expectations",
    "writes" (the objects and partitions validated), "checks" and "report" (None when the gate
    stopped before them: a missing object, or a report of another checkpoint)}."""
    report_key, model_key = catalog.report_key(NAME, ds, "daily.json"), catalog.model_key(NAME, ds)
    if missing := [k for k in (model_key, report_key) if not lake.store.exists(k)]:
        return _stopped(("*", "report_exists", f"missing {missing}: run multigr_train and multigr_evaluate for {ds}"))
    report = json.loads(lake.store.get_bytes(report_key))
    writes = [object_write(lake, k) for k in (model_key, catalog.model_key(NAME, ds, "config.json"), report_key)]
    if writes[0]["sha256"] != report["checkpoint_sha256"]:
        return _stopped(("checkpoint_sha256", "report_of_current_checkpoint",
                         f"{report_key} evaluated checkpoint {report['checkpoint_sha256'][:12]}, but {model_key} "
                         f"is {writes[0]['sha256'][:12]}: run multigr_evaluate again"), writes)
    checks = report_checks(report, max_recall_drop)
    failures = [failure(name, c, report) for name, c in checks.items() if not c["passed"]]
    return {"failures": failures, "n_expectations": len(checks) + 1, "writes": writes + report["candidate"]["inputs"],
            "checks": checks, "report": report}


def _stopped(failure: tuple[str, str, str], writes: list[dict] | None = None) -> dict:
    return {"failures": [failure], "n_expectations": 1, "writes": writes or [], "checks": None, "report": None}


def summary(gate: dict) -> dict:
    """What the gate step returns of a passed gate."""
    checks = gate["checks"]
    return {"gate": NAME, "checks": {name: c["passed"] for name, c in checks.items()},
            "recall": {k: checks["recall"][k] for k in ("metric", "value", "serving", "limit", "skipped")},
            "serving_release": gate["report"]["serving_release"]}


def release_record(report: dict, max_recall_drop: float, passed: bool) -> tuple[dict, dict]:
    """(metrics, gate record) of the day's MultiGR in a release: the deterministic part of its evaluation
    report (no timings, no serving figures: a re-run of the day publishes identical content), and the
    gate's comparison with the serving release."""
    metrics = {**headline(report["candidate"]), **{k: report[k] for k in (
        "mode", "lineage_start", "init_release", "train_days", "checkpoint_sha256")}}
    gate = {"passed": passed, "recall": report_checks(report, max_recall_drop)["recall"],
            "serving_release": report["serving_release"],
            "serving": report["serving"] and headline(report["serving"])}
    return metrics, gate
