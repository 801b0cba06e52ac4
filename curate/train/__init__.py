"""The training feed (and the bundled model)."""
