"Moving MNIST: the vectorised generator, its fastai pipelines, the standard test file `mnist_test_seq.npy`"
from __future__ import annotations
from pathlib import Path
import numpy as np, torch
from numpy.lib.stride_tricks import as_strided
from torch import Tensor
from fastcore.basics import store_attr, listify, patch
from fastcore.meta import delegates
from fasttransform import Transform
from fastai.data.core import Datasets, TfmdDL, DataLoaders
from fastai.torch_core import TensorBase, TensorImageBW
from ..core import ImageSeq, ImageSeqBW, ImageTuple, SeqError
from ..data import IntToFloatSeq
from .mnist import DigitsError, load_mnist_digits, embedded_digits, as_digits

__all__ = ['MovingMNIST', 'ImageTupleTransform', 'MovingMNISTFrames', 'MovingMNISTDL', 'moving_mnist_dls',
           'MovingMNISTError', 'load_moving_mnist', 'MovingMNISTFile', 'moving_mnist_test_dl', 'srivastava_positions']

# --------------------------------------------------------------------------------------------------------------- render
_BLOCK = 32  # sequences pasted per step: keeps the working set of a step in the CPU cache

def paste_digits(
    out:np.ndarray, # The zeroed uint8 canvas `(n,T,S,S)`, written in place
    digits:np.ndarray, # Digit images `(N,h,w)` uint8
    idx:np.ndarray, # `(n,K)` which digit is the `k`-th of sequence `i`; -1: none
    pos:np.ndarray, # `(n,T,K,2)` integer top-left (y,x) of each digit in each frame; the digit must fit in the canvas
) -> np.ndarray:
    "Max-combine `digits[idx[i,k]]` at top-left `pos[i,t,k]` into the zeroed uint8 canvas `out` `(n,T,S,S)`; `idx` -1: no digit"
    # A digit padded with zeros to the canvas width S and flattened is one run of (h-1)*S+w bytes; written at flat offset
    # r*S+c of a frame, its rows land at columns c..c+w of rows r..r+h-1 and its padding (zeros) on pixels around them,
    # which max-combining leaves unchanged. So every (frame, digit) is one contiguous copy, from a source shared by all
    # the frames of a sequence: no per-pixel indexing.
    n,T,S = out.shape[0], out.shape[1], out.shape[2]
    K,(h,w) = idx.shape[1], digits.shape[1:]
    run = (h-1)*S+w
    src = np.zeros((n, K, h, S), np.uint8)
    src[..., :w] = digits[idx.clip(0)]
    src[idx<0] = 0
    src = src.reshape(n, K, h*S)[..., :run]
    fl = out.reshape(n*T, S*S)
    cv = as_strided(fl, (n*T, S*S-run+1, run), (fl.strides[0], 1, 1))   # cv[f, o]: the run at offset o of frame f
    fi = np.arange(n*T).reshape(n, T)
    off = pos[..., 0]*S + pos[..., 1]                                     # (n,T,K)
    for b in range(0, n, _BLOCK):   # a block of sequences at a time, so that the max-combining reads cached memory
        e = b+_BLOCK
        for k in range(K):
            if k==0: cv[fi[b:e], off[b:e, :, 0]] = src[b:e, None, 0]   # the canvas is still zero: writing the run is the max
            else:
                cur = cv[fi[b:e], off[b:e, :, k]]
                cv[fi[b:e], off[b:e, :, k]] = np.maximum(cur, src[b:e, None, k], out=cur)
    return out

def _bounce(p:np.ndarray, travel:np.ndarray) -> np.ndarray:
    "Fold unbounded positions `p` (last axis y,x) into `[0,travel]` in place, reflecting off both ends (a triangle wave)"
    span = 2*np.where(travel>0, travel, 1.)
    np.mod(p, span, out=p)
    np.minimum(p, span-p, out=p)
    if (travel<=0).any(): p[..., travel<=0] = 0.
    return p

