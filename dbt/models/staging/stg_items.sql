-- One row per catalog row of raw/items (an item appears once, on its listing day or on the first day).
{% set columns = {
    'item_id': 'bigint', 'listing_date': 'date', 'title': 'varchar', 'category_id': 'integer',
    'category': 'varchar', 'brand': 'varchar', 'attributes': 'varchar', 'price': 'double'} %}

with source as (
    select * from {{ lake_scan('raw', 'items', columns) }}
)

select
    {{ cast_columns(columns) }}
from source
