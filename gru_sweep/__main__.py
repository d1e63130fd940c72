"""`python -m gru_sweep +experiment=NAME [overrides]`: one run, or the sweep the config declares."""
from __future__ import annotations

import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from gru_sweep.errors import ConfigError, SweepInterrupted

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> None:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        if cfg.sweep.name != "none":
            from gru_sweep.tune import run_sweep

            run_sweep(cfg)
        else:
            from gru_sweep.run import train_run

            train_run(cfg, out_dir)
    except ConfigError as err:
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # leave nothing behind that looks like a result
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    except SweepInterrupted as stopped:  # Ctrl-C: the summary is written; say how to resume
        print(stopped, file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
