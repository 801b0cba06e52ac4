"""Reports from per-shard aggregates: validation, verify, data card, figures, Croissant."""
