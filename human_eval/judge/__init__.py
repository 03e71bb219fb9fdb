"""A judging session: raters compare two settings' images of one caption, blind, each through
their own link, and every answer is appended to the judgments CSV `human_eval.judgments` reads
(GLIDE appendix A.1).

    catalog = Catalog(models, images, captions, seed)     # what to show (built by the application)
    with JudgmentStore("judgments.csv") as store:         # append-only, fsynced, restart-safe
        access = Access.open("judgments.csv.raters.json", ["alice", "bob"])   # links, stored hashed
        with JudgeApp(catalog, store, ["photorealism"], access, ["127.0.0.1:8765"]) as session:
            run_server(session, bind("127.0.0.1", 8765))
"""

from human_eval.judge.access import Access, AccessError
from human_eval.judge.app import QUESTIONS, JudgeApp, bind, run_server
from human_eval.judge.catalog import Catalog, ImageEntry
from human_eval.judge.pixels import ImageRefused, check_catalog, encode, load_pixels
from human_eval.judge.quality import RaterStats, rater_statistics
from human_eval.judge.scheduler import Scheduler, Trial, adaptive_choice, balanced_choice
from human_eval.judge.store import CHECK_COLUMNS, COLUMNS, JudgmentStore, StoreError

__all__ = [
    "CHECK_COLUMNS",
    "COLUMNS",
    "QUESTIONS",
    "Access",
    "AccessError",
    "Catalog",
    "ImageEntry",
    "ImageRefused",
    "JudgeApp",
    "JudgmentStore",
    "RaterStats",
    "Scheduler",
    "StoreError",
    "Trial",
    "adaptive_choice",
    "balanced_choice",
    "bind",
    "check_catalog",
    "encode",
    "load_pixels",
    "rater_statistics",
    "run_server",
]
