"""Study progress: a tqdm bar on a terminal, one plain line per trial in logs, nothing with --quiet."""

from __future__ import annotations

import os
import sys

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from search.options import FINISHED

LINES_ENV = "MNIST_SEARCH_PROGRESS_LINES"


class Progress:
    def __init__(self, study: optuna.Study, total: int, *, quiet: bool) -> None:
        self.study, self.total, self.quiet = study, total, quiet
        # Workers of --jobs share the parent's terminal: several bars would garble it.
        self.interactive = not quiet and sys.stderr.isatty() and os.environ.get(LINES_ENV) != "1"
        self.bar = tqdm(total=total, initial=self._counts()[0], dynamic_ncols=True) if self.interactive else None

    def _counts(self) -> tuple[int, int, int, int, float | None]:
        """Finished, pruned, infeasible and failed trial counts, and the best feasible value so far.
        Failed trials are not finished: they never count toward --trials."""
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
        failed = sum(t.state == TrialState.FAIL for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        infeasible = sum("infeasible" in t.user_attrs for t in trials)
        feasible = [t.values[0] for t in trials if t.state == TrialState.COMPLETE and "infeasible" not in t.user_attrs]
        return len(trials) - failed, pruned, infeasible, failed, max(feasible, default=None)

    def epoch(self, number: int, epoch: int, epochs: int, accuracy: float) -> None:
        if self.bar is not None:
            self.bar.set_description(f"trial {number} epoch {epoch}/{epochs} val {accuracy:.4f}")

    def trial_done(self, number: int, state: str, accuracy: float | None, params: int, reason: str = "") -> None:
        if self.quiet:
            return
        # This trial is not yet told to the storage: count it by hand.
        done, pruned, infeasible, failed, best = self._counts()
        done += state != "FAIL"
        failed += state == "FAIL"
        pruned += state == "PRUNED"
        infeasible += state == "INFEASIBLE"
        if state == "COMPLETE" and accuracy is not None:
            best = max(best or 0.0, accuracy)
        status = f"pruned {pruned} · infeasible {infeasible}" + (f" · failed {failed}" if failed else "")
        status += f" · best {best:.4f}" if best else ""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(status)
            if state == "FAIL":
                self.bar.write(f"trial {number} failed: {reason}")
            return
        value = f"val {accuracy:.4f}" if accuracy is not None else "val -"
        note = f"  ({reason})" if state == "FAIL" else ""
        head = f"trial {number:>4} {state:<10} {value:<10}  params {params:>9,}"
        print(f"{head}  | {done}/{self.total} finished · {status}{note}", flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
