"Data sources: MNIST digit loading, embedded offline digits, vectorised Moving MNIST and its `DataLoaders`, generated motion videos"
from __future__ import annotations
import gzip, struct
from fractions import Fraction
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path
import numpy as np, torch
from numpy.lib.stride_tricks import as_strided
from PIL import Image
from torch import Tensor
from fastcore.basics import store_attr, listify, patch
from fastcore.meta import delegates
from fasttransform import Transform
from fastai.data.core import Datasets, TfmdDL, DataLoaders
from fastai.torch_core import TensorBase, TensorImageBW
from .core import ImageSeq, ImageSeqBW, ImageTuple, SeqError, natural_key
from .data import IntToFloatSeq

__all__ = ['DigitsError', 'load_mnist_digits', 'load_mnist', 'embedded_digits', 'MovingMNIST', 'ImageTupleTransform',
           'MovingMNISTFrames', 'MovingMNISTDL',
           'moving_mnist_dls', 'MOTIONS', 'make_moving_videos', 'load_moving_mnist', 'MovingMNISTFile', 'moving_mnist_test_dl',
           'srivastava_positions']

class DigitsError(SeqError):
    "A digit source that cannot be read: the message names the file and lists the accepted formats"

_FORMATS = ("Accepted: MNIST idx image files ('train-images-idx3-ubyte', 't10k-images-idx3-ubyte', plain or .gz), "
            "an .npz/.npy holding (N,28,28) or (N,784) digits (keys x_train/x_test or a single array), "
            "or the png folders of fastai's MNIST sets ('training/<digit>/*.png', 'testing/<digit>/*.png' of URLs.MNIST; "
            "'train/<digit>', 'valid/<digit>' of URLs.MNIST_SAMPLE and URLs.MNIST_TINY), "
            "or a folder holding any of these.")

# ---------------------------------------------------------------------------------------------------------------- digits
def _read_bytes(fn:Path) -> bytes:
    "The content of `fn`, gunzipped when it starts with the gzip magic bytes"
    with open(fn, 'rb') as f: head = f.read(2)
    try:
        with (gzip.open if head==b'\x1f\x8b' else open)(fn, 'rb') as f: return f.read()
    except (OSError, EOFError) as e:
        raise DigitsError(f"{fn}: cannot read this file ({type(e).__name__}: {e}); it is corrupt or truncated, get it again.") from e

def _read_idx_images(fn:Path) -> np.ndarray:
    "Images `(N,rows,cols)` uint8 from an MNIST idx3 file, checking its magic number and size"
    b = _read_bytes(fn)
    if len(b)<16: raise DigitsError(f"{fn}: {len(b)} bytes, too short for an MNIST idx header. {_FORMATS}")
    magic,n,h,w = struct.unpack('>iiii', b[:16])
    if magic==2049: raise DigitsError(f"{fn}: an MNIST *labels* file (idx1, magic 0x00000801): pass the matching "
                                      "'*-images-idx3-ubyte' file instead.")
    if magic!=2051: raise DigitsError(f"{fn}: not an MNIST idx image file (magic number {magic & 0xffffffff:#010x}, expected "
                                      f"0x00000803). {_FORMATS}")
    if n<0 or h<=0 or w<=0 or len(b)!=16+n*h*w:
        raise DigitsError(f"{fn}: the header announces {n} images of {h}x{w} ({16+n*h*w} bytes) but the file holds {len(b)} "
                          "bytes: it is truncated or corrupt, get it again.")
    return np.frombuffer(b, np.uint8, offset=16).reshape(n, h, w).copy()

