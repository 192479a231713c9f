-- One row per search request (raw/search_requests), with its UTC day.
{% set columns = source_columns('raw', 'search_requests') %}

with source as (
    select * from {{ source('raw', 'search_requests') }}
),

renamed as (
    select {{ cast_columns(columns) }}
    from source
)

select
    request_id,
    user_id,
    ts as requested_at,
    cast(timezone('UTC', ts) as date) as request_day,
    query_text,
    intent_category_id,
    ds
from renamed
