"""`vlmaudit calibrate`: thresholds from stored scores and human labels (no rescan)."""
