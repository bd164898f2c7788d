"""Storage and broker backends behind small interfaces (see `base`)."""
