-- One row per item and UTC day with any funnel event (curated/item_daily_stats, Spark job).
{% set columns = {
    'item_id': 'bigint', 'day': 'date', 'rank_candidates': 'bigint', 'exposures': 'bigint',
    'clicks': 'bigint', 'search_orders': 'bigint', 'search_gmv': 'double', 'site_orders': 'bigint',
    'site_gmv': 'double', 'orders': 'bigint', 'gmv': 'double'} %}

with source as (
    select * from {{ lake_scan('curated', 'item_daily_stats', columns) }}
)

select
    {{ cast_columns(columns) }}
from source