def _as_digits(a, src='digits') -> np.ndarray:
    "Check and convert an array of digits to `(N,h,w)` uint8 (floats in [0,1] are scaled by 255)"
    a = np.asarray(a.detach().cpu() if isinstance(a, Tensor) else a)
    if a.ndim==2 and a.shape[1]==784: a = a.reshape(-1, 28, 28)
    if a.ndim==4 and a.shape[-1]==1: a = a[..., 0]
    elif a.ndim==4 and a.shape[1]==1: a = a[:, 0]
    if a.ndim!=3 or 0 in a.shape: raise DigitsError(f"{src}: expected digits of shape (N,h,w), (N,784) or (N,1,h,w), got "
                                                  f"{a.shape}. {_FORMATS}")
    if a.dtype==np.uint8: return a
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype==bool):
        raise DigitsError(f"{src}: digits of dtype {a.dtype}; give uint8 in [0,255] or floats in [0,1].")
    lo,hi = float(a.min()), float(a.max())
    if lo<0 or hi>255: raise DigitsError(f"{src}: digit values span [{lo}, {hi}]; give uint8 in [0,255] or floats in [0,1].")
    if np.issubdtype(a.dtype, np.floating) and hi<=1: a = a*255
    return np.round(a).astype(np.uint8)

def _read_idx_labels(fn:Path) -> np.ndarray:
    "Labels `(N,)` int64 from an MNIST idx1 file, checking its magic number and size"
    b = _read_bytes(fn)
    if len(b)<8: raise DigitsError(f"{fn}: {len(b)} bytes, too short for an MNIST idx labels header.")
    magic,n = struct.unpack('>ii', b[:8])
    if magic!=2049: raise DigitsError(f"{fn}: not an MNIST idx labels file (magic number {magic & 0xffffffff:#010x}, expected "
                                      "0x00000801).")
    if n<0 or len(b)!=8+n: raise DigitsError(f"{fn}: the header announces {n} labels but the file holds {len(b)-8} bytes of them: "
                                             "it is truncated or corrupt, get it again.")
    return np.frombuffer(b, np.uint8, offset=8).astype(np.int64)

def _labels_file(fn:Path) -> Path:
    "The idx labels file beside the idx images file `fn` ('t10k-images-idx3-ubyte.gz' -> 't10k-labels-idx1-ubyte[.gz]')"
    stem = fn.name.removesuffix('.gz').replace('images-idx3', 'labels-idx1')
    for c in (fn.parent/stem, fn.parent/f'{stem}.gz'):
        if c.is_file(): return c
    raise DigitsError(f"{fn}: no labels file beside it ({stem} or {stem}.gz): put the matching labels file in {fn.parent}, "
                      "or use load_mnist_digits for the images alone.")

def _idx_pair(fn:Path, labels:bool):
    x = _read_idx_images(fn)
    if not labels: return x, None
    lf = _labels_file(fn)
    y = _read_idx_labels(lf)
    if len(y)!=len(x): raise DigitsError(f"{lf}: {len(y)} labels for the {len(x)} images of {fn}: use the matching pair of files.")
    return x, y

_LABEL_KEYS = {'x_train':'y_train', 'x_val':'y_val', 'x_valid':'y_valid', 'x_test':'y_test', 'images':'labels', 'digits':'labels',
               'x':'y', 'data':'labels'}

def _read_array_file(fn:Path, labels:bool=False):
    "Digits (and labels) from an `.npy` or `.npz` (keys x_train/x_val/x_test concatenated in that order, or a single array)"
    try: z = np.load(fn, allow_pickle=False)
    except Exception as e: raise DigitsError(f"{fn}: cannot load it with numpy ({type(e).__name__}: {e}). {_FORMATS}") from e
    if isinstance(z, np.ndarray):
        if labels: raise DigitsError(f"{fn}: a single array holds no labels; save an .npz with x_train/y_train (or x_test/y_test).")
        return _as_digits(z, fn), None
    with z:
        keys = list(z.keys())
        xs = [k for k in ('x_train', 'x_val', 'x_valid', 'x_test') if k in keys]
        if not xs: xs = [k for k in ('images', 'digits', 'x', 'data') if k in keys][:1]
        if not xs and len(keys)==1: xs = keys
        if not xs: raise DigitsError(f"{fn}: cannot tell which of the arrays {keys} holds the digits; name it x_train/x_test "
                                     "or save a single array.")
        x = np.concatenate([_as_digits(z[k], f'{fn}[{k!r}]') for k in xs])
        if not labels: return x, None
        missing = [_LABEL_KEYS.get(k, f'labels for {k}') for k in xs if _LABEL_KEYS.get(k) not in keys]
        if missing: raise DigitsError(f"{fn}: no labels {missing} for the digits {xs} (arrays: {keys}); save them beside the digits.")
        y = np.concatenate([np.asarray(z[_LABEL_KEYS[k]]).astype(np.int64).reshape(-1) for k in xs])
        if len(y)!=len(x): raise DigitsError(f"{fn}: {len(y)} labels for {len(x)} digits.")
        return x, y