# ---------------------------------------------------------------------------------------------------------- MovingMNIST
class MovingMNIST:
    "Moving MNIST (Srivastava et al. 2015): digits bouncing in a `size`x`size` canvas, generated vectorised over sequences"
    def __init__(self,
        digits=None, # `(N,h,w)` uint8 digit images (floats in [0,1] are scaled), a path for `load_mnist_digits`, or None for `embedded_digits()`
        n_in:int=10, # Input frames of a sequence
        n_out:int=10, # Target frames that follow them
        n_digits:int|list=2, # Digits per sequence, or a list of counts to draw from for each sequence
        size:int=64, # Height and width of the canvas
        seed:int=0, # Seeds the validation set and the stream of training sets
        speed:float=None, # Pixels per frame; None: a tenth of the travel range as in the original (3.6 for 28x28 digits in 64x64)
        chunk:int=128, # Sequences generated together when items are read by index (the cache unit of the `DataLoaders`)
        n_obj:int|list=None, # The moving_mnist package's name for `n_digits` (e.g. `n_obj=[1,2,3]`)
        length:int=10_000, # `len(ds)`: the fixed sequences `ds[i]` reads (the package's 10,000)
    ):
        if n_obj is not None:
            if listify(n_digits)!=[2] and listify(n_digits)!=listify(n_obj):
                raise ValueError(f"n_obj is another name for n_digits: give one of them, not n_digits={n_digits!r} and n_obj={n_obj!r}")
            n_digits = n_obj
        if not isinstance(length, (int, np.integer)) or length<0: raise ValueError(f"length must be an int >= 0, got {length!r}")
        self.length = int(length)
        self.digits_src = digits if isinstance(digits, (str, Path)) else None
        self._from_array = digits is not None and self.digits_src is None
        self._digits = None if digits is None else (load_mnist_digits(digits) if self.digits_src is not None else as_digits(digits))
        self.n_digits = [int(o) for o in listify(n_digits)]
        if not self.n_digits or min(self.n_digits)<0 or max(self.n_digits)<1:
            raise ValueError(f"n_digits must be a count >= 1 or a list of counts >= 0 (not all 0), got {n_digits!r}")
        if n_in<1 or n_out<0: raise ValueError(f"n_in must be >= 1 and n_out >= 0, got {n_in}, {n_out}")
        if not isinstance(seed, (int, np.integer)) or seed<0: raise ValueError(f"seed must be an int >= 0, got {seed!r}")
        h,w = self.digits.shape[1:]
        if h>size or w>size: raise ValueError(f"digits of {h}x{w} do not fit a {size}x{size} canvas: use a larger size.")
        self.travel = np.array([size-h, size-w], dtype=float)
        if speed is None: speed = 0.1*float(self.travel.max())
        if speed<0: raise ValueError(f"speed must be >= 0 pixels per frame, got {speed}")
        if chunk<1: raise ValueError(f"chunk must be >= 1, got {chunk}")
        store_attr('n_in,n_out,size,seed,speed,chunk')
        self.epoch,self._cache = 0,{}

    @property
    def digits(self) -> np.ndarray:
        "The `(N,h,w)` uint8 digit images"
        if self._digits is None: self._digits = embedded_digits() if self.digits_src is None else load_mnist_digits(self.digits_src)
        return self._digits
    @property
    def n_frames(self) -> int: return self.n_in+self.n_out
    @property
    def max_digits(self) -> int: return max(self.n_digits)

    def sample(self, n:int, rng=None) -> dict:
        "Random parameters of `n` sequences: digit indices `idx` (n,K) (-1: none), start top-left `pos` and velocity `vel` (n,K,2) in pixels"
        rng = np.random.default_rng(rng)
        K = self.max_digits
        count = rng.choice(self.n_digits, n) if len(self.n_digits)>1 else np.full(n, self.n_digits[0])
        idx = rng.integers(0, len(self.digits), (n, K))
        idx[np.arange(K)[None]>=count[:, None]] = -1
        pos = rng.random((n, K, 2))*self.travel
        theta = rng.random((n, K))*2*np.pi
        vel = self.speed*np.stack([np.sin(theta), np.cos(theta)], -1)
        return dict(idx=idx, pos=pos, vel=vel)

    def trajectories(self, params:dict, n_frames:int=None) -> np.ndarray:
        "Float top-left positions `(n,T,K,2)` (y,x): constant speed, elastic bounces off the canvas edges, in closed form"
        t = np.arange(n_frames or self.n_frames, dtype=float)[:, None, None]
        p = params['vel'][:, None]*t
        p += params['pos'][:, None]
        return _bounce(p, self.travel)

    def positions(self, params:dict, n_frames:int=None) -> np.ndarray:
        "Integer top-left pixel positions `(n,T,K,2)` of the digits: `trajectories` rounded (half up), always inside the canvas"
        q = self.trajectories(params, n_frames)
        q += 0.5   # in [0.5,travel+0.5]: truncating rounds
        return q.astype(np.intp)

    def render(self, params:dict, n_frames:int=None, out:np.ndarray=None) -> np.ndarray:
        "The uint8 frames `(n,T,size,size)` of the sequences `params`, overlapping digits combined with max"
        pos = self.positions(params, n_frames)
        shape = (*pos.shape[:2], self.size, self.size)
        if out is None: out = np.zeros(shape, np.uint8)
        else:
            if out.shape!=shape or out.dtype!=np.uint8 or not out.flags.c_contiguous:
                raise ValueError(f"out must be a C-contiguous uint8 array of shape {shape}, got {out.dtype} {out.shape}")
            out.fill(0)
        return paste_digits(out, self.digits, params['idx'], pos)

    def generate(self,
        n:int, # Number of sequences
        rng=None, # A `np.random.Generator` or a seed; None: fresh randomness
        n_frames:int=None, # Frames per sequence; default `n_in+n_out`
    ) -> np.ndarray:
        "`n` random sequences as uint8 `(n,n_frames,size,size)`"
        return self.render(self.sample(n, rng), n_frames)

    cache_chunks = 4   # chunks kept in memory: enough for in-order reading and for shuffled validation sets up to 4*chunk

    def _chunk(self, split:int, epoch:int, c:int) -> np.ndarray:
        "Chunk `c` of the training set of `epoch` (`split` 0) or of the validation set (`split` 1), from a small LRU cache"
        key = (split, epoch, c)
        if key in self._cache: self._cache[key] = self._cache.pop(key)   # now the most recently used
        else:
            self._cache[key] = self._gen_chunk(*key)
            while len(self._cache)>self.cache_chunks: self._cache.pop(next(iter(self._cache)))
        return self._cache[key]

    def _gen_chunk(self, split:int, epoch:int, c:int) -> np.ndarray:
        "Generate chunk `c`: its random stream depends only on `seed`, `split`, `epoch` and `c`"
        return self.generate(self.chunk, np.random.default_rng([int(self.seed), split, epoch, c]))

    def sequence(self,
        i:int, # Index of the sequence in its set
        valid:bool=True, # The fixed validation set, else the training set of the current `epoch`
    ) -> np.ndarray:
        "Sequence `i` `(n_frames,size,size)` uint8: the same for a `seed` in any process and any order of access"
        c,j = divmod(int(i), self.chunk)
        return self._chunk(1, 0, c)[j] if valid else self._chunk(0, self.epoch, c)[j]

    def valid_set(self, n:int) -> np.ndarray:
        "The first `n` validation sequences, uint8 `(n,n_frames,size,size)`"
        nc = -(-n//self.chunk)
        return np.concatenate([self._gen_chunk(1, 0, c) for c in range(nc)])[:n]

    def next_epoch(self):
        "Move on to a fresh training set"
        self.epoch += 1
        self._cache = {k:v for k,v in self._cache.items() if k[0]==1}

    def __len__(self) -> int: return self.length

    def __getitem__(self, i) -> tuple:
        "Fixed sequence `i` as `(input_frames, target_frames)`: float `ImageSeqBW` `(n_in,1,H,W)`, `(n_out,1,H,W)` in [0,1]"
        if not isinstance(i, (int, np.integer)): raise TypeError(f"MovingMNIST indices are ints, got {type(i).__name__}")
        if i<0: i += self.length
        if not 0<=i<self.length: raise IndexError(f"MovingMNIST index {i} out of range for {self.length} sequences (length=...)")
        return self._split_xy(self.sequence(i, valid=True))

    def _split_xy(self, s:np.ndarray) -> tuple:
        "A uint8 `(T,H,W)` sequence as float `ImageSeqBW` inputs and targets in [0,1]"
        t = torch.from_numpy(s[:, None]).float().div_(255)
        return ImageSeqBW(t[:self.n_in]), ImageSeqBW(t[self.n_in:])

    def __getstate__(self):
        d = {**self.__dict__, '_cache': {}}
        if not self._from_array: d['_digits'] = None   # rebuilt from the embedded source or `digits_src` when needed
        return d

    def datasets(self, n_train:int, n_valid:int) -> Datasets:
        "A `Datasets` of indices: `n_train` training items (fresh each epoch) then `n_valid` fixed validation items"
        items = list(range(n_train+n_valid))
        splits = [list(range(n_train)), list(range(n_train, n_train+n_valid))]
        return Datasets(items, tfms=[[MovingMNISTFrames(self, n_train, 'x')], [MovingMNISTFrames(self, n_train, 'y')]],
                        splits=splits, n_inp=1)

    @delegates(TfmdDL.__init__)
    def dataloaders(self,
        n_train:int=2048, # Training sequences per epoch
        n_valid:int=256, # Validation sequences
        bs:int=16, # Batch size
        device=None, # Device of the batches; default fastai's `default_device()`
        num_workers:int=0, # Worker processes; generation is fast enough in the main one
        **kwargs
    ) -> DataLoaders:
        "`DataLoaders` of `(ImageSeq (B,n_in,1,H,W), ImageSeq (B,n_out,1,H,W))` float batches in [0,1]"
        if n_train<1 or n_valid<1: raise ValueError(f"n_train and n_valid must be >= 1, got {n_train}, {n_valid}")
        if self.n_out<1: raise ValueError("Forecasting dataloaders need n_out >= 1 target frames.")
        # Training sequences are fresh i.i.d. draws each epoch, so reading them in order loses nothing and lets each
        # chunk be generated once; `shuffle=True` still works, only slower.
        kwargs = {'shuffle': False, 'drop_last': False, **kwargs}
        return self.datasets(n_train, n_valid).dataloaders(bs=bs, dl_type=MovingMNISTDL, after_batch=[IntToFloatSeq()],
                                                          device=device, num_workers=num_workers, **kwargs)

    def __repr__(self):
        return (f"MovingMNIST({len(self.digits)} digits of {self.digits.shape[1]}x{self.digits.shape[2]}, n_in={self.n_in}, "
                f"n_out={self.n_out}, n_digits={self.n_digits}, size={self.size}, speed={self.speed:g}, seed={self.seed})")

class ImageTupleTransform(Transform):
    "As in the moving_mnist package: item `i` -> `(ImageTuple, ImageTuple)` of float `TensorImageBW` frames `(1,H,W)` in [0,1]"
    # `TfmdLists` index it with `range(n)` for training and validation alike, so each transform is told its role: training
    # draws fresh random sequences at every call (seeded from torch's RNG, so `set_seed` and worker processes behave), as
    # the package did for both lists; validation (`train=False`) reads the fixed sequences `ds[i]`, the same every epoch and run.
    def __init__(self,
        ds:MovingMNIST, # The generator; `ds[i]` gives the fixed (validation) sequences
        train:bool=True, # Fresh sequences at every call (True, the package's behaviour) or the fixed `ds[i]` (False: for `valid_tl`)
    ):
        super().__init__()
        if not isinstance(ds, MovingMNIST): raise TypeError(f"ImageTupleTransform takes a MovingMNIST, got {type(ds).__name__}")
        if train not in (True, False):  # None, the old default that guessed the role from construction order, included
            raise TypeError(f"ImageTupleTransform: train is True (fresh sequences, for train_tl) or False (the fixed ds[i], "
                            f"for valid_tl), got {train!r}")
        self.ds,self.train = ds,bool(train)

    @staticmethod
    def _tuple(frames) -> ImageTuple: return ImageTuple(TensorImageBW(f) for f in frames)

    def encodes(self, i:int|np.integer):
        if self.train:
            rng = np.random.default_rng(int(torch.randint(0, 2**62, ()).item()))
            x,y = self.ds._split_xy(self.ds.generate(1, rng)[0])
        else: x,y = self.ds[int(i)]
        return self._tuple(TensorBase(x)), self._tuple(TensorBase(y))

class MovingMNISTFrames(Transform):
    "Item `i` of a Moving MNIST `Datasets` -> its input (`part='x'`) or target (`part='y'`) frames as a uint8 `ImageSeq` `(T,1,H,W)`"
    # Sequences given for inference (`test_dl`, `Learner.predict`) come through as float `ImageSeq` in [0,1]:
    # listing their types here keeps this transform in the pipeline `test_set` builds for them.
    input_types = (int, np.integer, Tensor, np.ndarray)
    def __init__(self,
        mm:MovingMNIST, # The generator holding the sequences
        n_train:int, # Items below this index are training sequences, the others validation ones
        part:str='x', # 'x': the first `n_in` frames; 'y': the `n_out` frames after them
    ):
        super().__init__()
        if part not in ('x', 'y'): raise ValueError(f"part must be 'x' or 'y', got {part!r}")
        store_attr()
    @property
    def n_frames(self) -> int: return self.mm.n_in if self.part=='x' else self.mm.n_out

    def _item(self, i):
        i = int(i)
        s = self.mm.sequence(i, valid=False) if i<self.n_train else self.mm.sequence(i-self.n_train, valid=True)
        s = s[:self.mm.n_in] if self.part=='x' else s[self.mm.n_in:]
        return ImageSeq(torch.from_numpy(s[:, None]))
    def encodes(self, i:int): return self._item(i)
    def encodes(self, i:np.integer): return self._item(i)

    def _given(self, x):
        "A sequence given by the user: checked and converted to float in [0,1]"
        x = x if isinstance(x, ImageSeq) else ImageSeq.create(x)
        if x.ndim!=4 or x.shape[1]!=1 or x.shape[0]!=self.n_frames:
            raise SeqError(f"A Moving MNIST {'input' if self.part=='x' else 'target'} sequence is ({self.n_frames},1,H,W) "
                           f"(or ({self.n_frames},H,W)), got shape {tuple(x.shape)}.")
        if x.is_floating_point():
            lo,hi = float(x.min()), float(x.max())
            if lo<-1e-3 or hi>1+1e-3: raise SeqError(f"Float frames must be in [0,1], got values in [{lo:.3g}, {hi:.3g}]: "
                                                      "divide by 255 or pass uint8.")
            return ImageSeq(x.float())
        return ImageSeq(x.float()/255)
    def encodes(self, x:Tensor): return self._given(x)
    def encodes(self, x:np.ndarray): return self._given(x)

def _stores(ds) -> list:
    "The `MovingMNIST` generators behind the transforms of a `Datasets`"
    fs = [f for tl in getattr(ds, 'tls', [ds]) for f in getattr(getattr(tl, 'tfms', None), 'fs', [])]
    return list({id(f.mm): f.mm for f in fs if isinstance(f, MovingMNISTFrames)}.values())

class MovingMNISTDL(TfmdDL):
    "A `TfmdDL` that moves its Moving MNIST training set on to fresh sequences at the start of each pass"
    def before_iter(self):
        super().before_iter()
        if getattr(self.dataset, 'split_idx', None)==0:
            for mm in _stores(self.dataset): mm.next_epoch()
    @property
    def n_in(self) -> int: return _stores(self.dataset)[0].n_in
    @property
    def n_out(self) -> int: return _stores(self.dataset)[0].n_out

@delegates(TfmdDL.__init__)
def moving_mnist_dls(
    n_in:int=10, # Input frames
    n_out:int=10, # Target frames to forecast
    n_digits:int|list=2, # Digits per sequence, or a list of counts to draw from
    n_train:int=2048, # Training sequences per epoch, fresh each epoch
    n_valid:int=256, # Validation sequences, the same every epoch and run for a `seed`
    bs:int=16, # Batch size
    digits=None, # Digit images, a path for `load_mnist_digits`, or None for the embedded offline digits
    seed:int=0, # Seeds the validation set and the training stream
    size:int=64, # Height and width of the frames
    device=None, # Device of the batches
    speed:float=None, # Pixels per frame (default: as in the original generator)
    test:str|Path=None, # A Moving MNIST file (e.g. `mnist_test_seq.npy`): its `n_in -> n_out` split becomes `dls[2]` (`dls.test`)
    **kwargs
) -> DataLoaders:
    "Moving MNIST `DataLoaders` of `(ImageSeq (B,n_in,1,H,W), ImageSeq (B,n_out,1,H,W))` float batches in [0,1]"
    mm = MovingMNIST(digits, n_in=n_in, n_out=n_out, n_digits=n_digits, size=size, seed=seed, speed=speed)
    dls = mm.dataloaders(n_train, n_valid, bs=bs, device=device, **kwargs)
    if test is not None:   # scored only, never used for model selection: the validation set is the generator's own
        dls.loaders.append(mm.test_dl(test, bs=bs, device=dls.device))
        dls.test = dls.loaders[2]
    return dls

# ------------------------------------------------------------------------------------------------ the standard test file
# `mnist_test_seq.npy` (Srivastava et al. 2015; every Moving MNIST table of the literature, OpenSTL's included, is scored
# on it): 10,000 sequences of 20 frames of 64x64 uint8, stored time-major as `(20, 10000, 64, 64)`; the first 10 frames
# are the input, the last 10 the target. Some forks save it sequence-major, `(10000, 20, 64, 64)`.
#
# How our generator relates to Srivastava et al.'s (`data_handler.py` of the unsupervised-videos code) and to the fastai
# tutorial's: all three draw the start position uniformly in the room the 28x28 digit leaves (36 px in 64x64) and
# combine overlapping digits with max. Srivastava et al. draw a direction theta uniform in [0, 2pi) and move by 0.1 of the
# travel (3.6 px) a frame, as ours does; they step once before the first frame, clamp a digit that crosses an edge onto
# the edge (dropping the overshoot) and truncate positions to integers, where ours reflects the overshoot (a closed-form
# triangle wave) and rounds. The statistics of the frames (speed, direction, bounce rate) are the same; the sequences
# for a given random draw are not identical pixel for pixel. The tutorial's generator draws each velocity component
# uniform in [0,1) (so digits only start moving down-right) and steps by 0.2 of the travel: up to 7.2 px a frame along
# each axis, twice the standard speed, which makes its sequences a different (harder) task.
# `MovingMNIST.srivastava(n)` (and `to_npy(..., srivastava=True)`) makes sequences with their construction exactly (step
# first, clamp, truncate; tested against a line-by-line port of their loops), for numbers comparable bit for bit.

class MovingMNISTError(DigitsError):
    "A Moving MNIST sequence file that cannot be read: the message names the file and says how to write a readable one"
    # a `DigitsError` subclass only so that `except DigitsError`, which caught these errors before this class existed, still does

_MM_HELP = ("Moving MNIST files are uint8 arrays of shape (20, N, 64, 64) (the standard mnist_test_seq.npy, time-major) or "
            "(N, 20, 64, 64) (sequence-major); write one with MovingMNIST(...).to_npy(fn, n).")

def _mm_layout(a:np.ndarray, fn, layout:str) -> str:
    "'TN' (time-major) or 'NT' (sequence-major) for the 4-D array `a`; 'auto' tells them apart by shape, else by motion"
    if layout in ('TN', 'NT'): return layout
    if layout!='auto': raise ValueError(f"layout must be 'auto', 'TN' (time-major, the standard file) or 'NT', got {layout!r}")
    a0,a1 = a.shape[:2]
    if a0==20 and a1!=20: return 'TN'
    if a1==20 and a0!=20: return 'NT'
    if a1==1 and a0>1: return 'TN'
    if a0==1 and a1>1: return 'NT'
    # frames of one sequence differ little, frames of different sequences a lot: the time axis is the one of small changes
    s = np.asarray(a[:min(a0, 8), :min(a1, 8)], dtype=np.float32)
    d0,d1 = np.abs(np.diff(s, axis=0)).mean(), np.abs(np.diff(s, axis=1)).mean()
    return 'TN' if d0<=d1 else 'NT'

def load_moving_mnist(
    fn:str|Path, # A `.npy` of Moving MNIST sequences: the standard `mnist_test_seq.npy` `(20,N,64,64)`, or `(N,20,64,64)`
    layout:str='auto', # 'TN': time-major (the standard file), 'NT': sequence-major, 'auto': tell them apart
    mmap:bool=True, # Memory-map the file instead of reading it (the standard file is 820 MB)
) -> np.ndarray:
    "Moving MNIST sequences from a `.npy` file as a uint8 `(N,T,H,W)` array (a view: the file is memory-mapped)"
    fn = Path(fn).expanduser()
    if not fn.is_file(): raise FileNotFoundError(f"{fn}: no such file. {_MM_HELP}")
    try: a = np.load(fn, mmap_mode='r' if mmap else None, allow_pickle=False)
    except Exception as e: raise MovingMNISTError(f"{fn}: cannot load it with numpy ({type(e).__name__}: {e}). {_MM_HELP}") from e
    if not isinstance(a, np.ndarray): raise MovingMNISTError(f"{fn}: an .npz archive, not a single array. {_MM_HELP}")
    if a.ndim==5 and 1 in a.shape[2:3]+a.shape[4:]:
        raise MovingMNISTError(f"{fn}: shape {a.shape} has a channel axis; save the frames without it, e.g. "
                          f"np.save(fn, a.squeeze({2 if a.shape[2]==1 else 4})). {_MM_HELP}")
    if a.ndim!=4 or 0 in a.shape: raise MovingMNISTError(f"{fn}: an array of shape {a.shape}, not (T,N,H,W) or (N,T,H,W). {_MM_HELP}")
    if a.dtype!=np.uint8:
        hint = (" Floats in [0,1]: save (a*255).round().astype(np.uint8)." if np.issubdtype(a.dtype, np.floating) else
                " Save a.astype(np.uint8) if its values are gray levels in [0,255].")
        raise MovingMNISTError(f"{fn}: dtype {a.dtype}, expected uint8.{hint} {_MM_HELP}")
    return a.transpose(1, 0, 2, 3) if _mm_layout(a, fn, layout)=='TN' else a

def srivastava_positions(
    n:int, # Trajectories (one per digit)
    T:int, # Frames
    travel:float, # Room the digit leaves, in pixels (36 for 28x28 digits in 64x64)
    step:float=0.1, # Step per frame as a fraction of `travel` (their `step_length_`)
    rng=None, # A `np.random.Generator` or seed: draws `y`, `x`, then `theta`, `n` values each
) -> np.ndarray:
    "Integer top-left positions `(n,T,2)` (y,x) exactly as Srivastava et al.'s `GetRandomTrajectory`: step first, clamp at the walls, truncate"
    rng = np.random.default_rng(rng)
    y,x = rng.random(n),rng.random(n)
    theta = rng.random(n)*2*np.pi
    vy,vx = np.sin(theta),np.cos(theta)
    out = np.zeros((T, 2, n))
    for i in range(T):
        y += vy*step; x += vx*step
        for p,v in ((x, vx), (y, vy)):   # their order of checks: x <= 0, x >= 1, y <= 0, y >= 1
            m = p<=0; p[m] = 0; v[m] = -v[m]
            m = p>=1.0; p[m] = 1.0; v[m] = -v[m]
        out[i, 0],out[i, 1] = y,x
    return (travel*out).astype(np.int32).transpose(2, 0, 1).astype(np.intp)

@patch
def srivastava(self:MovingMNIST,
    n:int, # Sequences
    rng=None, # A `np.random.Generator` or seed
) -> np.ndarray:
    "`n` sequences uint8 `(n,n_frames,size,size)` made as Srivastava et al.'s generator makes them (their trajectories, max-combined digits)"
    rng = np.random.default_rng(rng)
    h,w = self.digits.shape[1:]
    if h!=w or self.travel[0]!=self.travel[1]: raise ValueError("Srivastava et al.'s construction is for square digits in a square canvas.")
    K = self.max_digits
    step = round(self.speed/float(self.travel[0]), 12)   # 0.1 exactly by default, as theirs
    pos = srivastava_positions(n*K, self.n_frames, float(self.travel[0]), step, rng)
    pos = pos.reshape(n, K, self.n_frames, 2).transpose(0, 2, 1, 3)   # their trajectory j*K+k is digit k of sequence j
    p = self.sample(n, rng)   # digit indices and counts, drawn after the trajectories
    return paste_digits(np.zeros((n, self.n_frames, self.size, self.size), np.uint8), self.digits, p['idx'], np.ascontiguousarray(pos))

@patch
def to_npy(self:MovingMNIST,
    fn:str|Path, # The `.npy` file to write
    n:int=10_000, # Number of sequences
    layout:str='TN', # 'TN': time-major `(T,n,H,W)` like `mnist_test_seq.npy`; 'NT': `(n,T,H,W)`
    srivastava:bool=False, # Make the sequences with Srivastava et al.'s construction (`MovingMNIST.srivastava`) instead of ours
) -> Path:
    "Write `n` sequences of `n_in+n_out` frames in the layout of the standard `mnist_test_seq.npy`: a test set apart from training and validation"
    if layout not in ('TN', 'NT'): raise ValueError(f"layout must be 'TN' (the standard file) or 'NT', got {layout!r}")
    if n<1: raise ValueError(f"n must be >= 1, got {n}")
    fn = Path(fn).expanduser()
    fn.parent.mkdir(parents=True, exist_ok=True)
    T,S = self.n_frames, self.size
    out = np.lib.format.open_memmap(fn, mode='w+', dtype=np.uint8, shape=(T, n, S, S) if layout=='TN' else (n, T, S, S))
    for c in range(-(-n//self.chunk)):   # split 2: a random stream of its own, disjoint from training (0) and validation (1)
        s = (self.srivastava(self.chunk, np.random.default_rng([int(self.seed), 2, 0, c])) if srivastava else
             self._gen_chunk(2, 0, c))[:n-c*self.chunk]
        if layout=='TN': out[:, c*self.chunk:c*self.chunk+len(s)] = s.transpose(1, 0, 2, 3)
        else: out[c*self.chunk:c*self.chunk+len(s)] = s
    out.flush(); del out
    return fn

class MovingMNISTFile(Transform):
    "Item `i` of a Moving MNIST file -> its first `n_in` frames (`part='x'`) or the `n_out` after them (`part='y'`), uint8 `ImageSeq` `(T,1,H,W)`"
    def __init__(self,
        fn:str|Path, # The file, as for `load_moving_mnist`
        n_in:int=10, # Input frames
        n_out:int=10, # Target frames after them
        part:str='x', # 'x' or 'y'
        layout:str='auto', # As for `load_moving_mnist`
    ):
        super().__init__()
        if part not in ('x', 'y'): raise ValueError(f"part must be 'x' or 'y', got {part!r}")
        store_attr()
        self.fn,self._a = Path(fn),None
        T = self.seqs.shape[1]
        if n_in<1 or n_out<1 or n_in+n_out>T:
            raise ValueError(f"{fn}: sequences of {T} frames cannot give n_in={n_in} input and n_out={n_out} target frames "
                             f"(the standard split is 10 -> 10 of 20).")
    @property
    def seqs(self) -> np.ndarray:
        "The `(N,T,H,W)` sequences of the file (memory-mapped on first use)"
        if self._a is None: self._a = load_moving_mnist(self.fn, self.layout)
        return self._a
    def __getstate__(self): return {**self.__dict__, '_a': None}   # pickles the file name, never the data
    def encodes(self, i:int|np.integer):
        s = self.seqs[int(i)]
        s = s[:self.n_in] if self.part=='x' else s[self.n_in:self.n_in+self.n_out]
        return ImageSeq(torch.from_numpy(np.array(s)[:, None]))   # a copy: the memory map is read-only

def moving_mnist_test_dl(
    fn:str|Path, # The standard `mnist_test_seq.npy` or a file written by `MovingMNIST.to_npy`
    n_in:int=10, # Input frames of each sequence
    n_out:int=10, # Target frames after them
    bs:int=16, # Batch size
    n:int=None, # Score only the first `n` sequences; None: all
    layout:str='auto', # As for `load_moving_mnist`
    device=None, # Device of the batches
    **kwargs
) -> TfmdDL:
    "A `DataLoader` of the `n_in -> n_out` split of a Moving MNIST file, in order: for `learn.forecast_report(dl)` and `get_preds`"
    fx = MovingMNISTFile(fn, n_in, n_out, 'x', layout)
    N = len(fx.seqs) if n is None else min(int(n), len(fx.seqs))
    dsets = Datasets(list(range(N)), tfms=[[fx], [MovingMNISTFile(fn, n_in, n_out, 'y', layout)]], n_inp=1)
    return TfmdDL(dsets, bs=bs, shuffle=False, drop_last=False, after_batch=[IntToFloatSeq()], device=device, **kwargs)

@patch
def test_dl(self:MovingMNIST,
    fn:str|Path, # A Moving MNIST file (`mnist_test_seq.npy` or one written by `to_npy`)
    bs:int=16, # Batch size
    **kwargs # `moving_mnist_test_dl` arguments (`n`, `layout`, `device`, ...)
) -> TfmdDL:
    "A `DataLoader` of `fn` split as this generator's `n_in -> n_out`"
    return moving_mnist_test_dl(fn, self.n_in, self.n_out, bs=bs, **kwargs)
