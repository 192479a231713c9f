-- One row per cohort item and label run (samples/itemltv_labels, Spark job); ds = last label day.
{% set columns = {
    'item_id': 'bigint', 'listing_date': 'date', 'category_id': 'integer', 'price': 'double',
    'label_window_start': 'date', 'label_window_end': 'date', 'label_orders': 'bigint',
    'label_gmv': 'double', 'label': 'double', 'y': 'double',
    'new_period_exposures': 'bigint', 'new_period_clicks': 'bigint'} %}

with source as (
    select * from {{ lake_scan('samples', 'itemltv_labels', columns) }}
),

renamed as (
    select {{ cast_columns(columns) }}
    from source
)

select
    item_id,
    listing_date as cohort_date,
    ds as label_ds,
    category_id,
    price,
    label_window_start,
    label_window_end,
    label_orders,
    label_gmv,
    label,
    y,
    new_period_exposures,
    new_period_clicks
from renamed
