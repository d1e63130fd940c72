"""Shared test settings: no W&B network, no Ray dashboard, quiet Lightning."""
import os

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("PYTHONHASHSEED", "0")
