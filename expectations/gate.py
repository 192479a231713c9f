"""The gate runner: validate one dataset for one `ds`, summarise failures, store results and Data Docs.

    result = validate(settings.gates_config(), lake, "raw", "2026-01-05")     # every raw table
    result = validate(settings.gates_config(), lake, "clicks", "2026-01-05")  # one table
    if not result.passed: print(result.summary())

Datasets: `raw` (all raw tables), `labels` (itemltv_labels + itemltv_samples), `features` (the
three feature tables), `pool`, `sids`, or any single table name. Results go to the lake as
`validation/gate_results/ds=<ds>/<dataset>.json`, Data Docs (GX HTML) to
`validation/data_docs/<dataset>/ds=<ds>/index.html` (a re-run replaces the site: one validation
page per suite). GX's index lists the validations with scripts from CDNs, so offline they are read
in `growthgr report`'s gate tables, which link each suite's validation page.

A result names the write it validated: `writes` holds the write id of every partition, taken
before it is read (`Lake.commit_info`), so a partition rewritten during or after the gate no
longer matches and publish refuses the result. The stored result is overwritten with a
`running` one (not passed) before validating, so a crash mid-gate never leaves an earlier pass.
The raw gate also reports entries of a raw table's folder that are not partitions (rule
`unknown_entry`: a stray copy such as `ds=2026-02-14 (copy)`; readers ignore them).

GX runs in an ephemeral context per call (suites are rebuilt from code with `add_or_update`, so
re-runs are idempotent and concurrent gates never share a context file).
"""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

from expectations import frames, suites
from foundation import catalog
from foundation.lake import Lake
from foundation.schemas import RAW_TABLES
from foundation.sections.gates import GatesConfig

log = logging.getLogger(__name__)

Builder = Callable[[Lake, str, GatesConfig], suites.TableCheck]

TABLE_BUILDERS: dict[str, Builder] = {
    **{t: (lambda lake, ds, cfg, t=t: suites.raw_check(lake, t, ds, cfg)) for t in RAW_TABLES},
    "itemltv_labels": lambda lake, ds, cfg: suites.labels_check(lake, ds, cfg),
    "itemltv_samples": lambda lake, ds, cfg: suites.samples_check(lake, ds, cfg),
    **{t: (lambda lake, ds, cfg, t=t: suites.feature_check(lake, t, ds, cfg)) for t in suites.FEATURE_KEYS},
    "new_item_pool": lambda lake, ds, cfg: suites.pool_check(lake, ds, cfg, cfg.pool_max_size),
    "item_sids": lambda lake, ds, cfg: suites.sids_check(lake, ds, cfg, cfg.sid_codebook_size,
                                                         cfg.sid_max_collision_rate),
}
DATASETS: dict[str, tuple[str, ...]] = {
    "raw": RAW_TABLES,
    "labels": ("itemltv_labels", "itemltv_samples"),
    "features": tuple(suites.FEATURE_KEYS),
    "pool": ("new_item_pool",),
    "sids": ("item_sids",),
    **{t: (t,) for t in TABLE_BUILDERS},
}
ZONE_OF: dict[str, str] = {
    **{t: "raw" for t in RAW_TABLES},
    **{d.table: d.zone for d in (catalog.ITEMLTV_LABELS, catalog.ITEMLTV_SAMPLES, *catalog.FEATURE_TABLES.values(),
                                 catalog.NEW_ITEM_POOL, catalog.ITEM_SIDS)},
}


@dataclass(frozen=True)
class Failure:
    """One failed rule: which table, partition, column, rule, and what was observed."""

    table: str
    partition: str
    column: str
    rule: str
    details: str

    def line(self) -> str:
        return f"FAIL {self.table} [{self.partition}] column={self.column} rule={self.rule}: {self.details}"


@dataclass
class GateResult:
    dataset: str
    ds: date
    passed: bool
    failures: list[Failure] = field(default_factory=list)
    suites: list[str] = field(default_factory=list)
    n_expectations: int = 0
    writes: list[dict] = field(default_factory=list)   # {zone, table, ds, write_id} of each partition validated
    results_uri: str = ""
    data_docs_uri: str = ""

    def summary(self) -> str:
        head = (f"gate {self.dataset} ds={self.ds}: {'PASSED' if self.passed else 'FAILED'} "
                f"({len(self.suites)} suites, {self.n_expectations} expectations, {len(self.failures)} failed)")
        return "\n".join([head, *(f.line() for f in self.failures)])


