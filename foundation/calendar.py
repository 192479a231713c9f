"""The label calendar: the one definition of the new-item period and the label window.

Day numbering used everywhere (DESIGN.md section 1): the listing day is day 0, the new-item
period is days 0..29, the label window days 30..36. The cohort whose label window ends on `ds`
was listed on `ds - COHORT_OFFSET`. Spark jobs, the simulator's truth, the GX suites, the
models and dbt (as project vars, `dbt_vars()`) all read these names; nothing restates the numbers.
"""

from __future__ import annotations

from datetime import date, timedelta

NEW_ITEM_DAYS = 30                                   # days 0..29 after listing are "new"
LABEL_DAYS = 7                                       # days 30..36: the label window
COHORT_OFFSET = NEW_ITEM_DAYS + LABEL_DAYS - 1       # 36: listing day -> last label day
LABEL_WINDOW = range(NEW_ITEM_DAYS, COHORT_OFFSET + 1)   # the label days as listing ages


def cohort_listing_day(ds: date) -> date:
    """The listing day of the cohort whose label window ends on `ds`."""
    return ds - timedelta(days=COHORT_OFFSET)


def is_new(age_days: int) -> bool:
    return 0 <= age_days < NEW_ITEM_DAYS


def dbt_vars() -> dict[str, int]:
    """The calendar as dbt project vars (`--vars`), so the marts use the same numbers."""
    return {"new_period_days": NEW_ITEM_DAYS, "label_days": LABEL_DAYS, "cohort_offset": COHORT_OFFSET}
