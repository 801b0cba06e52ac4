"""Recipe and source models, record schemas, errors: imports nothing else in curate."""
