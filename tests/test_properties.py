"Property tests (hypothesis): natural sorting, frame samplers, `TimeDistributed`, `UnstackStack`"
import os, random, string, tempfile
from pathlib import Path
import numpy as np, torch, pytest
from torch import nn
from hypothesis import given, settings, assume, strategies as st, HealthCheck
from fastai_seq.core import natural_key, SeqError, ImageSeq
from fastai_seq.data import sample_indices, clip_indices, LoadFrames
from fastai_seq.layers import TimeDistributed, UnstackStack
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `Path.ls_sorted`, `learn.predict` with paths, ...)

cfg = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# ---------------------------------------------------------------- ls_sorted / natural_key
def _ok_name(n:str) -> bool:
    try: b = os.fsencode(n)
    except UnicodeEncodeError: return False  # a lone surrogate other than the ones `fsdecode` makes cannot name a file
    return n not in ('.', '..') and 0 < len(b) <= 200 and b'/' not in b and b'\x00' not in b

# Any file name: printable or not, any script, digits anywhere, and raw non-UTF-8 bytes (as Linux allows)
text_names = st.text(st.characters(blacklist_categories=('Cs',), blacklist_characters='/\x00'), min_size=1, max_size=24)
byte_names = st.binary(min_size=1, max_size=16).map(os.fsdecode)
names = st.one_of(text_names, byte_names, st.from_regex(r'[a-z_\-]{0,4}\d{1,6}[a-z_]{0,3}\.(png|jpg)', fullmatch=True))

@cfg
@given(st.sets(names.filter(_ok_name), max_size=25))
def test_ls_sorted_is_a_permutation_and_never_raises(ns):
    with tempfile.TemporaryDirectory() as d:
        for n in ns: Path(d, n).write_bytes(b'')
        res = [p.name for p in Path(d).ls_sorted()]
    visible = {n for n in ns if not n.startswith('.')}
    assert sorted(res) == sorted(visible) and len(res) == len(visible)  # a permutation of the (non-hidden) files
    keys = [(natural_key(n), n) for n in res]
    assert keys == sorted(keys)  # in natural order

prefixes = st.text(st.characters(blacklist_categories=('Cs', 'Nd'), blacklist_characters='/\x00.'), max_size=8)

@cfg
@given(prefixes, st.sampled_from(['.png', '.jpg', '.JPG', '.tif', '', '.frame.png']), st.sets(st.integers(0, 10**7), min_size=1, max_size=30),
       st.integers(0, 8))
def test_ls_sorted_numbers_in_order(prefix, ext, nums, width):
    "`prefix{n}.ext` names come out in the order of `n`, whatever the prefix and zero padding"
    assume(_ok_name(prefix + '0' + ext) and not prefix.startswith('.'))
    assume(not prefix or not prefix[-1].isdigit())  # no digit of the prefix merges into the number
    assume(not any(c.isdigit() for c in prefix))
    with tempfile.TemporaryDirectory() as d:
        for n in nums: Path(d, f'{prefix}{n:0{width}d}{ext}').write_bytes(b'')
        res = [p.name for p in Path(d).ls_sorted()]
    assert res == [f'{prefix}{n:0{width}d}{ext}' for n in sorted(nums)]

@cfg
@given(st.lists(st.text(max_size=12), max_size=40))
def test_natural_key_is_a_total_order_on_any_strings(ss):
    "Any strings (surrogates, digits of other scripts, empty) sort without error, and sorting is stable under reordering"
    a = sorted(ss, key=lambda s: (natural_key(s), s))
    b = sorted(reversed(ss), key=lambda s: (natural_key(s), s))
    assert a == b and sorted(a) == sorted(ss)

# ---------------------------------------------------------------- samplers
samplers = st.sampled_from(['uniform', 'random', 'first', 'all'])

@cfg
@given(n_total=st.integers(1, 500), n_frames=st.one_of(st.none(), st.integers(1, 64)), stride=st.integers(1, 10),
       sampler=samplers, short=st.sampled_from(['loop', 'pad']), seed=st.integers(0, 2**16))
def test_sample_indices_properties(n_total, n_frames, stride, sampler, short, seed):
    a = sample_indices(n_total, n_frames, sampler, stride=stride, short=short, rng=random.Random(seed))
    assert all(isinstance(i, int) and 0 <= i < n_total for i in a)  # always in range
    if sampler == 'all' or n_frames is None: assert a == list(range(n_total)); return
    assert len(a) == n_frames  # always n_frames of them
    if n_total >= n_frames:
        assert a == sorted(a) and len(set(a)) == n_frames  # sorted and distinct when the clip is long enough
        if sampler in ('random', 'first'):  # a window: one constant step, no larger than asked
            d = set(np.diff(a).tolist()) or {1}
            assert len(d) == 1 and 1 <= d.pop() <= stride
        if sampler == 'first': assert a[0] == 0
        if sampler == 'uniform' and n_frames > 1: assert a[0] == 0 and a[-1] == n_total-1  # spans the clip
    elif short == 'pad': assert a == sorted(a) and a[:n_total] == list(range(n_total)) and set(a[n_total:]) <= {n_total-1}
    else: assert a == [i % n_total for i in range(n_frames)]
    if sampler != 'random':  # deterministic: same answer with any random state
        assert a == sample_indices(n_total, n_frames, sampler, stride=stride, short=short, rng=random.Random(seed+1))

