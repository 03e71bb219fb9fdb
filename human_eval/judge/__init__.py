"""A local judging session: raters compare two settings' images of one caption and every answer
is appended to the judgments CSV `human_eval.judgments` reads (GLIDE appendix A.1).

    catalog = Catalog(models, images, captions, seed)     # what to show (built by the application)
    with JudgmentStore("judgments.csv") as store:         # append-only, fsynced, restart-safe
        run_server(JudgeApp(catalog, store, ["photorealism", "caption"], adaptive=True))
"""

from human_eval.judge.app import QUESTIONS, JudgeApp, run_server
from human_eval.judge.catalog import Catalog, ImageEntry
from human_eval.judge.scheduler import Scheduler, Trial, adaptive_choice, balanced_choice
from human_eval.judge.store import COLUMNS, JudgmentStore, StoreError

__all__ = [
    "COLUMNS",
    "QUESTIONS",
    "Catalog",
    "ImageEntry",
    "JudgeApp",
    "JudgmentStore",
    "Scheduler",
    "StoreError",
    "Trial",
    "adaptive_choice",
    "balanced_choice",
    "run_server",
]
