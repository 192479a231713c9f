"""PySpark jobs of the daily run (DESIGN.md section 2): extract -> pure transform -> load,
each overwriting exactly its `ds` partition.

| job (module) | output zone/table(s) |
|---|---|
| `item_daily_stats` | curated/item_daily_stats |
| `features` | features/user_features, features/item_features, features/query_features |
| `gr_samples` | samples/gr_samples |
| `itemltv_labels` | samples/itemltv_labels, samples/itemltv_samples |

Entry points: `spark_jobs.jobs.run_job / run_all / backfill` (CLI: `growthgr spark <job>
--ds D` or `--start A --end B`; `<job>` may be `all`). Columns are documented in each module.
"""
