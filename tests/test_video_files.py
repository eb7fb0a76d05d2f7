"Real-world video files decode right: AVI header counts are hints, H.264 in AVI seeks, verify_videos, rotation metadata"
import fractions, os, random
from pathlib import Path
import av, numpy as np, pytest, torch
from av.bitstream import BitStreamFilterContext
from fastai_seq.video import *
from fastai_seq.files import get_video_files, extract_frames
from fastai_seq.video import _cached_index, _STATS, _CACHE, iter_frames
from fastai_seq.data import LoadFrames
from PIL import Image
from test_video import write_video, full_decode, clip

def to_avi(src, dst, gap_at=None, time_base=None):
    "Copy the video packets of `src` into an AVI (as `ffmpeg -i src -c copy dst.avi`); `gap_at`: a 2-frame timestamp gap"
    with av.open(str(src)) as i, av.open(str(dst), 'w') as o:
        s = i.streams.video[0]
        t = o.add_stream_from_template(s)
        if time_base is not None: t.time_base = time_base
        bsf = BitStreamFilterContext('h264_mp4toannexb', s) if s.codec_context.name == 'h264' else None
        for j, p in enumerate(i.demux(s)):
            if p.dts is None: continue
            key, d = p.is_keyframe, (p.duration or 1)
            for q in (bsf.filter(p) if bsf else [p]):
                q.is_keyframe = key
                if gap_at is not None and j >= gap_at: q.pts, q.dts = q.pts + 2*d, q.dts + 2*d
                q.stream = t
                o.mux(q)  # the AVI muxer fills a timestamp gap with empty 'dropped frame' chunks the header counts
    return Path(dst)

def header_frames(fn):
    with av.open(str(fn)) as c: return c.streams.video[0].frames

@pytest.fixture(scope='module')
def avis(tmp_path_factory):
    d = tmp_path_factory.mktemp('avi')
    mp4 = write_video(d/'xvid_like.mkv', codec='mpeg4', n=75, bf=2, gop=12)
    res = {'mpeg4_bframes_gap': to_avi(mp4, d/'mpeg4_bframes_gap.avi', gap_at=20)}
    for n in (60, 600):
        h = write_video(d/f'h264_{n}.mp4', n=n, opts={'bf': '2', 'g': '12'})
        res[f'h264_{n}'] = to_avi(h, d/f'h264_{n}.avi', time_base=fractions.Fraction(1, 50))  # 2 chunks a frame
    return res

@pytest.mark.parametrize('name', ['mpeg4_bframes_gap', 'h264_60'])
def test_avi_header_count_is_a_hint(avis, name):
    "AVIs whose header announces more frames than they decode to are read, with every sampler, as a full decode"
    fn = avis[name]
    ref = full_decode(fn)
    assert header_frames(fn) >= len(ref) + 2  # the case: the header announces frames that are not there
    assert video_info(fn).n_frames == len(ref)
    for sampler in ('uniform', 'random', 'first', 'all'):
        lf = LoadFrames(None if sampler == 'all' else 8, sampler)
        for seed in range(3 if sampler == 'random' else 1):
            random.seed(seed); idxs = lf.idxs(len(ref), fn)
            random.seed(seed); got = np.stack([np.asarray(im) for im in lf(fn)])
            assert np.array_equal(got, ref[idxs]), (name, sampler, idxs)

