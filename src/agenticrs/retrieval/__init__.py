"""The retrieval stage: candidates from the whole catalogue (docs/retrieval.md).

Two-tower retrieval trained through the one engine (`two_tower.py`, `train.py`), popularity and
co-occurrence baselines and the vector view of SASRec (`baselines.py`), the FAISS index
(`index.py`), the simulator's ground truth of what a user would click or buy
(`ground_truth.py`) and retrieval -> ranking pipelines served in the simulator (`pipeline.py`).
"""
