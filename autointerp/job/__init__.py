"""job: unattended labelling runs (nightly, under cron or a scheduler): a TOML config, budgets, a lock per
store, a run ledger, JSON logs and exit codes a scheduler can act on."""

from .config import JobConfig, load_config
from .run import EXIT, JobResult, run_job

__all__ = ["EXIT", "JobConfig", "JobResult", "load_config", "run_job"]
