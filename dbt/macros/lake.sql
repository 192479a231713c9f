{#
  load_lake_sources(): the project's `on-run-start` hook. Replaces every source table
  (`<zone>.<table>`, models/staging/_sources.yml) with exactly the committed Parquet files of that
  lake table, every `ds` partition, with a `ds` column (hive partitioning: each file's path holds
  `ds=...`). The files are the lake's own list (`Lake.committed_files`), passed by
  `growthgr dbt build` as `var('lake_files')` ("zone/table" -> file URLs): never a glob, so files
  of uncommitted or crashed writes and stray copies of a partition folder are not read. A table
  with no files becomes an empty table with the source's column types (a fresh lake still builds).
  The source tables are copies made at the start of the run: no relation of the warehouse names a
  lake file (an overwrite deletes the files it replaced after the lake's grace period,
  `foundation/lake.py`); a partition written or rewritten later appears at the next build.
  An `s3://` lake on DuckDB (no httpfs extension): `growthgr dbt build` has already copied exactly
  those files into the source tables (var `lake_mirror` true); only empty tables are made here.
  Without the var `lake_files` (e.g. a plain `dbt build`) the hook refuses to run.
#}
{% macro load_lake_sources() -%}
  {%- if execute -%}
    {%- set lake_files = var('lake_files') -%}
    {%- if lake_files is none -%}
      {{ exceptions.raise_compiler_error("var 'lake_files' is not set: build through `growthgr dbt build`, which passes the lake's committed files") }}
    {%- endif -%}
    {%- for source in graph.sources.values() if source.package_name == project_name -%}
      {%- set files = lake_files.get(source.source_name ~ '/' ~ source.name, []) -%}
      {%- do run_query('create schema if not exists ' ~ source.schema) -%}
      {%- if not files -%}
        {%- do run_query(lake_empty_table(source)) -%}
      {%- elif not var('lake_mirror', false) -%}
        {%- do lake_copy_table(source, files) -%}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
  select 1
{%- endmacro %}

{# Replace the table of `source` with a copy of `files` (file URLs of one lake table). #}
{% macro lake_copy_table(source, files) -%}
  {%- set relation = source.schema ~ '.' ~ source.name -%}
  {%- if target.type == 'spark' -%}
    {#- Hadoop globs expand {a,b} (also across `/`); the documented production target, not run here -#}
    {%- do run_query('drop table if exists ' ~ relation) -%}
    {%- do run_query('create table ' ~ relation ~ ' using parquet as select * from parquet.`{'
                     ~ (files | join(',') | replace("s3://", "s3a://")) ~ '}`') -%}
  {%- else -%}
    {%- set quoted = [] -%}
    {%- for f in files -%}{%- do quoted.append("'" ~ (f | replace("'", "''")) ~ "'") -%}{%- endfor -%}
    {%- do run_query('create or replace table ' ~ relation ~ ' as select * from read_parquet(['
                     ~ (quoted | join(', ')) ~ '], hive_partitioning = true, union_by_name = true)') -%}
  {%- endif -%}
{%- endmacro %}

{# `create table` of `source` with no rows and the source's column types (`ds` a date). #}
{% macro lake_empty_table(source) -%}
  create or replace table {{ source.schema }}.{{ source.name }} as
  select {% for name, type in source_columns(source.source_name, source.name).items() %}cast(null as {{ type }}) as {{ name }}, {% endfor %}cast(null as date) as ds
  where false
{%- endmacro %}

{#
  source_columns(source_name, table_name): column name -> SQL type of a lake source, as declared in
  models/staging/_sources.yml (`data_type`), without the partition column `ds`. The one definition
  of the types the staging models cast to. Empty while parsing (the graph is not loaded yet).
#}
{% macro source_columns(source_name, table_name) -%}
  {%- set columns = {} -%}
  {%- if execute -%}
    {%- set node = graph.sources['source.' ~ project_name ~ '.' ~ source_name ~ '.' ~ table_name] -%}
    {%- for name, column in node.columns.items() if name != 'ds' -%}
      {%- do columns.update({name: column.data_type}) -%}
    {%- endfor -%}
  {%- endif -%}
  {{ return(columns) }}
{%- endmacro %}

{# `select` list casting every column of `columns` (name -> type), plus ds as a date. #}
{% macro cast_columns(columns) -%}
  {%- for name, type in columns.items() %}
    cast({{ name }} as {{ type }}) as {{ name }},
  {%- endfor %}
    cast(ds as date) as ds
{%- endmacro %}

{#
  Source freshness measured from the run's day, not the wall clock (the simulated world lives in
  2026-01..03): `snapshotted_at` is midnight UTC of `var('as_of')` (the pipeline's ds, passed by
  `growthgr dbt freshness` / the `dbt_build` step), so the age of a source is `as_of` minus its
  newest `loaded_at_field` (the newest partition day). Overrides dbt's `collect_freshness` on DuckDB.
#}
{% macro duckdb__collect_freshness(source, loaded_at_field, filter) %}
  {%- if var('as_of', none) is none -%}
    {{ exceptions.raise_compiler_error("var 'as_of' is not set: run freshness through `growthgr dbt freshness --ds D`, which measures the age from the run's day") }}
  {%- endif -%}
  {% call statement('collect_freshness', fetch_result=True, auto_begin=False) -%}
    select
      max({{ loaded_at_field }}) as max_loaded_at,
      cast(date '{{ var("as_of") }}' as timestamp) as snapshotted_at
    from {{ source }}
    {% if filter %}
    where {{ filter }}
    {% endif %}
  {% endcall %}
  {{ return(load_result('collect_freshness')) }}
{% endmacro %}

{# Schema names without the target prefix: staging tables in `staging`, marts in `main`. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ custom_schema_name if custom_schema_name else target.schema }}
{%- endmacro %}