def test_truncated_avi_still_refused(avis, tmp_path):
    b = avis['h264_60'].read_bytes()
    (tmp_path/'cut.avi').write_bytes(b[:len(b)//2])
    with pytest.raises(VideoError, match=r'cut\.avi.*truncated.*RIFF'): video_info(tmp_path/'cut.avi')

def test_h264_in_avi_seeks(avis):
    "An item of an H.264-in-AVI file decodes from the keyframe before it: the same number of frames, short file or long"
    counts = {}
    for n in (60, 600):
        fn = avis[f'h264_{n}']
        ix = _cached_index(fn)
        assert ix.seekable and ix.n_frames == n and ix.keys[0] == 0
        ref, idxs = full_decode(fn), list(range(n-12, n-4))
        _STATS.clear()
        assert np.array_equal(read_frames(fn, idxs), ref[idxs])
        counts[n] = _STATS['decoded']
        assert _STATS['indexed'] == 0 and _cached_index(fn).seekable  # the index held: no fallback to decoding from the start
    assert counts[600] <= 8 + 12 and counts[60] <= 8 + 12, counts  # the window and at most a GOP (g=12) before it
    fn = avis['h264_600']
    rng = np.random.default_rng(0)
    for s in rng.integers(0, 600-8, 6):
        assert np.array_equal(read_frames(fn, list(range(s, s+8))), full_decode(fn)[s:s+8])

def damage(src, dst, frac=0.5, n=4000):
    "Copy `src` to `dst` with `n` bytes zeroed from `frac` of the way in: packets still demux, frames there do not decode"
    b = bytearray(Path(src).read_bytes())
    i, n = int(len(b)*frac), min(n, len(b)//20)
    b[i:i+n] = bytes(n)
    Path(dst).write_bytes(bytes(b))
    return Path(dst)

@pytest.mark.parametrize('nw', [0, 2])
def test_verify_videos(avis, tmp_path, nw):
    "verify_videos finds damage in the middle that `video_info` cannot see, and passes good files"
    k400, yoyo = clip('abseiling_k400.mp4'), clip('v_YoYo_g01_c01.avi')
    bad = [damage(k400, tmp_path/'mid_k400.mp4'), damage(yoyo, tmp_path/'mid_yoyo.avi')]
    for f in bad: assert video_info(f).n_frames > 0  # passes the cheap check
    (tmp_path/'empty.mp4').write_bytes(b'')
    good = [k400, yoyo, avis['mpeg4_bframes_gap'], avis['h264_60']]
    res = verify_videos(good + bad + [tmp_path/'empty.mp4'], n_workers=nw, progress=False)
    assert [f for f, _ in res] == bad + [tmp_path/'empty.mp4']
    why = dict(res)
    assert 'decoding failed' in why[bad[0]] and 'damaged' in why[bad[0]]
    assert 'decodes with errors' in why[bad[1]]  # the MPEG-4 decoder conceals the damage (and drops frames)
    assert '0 bytes' in why[tmp_path/'empty.mp4']
    assert verify_videos([], n_workers=nw) == []

def upright_frames(n=4, h=64, w=48):
    "Portrait frames (as a viewer shows them): a bright bar along the top, a mark in the top-left corner"
    a = np.full((n, h, w, 3), 60, np.uint8)
    a[:, :6] = 250
    a[:, 10:22, 4:16] = (250, 40, 40)
    for i in range(n): a[i, 30+i*4:34+i*4, 20:28] = 200
    return a

@pytest.mark.parametrize('rot', [-90, 90, 180])
def test_rotation_metadata(tmp_path, rot):
    "A video stored turned, with a display rotation saying so (as phones write them), is read upright by default"
    up = upright_frames()
    raw = np.rot90(up, -rot//90, axes=(1, 2))  # the frames as the camera stored them
    fn = tmp_path/f'phone{rot}.mp4'
    with av.open(str(fn), 'w') as c:
        s = c.add_stream('libx264', rate=25)
        s.width, s.height, s.pix_fmt, s.options = raw.shape[2], raw.shape[1], 'yuv444p', {'qp': '0'}
        s.set_display_rotation(rot)  # the display matrix side data
        for a in raw:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(a), format='rgb24')): c.mux(p)
        for p in s.encode(): c.mux(p)
    stored = full_decode(fn)
    assert stored.shape[1:3] == raw.shape[1:3]
    got = read_frames(fn)
    assert np.array_equal(got, np.rot90(stored, rot//90, axes=(1, 2)))  # exactly the decoded pixels, turned
    assert got.shape == up.shape and np.abs(got.astype(int) - up).max() <= 8  # upright (lossless up to RGB/YUV rounding)
    inf = video_info(fn)
    assert (inf.height, inf.width, inf.rotation) == (64, 48, rot if rot != 180 else inf.rotation)
    assert abs(inf.rotation) in (90, 180) and video_info(fn, rotate=False)[2:4] == raw.shape[2:0:-1]
    assert np.array_equal(read_frames(fn, [3, 1], rotate=False), stored[[3, 1]])
    assert read_frames(fn, [], rotate=True).shape == (0, 64, 48, 3)
    assert np.array_equal(np.stack([np.asarray(i) for i in LoadFrames(2, 'first')(fn)]), got[:2])
    assert np.array_equal(np.stack([np.asarray(i) for i in LoadFrames(2, 'first', rotate=False)(fn)]), stored[:2])
    # the decoder-side resize of a turned clip: the frames turned, then scaled and cropped as fastai's `Resize` would
    small = read_frames(fn, [1, 3], size=(32, 24), method='squish')
    assert small.shape == (2, 32, 24, 3) and small.flags.c_contiguous
    assert np.abs(small.astype(int) - np.stack([np.asarray(Image.fromarray(f).resize((24, 32), Image.BILINEAR))
                                                for f in got[[1, 3]]]).astype(int)).mean() < 12
    assert [np.asarray(f).shape for f in extract_frames(fn, [2, 0])] == [(64, 48, 3)]*2
    own = list(iter_frames(fn, [0, 2, 2]))  # arrays of their own, usable by torch (no negative strides)
    assert all(f.flags.c_contiguous and f.flags.owndata for f in own) and own[1] is own[2]
    assert torch.equal(torch.stack([torch.from_numpy(f) for f in own]), torch.from_numpy(got[[0, 2, 2]]))

def test_upright_is_a_view():
    "Turning a frame costs no copy: the one copy is made by whoever keeps the frame (`read_frames`' output, a crop)"
    from fastai_seq.video import _upright, _copy_frame
    a = np.arange(4*6*3, dtype=np.uint8).reshape(4, 6, 3)
    for k in (1, 2, 3):
        t = _upright(a, k)
        assert np.shares_memory(t, a) and np.array_equal(t, np.rot90(a, k))
        for src in (t, t[1:3, 1:3], t[..., :1]):  # turned frames (copied a pixel at a time), a crop of one, one channel
            d = _copy_frame(np.empty(src.shape, np.uint8), src)
            assert np.array_equal(d, src) and d.flags.c_contiguous and not np.shares_memory(d, a)
    assert _upright(a, 0) is a

def _counting_probe(monkeypatch, log):
    "Patch `_build_index` to append the name of each file it indexes to `log` (forked workers inherit the patch)"
    import fastai_seq.video as V
    orig = V._build_index
    def probe(fn, *args, **kwargs):
        with open(log, 'a') as f: f.write(Path(fn).name + '\n')
        return orig(fn, *args, **kwargs)
    monkeypatch.setattr(V, '_build_index', probe)
    return lambda: Path(log).read_text().split() if Path(log).exists() else []

@pytest.mark.workers
def test_index_once_across_epochs_and_workers(tmp_path, monkeypatch):
    "Two epochs with 2 workers probe each video once (in the main process); a changed file is indexed again"
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, RandomSplitter
    from fastai_seq.data import VideoBlock
    for c in ('c0', 'c1'): (tmp_path/'v'/c).mkdir(parents=True)
    for i in range(8): write_video(tmp_path/'v'/f'c{i%2}'/f'{i}.mp4', n=12+i, w=32, h=32, opts={'g': '4'})
    probes = _counting_probe(monkeypatch, tmp_path/'probes.txt')
    _CACHE.clear()
    dblock = DataBlock(blocks=(VideoBlock(n_frames=4, sampler='auto'), CategoryBlock), get_items=get_video_files,
                       get_y=parent_label, splitter=RandomSplitter(0.25, seed=0))
    dls = dblock.dataloaders(tmp_path/'v', bs=2, num_workers=2)
    for epoch in range(2):
        for dl in (dls.train, dls.valid):
            for b in dl: assert b[0].shape[1:] == (4, 3, 32, 32)
        if epoch == 0: after1 = list(probes())
    assert sorted(after1) == sorted(f'{i}.mp4' for i in range(8)) and probes() == after1  # once each, none in epoch 2
    changed = dls.train.dataset.items[0]
    write_video(changed, n=20, w=32, h=32)  # new size and mtime: the cached index no longer holds
    os.utime(changed, ns=(0, os.stat(changed).st_mtime_ns + 10**9))
    for b in dls.train: pass
    assert probes()[len(after1):] == [Path(changed).name]

@pytest.mark.parametrize('name', ['v_YoYo_g01_c01.avi', 'abseiling_k400.mp4'])
def test_decoder_side_resize_matches_fastai_resize(name):
    "read_frames(size=...) scales in the decoder with `Resize`'s crop/pad/squish semantics: same shape, close pixels"
    from fastai.vision.all import Resize, ResizeMethod, PILImage
    fn, idxs = clip(name), [3, 100]
    full = read_frames(fn, idxs)
    for size in (128, (96, 160)):
        for m in (ResizeMethod.Crop, ResizeMethod.Pad, ResizeMethod.Squish):
            for pcts in ((0.5, 0.5), (0.1, 0.9)):
                rz = Resize(size, method=m)
                rz.pcts = pcts
                exp = np.stack([np.asarray(rz.encodes(PILImage.create(a))) for a in full]).astype(int)
                got = read_frames(fn, idxs, size=size, method=m, crop_pos=pcts)
                assert got.shape == exp.shape, (size, m)
                # tolerance: swscale's bilinear vs Pillow's, and crop boxes placed at the scaled size (under 1 pixel off)
                assert np.abs(got - exp).mean() <= (2 if m == ResizeMethod.Squish else 7), (size, m, pcts)

def test_video_block_size(tmp_path):
    "VideoBlock(size=...) gives the batch shapes of `item_tfms=Resize(...)`, random crops in training, centre in validation"
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, IndexSplitter, Resize
    from fastai_seq.data import VideoBlock
    for c in ('c0', 'c1'): (tmp_path/c).mkdir()
    for i in range(4): write_video(tmp_path/f'c{i%2}'/f'{i}.mp4', n=12, w=64, h=48, opts={'g': '4'})
    def dls(**kw):
        return DataBlock(blocks=(VideoBlock(n_frames=4, **kw), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                         splitter=IndexSplitter([0, 2]), item_tfms=None if kw else Resize((24, 40))).dataloaders(tmp_path, bs=2)
    a, b = dls(), dls(size=(24, 40))
    xa, xb = a.valid.one_batch()[0], b.valid.one_batch()[0]
    assert xa.shape == xb.shape == (2, 4, 3, 24, 40)
    assert (xa - xb).abs().mean() < 0.03  # pixels in [0,1]
    lf = LoadFrames(4, 'first', size=(24, 24))  # 64x48 frames: the crop moves along the width
    lf._split = 0
    crops = {tuple(np.asarray(lf._load_path(tmp_path/'c0'/'0.mp4')[0]).reshape(-1)[:64]) for _ in range(6)}
    assert len(crops) > 1  # a random crop position per training item
    lf._split = 1
    assert len({tuple(np.asarray(lf._load_path(tmp_path/'c0'/'0.mp4')[0]).reshape(-1)[:64]) for _ in range(3)}) == 1

def test_leading_resize_done_by_decoder(tmp_path):
    "A plain `Resize` first in `item_tfms` is done by the decoder (as `VideoBlock(size=...)`); `decoder_resize=False` keeps fastai's"
    from fastai.vision.all import DataBlock, CategoryBlock, parent_label, IndexSplitter, Resize, RandomResizedCrop, FlipItem
    from fastai_seq.data import VideoBlock, leading_resize
    for c in ('c0', 'c1'): (tmp_path/c).mkdir()
    for i in range(4): write_video(tmp_path/f'c{i%2}'/f'{i}.mp4', n=12, w=64, h=48, opts={'g': '4'})
    def dls(item_tfms=Resize((24, 40)), **kw):
        return DataBlock(blocks=(VideoBlock(n_frames=4, **kw), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                         splitter=IndexSplitter([0, 2]), item_tfms=item_tfms).dataloaders(tmp_path, bs=2)
    auto, fastai_path = dls(), dls(decoder_resize=False)
    by_size = dls(item_tfms=None, size=(24, 40))
    assert leading_resize(auto.valid) == ((24, 40), 'crop', 'reflection')
    assert leading_resize(dls(item_tfms=Resize(32, method='pad', pad_mode='zeros')).train) == ((32, 32), 'pad', 'zeros')
    xa, xf, xs = auto.valid.one_batch()[0], fastai_path.valid.one_batch()[0], by_size.valid.one_batch()[0]
    assert xa.shape == xf.shape == xs.shape == (2, 4, 3, 24, 40)
    assert torch.equal(xa, xs)  # the decoder's frames: the `Resize` after it changes nothing
    assert not torch.equal(xa, xf) and (xa - xf).abs().mean() < 0.03  # fastai's (Pillow's) resize: close, not equal
    xt = auto.test_dl([tmp_path/'c0'/'0.mp4']).one_batch()[0]  # `learn.predict` goes through a `test_dl`
    assert torch.equal(xt[0], xa[0])
    # not recognised: another transform first, a train-only `Resize`, `RandomResizedCrop`; the loader then decodes full size
    for tfms in ([FlipItem(p=1.), Resize((24, 40))], [Resize((24, 40), split_idx=0)], [RandomResizedCrop(24)]):
        d = dls(item_tfms=tfms)
        assert leading_resize(d.train) is None, tfms

_FORK_SCRIPT = r'''
import av, gc, sys
from pathlib import Path
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, IndexSplitter, Transform
from fastai_seq.all import VideoBlock, get_video_files
path, clip = Path(sys.argv[1]), Path(sys.argv[2])
def frames(fn):
    c = av.open(str(fn)); s = c.streams.video[0]
    s.codec_context.thread_type, s.codec_context.thread_count = 'AUTO', 2
    with c:
        for p in c.demux(s):
            for f in p.decode(): yield f
import fastai_seq.data as D
index_videos = D._index_videos
def index_and_leave_garbage(dl):
    "The main process's work before the workers fork, leaving (as a broken file's traceback can) threaded decoders as garbage"
    index_videos(dl)
    keep = []
    for k in range(10):
        g = frames(clip)
        for _, f in zip(range(3+k), g): pass
        keep.append(g)  # suspended in the middle of the file, frame threads busy
    keep.append(keep)  # a cycle: only the garbage collector frees them
D._index_videos = index_and_leave_garbage
gc.disable()
class Collect(Transform):
    def encodes(self, x): gc.collect(); return x  # in the forked worker: frees what it inherited
dls = DataBlock(blocks=(VideoBlock(n_frames=4), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                splitter=IndexSplitter([0]), item_tfms=Collect()).dataloaders(path, bs=2, num_workers=1)
for b in dls.train: pass
print('done')
'''

@pytest.mark.workers
def test_workers_never_free_a_threaded_decoder(tmp_path):
    "A threaded PyAV decoder left as garbage in the main process is freed before `SeqDL` forks its workers (in one it hangs)"
    import subprocess, sys
    for c in ('c0', 'c1'): (tmp_path/c).mkdir()
    for i in range(4): write_video(tmp_path/f'c{i%2}'/f'{i}.mp4', n=40, w=64, h=48)
    (tmp_path/'run.py').write_text(_FORK_SCRIPT)
    args = [sys.executable, str(tmp_path/'run.py'), str(tmp_path), str(clip('abseiling_k400.mp4'))]  # a real H.264 clip
    try: r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired: pytest.fail("a DataLoader worker hung freeing a decoder it inherited")
    assert r.returncode == 0 and 'done' in r.stdout, r.stderr[-2000:]
