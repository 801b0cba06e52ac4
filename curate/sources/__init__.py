"""Source tooling: fetch, layout checks, miniatures, generated phantoms."""
