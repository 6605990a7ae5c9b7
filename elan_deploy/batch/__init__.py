"""Many inputs: planning outputs safely, the folder and Ray Data drivers, and the video pipeline.

All of them hold an Upscaler (never a runtime of their own) and report through one per-input
contract (`results`): a bad input is named with its reason, the others are written, and the run
exits 1 when any input failed.
"""

from elan_deploy.batch.plan import Job, Plan, plan_upscale
from elan_deploy.batch.results import BatchSummary, FileResult, Status

__all__ = ["BatchSummary", "FileResult", "Job", "Plan", "Status", "plan_upscale"]
