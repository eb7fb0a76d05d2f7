import gc, multiprocessing, os, random, shutil
import numpy as np, torch, pytest
from pathlib import Path
from PIL import Image
from hypothesis import given, settings, strategies as st
from fastai.vision.all import (DataBlock, CategoryBlock, parent_label, GrandparentSplitter, IndexSplitter, Resize,
    RandomResizedCrop, FlipItem, aug_transforms, Normalize, imagenet_stats, Pipeline, TensorBase, Transform, plt)
from fastai_seq.core import ImageSeq, ImageSeqBW, SeqError
from fastai_seq.data import *
from fastai_seq.video import get_video_files
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: sequence-aware `lighting`/`hsv`, ...)
from conftest import make_frames, frame_index, write_video

# ---- samplers ----
def test_uniform_is_deterministic_and_spans_the_clip():
    a = sample_indices(100, 8, 'uniform')
    assert a == sample_indices(100, 8, 'uniform') and a[0]==0 and a[-1]==99 and a==sorted(a) and len(set(a))==8
    assert sample_indices(100, 1, 'uniform') == [49] and sample_indices(5, 1, 'uniform') == [2]  # one frame: the middle

def test_random_windows_are_consecutive():
    rng = random.Random(0)
    starts = set()
    for _ in range(50):
        a = sample_indices(40, 8, 'random', rng=rng)
        assert a == list(range(a[0], a[0]+8)) and a[-1] < 40
        starts.add(a[0])
        b = sample_indices(40, 5, 'random', stride=3, rng=rng)
        assert np.diff(b).tolist() == [3]*4 and b[-1] < 40
    assert len(starts) > 10

def test_first_all_and_stride_shrinks():
    assert sample_indices(20, 4, 'first', stride=2) == [0, 2, 4, 6]
    assert sample_indices(7, None, 'uniform') == list(range(7)) == sample_indices(7, 3, 'all')
    assert sample_indices(10, 4, 'random', stride=5, rng=random.Random(1))[-1] < 10  # stride shrunk to fit

def test_short_policies():
    assert sample_indices(3, 7, 'uniform', short='loop') == [0, 1, 2, 0, 1, 2, 0]
    assert sample_indices(3, 5, 'random', short='pad') == [0, 1, 2, 2, 2]
    with pytest.raises(SeqError, match=r"clip\.mp4.*3 frames.*n_frames=5"):
        sample_indices(3, 5, 'uniform', short='error', fn='clip.mp4')
    with pytest.raises(ValueError, match='sampler'): sample_indices(3, 2, 'bogus')

@settings(max_examples=60, deadline=None)
@given(n_total=st.integers(1, 300), n_frames=st.integers(1, 40), stride=st.integers(1, 6),
       sampler=st.sampled_from(['uniform', 'random', 'first']), short=st.sampled_from(['loop', 'pad']))
def test_sampler_properties(n_total, n_frames, stride, sampler, short):
    a = sample_indices(n_total, n_frames, sampler, stride=stride, short=short, rng=random.Random(0))
    assert len(a) == n_frames and all(0 <= i < n_total for i in a)
    if n_total >= n_frames or short=='pad': assert a == sorted(a)
    if sampler=='uniform': assert a == sample_indices(n_total, n_frames, sampler, stride=stride, short=short)

def test_clip_indices_spread():
    clips = [clip_indices(100, 8, k, 4, sampler='random') for k in range(4)]
    assert [c[0] for c in clips] == [0, 31, 61, 92] and all(c==list(range(c[0], c[0]+8)) for c in clips)
    u = [clip_indices(80, 8, k, 2, sampler='uniform') for k in range(2)]
    assert u[0] == [2, 12, 22, 32, 42, 52, 62, 72] and u[1] == [7, 17, 27, 37, 47, 57, 67, 77]