def validate(cfg: GatesConfig, lake: Lake, dataset: str, ds: date, *, build_docs: bool | None = None) -> GateResult:
    """Run the suites of `dataset` on partition `ds`; store results and (optionally) Data Docs.
    `cfg` is the effective gates section (`Settings.gates_config()`)."""
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; choose from {', '.join(DATASETS)}")
    _store_results(lake, GateResult(dataset, ds, False), status="running")
    writes = _current_writes(lake, DATASETS[dataset], ds)
    with frames.shared_reads():
        checks = [TABLE_BUILDERS[t](lake, ds, cfg) for t in DATASETS[dataset]]
    failures, n_exp, docs_dir = _run_gx(checks, build_docs=cfg.build_data_docs if build_docs is None else build_docs)
    failures += _unknown_entries(lake, DATASETS[dataset])
    result = GateResult(dataset, ds, not failures, failures, [c.suite_name for c in checks], n_exp, writes)
    result.results_uri = _store_results(lake, result)
    if docs_dir is not None:
        result.data_docs_uri = _upload_docs(lake, docs_dir, dataset, ds)
        shutil.rmtree(docs_dir, ignore_errors=True)
    log.info("gate %s ds=%s: %s, %d failures", dataset, ds, "passed" if result.passed else "FAILED", len(failures))
    return result


def _current_writes(lake: Lake, tables: tuple[str, ...], ds: date) -> list[dict]:
    """The committed write of each existing partition about to be validated."""
    return [{"zone": ZONE_OF[t], "table": t, "ds": f"{ds}", "write_id": lake.commit_info(ZONE_OF[t], t, ds).write_id}
            for t in tables if lake.exists(ZONE_OF[t], t, ds)]


def _unknown_entries(lake: Lake, tables: tuple[str, ...]) -> list[Failure]:
    """Entries of a raw table's folder that are not `ds=YYYY-MM-DD` partitions."""
    return [Failure(f"raw.{t}", entry, "*", "unknown_entry",
                    f"raw/{t}/{entry} is not a ds=YYYY-MM-DD partition (readers ignore it): move or delete it")
            for t in tables if ZONE_OF[t] == "raw" for entry in lake.unknown_entries("raw", t)]


def _run_gx(checks: list[suites.TableCheck], build_docs: bool) -> tuple[list[Failure], int, Path | None]:
    import great_expectations as gx
    from great_expectations.data_context.types.base import DataContextConfig, InMemoryStoreBackendDefaults

    # In-memory stores and no default docs site (it would leave a temp folder per call).
    config = DataContextConfig(store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False))
    context = gx.get_context(mode="ephemeral", project_config=config)
    context.variables.progress_bars = {"globally": False}
    source = context.data_sources.add_or_update_pandas("lake")
    failures: list[Failure] = []
    n_exp = 0
    for check in checks:
        if check.frame is None:
            failures.append(Failure(check.suite_name, f"ds={check.ds}", "*", "partition_exists",
                                    "no committed partition"))
            continue
        asset = source.add_dataframe_asset(check.suite_name)
        batch = asset.add_batch_definition_whole_dataframe(f"ds={check.ds}")
        suite = context.suites.add_or_update(gx.ExpectationSuite(name=check.suite_name, expectations=check.expectations))
        definition = context.validation_definitions.add_or_update(
            gx.ValidationDefinition(name=f"{check.suite_name}:ds={check.ds}", data=batch, suite=suite))
        outcome = definition.run(batch_parameters={"dataframe": check.frame})
        n_exp += len(outcome.results)
        failures += [_failure(check, r) for r in outcome.results if not r.success]
    return failures, n_exp, _build_docs(context) if build_docs else None


