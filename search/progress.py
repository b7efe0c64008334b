"""Study progress: a tqdm bar on a terminal, one plain line per trial in logs, nothing with --quiet.

Both show the epoch rate on this device and the time the study still needs (``search.estimate``)
from the first epoch on; the bar's clock ticks every second.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import optuna
from optuna.trial import TrialState
from tqdm import tqdm

from search.estimate import Ended, Pruning, Running, estimate
from spaces.states import FINISHED

LINES_ENV = "MNIST_SEARCH_PROGRESS_LINES"
TICK_S = 1.0
BAR_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}] {postfix}"  # tqdm's own ETA counts trials: left out


class Progress:
    def __init__(self, study: optuna.Study, total: int, *, quiet: bool, device: str = "cpu", max_epochs: int = 1):
        self.study, self.total, self.quiet = study, total, quiet
        self.device, self.max_epochs = device, max_epochs
        self.pruning = Pruning.of(study.pruner)
        self.running: Running | None = None
        self.trial_start = time.perf_counter()
        self.status = ""
        # Workers of --jobs share the parent's terminal: several bars would garble it.
        self.interactive = not quiet and sys.stderr.isatty() and os.environ.get(LINES_ENV) != "1"
        self.bar = None
        self._stop_ticking = threading.Event()
        if self.interactive:
            done = self._counts()[0]
            self.bar = tqdm(total=total, initial=done, dynamic_ncols=True, bar_format=BAR_FORMAT)
            threading.Thread(target=self._tick, daemon=True).start()
        self._say_how_long_is_left()

    def _tick(self) -> None:
        while not self._stop_ticking.wait(TICK_S):
            if self.bar is not None:
                self.bar.refresh()

    def _say_how_long_is_left(self) -> None:
        """A resumed study with a few trials behind it: one line up front."""
        trials = self.study.get_trials(deepcopy=False)
        done = sum(t.state in FINISHED for t in trials)
        if self.quiet or done < 3 or done >= self.total:
            return
        guess = estimate(trials, self.total, self.device, self.max_epochs, pruning=self.pruning)
        if guess is not None:
            print(f"resuming: {done} of {self.total} trials finished; {guess.describe()} on {self.device}", flush=True)

    def _counts(self) -> tuple[int, int, int, int, float | None]:
        """Finished, pruned, infeasible and failed trial counts, and the best feasible value so far.
        Failed trials are not finished: they never count toward --trials."""
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
        failed = sum(t.state == TrialState.FAIL for t in trials)
        pruned = sum(t.state == TrialState.PRUNED for t in trials)
        infeasible = sum("infeasible" in t.user_attrs for t in trials)
        feasible = [t.values[0] for t in trials if t.state == TrialState.COMPLETE and "infeasible" not in t.user_attrs]
        return len(trials) - failed, pruned, infeasible, failed, max(feasible, default=None)

    def _estimate(self, just_finished: Ended | None = None) -> str:
        trials = self.study.get_trials(deepcopy=False)
        running = None if just_finished else self.running
        guess = estimate(trials, self.total, self.device, self.max_epochs, running, just_finished, self.pruning)
        return "" if guess is None else f" · {guess.describe()}"

    def trial_started(self) -> None:
        self.trial_start, self.running = time.perf_counter(), None

    def epoch(self, number: int, epoch: int, epochs: int, accuracy: float) -> None:
        self.running = Running(time.perf_counter() - self.trial_start, epoch)
        if self.bar is not None:
            self.bar.set_description(f"trial {number} epoch {epoch}/{epochs} val {accuracy:.4f}", refresh=False)
            self.bar.set_postfix_str(self.status + self._estimate())

    def trial_done(self, number: int, state: str, accuracy: float | None, params: int | None, reason: str = "") -> None:
        # This trial is not yet told to the storage: count it, and its epochs, by hand.
        ran = self.running or Running(0.0, 0)
        ended = None  # failed trials are not part of the study's mix
        if state != "FAIL":
            stored = TrialState.COMPLETE if state == "INFEASIBLE" else TrialState[state]
            ended = Ended(number, ran.seconds, ran.epochs, stored, infeasible=state == "INFEASIBLE")
        self.running = None
        if self.quiet:
            return
        done, pruned, infeasible, failed, best = self._counts()
        done += state != "FAIL"
        failed += state == "FAIL"
        pruned += state == "PRUNED"
        infeasible += state == "INFEASIBLE"
        if state == "COMPLETE" and accuracy is not None:
            best = max(best or 0.0, accuracy)
        self.status = f"pruned {pruned} · infeasible {infeasible}" + (f" · failed {failed}" if failed else "")
        self.status += f" · best {best:.4f}" if best else ""
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(self.status + self._estimate(ended))
            if state == "FAIL":
                self.bar.write(f"trial {number} failed: {reason}")
            return
        value = f"val {accuracy:.4f}" if accuracy is not None else "val -"
        note = f"  ({reason})" if state == "FAIL" else ""
        shown = "?" if params is None else f"{params:,}"
        head = f"trial {number:>4} {state:<10} {value:<10}  params {shown:>9}"
        print(f"{head}  | {done}/{self.total} finished · {self.status}{self._estimate(ended)}{note}", flush=True)

    def close(self) -> None:
        self._stop_ticking.set()
        if self.bar is not None:
            self.bar.close()