# ---- blocks ----
def _video_dblock(**kw):
    return DataBlock(blocks=(VideoBlock(n_frames=8, **kw), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                     splitter=GrandparentSplitter(), item_tfms=Resize(32))

def test_videoblock_datablock(video_folder):
    dls = _video_dblock().dataloaders(video_folder, bs=4, num_workers=0)
    assert len(dls.train_ds)==6 and len(dls.valid_ds)==4 and list(dls.vocab)==['a', 'b']
    x,y = dls.valid.one_batch()
    assert isinstance(x, ImageSeq) and x.shape==(4,8,3,32,32) and x.dtype==torch.float32
    assert 0 <= x.min() and x.max() <= 1
    # frames arrive in order: uniform sampling over each clip, indices read back from the brightness
    for item, seq in zip(dls.valid.items, x):
        n = len(list(ImageSeq.create(item)))
        assert [frame_index(f) for f in seq] == sample_indices(n, 8, 'uniform')

def test_decoder_resize_skips_fastais_noop_resize(video_folder, monkeypatch):
    "A leading `Resize` the decoder did is not run again per frame, and batches (and the random stream) are unchanged"
    from fastai_seq.data import SeqDL
    import fastai_seq.data as D
    short, calls, call, stacked, stack = SeqDL._after_item, [], Resize.__call__, [], D._stacked
    monkeypatch.setattr(Resize, '__call__', lambda self, *a, **k: calls.append(1) or call(self, *a, **k))
    monkeypatch.setattr(D, '_stacked', lambda o, cls: stacked.append(stack(o, cls)) or stacked[-1])
    def batches(method, split):
        random.seed(0); torch.manual_seed(0)
        dls = DataBlock(blocks=(VideoBlock(n_frames=4, sampler='auto'), CategoryBlock), get_items=get_video_files,
                        get_y=parent_label, splitter=GrandparentSplitter(), item_tfms=Resize(24, method=method)
                        ).dataloaders(video_folder, bs=2, num_workers=0)
        random.seed(1); torch.manual_seed(1)
        calls.clear()
        return [b for b in (dls.train, dls.valid)[split]]
    for method in ('crop', 'pad', 'squish'):
        for split in (0, 1):
            SeqDL._after_item = short
            stacked.clear()
            a = batches(method, split)
            assert a and not calls  # the shortcut was taken
            assert stacked and all(isinstance(o[0], ImageSeq) for o in stacked)  # frames stacked from the decoded array
            monkeypatch.setattr(SeqDL, '_after_item', lambda self, o: self.after_item(o))
            b = batches(method, split)
            assert calls and len(a)==len(b)
            assert all(torch.equal(x[0], y[0]) and torch.equal(x[1], y[1]) and type(x[0]) is type(y[0]) and
                       x[0].is_contiguous() and y[0].is_contiguous() for x, y in zip(a, b))

@pytest.mark.workers
def test_videoblock_workers_and_random_sampler(video_folder):
    dls = _video_dblock(sampler='auto').dataloaders(video_folder, bs=3, num_workers=2)
    x,_ = list(dls.train)[0]  # from a worker (`one_batch` loads in this process)
    assert x.shape==(3,8,3,32,32)
    for seq in x:
        idx = [frame_index(f) for f in seq]
        assert idx == list(range(idx[0], idx[0]+8))  # a consecutive window
    xv,_ = dls.valid.one_batch()
    assert torch.equal(xv, dls.valid.one_batch()[0])  # validation: uniform, deterministic

class _FreezeLog(Transform):
    "Appends the number of frozen objects (`gc.get_freeze_count()`) of the process that loads each item to file `fn`"
    order = 10
    def __init__(self, fn): super().__init__(); self.fn = str(fn)
    def encodes(self, x:ImageSeq):
        with open(self.fn, 'a') as f: f.write(f'{os.getpid()} {gc.get_freeze_count()}\n')
        return x

@pytest.mark.workers
def test_workers_freeze_what_they_inherit(video_folder, tmp_path):
    "`SeqDL`'s forked workers freeze the objects they inherit (never freeing a threaded decoder left as garbage) and the main process runs no full `gc.collect()` before a pass"
    if multiprocessing.get_start_method() != 'fork': pytest.skip("only forked workers inherit the main process's objects")
    log = tmp_path/'frozen'
    dls = DataBlock(blocks=(VideoBlock(n_frames=8), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                    splitter=GrandparentSplitter(), item_tfms=[Resize(32), _FreezeLog(log)]).dataloaders(video_folder, bs=2, num_workers=2)
    log.unlink(missing_ok=True)
    full, was = [], gc.isenabled()
    cb = lambda phase, info: full.append(info['generation']) if phase=='start' and info['generation']==2 else None
    gc.disable(); gc.callbacks.append(cb)
    try: n = sum(len(b[0]) for b in dls.train)
    finally:
        gc.callbacks.remove(cb)
        if was: gc.enable()
    rows = [l.split() for l in log.read_text().splitlines()]
    assert n == len(rows) and {pid for pid, _ in rows} - {str(os.getpid())} and all(pid != str(os.getpid()) for pid, _ in rows)
    assert all(int(c) > 10_000 for _, c in rows)  # torch, fastai and the loader, inherited and frozen
    assert full == [] and gc.get_freeze_count() == 0  # the main process: no full collection, nothing frozen
    pid = os.fork()  # a fork that is not `SeqDL` starting its workers is left alone
    if pid == 0: os._exit(0 if gc.get_freeze_count() == 0 else 1)
    assert os.waitpid(pid, 0)[1] == 0

def test_show_batch_axes(video_folder):
    dls = _video_dblock().dataloaders(video_folder, bs=4, num_workers=0)
    dls.show_batch(max_n=3)
    fig = plt.gcf()
    axs = [a for a in fig.axes if a.images]
    assert len(axs)==3 and all(a.get_title() in ('a','b') for a in axs)
    plt.close('all')
    dls.show_batch(max_n=20)  # more than the batch
    assert len([a for a in plt.gcf().axes if a.images]) == 4
    plt.close('all')
    dl1 = dls.valid.new(bs=1)
    dl1.show_batch()  # a batch of one
    assert len([a for a in plt.gcf().axes if a.images]) == 1

def test_seqblock_frame_folders(frame_folder):
    dblock = DataBlock(blocks=(SeqBlock(n_frames=8), CategoryBlock), get_items=lambda p: [d for d in p.glob('*/*/*') if d.is_dir()],
                       get_y=parent_label, splitter=GrandparentSplitter(), item_tfms=Resize(24))
    dls = dblock.dataloaders(frame_folder, bs=2, num_workers=0)
    x,y = dls.train.one_batch()
    assert isinstance(x, ImageSeq) and x.shape==(2,8,3,24,24)
    for seq in x: assert [frame_index(f) for f in seq] == sample_indices(10, 8, 'uniform')  # 1.png..10.png in natural order
    dls.show_batch(max_n=2)

def test_seqblock_grayscale_and_tensors():
    data = [torch.rand(12,1,16,16)*0.5 + 0.5*(i%2) for i in range(6)]
    dblock = DataBlock(blocks=(SeqBlock(ImageSeqBW, n_frames=4, sampler='first'), CategoryBlock),
                       get_y=lambda o: 'x' if o.mean()>0.5 else 'y', splitter=IndexSplitter([4,5]))
    dls = dblock.dataloaders(data, bs=2, num_workers=0)
    x,_ = dls.train.one_batch()
    assert x.shape==(2,4,1,16,16) and x.dtype==torch.float32
    xv,_ = dls.valid.one_batch()
    assert torch.allclose(torch.as_tensor(xv[0]), data[4][:4])  # float input left unscaled

def test_grayscale_frames_from_video(video_folder):
    dls = _video_dblock(channels=1).dataloaders(video_folder, bs=2, num_workers=0)
    assert dls.valid.one_batch()[0].shape == (2,8,1,32,32)

def test_seqsplit_forecasting(frame_folder):
    split = SeqSplit(4, 3)
    dblock = DataBlock(blocks=(SeqBlock, SeqBlock), get_items=lambda p: [d for d in p.glob('*/*/*') if d.is_dir()],
                       get_x=split.get_x, get_y=split.get_y, splitter=GrandparentSplitter(), item_tfms=Resize(16))
    dls = dblock.dataloaders(frame_folder, bs=2, num_workers=0)
    x,y = dls.valid.one_batch()
    assert isinstance(x, ImageSeq) and isinstance(y, ImageSeq) and x.shape==(2,4,3,16,16) and y.shape==(2,3,3,16,16)
    assert [frame_index(f) for f in x[0]] == [0,1,2,3] and [frame_index(f) for f in y[0]] == [4,5,6]
    dls.show_batch(max_n=2)
    assert len([a for a in plt.gcf().axes if a.images]) == 4
    with pytest.raises(SeqError, match='fewer than'): SeqSplit(8, 8).get_x(next(iter(frame_folder.glob('*/*/*'))))

# ---- augmentation: one parameter set per sequence ----
def test_batch_aug_one_param_set_per_sequence():
    frame = torch.rand(3, 32, 32)
    x = ImageSeq(frame[None,None].expand(8, 6, 3, 32, 32).clone())  # 8 sequences of 6 identical frames
    out = Pipeline(aug_transforms(max_rotate=30, p_affine=1., p_lighting=1., max_warp=0.2), split_idx=0)(x)
    assert isinstance(out, ImageSeq) and out.shape==x.shape
    for s in out: assert all(torch.allclose(s[0], s[t], atol=1e-5) for t in range(1, 6))
    assert not all(torch.allclose(out[0,0], out[i,0], atol=1e-3) for i in range(1, 8))  # sequences differ

def test_sequence_affine_equals_frame_by_frame():
    "`ImageSeq.affine_coord` resamples all frames in one call: pixel-equal to fastai's `TensorImage` version per time step"
    from functools import partial
    from fastai.vision.all import Warp, compose_tfms, TensorImage
    x = ImageSeq(torch.rand(3, 5, 3, 40, 48))
    mat = torch.eye(3)[None].repeat(3, 1, 1)[:, :2]
    mat[:, 0, 0], mat[:, 1, 2] = torch.tensor([0.8, 1.1, 0.6]), torch.tensor([0.1, -0.2, 0.3])
    w = Warp(p=1., magnitude=0.4); w.before_call(x[:, 0], split_idx=0)
    for ct in (None, partial(compose_tfms, tfms=w.coord_fs)):
        for sz, mode in ((None, 'bilinear'), (32, 'bilinear'), ((20, 24), 'nearest')):
            out = x.affine_coord(mat, ct, sz=sz, mode=mode)
            ref = torch.stack([TensorImage(x[:, t]).affine_coord(mat, ct, sz=sz, mode=mode) for t in range(5)], 1)
            assert isinstance(out, ImageSeq) and torch.equal(TensorBase(out), TensorBase(ref))
    one = ImageSeq(x[0]).affine_coord(mat[:1], sz=32)  # a single (T,C,H,W) sequence
    assert one.shape == (5, 3, 32, 32) and torch.equal(TensorBase(one), TensorBase(x[:1].affine_coord(mat[:1], sz=32)[0]))

def test_affine_resampling_is_fastais():
    "Our resampling (`_smooth_grid_sample`, the identity when no matrix is given) gives fastai's pixels, its private helpers aside"
    from fastai.vision.augment import _grid_sample, _init_mat  # fastai's private functions: compared with, never used
    from fastai.vision.all import TensorImage, affine_grid
    import fastai_seq.data as fsd
    g = torch.Generator().manual_seed(0)
    for shape, sz, zoom in (((2, 3, 64, 64), 16, 1.), ((2, 3, 64, 80), 24, 0.4), ((3, 1, 20, 30), 40, 1.5), ((1, 3, 33, 17), 8, 3.)):
        x = torch.rand(*shape, generator=g)
        b = shape[0]
        mat = _init_mat(x)[:, :2].clone()
        mat[:, :, :2] *= zoom
        mat[:, :, 2] = torch.rand(b, 2, generator=g)*0.4-0.2
        coords = affine_grid(mat, (b, shape[1], sz, sz), align_corners=True)
        coords = coords + torch.rand(coords.shape, generator=g)*0.05  # a warp
        for mode in ('bilinear', 'nearest'):
            for pad in ('reflection', 'zeros', 'border'):
                kw = dict(mode=mode, padding_mode=pad, align_corners=True)
                assert torch.equal(fsd._smooth_grid_sample(x, coords, **kw), _grid_sample(x, coords, **kw)), (shape, mode, pad)
        seq = ImageSeq(x[:, None].expand(b, 4, *shape[1:]).clone())  # no matrix: the identity, resized to `sz`
        ref = TensorImage(x).affine_coord(sz=sz)
        out = seq.affine_coord(sz=sz)
        assert all(torch.equal(TensorBase(out[:, t]), TensorBase(ref)) for t in range(4)), shape

def test_item_tfms_one_param_set_per_sequence(tmp_path):
    frames = np.repeat(make_frames(1, 40, 40), 6, 0)
    frames[..., :20, 0] = 250  # asymmetric content so flips and crops show
    write_video(tmp_path/'c'/'v.mp4', frames)
    dblock = DataBlock(blocks=(VideoBlock(n_frames=6), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                       splitter=lambda o: (list(range(len(o))), []), item_tfms=[RandomResizedCrop(24, min_scale=0.3), FlipItem(0.5)])
    for _ in range(6):
        x = dblock.dataloaders(tmp_path, bs=1, num_workers=0).train.one_batch()[0][0]
        assert all(torch.allclose(x[0], x[t], atol=4/255) for t in range(6))

def test_normalize_on_sequences(video_folder):
    dblock = DataBlock(blocks=(VideoBlock(n_frames=4), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                       splitter=GrandparentSplitter(), item_tfms=Resize(32),
                       batch_tfms=[*aug_transforms(), Normalize.from_stats(*imagenet_stats)])
    dls = dblock.dataloaders(video_folder, bs=2, num_workers=0)
    x,_ = dls.valid.one_batch()
    raw = _video_dblock().dataloaders(video_folder, bs=2, num_workers=0).valid.one_batch()[0][:, [0,2,5,7]]
    mean, std = torch.tensor(imagenet_stats[0]).view(1,1,3,1,1), torch.tensor(imagenet_stats[1]).view(1,1,3,1,1)
    assert x.shape == (2,4,3,32,32)
    dec = dls.decode_batch((x, torch.zeros(2).long()), max_n=2)
    assert isinstance(dec[0][0], ImageSeq) and dec[0][0].shape==(4,3,32,32)
    assert torch.allclose(TensorBase(x)*std+mean, TensorBase(dls.valid.one_batch()[0])*std+mean)

# ---- bad input ----
def _bad_videos(tmp_path, video_folder):
    good = sorted(video_folder.glob('train/a/*.mp4'))[0]
    d = tmp_path/'bad'; d.mkdir()
    (d/'zero.mp4').write_bytes(b'')
    data = good.read_bytes(); (d/'truncated.mp4').write_bytes(data[:len(data)//3])
    (d/'text.mp4').write_text('this is not a video\n'*50)
    return [d/'zero.mp4', d/'truncated.mp4', d/'text.mp4']

def _check_bad(dls, bad, num_workers, what=''):
    "The error for `bad`, loaded by a worker when `num_workers`>0 (the loader is made from good data), names the file"
    with pytest.raises(Exception) as e: list(dls.test_dl([bad], num_workers=num_workers))  # `one_batch` would load it here
    assert str(bad.name) in str(e.value) and what in str(e.value), str(e.value)

@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.workers)])
def test_bad_videos_name_the_file(tmp_path, video_folder, num_workers):
    dls = _video_dblock().dataloaders(video_folder, bs=2, num_workers=0)
    for bad in _bad_videos(tmp_path, video_folder): _check_bad(dls, bad, num_workers)

@pytest.mark.parametrize('num_workers', [0, pytest.param(2, marks=pytest.mark.workers)])
def test_bad_frame_folders_name_the_file(tmp_path, frame_folder, num_workers):
    empty = tmp_path/'empty'; empty.mkdir()
    broken = tmp_path/'broken'; broken.mkdir()
    for i,f in enumerate(make_frames(3)): Image.fromarray(f).save(broken/f'{i}.png')
    (broken/'3.png').write_bytes(b'\x89PNG garbage')
    dblock = DataBlock(blocks=(SeqBlock(n_frames=4), CategoryBlock), get_items=lambda p: [d for d in p.glob('*/*/*') if d.is_dir()],
                       get_y=parent_label, splitter=GrandparentSplitter(), item_tfms=Resize(16))
    dls = dblock.dataloaders(frame_folder, bs=2, num_workers=0)
    _check_bad(dls, empty, num_workers, 'no images')
    _check_bad(dls, broken, num_workers, '3.png')

def test_short_error_names_file_in_pipeline(video_folder):
    dblock = DataBlock(blocks=(VideoBlock(n_frames=50, short='error'), CategoryBlock), get_items=get_video_files,
                       get_y=parent_label, splitter=GrandparentSplitter())
    with pytest.raises(SeqError, match=r"a_0\.mp4.*has 12 frames.*n_frames=50"): dblock.dataloaders(video_folder, bs=1, num_workers=0)
