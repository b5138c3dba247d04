"""Engines that distribute the per-shard unit of work (the local loop lives in scan/scanner.py)."""
