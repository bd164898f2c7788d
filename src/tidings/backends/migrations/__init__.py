"""Ordered schema migrations of the SQL stores, one tuple per backend.

`MIGRATIONS[i]` takes a database from schema version `i` to `i + 1`. Never edit a
migration that has shipped: append a new one. The SQL lives in Python strings (not
`.sql` files) so it ships inside the package without package-data rules.
"""
