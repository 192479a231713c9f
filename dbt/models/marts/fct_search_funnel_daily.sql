-- Grain: category x day. The search funnel per item category and UTC day: requests (by intent
-- category), exposures, clicks, orders, GMV, CTR, CVR and the page-view ratio of new items
-- (share of exposures on items aged 0..29 days).
with stats as (
    select * from {{ ref('stg_item_daily_stats') }}
),

items as (
    select item_id, category_id, listing_date from {{ ref('dim_items') }}
),

requests as (
    select intent_category_id as category_id, request_day as day, count(*) as requests
    from {{ ref('stg_search_requests') }}
    group by 1, 2
),

item_days as (
    select
        items.category_id,
        stats.day,
        stats.exposures,
        stats.clicks,
        stats.search_orders,
        stats.orders,
        stats.gmv,
        datediff('day', items.listing_date, stats.day) < {{ var('new_period_days') }} as is_new
    from stats
    inner join items using (item_id)
),

funnel as (
    select
        category_id,
        day,
        cast(sum(exposures) as bigint) as exposures,
        cast(sum(clicks) as bigint) as clicks,
        cast(sum(search_orders) as bigint) as search_orders,
        cast(sum(orders) as bigint) as orders,
        sum(gmv) as gmv,
        cast(sum(case when is_new then exposures else 0 end) as bigint) as new_item_exposures
    from item_days
    group by 1, 2
)

select
    funnel.category_id,
    funnel.day,
    coalesce(requests.requests, 0) as requests,
    funnel.exposures,
    funnel.clicks,
    funnel.search_orders,
    funnel.orders,
    funnel.gmv,
    case when funnel.exposures > 0 then funnel.clicks / funnel.exposures else 0.0 end as ctr,
    case when funnel.clicks > 0 then funnel.search_orders / funnel.clicks else 0.0 end as cvr,
    case when funnel.exposures > 0 then funnel.new_item_exposures / funnel.exposures else 0.0 end as new_item_pvr
from funnel
left join requests using (category_id, day)
