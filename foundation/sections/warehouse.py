"""Config section of the analysts' DuckDB warehouse (warehouse.runner): budgets of `growthgr sql`."""

from pydantic import Field

from foundation.strict import StrictModel


class WarehouseConfig(StrictModel):
    """Budgets of one analyst query (`warehouse.runner.query`): it is stopped after `sql_timeout_s`
    seconds, may use `sql_memory_limit` of memory and `sql_threads` threads, never spills to disk
    (a query that needs more memory fails instead of filling the lake's disk), and returns at most
    `sql_row_limit` rows unless the caller asks for another limit (`growthgr sql --limit`)."""

    sql_timeout_s: float = Field(60.0, gt=0)
    sql_memory_limit: str = "2GB"
    sql_threads: int = Field(2, ge=1)
    sql_row_limit: int = Field(1000, ge=1)