def _is_idx_images(p:Path) -> bool: return p.is_file() and 'idx3-ubyte' in p.name and 'images' in p.name

_SPLIT_ORDER = ('training', 'train', 'valid', 'validation', 'val', 'testing', 'test')

def _png_roots(d:Path) -> list:
    "The folders of `d` laid out as `<digit>/*.png`: every split (training/train, valid, testing/test, then others by name), or `d`"
    def _has_digit_dirs(p): return p.is_dir() and any(s.is_dir() and s.name.isdigit() for s in p.iterdir())
    subs = [s for s in d.iterdir() if _has_digit_dirs(s)]
    roots = sorted(subs, key=lambda s: (_SPLIT_ORDER.index(s.name.lower()) if s.name.lower() in _SPLIT_ORDER else len(_SPLIT_ORDER),
                                        natural_key(s.name)))
    return roots or ([d] if _has_digit_dirs(d) else [])

def _read_png(fn): return np.asarray(Image.open(fn).convert('L'))

def _read_png_tree(roots:list, labels:bool=False):
    "All `<root>/<digit>/*.png` images, roots in order, digit folders and files in natural order, as `(N,h,w)` uint8 (and labels)"
    fns,ys = [],[]
    for r in roots:
        for s in sorted((s for s in r.iterdir() if s.is_dir() and s.name.isdigit()), key=lambda s: int(s.name)):
            fs = sorted(s.glob('*.png'), key=lambda f: natural_key(f.name))
            fns += fs; ys += [int(s.name)]*len(fs)
    if not fns: raise DigitsError(f"{roots[0]}: digit folders without png files. {_FORMATS}")
    with ThreadPoolExecutor(4) as ex: imgs = list(ex.map(_read_png, fns))
    shapes = {i.shape for i in imgs}
    if len(shapes)>1:
        bad = next(f for f,i in zip(fns, imgs) if i.shape!=imgs[0].shape)
        raise DigitsError(f"{bad}: {_read_png(bad).shape[::-1]} pixels while {fns[0]} has {imgs[0].shape[::-1]}: "
                          "all digit images must have one size.")
    return np.stack(imgs), (np.array(ys, dtype=np.int64) if labels else None)

def _load_mnist(path, labels:bool):
    "Digits and (when `labels`) their labels from any of the accepted sources"
    p = Path(path).expanduser()
    if not p.exists(): raise FileNotFoundError(f"{p}: no such file or folder. {_FORMATS}")
    if p.is_file():
        if p.suffix.lower() in ('.npz', '.npy'): return _read_array_file(p, labels)
        return _idx_pair(p, labels)
    idx = [f for f in p.iterdir() if _is_idx_images(f)]
    # one file per data set: a plain copy wins over its .gz twin; train before t10k/test
    byname = {}
    for f in sorted(idx, key=lambda f: f.name.endswith('.gz')): byname.setdefault(f.name.removesuffix('.gz'), f)
    if byname:
        pairs = [_idx_pair(f, labels) for _,f in sorted(byname.items(), key=lambda o: ('train' not in o[0], o[0]))]
        return np.concatenate([x for x,_ in pairs]), (np.concatenate([y for _,y in pairs]) if labels else None)
    arrs = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in ('.npz', '.npy'))
    if len(arrs)==1: return _read_array_file(arrs[0], labels)
    if len(arrs)>1: raise DigitsError(f"{p}: several array files {[a.name for a in arrs]}; pass the one holding the digits.")
    roots = _png_roots(p)
    if roots: return _read_png_tree(roots, labels)
    raise DigitsError(f"{p}: no MNIST digits found in this folder. {_FORMATS}")

