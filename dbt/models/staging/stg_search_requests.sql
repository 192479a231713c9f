-- One row per search request (raw/search_requests), with its UTC day.
{% set columns = {
    'request_id': 'bigint', 'user_id': 'bigint', 'ts': 'timestamptz', 'query_text': 'varchar',
    'intent_category_id': 'integer'} %}

with source as (
    select * from {{ lake_scan('raw', 'search_requests', columns) }}
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
