"""Generative recommendation: sequences, semantic-ID tokenizers, sequential and generative models,
constrained decoding and leave-one-out evaluation (contracts in `gr/base.py`)."""
