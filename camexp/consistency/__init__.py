"""Consistency across backbones: do different networks' explanations of the same correct prediction highlight
the same region? Computed over finished runs with `output: {maps: true}` (`camexp report consistency
RESULTS`); docs/guide/consistency.md, "Consistency across backbones", defines it."""
