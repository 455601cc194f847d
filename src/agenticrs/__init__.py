"""agenticrs: a zoo of modern recommenders and agents that evolve, verify and ship them.

The Python API is `agenticrs.api` (`from agenticrs import api`; `docs/quickstart.md`):
`api.train`, `api.evaluate`, `api.score`, `api.recommend`, `api.simulate`, `api.ab_test`,
`api.evolve`, `api.history`, ... It lives in its own module rather than at the top level because
`agenticrs.train` and `agenticrs.models` are the packages of those layers.
"""

__version__ = "0.1.0"
