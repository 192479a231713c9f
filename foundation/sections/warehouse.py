"""Config section of the analysts' DuckDB warehouse (warehouse.runner): budgets of `growthgr sql`,
freshness thresholds of the lake sources."""

from pydantic import Field

from foundation.strict import StrictModel


class WarehouseConfig(StrictModel):
    """Budgets of one analyst query (`warehouse.runner.query`): it is stopped after `sql_timeout_s`
    seconds, may use `sql_memory_limit` of memory and `sql_threads` threads, never spills to disk
    (a query that needs more memory fails instead of filling the lake's disk), and returns at most
    `sql_row_limit` rows unless the caller asks for another limit (`growthgr sql --limit`).
    Source freshness (`dbt source freshness` in the `dbt_build` step): the age of a lake source is
    the run's day minus its newest partition day."""

    sql_timeout_s: float = Field(60.0, gt=0)
    sql_memory_limit: str = "2GB"
    sql_threads: int = Field(2, ge=1)
    sql_row_limit: int = Field(1000, ge=1)
    # A lake source whose newest partition is more than this many days before the run's day warns.
    freshness_warn_after_days: int = Field(0, ge=0)
    # ... and fails the dbt step (`dbt source freshness` error) when more than this many days.
    freshness_error_after_days: int = Field(1, ge=0)
