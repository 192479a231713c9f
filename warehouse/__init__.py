"""The dbt warehouse (subsystem): `runner` builds the DuckDB marts of `dbt/` and answers analyst SQL."""
