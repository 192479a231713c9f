-- One row per catalog row of raw/items (an item appears once, on its listing day or on the first day).
{% set columns = source_columns('raw', 'items') %}

with source as (
    select * from {{ source('raw', 'items') }}
)

select
    {{ cast_columns(columns) }}
from source
