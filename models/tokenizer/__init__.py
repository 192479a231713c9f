"""Item tokenizer: item text -> all-MiniLM-L6-v2 vector -> RQ-VAE semantic ID (SID).

Modules:
- `embed`: offline text encoder, incremental `curated/item_embeddings` (`embed_new_items`).
- `rqvae`: the Lightning RQ-VAE (`train_rqvae`), safetensors (de)serialisation.
- `sids`: `fit` (new SID version) / `assign` (frozen model, new items only) of `curated/item_sids`,
  `build_trie` for any item set.
- `trie`: `SidTrie`, the dense prefix trie used by constrained beam search.
- `metrics`: collisions, per-level usage/perplexity, purity, prefix sharing.
- `cli`: `growthgr tokenizer embed|fit|assign|report`.
"""
