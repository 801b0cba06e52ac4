"""Scores later stages give each sample (quality.scores): an LLM judge of its text
(`judge`) and a trained bundled-model run's image-text alignment (`alignment`).
`stage` wires them into the build; see docs/scores.md."""