def load_mnist_digits(
    path:str|Path, # An idx(.gz) image file, an .npz/.npy, or a folder holding idx files, an .npz or fastai's MNIST png folders
) -> np.ndarray:
    "MNIST digits as an `(N,28,28)` uint8 array; a folder with several splits gives all of them, training first"
    return _load_mnist(path, labels=False)[0]

def load_mnist(
    path:str|Path, # As for `load_mnist_digits`; idx image files need their labels file beside them, an .npz its y_* arrays
) -> tuple:
    "MNIST `(digits, labels)`: `(N,28,28)` uint8 and `(N,)` int64, from idx files, an .npz or a png tree (labels = folder names)"
    return _load_mnist(path, labels=True)

@lru_cache(maxsize=1)
def _embedded_digits() -> np.ndarray:
    from sklearn.datasets import load_digits
    x = torch.from_numpy(load_digits().images.astype(np.float32)/16)[:, None]   # (1797,1,8,8), ink coverage in [0,1]
    u = torch.nn.functional.interpolate(x, size=(20,20), mode='bicubic', align_corners=False)[:, 0].numpy()
    u = np.clip((u-0.35)/0.4, 0, 1)   # sharpen the blurry upscaled strokes to MNIST-like saturated lines (mean ~37 vs 33.8)
    # centre each 20x20 digit by its centre of mass in a 28x28 field, as MNIST was made
    ys,xs = np.arange(20.)[None,:,None], np.arange(20.)[None,None,:]
    m = u.sum((1,2)).clip(1e-6)
    dy = np.clip(np.round(9.5-(u*ys).sum((1,2))/m), -4, 4).astype(int)
    dx = np.clip(np.round(9.5-(u*xs).sum((1,2))/m), -4, 4).astype(int)
    out = np.zeros((len(u), 28, 28), np.uint8)
    u8 = np.round(u*255).astype(np.uint8)
    for i in range(len(u)): out[i, 4+dy[i]:24+dy[i], 4+dx[i]:24+dx[i]] = u8[i]
    out.flags.writeable = False
    return out

def embedded_digits() -> np.ndarray:
    "scikit-learn's bundled handwritten digits (1797 8x8 images) upscaled to MNIST-like `(1797,28,28)` uint8: no download needed"
    # Bicubic upscaling to a 20x20 box, a contrast curve for saturated strokes, then centred by mass with a 4 px margin
    return _embedded_digits().copy()

# --------------------------------------------------------------------------------------------------------------- render
_BLOCK = 32  # sequences pasted per step: keeps the working set of a step in the CPU cache

