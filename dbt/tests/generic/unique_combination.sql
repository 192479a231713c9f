{#- The grain test: no two rows share the same values of `columns`. Fails with one row per
    duplicated key, so the dbt message names how many keys are duplicated. -#}
{% test unique_combination(model, columns) %}
select {{ columns | join(', ') }}, count(*) as n_rows
from {{ model }}
group by {{ columns | join(', ') }}
having count(*) > 1
{% endtest %}
