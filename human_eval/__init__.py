"""Human evaluation: pairwise judgments -> Elo ratings with bootstrap intervals (GLIDE
appendix A.1, Tables 1/3/4, Figure 7).

    judgments = read_judgments("judgments.csv")          # validated; JudgmentError otherwise
    results = analyze(judgments, anchor="unguided")      # one EloResult per question
    results[0].ratings_table(), results[0].pairs_table()
"""

from human_eval.elo import EloResult, analyze, fit_question, win_probability
from human_eval.fit import FitError, PairCounts, check_identifiable, fit_elo, pair_counts
from human_eval.judgments import JudgmentError, Judgments, parse_judgments, read_judgments

__all__ = [
    "EloResult",
    "FitError",
    "JudgmentError",
    "Judgments",
    "PairCounts",
    "analyze",
    "check_identifiable",
    "fit_elo",
    "fit_question",
    "pair_counts",
    "parse_judgments",
    "read_judgments",
    "win_probability",
]
