"""Online river models of stage 1: an anomaly detector and a delayed-label fraud classifier."""
