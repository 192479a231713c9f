-- Grain: cohort (listing day). Size and label distribution of every closed new-item cohort.
with labels as (
    select * from {{ ref('fct_itemltv_labels') }}
)

select
    cohort_date,
    max(label_ds) as label_ds,
    cast(count(*) as bigint) as n_items,
    cast(sum(case when has_orders then 1 else 0 end) as bigint) as n_items_with_orders,
    avg(case when has_orders then 1.0 else 0.0 end) as share_with_orders,
    cast(sum(label_orders) as bigint) as label_orders,
    avg(label) as mean_label,
    quantile_cont(label, 0.5) as p50_label,
    quantile_cont(label, 0.9) as p90_label,
    max(label) as max_label,
    avg(y) as mean_y,
    cast(sum(new_period_clicks) as bigint) as new_period_clicks,
    cast(sum(new_period_exposures) as bigint) as new_period_exposures
from labels
group by cohort_date