def _paste_digits(out:np.ndarray, digits:np.ndarray, idx:np.ndarray, pos:np.ndarray) -> np.ndarray:
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
        self._digits = None if digits is None else (load_mnist_digits(digits) if self.digits_src is not None else _as_digits(digits))
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
        return _paste_digits(out, self.digits, params['idx'], pos)

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
    # `TfmdLists` index it with `range(n)` for training and validation alike, so the role of each transform is its own:
    # training draws fresh random sequences at every call (seeded from torch's RNG, so `set_seed` and worker processes
    # behave), validation reads the fixed sequences `ds[i]`, the same every epoch and run.
    def __init__(self,
        ds:MovingMNIST, # The generator; `ds[i]` gives the fixed (validation) sequences
        train:bool=None, # Fresh sequences each call (True) or the fixed `ds[i]` (False); None: as set up in `TfmdLists` on `ds`, training, validation, training, ...
    ):
        super().__init__()
        if not isinstance(ds, MovingMNIST): raise TypeError(f"ImageTupleTransform takes a MovingMNIST, got {type(ds).__name__}")
        self.ds,self.train = ds,train

    def setups(self, items):
        "With `train=None`, transforms set up by a `TfmdLists` on one `ds` alternate: training (the package's `train_tl`), validation, ..."
        # alternating (not "only the first trains") keeps re-running the `train_tl` line of a notebook from reading the fixed
        # validation sequences for training
        if self.train is None:
            n_train,n_fixed = getattr(self.ds, '_tuple_roles', (0, 0))
            self.train = n_fixed>=n_train
            self.ds._tuple_roles = (n_train+self.train, n_fixed+(not self.train))

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
    except Exception as e: raise DigitsError(f"{fn}: cannot load it with numpy ({type(e).__name__}: {e}). {_MM_HELP}") from e
    if not isinstance(a, np.ndarray): raise DigitsError(f"{fn}: an .npz archive, not a single array. {_MM_HELP}")
    if a.ndim==5 and 1 in a.shape[2:3]+a.shape[4:]:
        raise DigitsError(f"{fn}: shape {a.shape} has a channel axis; save the frames without it, e.g. "
                          f"np.save(fn, a.squeeze({2 if a.shape[2]==1 else 4})). {_MM_HELP}")
    if a.ndim!=4 or 0 in a.shape: raise DigitsError(f"{fn}: an array of shape {a.shape}, not (T,N,H,W) or (N,T,H,W). {_MM_HELP}")
    if a.dtype!=np.uint8:
        hint = (" Floats in [0,1]: save (a*255).round().astype(np.uint8)." if np.issubdtype(a.dtype, np.floating) else
                " Save a.astype(np.uint8) if its values are gray levels in [0,255].")
        raise DigitsError(f"{fn}: dtype {a.dtype}, expected uint8.{hint} {_MM_HELP}")
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
    return _paste_digits(np.zeros((n, self.n_frames, self.size, self.size), np.uint8), self.digits, p['idx'], np.ascontiguousarray(pos))

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


# ------------------------------------------------------------------------------------------------------- motion videos
MOTIONS = {'left':(0,-1), 'right':(0,1), 'up':(-1,0), 'down':(1,0),
           'up_left':(-1,-1), 'up_right':(-1,1), 'down_left':(1,-1), 'down_right':(1,1)}

_ENCODERS = {'h264':('libx264', 'h264'), 'hevc':('libx265', 'hevc'), 'h265':('libx265', 'hevc'),
             'vp8':('libvpx',), 'vp9':('libvpx-vp9',), 'av1':('libaom-av1', 'libsvtav1', 'librav1e')}
_COMMON_ENCODERS = ('libx264', 'libx265', 'mpeg4', 'libvpx', 'libvpx-vp9', 'mjpeg', 'ffv1', 'libaom-av1', 'png', 'rawvideo')

def _encoder(codec:str) -> str:
    "The name of an FFmpeg encoder for `codec` in PyAV's build, or a clear error listing the ones there are"
    import av
    names = _ENCODERS.get(codec.lower(), (codec,))
    for nm in names:
        try:
            if av.codec.Codec(nm, 'w').type=='video': return nm
        except Exception: pass
    have = []
    for nm in _COMMON_ENCODERS:
        try: av.Codec(nm, 'w'); have.append(nm)
        except Exception: pass
    raise ValueError(f"codec {codec!r}: this PyAV/FFmpeg build has no video encoder for it (tried {list(names)}). "
                     f"Encoders it has include {have}: e.g. codec='mpeg4', ext='.avi'.")

def _motion_positions(rng, n:int, T:int, dirs:np.ndarray, travel:np.ndarray, speed:tuple) -> np.ndarray:
    "Float positions `(n,T,2)` moving by `dirs*s` a frame and never leaving `[0,travel]` `(n,2)`, with class-free single frames"
    # Along a moving axis, p_t = p0 + d*s*t with p0 uniform where the whole path fits. A still axis takes the position of
    # a random frame of such a path (another speed, a random frame t'), so that pooled over frames every axis, moving or
    # not, has the same distribution for every class: only the change from frame to frame tells the direction.
    t = np.arange(T, dtype=float)[None, :, None]
    s = rng.uniform(*speed, (n, 1, 2))
    ext = s*(T-1)
    p0 = rng.random((n, 1, 2))*(travel[:, None]-ext)
    d = dirs[:, None, :].astype(float)
    moving = p0 + np.where(d<0, ext - s*t, s*t)
    still = p0 + s*rng.integers(0, T, (n, 1, 2))
    return np.where(d!=0, moving, still)

