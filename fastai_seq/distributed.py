"""Multi-process training with fastai's own `learn.distrib_ctx()` on GPUs (NCCL) and CPUs (gloo), and mixed precision on CPU

fastai's distributed code (`fastai/distributed.py`, fastai 2.8) assumes CUDA and NCCL in a few places.
`fastai_patches.py` wraps each of them with the smallest change that makes the CPU/gloo path work, using the helpers of
this module. The CPU fixes act only without CUDA; the exact averages only for sequence learners:

* `DistributedDL._broadcast` put the shared sample order on the GPU (`.cuda()`, "nccl only works with cuda tensors"):
  it now uses the device the process group's backend needs (the CPU for gloo).
* `DistributedTrainer` built its `Accelerator` without `cpu=True`, so on a machine without CUDA accelerate chose no
  distributed mode, did not wrap the model in DDP, and every process would train its own model on its shard; and `sync_bn=True` (the default) converts BatchNorm
  to `SyncBatchNorm`, which only runs on GPUs. Without CUDA it now passes `cpu=True` (gloo), and uses `sync_bn` only
  when the model is on a GPU.
* Validation: before each validation pass the model's buffers (BatchNorm running statistics) are broadcast from rank 0,
  so every rank scores its shard with the same model, the one rank 0 exports. Without `SyncBatchNorm` (on CPUs) each
  rank's running statistics drift apart after the last training batch.
* `AvgMetric` (metrics given as functions, e.g. `accuracy`) and `AvgLoss` (the validation loss) averaged the per-rank
  batch means, counting the samples `DistributedDL` repeats to make the shards equal. They now all-reduce
  sums and counts over the real samples only, so a distributed `validate()` gives the one-process value exactly.
  `SeqMetric`s (`mse`, `ssim`...) and fastai's `AccumMetric`s were already exact: they gather per-sample values or
  predictions through `learn.to_detach`, which drops the repeated samples.
* `setup_distrib` (used by `distrib_ctx(in_notebook=True)`) called `torch.cuda.set_device` and NCCL: without CUDA it
  now joins a gloo group (`setup_cpu_distrib`).
Mixed precision on CPUs (fastai's `MixedPrecision` only autocasts on CUDA) is in `fastai_seq/precision.py`.

Sharding needs nothing from us: `DistributedDL` gives each rank a disjoint, equal slice of one sample order broadcast
from rank 0 (repeating a few samples at the end when the set does not divide evenly), for training and validation
alike. `MovingMNIST` training sets are a pure function of `(seed, epoch, chunk)`, so every rank holds the same fresh
training set each epoch and reads its own slice of it.

After `distrib_ctx` the process group lives on, and fastai gathers tensors across processes whenever `WORLD_SIZE` is
above 1: run `show_results`, `get_preds` or a one-process `validate` with `on_rank0(...)` (or inside `no_distrib()`),
never behind a bare `if rank_distrib()==0:`, where the collective would wait forever for the other ranks.
`learn.export()` already does nothing on ranks other than 0. See `docs/distributed.md` for the recipe.
"""
from __future__ import annotations
import os, sys, warnings, importlib.util
from contextlib import contextmanager
import torch
import torch.distributed as dist
from fastai.torch_core import num_distrib, rank_distrib, distrib_barrier, find_bs

__all__ = ['comm_device', 'setup_cpu_distrib', 'init_distrib', 'no_distrib', 'on_rank0', 'real_items', 'sync_buffers',
           'fastai_distributed', 'plain_dl', 'is_distributed_dl']

DISTRIBUTED_INSTALL = 'pip install "fastai_seq[distributed]"'

def fastai_distributed(
    required:bool=False, # Raise `ImportError` naming the install line when accelerate is missing (else return None)
):
    "fastai's `fastai.distributed` module, imported without changing the warning filters; None without accelerate"
    fd = sys.modules.get('fastai.distributed')
    if fd is not None: return fd
    if importlib.util.find_spec('accelerate') is None:  # fastai 2.8's `fastai.distributed` cannot be imported without it
        if required: raise ImportError(f"Training on several processes needs accelerate: {DISTRIBUTED_INSTALL}")
        return None
    with warnings.catch_warnings():  # accelerate's import adds a process-wide filter (torch.optim.lr_scheduler warnings)
        import fastai.distributed as fd
    return fd

