-- Grain: item x cohort (listing day). The retrospective ItemLTV label of every closed cohort:
-- label = mean daily orders over days 30..36 after listing, y = log1p(label).
with labels as (
    select * from {{ ref('stg_itemltv_labels') }}
),

items as (
    select item_id, category, brand from {{ ref('dim_items') }}
)

select
    labels.item_id,
    labels.cohort_date,
    labels.label_ds,
    labels.category_id,
    items.category,
    items.brand,
    labels.price,
    labels.label_window_start,
    labels.label_window_end,
    datediff('day', labels.cohort_date, labels.label_window_start) as label_start_day,
    datediff('day', labels.cohort_date, labels.label_window_end) as label_end_day,
    labels.label_orders,
    labels.label_gmv,
    labels.label,
    labels.y,
    labels.label_orders > 0 as has_orders,
    labels.new_period_exposures,
    labels.new_period_clicks,
    case when labels.new_period_exposures > 0
         then labels.new_period_clicks / labels.new_period_exposures end as new_period_ctr
from labels
left join items using (item_id)