def _write_video(fn:Path, frames:np.ndarray, encoder:str, fps:int, crf:int):
    "Write uint8 gray frames `(T,H,W)` to `fn` with PyAV as yuv420p, byte-identical for identical frames"
    import av
    try:
        with av.open(str(fn), 'w') as c:
            rate = Fraction(fps).limit_denominator(1001)
            st = c.add_stream(encoder, rate=rate)
            st.width,st.height,st.pix_fmt = frames.shape[2], frames.shape[1], 'yuv420p'
            st.codec_context.thread_count = 1   # reproducible bytes; frames this small gain nothing from threads
            # x264's macroblock tree reads unset memory on frames this small: without `mbtree=0` the files differ run to run
            if encoder=='libx264': st.options = {'crf': str(crf), 'preset': 'veryfast', 'x264-params': 'mbtree=0'}
            elif encoder=='libx265': st.options = {'crf': str(crf), 'preset': 'veryfast'}
            else: st.bit_rate = int(frames.shape[1]*frames.shape[2]*fps*4)   # ~4 bits a pixel: near-lossless at these sizes
            ys = np.round(16+frames.astype(np.float32)*(219/255)).astype(np.uint8)   # gray to limited-range luma
            uv = np.full((frames.shape[1]//2, frames.shape[2]), 128, np.uint8)      # neutral chroma: U then V planes
            for i,y in enumerate(ys):
                vf = av.VideoFrame.from_ndarray(np.concatenate([y, uv]), format='yuv420p')
                vf.pts,vf.time_base = i,1/rate
                for p in st.encode(vf): c.mux(p)
            for p in st.encode(): c.mux(p)
    except Exception as e:
        raise ValueError(f"{fn}: could not write it with encoder {encoder!r} ({type(e).__name__}: {e}). The container "
                         f"{fn.suffix!r} may not take this codec: try codec='h264', ext='.mp4' or codec='mpeg4', ext='.avi'.") from e

def _motion_clips(n_per_class:int, n_frames:int, size:int, classes:list, digits, speed:tuple, noise:float, names:str,
                  clips_per_group:int, seed:int) -> dict:
    "The frames `(n,T,size,size)` uint8 of the clips `make_moving_videos` writes, their class indices, names, digits and positions"
    bad = [c for c in classes if c not in MOTIONS]
    if bad: raise ValueError(f"Unknown motion classes {bad}: use keys of MOTIONS {list(MOTIONS)}.")
    if names not in ('class', 'ucf'): raise ValueError(f"names must be 'class' or 'ucf', got {names!r}")
    if n_frames<2: raise ValueError(f"n_frames must be >= 2 to show any motion, got {n_frames}")
    digs = embedded_digits() if digits is None else (load_mnist_digits(digits) if isinstance(digits, (str, Path)) else _as_digits(digits))
    h,w = digs.shape[1:]
    if speed[0]<=0 or speed[1]<speed[0]: raise ValueError(f"speed must be a range (lo, hi) with 0 < lo <= hi, got {speed}")
    if speed[1]*(n_frames-1)>size-max(h, w):
        raise ValueError(f"A digit at {speed[1]} px/frame for {n_frames} frames travels {speed[1]*(n_frames-1):g} px, more than the "
                         f"{size-max(h, w)} px a {h}x{w} digit has in {size}x{size} frames: lower speed or n_frames, or raise size.")
    rng = np.random.default_rng(seed)
    n = n_per_class*len(classes)
    cls_i = np.repeat(np.arange(len(classes)), n_per_class)
    clip_i = np.tile(np.arange(n_per_class), len(classes))
    group = clip_i//clips_per_group
    dirs = np.array([MOTIONS[c] for c in classes])[cls_i]
    if names=='ucf':   # a group shares its digit, like UCF101 clips cut from one video
        idx = rng.integers(0, len(digs), (len(classes), group.max()+1))[cls_i, group]
    else: idx = rng.integers(0, len(digs), n)
    # The digit's ink, not its empty margin, must stay in the frame: each clip moves within the room its ink box leaves
    ink_r,ink_c = digs[idx].max(2)>0, digs[idx].max(1)>0
    first = np.stack([ink_r.argmax(1), ink_c.argmax(1)], -1)                              # (n,2) top, left of the ink
    last = np.stack([h-1-ink_r[:, ::-1].argmax(1), w-1-ink_c[:, ::-1].argmax(1)], -1)     # bottom, right
    travel = (size-(last-first+1)).astype(float)
    ink = _motion_positions(rng, n, n_frames, dirs, travel, speed)                         # top-left of the ink box
    pos = np.floor(ink+0.5).astype(np.intp).clip(0, travel.astype(np.intp)[:, None])-first[:, None]   # of the digit image
    m = int(max(first.max(), (np.array([h-1, w-1])-last).max()))   # render with a margin for the image's empty part, then crop
    big = _paste_digits(np.zeros((n, n_frames, size+2*m, size+2*m), np.uint8), digs, idx[:, None], (pos+m)[:, :, None])
    frames = big[:, :, m:m+size, m:m+size]
    level = rng.uniform(0.7, 1.0, (n, 1, 1, 1)).astype(np.float32)   # digit brightness, per clip
    bg = rng.uniform(0, 30, (n, 1, 1, 1)).astype(np.float32)          # background level, per clip
    f = frames*level
    np.maximum(f, bg, out=f)
    f += rng.standard_normal(f.shape, dtype=np.float32)*np.float32(noise)
    frames = np.clip(np.rint(f, out=f), 0, 255, out=f).astype(np.uint8)
    fnames = [f"v_{''.join(p.title() for p in classes[c].split('_'))}_g{g+1:02d}_c{i%clips_per_group+1:02d}" if names=='ucf'
              else f"{classes[c]}_{i}" for c,g,i in zip(cls_i, group, clip_i)]
    return dict(frames=frames, cls=cls_i, names=fnames, idx=idx, pos=pos)

def make_moving_videos(
    dest:str|Path, # Folder to write `dest/<class>/<name><ext>` into
    n_per_class:int=24, # Clips per class
    n_frames:int=16, # Frames per clip
    size:int=64, # Height and width of the frames (even, for yuv420p)
    classes=('left','right','up','down'), # Directions of motion: keys of `MOTIONS`
    digits=None, # Digit images or a path as for `MovingMNIST`; None: the embedded offline digits
    fps:float=25, # Frame rate written in the files
    codec:str='h264', # A codec ('h264', 'hevc', 'vp9', ...) or an FFmpeg encoder name ('libx264', 'mpeg4', ...)
    ext:str='.mp4', # Container, by extension ('.mp4', '.avi', '.mkv', ...)
    speed:tuple=(0.5, 1.0), # Range of the pixels per frame along each moving axis, drawn per clip
    noise:float=10., # Standard deviation of the gaussian noise on every frame, in gray levels
    names:str='class', # 'class': `<class>_<i>`; 'ucf': UCF101-like `v_<Class>_gXX_cYY` (the clips of a group share their digit)
    clips_per_group:int=4, # Clips per group with `names='ucf'`
    crf:int=18, # Quality of libx264/libx265 (lower is better; 18 looks like the source)
    seed:int=0, # Seeds everything drawn: the same files for the same seed
) -> Path:
    "Write a folder-per-class set of real video files of a digit moving in each class's direction; a single frame cannot tell the class"
    dest,classes = Path(dest),list(classes)
    if size%2: raise ValueError(f"size must be even for yuv420p video, got {size}.")
    if not ext.startswith('.'): ext = '.'+ext
    encoder = _encoder(codec)
    clips = _motion_clips(n_per_class, n_frames, size, classes, digits, speed, noise, names, clips_per_group, seed)
    for fr,c,name in zip(clips['frames'], clips['cls'], clips['names']):
        fn = dest/classes[c]/f'{name}{ext}'
        fn.parent.mkdir(parents=True, exist_ok=True)
        _write_video(fn, fr, encoder, fps, crf)
    return dest
