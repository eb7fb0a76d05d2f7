"Callbacks for sequence learners: `TimeBudget`, `ReleaseLossGrad`, and `EpochLines`/`console_logging` for logs"
from __future__ import annotations
import sys, time
from contextlib import contextmanager
from fastai.callback.core import Callback, CancelFitException, CancelTrainException
from fastai.callback.progress import ProgressCallback
from fastai.torch_core import find_bs

__all__ = ['TimeBudget', 'ReleaseLossGrad', 'EpochLines', 'console_logging']

class ReleaseLossGrad(Callback):
    "Drop `learn.loss_grad` after each batch: it can share storage with the element-wise loss, which `export` would pickle"
    order = 100
    def after_batch(self): self.learn.loss_grad = None

class TimeBudget(Callback):
    "Train for `budget` seconds at most: the one-cycle schedule's progress is the time spent (or the epochs done, if they end first)"
    # The epoch in which the budget runs out stops training there and is still validated (and logged: a row of the epoch
    # table even when the budget ends the first epoch); the fit stops after it. That validation comes on top of the budget.
    order = 55  # before `ParamScheduler` (60) reads `pct_train`
    def __init__(self,
        budget:float, # Training seconds (the validation of the epochs before the last included)
    ): self.budget,self.spent,self.cut = budget,False,None
    def before_fit(self):
        self.t0,self.n,self._clock = time.perf_counter(),0,time.perf_counter
        self.spent,self.cut = False,None
    def before_epoch(self):
        if self.spent: raise CancelFitException()
    def before_batch(self):
        # the time spent, or the share of the epochs done when they end first: the schedule anneals on either
        if self.training:
            done = self.learn.train_iter/max(1, self.learn.n_epoch*self.learn.n_iter)
            self.learn.pct_train = min(max((self._clock()-self.t0)/self.budget, done), 1.)
    def after_batch(self):
        if not self.training: return
        self.n += find_bs(self.learn.yb)
        if self._clock()-self.t0 > self.budget:
            self.spent = True
            # `(epoch, batches trained, batches an epoch)` where the time ran out, unless that was the epoch's last batch
            if self.learn.iter+1 < self.learn.n_iter: self.cut = (self.learn.epoch, self.learn.iter+1, self.learn.n_iter)
            raise CancelTrainException()   # validate this epoch, log its row, then stop (`before_epoch`)
    def after_cancel_train(self):
        # the `Recorder` (order 50, before this) drops the training loss of a cancelled epoch: keep it, the epoch ran
        rec = getattr(self.learn, 'recorder', None)
        if self.spent and rec is not None: rec.cancel_train = False

def _fmt(v) -> str:
    if isinstance(v, float): return f'{v:.6f}'
    return str(v)

class EpochLines(Callback):
    "Print a header and then one line an epoch (flushed), instead of the progress bar's redraws: for logs, SLURM, CI"
    order = ProgressCallback.order
    def before_fit(self):
        self.old = self.learn.logger
        from fastai.torch_core import rank_distrib
        if getattr(self.old, '__name__', '')=='noop' or rank_distrib(): return  # `learn.no_logging()`; rank 0 alone prints
        self.learn.logger = self._line
        self._line(self.recorder.metric_names)
    def _line(self, log): print('  '.join(f'{_fmt(v):>{max(len(str(n)), 9)}}' for v,n in zip(log, self.recorder.metric_names)),
                                flush=True)
    def after_fit(self): self.learn.logger = self.old

@contextmanager
def console_logging(
    lines:bool=None, # One line an epoch (`EpochLines`) instead of progress bars; default: when stdout is not a terminal
):
    "Within it, new Learners log one line an epoch instead of redrawing progress bars when the output is a log file or pipe"
    from fastai.learner import defaults
    if lines is None: lines = not sys.stdout.isatty()
    old = list(defaults.callbacks)
    if lines: defaults.callbacks = [EpochLines if c is ProgressCallback else c for c in old]
    try: yield
    finally: defaults.callbacks = old