def _failure(check: suites.TableCheck, r) -> Failure:
    meta = r.expectation_config.meta or {}
    column = meta.get("column", "*")
    details = _details(r)
    derived = r.expectation_config.kwargs.get("column", "")
    if derived.startswith(("_check_drift_", "_check_price_change_")) and check.frame is not None:
        details = _history_details(check.frame[derived].iloc[0], derived, column, r.expectation_config.kwargs)
    elif derived.startswith("_check_") and check.frame is not None:
        details = _derived_details(check.frame, derived, column)
    elif r.expectation_config.type == "expect_column_to_exist":
        details = f"column missing; present: {sorted(c for c in check.frame.columns if not c.startswith('_check_'))}"
    return Failure(check.suite_name, f"ds={check.ds}", column, meta.get("rule", r.expectation_config.type), details)


def _history_details(value: float, check_column: str, column: str, kw: dict) -> str:
    """For a rule against the previous days: the day's value and what those days allow."""
    if check_column.startswith("_check_price_change_"):
        return (f"{value:.1%} of the items ordered today and on the previous days moved their median {column} "
                f"by more than gates.price_change_max_rel; at most {kw['max_value']:.1%} may")
    return (f"quantile {check_column.rsplit('_q', 1)[1]} of {column} is {value:.4g}; "
            f"the previous days allow [{kw['min_value']:.4g}, {kw['max_value']:.4g}]")


def _derived_details(frame, check_column: str, column: str) -> str:
    """For a cross-table rule: how many rows break it, with the data columns of the first few."""
    bad = frame.loc[frame[check_column] != True]  # noqa: E712 (nullable booleans)
    cols = [c for c in column.split(",") if c in frame.columns]
    sample = bad[cols].head(3).to_dict("records") if cols else []
    return f"{len(bad)} of {len(frame)} rows break the rule, e.g. {sample}"


def _details(r) -> str:
    """A short human-readable account of what GX observed."""
    if r.exception_info and r.exception_info.get("raised_exception"):
        return "error: " + str(r.exception_info.get("exception_message", ""))[:160]
    res = r.result or {}
    if "unexpected_count" in res:
        sample = [str(v) for v in (res.get("partial_unexpected_list") or [])[:3]]
        return (f"{res['unexpected_count']} of {res.get('element_count', '?')} rows unexpected "
                f"({res.get('unexpected_percent', 0):.2f}%), e.g. {sample}")
    if "details" in res and isinstance(res["details"], dict) and "mismatched" in res["details"]:
        return f"columns mismatched: {res['details']['mismatched']}"
    kwargs = {k: v for k, v in r.expectation_config.kwargs.items() if k not in ("batch_id", "column")}
    return f"observed {res.get('observed_value')!r}, expected {kwargs}"[:300]


def _build_docs(context) -> Path:
    """Render GX Data Docs of this context's suites and validation results into a temp folder."""
    out = Path(tempfile.mkdtemp(prefix="gx_docs_"))
    context.add_data_docs_site(site_name="lake", site_config={
        "class_name": "SiteBuilder",
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(out)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    context.build_data_docs(site_names=["lake"])
    return out


def _upload_docs(lake: Lake, docs_dir: Path, dataset: str, ds: date) -> str:
    """Copy the rendered site to the gate's Data Docs prefix, then delete what an earlier run of the
    gate left there (its validation pages), so the prefix holds exactly this run's site."""
    prefix = catalog.data_docs_prefix(dataset, ds)
    written = set()
    for path in sorted(p for p in docs_dir.rglob("*") if p.is_file()):
        key = f"{prefix}/{path.relative_to(docs_dir).as_posix()}"
        lake.store.put_bytes(key, path.read_bytes())
        written.add(key)
    for key in sorted(set(lake.store.list(prefix + "/")) - written):
        lake.store.delete(key)
    return lake.store.url(f"{prefix}/index.html")


def store_result(lake: Lake, result: GateResult, status: str = "done") -> str:
    """Store a gate result computed outside GX (the model gates) exactly as `validate` stores its own."""
    return _store_results(lake, result, status)


def _store_results(lake: Lake, result: GateResult, status: str = "done") -> str:
    key = catalog.gate_result_key(result.ds, result.dataset)
    payload = {**asdict(result), "status": status, "validated_at": datetime.now(UTC).isoformat()}
    payload.pop("results_uri"), payload.pop("data_docs_uri")
    lake.store.put_bytes(key, json.dumps(payload, indent=1, default=str).encode())
    return lake.store.url(key)
