-- One row per item and UTC day with any funnel event (curated/item_daily_stats, Spark job).
{% set columns = source_columns('curated', 'item_daily_stats') %}

with source as (
    select * from {{ source('curated', 'item_daily_stats') }}
)

select
    {{ cast_columns(columns) }}
from source
