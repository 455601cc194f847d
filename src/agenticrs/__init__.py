"""agenticrs: a zoo of modern recommenders and agents that evolve, verify and ship them."""

__version__ = "0.1.0"