def is_distributed_dl(dl) -> bool:
    "Whether `dl` is fastai's `DistributedDL` (none can exist before fastai.distributed is imported)"
    fd = sys.modules.get('fastai.distributed')
    return fd is not None and isinstance(dl, fd.DistributedDL)

def plain_dl(dl):
    "The `DataLoader` a `DistributedDL` wraps (it holds the transforms), else `dl` itself"
    return dl.dl if is_distributed_dl(dl) else dl

def comm_device() -> torch.device:
    "The device collective tensors must be on: the current GPU for NCCL, else the CPU (gloo, mpi)"
    if dist.is_available() and dist.is_initialized() and 'nccl' in str(dist.get_backend()):
        return torch.device('cuda', torch.cuda.current_device())
    return torch.device('cpu')

def setup_cpu_distrib(
    backend:str='gloo', # The process group backend for CPU tensors
) -> bool:
    "Join the CPU process group of a run started by `torchrun`/`accelerate launch` (env `RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`)"
    if num_distrib()<=1: return False
    if not dist.is_initialized(): dist.init_process_group(backend=backend, init_method='env://')
    return True

def init_distrib():
    "Make sure the process group of a launched run exists (as fastai's `Accelerator` makes it: gloo without CUDA)"
    if num_distrib()<=1 or dist.is_initialized(): return
    try: from accelerate import PartialState
    except ImportError: raise ImportError(f"A run launched on several processes needs accelerate: {DISTRIBUTED_INSTALL}") from None
    PartialState(cpu=not torch.cuda.is_available())

@contextmanager
def no_distrib():
    "Inside, this process acts alone: fastai gathers nothing across ranks (`num_distrib()` is 0)"
    old = os.environ.pop('WORLD_SIZE', None)
    try: yield
    finally:
        if old is not None: os.environ['WORLD_SIZE'] = old

def on_rank0(func, *args, **kwargs):
    "Run `func(*args, **kwargs)` on rank 0 alone as a single process, the other ranks waiting; its result on rank 0, None elsewhere"
    init_distrib()
    res,ok = None,False
    try:
        if rank_distrib()==0:
            with no_distrib(): res = func(*args, **kwargs)
        ok = True
    finally:
        if num_distrib()>1 and dist.is_initialized():   # rank 0 tells the others whether it succeeded (a barrier too)
            flag = torch.tensor([int(ok)], device=comm_device())
            dist.broadcast(flag, 0)
            if ok and not flag.item():
                raise RuntimeError(f"on_rank0: {getattr(func, '__name__', func)!r} failed on rank 0; see its traceback there.")
    return res

def sync_buffers(model, src:int=0):
    "Broadcast the buffers of `model` (e.g. BatchNorm running statistics) from rank `src` to all ranks"
    if num_distrib()<=1 or not dist.is_initialized(): return
    dev = comm_device()
    with torch.no_grad():
        for b in getattr(model, 'module', model).buffers():
            t = b.data.to(dev)
            dist.broadcast(t, src)
            if t is not b.data: b.data.copy_(t)

def real_items(learn) -> int|None:
    "How many samples of the current batch of `learn` are not repeats added by `DistributedDL`; None when not sharded"
    dl = getattr(learn, '__dict__', {}).get('dl', None)
    if not is_distributed_dl(dl) or dl.world_size<=1 or not all(hasattr(dl, o) for o in ('i', 'n', 'n_padded')):
        return None
    bs = find_bs(learn.yb)
    start = dl.rank*dl.n_padded//dl.world_size + dl.i - bs   # position of this batch's first sample in the padded order
    return max(0, min(bs, dl.n - start))
