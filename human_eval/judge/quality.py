"""Per-rater quality statistics of a judging session, as crowd studies use them.

- attention checks: the same image on both sides; the only right answer is ``tie``.
- repeated pairs: a (question, pair, prompt) the rater judged before, shown again with the sides
  swapped; consistent when the same model wins (or it is a tie again).
- agreement with the majority: of the rater's decided judgments (not ties), the share whose
  winner is the model the other raters (this rater left out) chose more often for that question
  and pair; pairs where the others are split evenly or silent are not counted.
- median time: seconds from handing a trial out to its answer.

A rater is flagged when, with enough evidence, the attention pass rate is below
``ATTENTION_MIN`` or both the consistency and the agreement are at the level of random clicks.
Judgment rows are dicts of the judgments CSV (``human_eval.judge.store.COLUMNS``); check rows
those of the checks CSV (``CHECK_COLUMNS``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

ATTENTION_MIN = 0.7  # a random clicker passes 1/3 of attention checks
ATTENTION_EVIDENCE = 3
CONSISTENCY_MIN = 0.45  # random: 1/3
AGREEMENT_MIN = 0.6  # random: 1/2
PAIR_EVIDENCE = 5


@dataclass
class RaterStats:
    rater: str
    judgments: int = 0
    answers: int = 0  # judgments + attention checks + repeats
    median_s: float | None = None
    attention_passed: int = 0
    attention_total: int = 0
    consistent: int = 0
    repeats: int = 0
    agree: int = 0
    compared: int = 0
    flags: list[str] = field(default_factory=list)

    @staticmethod
    def _rate(k: int, n: int) -> float | None:
        return k / n if n else None

    @property
    def attention(self) -> float | None:
        return self._rate(self.attention_passed, self.attention_total)

    @property
    def consistency(self) -> float | None:
        return self._rate(self.consistent, self.repeats)

    @property
    def agreement(self) -> float | None:
        return self._rate(self.agree, self.compared)

    def as_dict(self) -> dict:
        return {
            **asdict(self),
            "attention": self.attention,
            "consistency": self.consistency,
            "agreement": self.agreement,
        }


def _winner_model(row: dict) -> str | None:
    return {"a": row["model_a"], "b": row["model_b"]}.get(row["winner"])


def rater_statistics(judgments: list[dict], checks: list[dict]) -> list[RaterStats]:
    """One `RaterStats` per rater seen in either list, sorted by name."""
    stats: dict[str, RaterStats] = {}
    times: dict[str, list[float]] = defaultdict(list)

    def of(rater: str) -> RaterStats:
        return stats.setdefault(rater, RaterStats(rater))

    by_id = {r["judgment_id"]: r for r in judgments}
    votes: dict[tuple, Counter] = defaultdict(Counter)  # (question, pair) -> rater -> model wins
    for r in judgments:
        s = of(r["rater_id"])
        s.judgments += 1
        s.answers += 1
        if r.get("elapsed_ms"):
            times[s.rater].append(float(r["elapsed_ms"]) / 1000)
        won = _winner_model(r)
        if won is not None:
            votes[(r["question"], frozenset((r["model_a"], r["model_b"])))][(r["rater_id"], won)] += 1
    for c in checks:
        s = of(c["rater_id"])
        s.answers += 1
        if c.get("elapsed_ms"):
            times[s.rater].append(float(c["elapsed_ms"]) / 1000)
        if c["kind"] == "attention":
            s.attention_total += 1
            s.attention_passed += c["winner"] == "tie"
        elif c["kind"] == "repeat" and c["repeat_of"] in by_id:
            s.repeats += 1
            s.consistent += c["winner"] == by_id[c["repeat_of"]]["winner"]
    for r in judgments:
        won = _winner_model(r)
        if won is None:
            continue
        tally = votes[(r["question"], frozenset((r["model_a"], r["model_b"])))]
        others = Counter()
        for (rater, model), n in tally.items():
            if rater != r["rater_id"]:
                others[model] += n
        ranked = others.most_common(2)
        if not ranked or (len(ranked) == 2 and ranked[0][1] == ranked[1][1]):
            continue
        s = of(r["rater_id"])
        s.compared += 1
        s.agree += ranked[0][0] == won
    for rater, s in stats.items():
        if times[rater]:
            s.median_s = float(np.median(times[rater]))
        if s.attention_total >= ATTENTION_EVIDENCE and s.attention < ATTENTION_MIN:
            s.flags.append(f"attention {s.attention_passed}/{s.attention_total}")
        if (
            s.repeats >= PAIR_EVIDENCE
            and s.compared >= PAIR_EVIDENCE
            and s.consistency < CONSISTENCY_MIN
            and s.agreement < AGREEMENT_MIN
        ):
            s.flags.append(f"consistency {s.consistency:.2f} and agreement {s.agreement:.2f} at chance")
    return [stats[r] for r in sorted(stats)]
