"""The agent layer: knowledge store, AutoTrain, EnsNAS, proposers, coordinator."""
