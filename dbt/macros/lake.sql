{#
  lake_scan(zone, table, columns): a relation over the committed Parquet files of a lake table,
  every `ds` partition, with a `ds` column (hive partitioning: each file's path holds `ds=...`).
  The files are the lake's own list (`Lake.committed_files`), passed by `growthgr dbt build` as
  `var('lake_files')` ("zone/table" -> file URLs): never a glob, so files of uncommitted or
  crashed writes and stray copies of a partition folder are not read. A table with no files is
  an empty relation with the given column types (a fresh lake still builds). Without the var
  (e.g. a plain `dbt parse`) the relation is empty too, and running it is an error.
  An `s3://` lake on DuckDB (no httpfs extension): `growthgr dbt build` copies exactly those
  files into `<var('lake_mirror')>."zone__table"` first, and the relation is that table.
  `columns` maps column name -> SQL type.
  The files are read during the build only. A model that calls this must not be a view (refused):
  a view would keep naming the files, and an overwrite deletes the files it replaced after the
  lake's grace period (`foundation/lake.py`). The staging models are tables (`dbt_project.yml`):
  a snapshot of the committed data at build time; a partition written or rewritten later appears
  at the next build.
#}
{% macro lake_scan(zone, table, columns) -%}
  {%- set lake_files = var('lake_files') -%}
  {%- if lake_files is none and execute -%}
    {{ exceptions.raise_compiler_error("var 'lake_files' is not set: build through `growthgr dbt build`, which passes the lake's committed files") }}
  {%- endif -%}
  {%- if execute and config.get('materialized') == 'view' -%}
    {{ exceptions.raise_compiler_error("lake_scan in a view: the view would name lake files that an overwrite deletes; materialize the model as a table") }}
  {%- endif -%}
  {%- set files = (lake_files or {}).get(zone ~ '/' ~ table, []) -%}
  {%- if not files -%}
    (select {% for name, type in columns.items() %}cast(null as {{ type }}) as {{ name }}, {% endfor %}cast(null as varchar) as ds where false)
  {%- elif var('lake_mirror', none) and target.type == 'duckdb' -%}
    {{ var('lake_mirror') }}."{{ zone ~ '__' ~ table }}"
  {%- elif target.type == 'spark' -%}
    {#- Hadoop globs expand {a,b} (also across `/`); the documented production target, not run here -#}
    parquet.`{{ '{' ~ (files | join(',') | replace("s3://", "s3a://")) ~ '}' }}`
  {%- else -%}
    read_parquet([{% for f in files %}'{{ f | replace("'", "''") }}'{{ ', ' if not loop.last }}{% endfor %}], hive_partitioning = true, union_by_name = true)
  {%- endif -%}
{%- endmacro %}

{# `select` list casting every column of `columns` (name -> type), plus ds as a date. #}
{% macro cast_columns(columns) -%}
  {%- for name, type in columns.items() %}
    cast({{ name }} as {{ type }}) as {{ name }},
  {%- endfor %}
    cast(ds as date) as ds
{%- endmacro %}

{# Schema names without the target prefix: staging tables in `staging`, marts in `main`. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ custom_schema_name if custom_schema_name else target.schema }}
{%- endmacro %}
