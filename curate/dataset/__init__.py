"""Whole-dataset steps: decisions, dedup, linking, split, shards (plain functions)."""
