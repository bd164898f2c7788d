"""The sans-I/O core: rules, snapshot folding, presence, ordering, rate limits. No awaits."""
