{#
  lake_scan(zone, table, columns): a relation over the committed Parquet files of a lake table,
  every `ds` partition, with a `ds` column (hive partitioning). Each partition's committed files
  sit in one `_w<write>` folder (stale ones are deleted on commit), so a glob is exact while no
  write is in progress. When `var('lake_tables')` lists the tables that exist and this one is
  absent, the relation is empty with the given column types (so a fresh lake still builds).
  `columns` maps column name -> SQL type.
#}
{% macro lake_scan(zone, table, columns) -%}
  {%- set key = zone ~ '/' ~ table -%}
  {%- set present = var('lake_tables') -%}
  {%- if present is not none and key not in present -%}
    (select {% for name, type in columns.items() %}cast(null as {{ type }}) as {{ name }}, {% endfor %}cast(null as varchar) as ds where false)
  {%- elif target.type == 'spark' -%}
    parquet.`{{ var("lake_root") | replace("s3://", "s3a://") }}/{{ zone }}/{{ table }}/ds=*/_w*/*.parquet`
  {%- else -%}
    read_parquet('{{ var("lake_root") }}/{{ zone }}/{{ table }}/ds=*/_w*/*.parquet', hive_partitioning = true, union_by_name = true)
  {%- endif -%}
{%- endmacro %}

{# `select` list casting every column of `columns` (name -> type), plus ds as a date. #}
{% macro cast_columns(columns) -%}
  {%- for name, type in columns.items() %}
    cast({{ name }} as {{ type }}) as {{ name }},
  {%- endfor %}
    cast(ds as date) as ds
{%- endmacro %}

{# Schema names without the target prefix: staging views in `staging`, marts in `main`. #}
{% macro generate_schema_name(custom_schema_name, node) -%}
  {{ custom_schema_name if custom_schema_name else target.schema }}
{%- endmacro %}
