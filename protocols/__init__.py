"""Lab protocols: each a config dataclass plus a run function over any Device."""
