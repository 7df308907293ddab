"""groklab: a laboratory for grokking research.

    from groklab import load_config, run, load_run
    res = run("quickstart")            # trains, stores in ./runs, returns a RunRecord
    load_run(res.run_id).metrics       # pandas DataFrame, one row per evaluation
"""
__version__ = "0.1.0"

from .config import ConfigError, RunCfg, load_config, list_presets, with_overrides  # noqa: E402
from .api import run, load_run, RunRecord  # noqa: E402

__all__ = ["ConfigError", "RunCfg", "load_config", "list_presets", "with_overrides", "run", "load_run",
           "RunRecord", "__version__"]
