"""Server adapters: thin I/O around the sans-I/O core (app, node, hub, connections)."""
