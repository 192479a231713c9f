"""The Feast feature store over the lake (subsystem): `store` (apply, materialize, training sets,
online reads) and `offline_store` (the lake-backed Feast offline store)."""
