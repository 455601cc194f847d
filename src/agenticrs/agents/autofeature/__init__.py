"""AutoFeature: the agent that profiles a data set and proposes feature actions.

`profile` measures each field (cardinality, coverage, mutual information with the label, drift,
leakage); the proposer and the feature actions build on it.
"""
