"""Clips: the in-memory record, the shard schema, synthetic generation, TACO conversion, shards."""
