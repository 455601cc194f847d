"""The serving layer: ONNX export of CTR runs, the HTTP scoring service, online experiments
(canary rollouts) against the simulator, and the live dashboard over the knowledge layer."""
