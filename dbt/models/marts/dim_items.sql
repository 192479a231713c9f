-- One row per item: catalog attributes and where it is in its life on the latest data day.
with items as (
    select * from {{ ref('stg_items') }}
),

latest as (
    select max(ds) as data_day from items
),

deduped as (
    select *, row_number() over (partition by item_id order by ds) as nth
    from items
)

select
    item_id,
    listing_date,
    title,
    category_id,
    category,
    brand,
    attributes,
    price,
    datediff('day', listing_date, latest.data_day) as age_days,
    datediff('day', listing_date, latest.data_day) < {{ var('new_period_days') }} as is_new
from deduped
cross join latest
where nth = 1
