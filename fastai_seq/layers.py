"Layers that bridge per-frame modules and sequences: TimeDistributed, StackUnstack, UnstackStack, StackLoss"
from __future__ import annotations
import torch
from torch import nn, Tensor
from fastcore.basics import store_attr, fastuple
from fastai.torch_core import Module

__all__ = ['TimeDistributed', 'StackUnstack', 'UnstackStack', 'StackLoss']

def _rebuild(o, items):
    "A tuple/list of `o`'s type holding `items` (namedtuples take them as separate args)"
    items = list(items)
    return type(o)(*items) if hasattr(o, '_fields') else type(o)(items)

def _fold(x:Tensor, tdim:int):
    "Move the time axis `tdim` next to the batch axis and merge the two: `(B,T,...) -> (B*T,...)`"
    if tdim!=1: x = x.movedim(tdim, 1)
    return x.flatten(0, 1)

def _unfold(x, b:int, tdim:int):
    "Undo `_fold` on a tensor, or on each tensor of a tuple/list/dict of outputs"
    if isinstance(x, (tuple, list)): return _rebuild(x, (_unfold(o, b, tdim) for o in x))
    if isinstance(x, dict): return {k:_unfold(v, b, tdim) for k,v in x.items()}
    if not isinstance(x, Tensor) or x.ndim==0: return x
    x = x.reshape(b, -1, *x.shape[1:])
    return x.movedim(1, tdim) if tdim!=1 else x

def _stack_outs(outs:list, tdim:int):
    "Stack per-step outputs along `tdim`, recursing into tuples/lists/dicts"
    o = outs[0]
    if isinstance(o, (tuple, list)): return _rebuild(o, (_stack_outs(list(z), tdim) for z in zip(*outs)))
    if isinstance(o, dict): return {k:_stack_outs([d[k] for d in outs], tdim) for k in o}
    if not isinstance(o, Tensor) or o.ndim==0: return o
    return torch.stack(outs, dim=tdim)

class TimeDistributed(Module):
    "Apply `module` to every time step of `(B,T,...)` inputs (time axis `tdim`), passing kwargs through"
    def __init__(self,
        module:nn.Module, # The per-frame module, taking `(N,...)` inputs
        low_mem:bool=False, # Loop over time steps instead of folding time into the batch
        tdim:int=1, # The time axis of the inputs
    ): store_attr()

    def forward(self, *tensors, **kwargs):
        "Inputs are `(B,T,...)` tensors (time at `tdim`); non-tensor args and kwargs are passed unchanged"
        if self.low_mem: return self.low_mem_forward(*tensors, **kwargs)
        b = next(t.shape[0] for t in tensors if isinstance(t, Tensor))
        xs = [_fold(t, self.tdim) if isinstance(t, Tensor) else t for t in tensors]
        return _unfold(self.module(*xs, **kwargs), b, self.tdim)

    def low_mem_forward(self, *tensors, **kwargs):
        "Same result as `forward`, one time step at a time"
        t = next(x for x in tensors if isinstance(x, Tensor)).shape[self.tdim]
        outs = [self.module(*[x.select(self.tdim, i) if isinstance(x, Tensor) else x for x in tensors], **kwargs)
                for i in range(t)]
        return _stack_outs(outs, self.tdim)

    def __repr__(self): return f'TimeDistributed({self.module})'

class StackUnstack(Module):
    "As in the moving_mnist package: a list/tuple of frames is stacked to `(B,T,...)` for `module` and its output unstacked to a list"
    def __init__(self,
        module:nn.Module, # A model taking `(B,T,...)` tensors (time at `dim`), e.g. a forecaster of 5-D batches
        dim:int=1, # The time axis of the stacked tensors
    ): store_attr()

    def forward(self, x, *args, **kwargs):
        "Frames in: stacked for `module`, a tensor output of the stacked rank unstacked to a list of frames; a tensor in goes straight in"
        if not isinstance(x, (tuple, list)): return self.module(x, *args, **kwargs)
        if not x or not all(isinstance(f, Tensor) for f in x):
            raise TypeError(f"StackUnstack takes a (B,T,...) tensor or a non-empty list/tuple of frame tensors, got {type(x).__name__} "
                            f"of {[type(f).__name__ for f in x][:3]}")
        s = torch.stack(list(x), dim=self.dim)
        out = self.module(s, *args, **kwargs)
        # only an output with the time axis (same rank as the stack, e.g. `(B,T,C,H,W)`) is unstacked: `(B,n_classes)` is returned as is
        return list(out.unbind(self.dim)) if isinstance(out, Tensor) and out.ndim==s.ndim else out

class UnstackStack(Module):
    "The reverse bridge: a model written for a list of frames used on `(B,T,...)` tensors (unstacked going in, outputs stacked back)"
    def __init__(self,
        module:nn.Module, # A model taking `T` frames (as one list or as separate args) and returning a list/tuple of frames
        dim:int=1, # The time axis of the tensors
        as_list:bool=True, # Give `module` one list of frames (True) or the frames as separate positional args
    ): store_attr()

    def forward(self, *args):
        "A 5-D tensor is unstacked into frames for `module`; a tuple/list of frames (or frames as separate args) is passed as a list"
        x = args[0] if len(args)==1 else args
        x = list(x.unbind(self.dim)) if isinstance(x, Tensor) else list(x)
        res = self.module(x) if self.as_list else self.module(*x)
        return torch.stack(list(res), dim=self.dim) if isinstance(res, (tuple, list)) else res

class StackLoss:
    "Wrap `loss_func` so it takes predictions and targets as `(B,T,...)` tensors or as tuples/lists of frames"
    def __init__(self, loss_func, dim:int=1): store_attr()
    def _stack(self, x): return torch.stack(list(x), dim=self.dim) if isinstance(x, (tuple, list)) else x
    def __call__(self, pred, targ, **kwargs): return self.loss_func(self._stack(pred), self._stack(targ), **kwargs)
    def activation(self, x): return getattr(self.loss_func, 'activation', lambda o:o)(x)
    def decodes(self, x):
        "The wrapped loss's decodes; a list/tuple of predicted frames becomes one item, `(fastuple(frames),)`, as fastai's `show_results`/`predict` want"
        if isinstance(x, (tuple, list)) and x and all(isinstance(o, Tensor) for o in x):
            return (fastuple(self.decodes(o) for o in x),)
        return getattr(self.loss_func, 'decodes', lambda o:o)(x)
    def __repr__(self): return f'StackLoss({self.loss_func})'
