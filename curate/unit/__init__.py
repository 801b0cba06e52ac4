"""Per-unit work on workers: normalize, ground, score, commit; experts; text."""