@cfg
@given(n_total=st.integers(1, 300), n_frames=st.integers(1, 40))
def test_short_error_iff_too_short(n_total, n_frames):
    if n_total >= n_frames: assert len(sample_indices(n_total, n_frames, 'uniform', short='error')) == n_frames
    else:
        with pytest.raises(SeqError, match=f'has {n_total} frames'): sample_indices(n_total, n_frames, 'uniform', short='error', fn='v.mp4')

@cfg
@given(n_total=st.integers(1, 400), n_frames=st.integers(1, 32), n_clips=st.integers(1, 6), stride=st.integers(1, 4),
       sampler=st.sampled_from(['uniform', 'random']), data=st.data())
def test_clip_indices_properties(n_total, n_frames, n_clips, stride, sampler, data):
    k = data.draw(st.integers(0, n_clips-1))
    a = clip_indices(n_total, n_frames, k, n_clips, sampler=sampler, stride=stride)
    assert len(a) == n_frames and all(0 <= i < n_total for i in a)
    if n_total >= n_frames: assert a == sorted(a)
    assert a == clip_indices(n_total, n_frames, k, n_clips, sampler=sampler, stride=stride)  # deterministic

@cfg
@given(t=st.integers(1, 30), n_frames=st.integers(1, 12), sampler=st.sampled_from(['uniform', 'first', 'all']),
       short=st.sampled_from(['loop', 'pad']))
def test_load_frames_reads_the_sampled_indices(t, n_frames, sampler, short):
    "End to end through `LoadFrames`: frame i of an array holds value i, so the output spells the indices read"
    x = torch.arange(t, dtype=torch.uint8).view(t, 1, 1, 1).expand(t, 1, 3, 4).contiguous()
    out = LoadFrames(n_frames, sampler, short, channels=1)(x)
    assert isinstance(out, ImageSeq)
    assert out[:, 0, 0, 0].tolist() == sample_indices(t, n_frames, sampler, short=short)

# ---------------------------------------------------------------- TimeDistributed
class _Pair(nn.Module):
    "A per-frame module with a kwarg and a tuple output"
    def __init__(self, c): super().__init__(); self.conv = nn.Conv2d(c, 2, 3, padding=1)
    def forward(self, x, scale=1.): y = self.conv(x)*scale; return y, y.mean((2, 3))  # (N,2,H,W) and (N,2)

@cfg
@given(b=st.integers(1, 3), t=st.integers(1, 5), c=st.integers(1, 3), h=st.integers(3, 9), w=st.integers(3, 9),
       low_mem=st.booleans(), tdim=st.sampled_from([1, 2]), seed=st.integers(0, 1000))
def test_time_distributed_equals_loop_over_time(b, t, c, h, w, low_mem, tdim, seed):
    torch.manual_seed(seed)
    m = _Pair(c).eval()
    x = torch.randn(b, t, c, h, w)
    if tdim == 2: x = x.transpose(1, 2)  # (B,C,T,H,W), not contiguous
    y, s = TimeDistributed(m, low_mem=low_mem, tdim=tdim)(x, scale=0.5)
    steps = [m(x.select(tdim, i), scale=0.5) for i in range(t)]
    assert torch.allclose(y, torch.stack([o[0] for o in steps], tdim), atol=1e-5)
    assert torch.allclose(s, torch.stack([o[1] for o in steps], tdim), atol=1e-5)
    assert s.shape == ((b, t, 2) if tdim == 1 else (b, 2, t))  # time lands at `tdim` in every output

@cfg
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=4), f=st.integers(1, 6), low_mem=st.booleans())
def test_time_distributed_linear_any_leading_shape(shape, f, low_mem):
    "A Linear over `(B,T,...,F)` features: time is axis 1 whatever follows it"
    lin = nn.Linear(f, 3)
    x = torch.randn(*shape, f)
    y = TimeDistributed(lin, low_mem=low_mem)(x)
    assert y.shape == (*shape, 3)
    assert torch.allclose(y, torch.stack([lin(x[:, i]) for i in range(shape[1])], 1), atol=1e-5)

# ---------------------------------------------------------------- UnstackStack
@cfg
@given(shape=st.lists(st.integers(1, 4), min_size=2, max_size=5), data=st.data())
def test_stack_unstack_round_trip(shape, data):
    dim = data.draw(st.integers(-len(shape), len(shape)-1))
    x = torch.randn(*shape)
    frames = list(x.unbind(dim))
    ident = UnstackStack(lambda fs: list(fs), dim=dim)
    assert torch.equal(ident(x), x)  # tensor -> frames -> tensor
    assert torch.equal(ident(frames), x) and torch.equal(ident(tuple(frames)), x)  # frames -> tensor
    if len(frames) > 1:  # frames as separate args (one lone tensor arg is read as the stacked tensor)
        assert torch.equal(UnstackStack(lambda *fs: fs, dim=dim, as_list=False)(*frames), x)
    seen = []
    UnstackStack(lambda fs: seen.extend(fs) or fs, dim=dim)(x)  # the module sees the frames in time order
    assert len(seen) == x.shape[dim] and all(torch.equal(a, b) for a,b in zip(seen, frames))
