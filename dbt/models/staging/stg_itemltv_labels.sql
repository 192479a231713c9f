-- One row per cohort item and label run (samples/itemltv_labels, Spark job); ds = last label day.
{% set columns = source_columns('samples', 'itemltv_labels') %}

with source as (
    select * from {{ source('samples', 'itemltv_labels') }}
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
