"Tests for fastai_seq.video: exact decoding by index, bad files, frame extraction, rar extraction, UCF101 splits"
import fractions, inspect, itertools, os, pickle, shutil, signal, struct, subprocess, sys, time, warnings, zlib
from functools import lru_cache
from pathlib import Path
import av, numpy as np, pytest, torch
from PIL import Image
from fastai_seq.video import *
from fastai_seq.files import *
from fastai_seq.core import VIDEO_EXTS
from fastai_seq.annotations import ucf101_splits, ucf101_group, GroupSplitter
from fastai_seq.video import _cached_index, _cache_key, _plan, _CACHE
from fastai_seq.files import _safe_member_path

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get('FASTAI_SEQ_TEST_DATA', REPO.parent/'shared'/'data'))
CLIPS = {'v_YoYo_g01_c01.avi': 187, 'v_Basketball_g01_c01.avi': 141, 'abseiling_k400.mp4': 250}

def clip(name):
    fn = DATA/'videos'/name
    if not fn.exists(): pytest.skip(f"real test clip {fn} not found (set FASTAI_SEQ_TEST_DATA to the shared data folder)")
    return fn

@lru_cache(maxsize=None)
def full_decode(fn, format='rgb24'):
    "The reference: a plain full PyAV decode, frame i = i-th decoded frame"
    with av.open(str(fn)) as c: return np.stack([f.to_ndarray(format=format) for f in c.decode(video=0)])

def write_video(fn, codec='libx264', n=30, w=64, h=48, fps=25, opts=None, gop=None, bf=None, pix='yuv420p',
                vfr_start=None, fmt_opts=None):
    "Write a small moving-square video with PyAV; `vfr_start`: irregular timestamps (ms) starting there"
    if codec not in av.codecs_available: pytest.skip(f"PyAV has no {codec} encoder")
    c = av.open(str(fn), 'w', options=fmt_opts or {})
    s = c.add_stream(codec, rate=fps)
    s.width, s.height, s.pix_fmt = w, h, pix
    if vfr_start is not None: s.codec_context.time_base = s.time_base = fractions.Fraction(1, 1000)
    if opts: s.options = opts
    if gop: s.codec_context.gop_size = gop
    if bf is not None: s.codec_context.max_b_frames = bf
    rng, t = np.random.default_rng(0), vfr_start
    for i in range(n):
        a = np.zeros((h, w, 3), np.uint8)
        a[..., 0] = i*7 % 256
        a[..., 2] = rng.integers(0, 60, (h, w))
        y, x = i*2 % (h-8), i*3 % (w-8)
        a[y:y+8, x:x+8] = 255
        f = av.VideoFrame.from_ndarray(a, format='rgb24')
        if vfr_start is not None:
            f.pts, f.time_base = t, fractions.Fraction(1, 1000)
            t += 40 + (i % 3)*17
        for p in s.encode(f): c.mux(p)
    for p in s.encode(): c.mux(p)
    c.close()
    return Path(fn)

def check_sets(fn, n, rng, threads=(1, 2)):
    "read_frames == full decode for first/mid/last, windows, uniform, unsorted+repeated, all"
    ref = full_decode(fn)
    assert len(ref) == n
    sets = [[0], [n//2], [n-1], [n-1, 0, n//2, 3, 3, n-1], np.linspace(0, n-1, 8).round().astype(int).tolist()]
    sets += [list(range(s, s+8)) for s in rng.integers(0, n-8+1, 4)]
    sets += [rng.integers(0, n, 10).tolist()]
    for th in threads:
        for idxs in sets:
            got = read_frames(fn, idxs, threads=th)
            assert got.dtype == np.uint8 and got.shape == (len(idxs), *ref.shape[1:])
            assert np.array_equal(got, ref[idxs]), f"{fn.name} threads={th} idxs={idxs}"
    assert np.array_equal(read_frames(fn), ref)

# ---------------------------------------------------------------------------------------------------------------------
# Real clips

@pytest.mark.parametrize('name', CLIPS)
def test_video_info_real(name):
    fn = clip(name)
    _CACHE.clear()
    inf = video_info(fn)
    assert inf.n_frames == CLIPS[name] == len(full_decode(fn))
    assert (inf.height, inf.width) == full_decode(fn).shape[1:3]
    assert inf.fps == pytest.approx(29.97 if 'Basketball' in name else 25, abs=0.01)
    assert inf.duration == pytest.approx(inf.n_frames/inf.fps, rel=0.02)
    assert video_info(str(fn)) == inf and _cached_index(fn).seekable  # cached; these clips are read by seeking

@pytest.mark.parametrize('name', CLIPS)
def test_read_frames_real(name):
    fn = clip(name)
    check_sets(fn, CLIPS[name], np.random.default_rng(len(name)))

def test_read_frames_seeks():
    "A frame near the end is decoded from the keyframe before it, not from the start"
    fn = clip('v_YoYo_g01_c01.avi')
    ix = _cached_index(fn)
    assert ix.keys.tolist() == list(range(0, 187, 12))
    assert _plan(ix, [186], 1) == [[180, [186]]]
    assert _plan(ix, [0, 1, 2, 100, 101, 186], 1) == [[0, [0, 1, 2]], [96, [100, 101]], [180, [186]]]
    assert _plan(ix, [10, 13], 1) == [[0, [10, 13]]]  # a nearby keyframe is not worth a seek

def test_read_frames_gray():
    fn = clip('v_YoYo_g01_c01.avi')
    got = read_frames(fn, [5, 150, 5], format='gray')
    assert got.shape == (3, 240, 320, 1)
    assert np.array_equal(got[..., 0], full_decode(fn, 'gray')[[5, 150, 5]])

def test_read_frames_empty_idxs():
    assert read_frames(clip('v_YoYo_g01_c01.avi'), []).shape == (0, 240, 320, 3)

# ---------------------------------------------------------------------------------------------------------------------
# Generated videos: codecs, containers, B-frames, open GOPs, variable frame rate, non-zero start

GEN = {  # name: write_video kwargs
    'h264_bframes.mp4': dict(opts={'bf': '3', 'g': '8'}),
    'h264_opengop.mkv': dict(opts={'x264-params': 'open-gop=1:keyint=8:bframes=3'}),
    'h264_vfr_start.mp4': dict(opts={'bf': '2', 'g': '8'}, vfr_start=1000),
    'h264_in_avi.avi': dict(opts={'bf': '2', 'g': '8'}),          # fake AVI timestamps: read frame by frame
    'h264_raw.h264': dict(opts={'bf': '2', 'g': '8'}),            # no timestamps at all: read frame by frame
    'h264_faststart.mp4': dict(opts={'g': '8'}, fmt_opts={'movflags': 'faststart'}),
    'mpeg4.avi': dict(codec='mpeg4', gop=8),
    'mpeg4_bframes.avi': dict(codec='mpeg4', gop=8, bf=2),
    'mpeg4_vfr.mkv': dict(codec='mpeg4', gop=8, vfr_start=0),
    'vp9.webm': dict(codec='libvpx-vp9', opts={'g': '8'}),
    'hevc.mkv': dict(codec='libx265', opts={'x265-params': 'keyint=8:bframes=3:log-level=error'}),
    'mjpeg.avi': dict(codec='mjpeg', pix='yuvj420p'),
}

@pytest.fixture(scope='module')
def gen_dir(tmp_path_factory): return tmp_path_factory.mktemp('gen')

@pytest.mark.parametrize('name', GEN)
def test_read_frames_generated(gen_dir, name):
    fn = write_video(gen_dir/name, **GEN[name])
    assert video_info(fn).n_frames == 30
    check_sets(fn, 30, np.random.default_rng(0), threads=(1, 3))

def test_fallback_when_packets_mislead(tmp_path):
    "If decoded frames contradict the packet index, read_frames falls back to a full decode and stays exact"
    fn = write_video(tmp_path/'v.mp4', opts={'bf': '2', 'g': '8'})
    ix = _cached_index(fn)
    assert ix.seekable
    ix.pts = ix.pts + 1  # corrupt the cached index: no decoded frame matches it any more
    assert np.array_equal(read_frames(fn, [20, 3]), full_decode(fn)[[20, 3]])
    assert not _cached_index(fn).seekable and _cached_index(fn).n_frames == 30

def test_cache_follows_file_changes(tmp_path):
    fn = write_video(tmp_path/'v.mp4', n=20)
    assert video_info(fn).n_frames == 20
    write_video(tmp_path/'v.mp4', n=26)
    os.utime(fn, ns=(time.time_ns(), time.time_ns()+10**9))
    assert video_info(fn).n_frames == 26 and len(read_frames(fn)) == 26

# ---------------------------------------------------------------------------------------------------------------------
# Bad input

@pytest.fixture(scope='module')
def bad_files(tmp_path_factory):
    d = tmp_path_factory.mktemp('bad')
    (d/'empty.mp4').write_bytes(b'')
    (d/'notes.mp4').write_text('this is not a video\n' * 20)
    for name in ('v_YoYo_g01_c01.avi', 'abseiling_k400.mp4'):
        b = clip(name).read_bytes()
        (d/f'trunc_{name}').write_bytes(b[:int(len(b)*0.3)])
    fs = write_video(d/'fs.mp4', n=60, w=128, h=96, opts={'g': '8'}, fmt_opts={'movflags': 'faststart'}).read_bytes()
    (d/'trunc_faststart.mp4').write_bytes(fs[:len(fs)//2])
    c = av.open(str(d/'audio.mp4'), 'w')
    s = c.add_stream('aac', rate=16000)
    for i in range(8):
        fr = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format='fltp', layout='mono')
        fr.sample_rate, fr.pts = 16000, i*1024
        for p in s.encode(fr): c.mux(p)
    for p in s.encode(): c.mux(p)
    c.close()
    return d

BAD = {'missing.mp4': 'no such file', 'empty.mp4': 'empty (0 bytes)', 'notes.mp4': 'cannot open it as a video',
       'trunc_v_YoYo_g01_c01.avi': 'truncated', 'trunc_abseiling_k400.mp4': 'truncated',
       'trunc_faststart.mp4': 'truncated', 'audio.mp4': 'no video stream'}

@pytest.mark.parametrize('name', BAD)
def test_bad_files(bad_files, name):
    fn = bad_files/name
    for f in (video_info, read_frames, lambda fn: next(extract_frames(fn))):
        with pytest.raises(VideoError) as e: f(fn)
        assert str(fn) in str(e.value) and BAD[name] in str(e.value) and e.value.fn == str(fn)
        assert 're-' in str(e.value).lower() or 'check the path' in str(e.value).lower() or 'remove' in str(e.value).lower()

def test_index_out_of_range():
    fn = clip('v_YoYo_g01_c01.avi')
    for idxs in ([0, 187], [-1]):
        with pytest.raises(VideoError, match=r'out of range: the video has 187 frames') as e: read_frames(fn, idxs)
        assert str(fn) in str(e.value)

def test_video_error_pickles():
    e = VideoError('x.mp4: the file is empty (0 bytes)', 'x.mp4')
    e2 = pickle.loads(pickle.dumps(e))
    assert type(e2) is VideoError and str(e2) == str(e) and e2.fn == 'x.mp4' and isinstance(e2, ValueError)

class _Clips(torch.utils.data.Dataset):
    def __init__(self, fns): self.fns = fns
    def __len__(self): return len(self.fns)
    def __getitem__(self, i): return torch.from_numpy(read_frames(self.fns[i], [0, 1]))

@pytest.mark.workers
def test_error_from_dataloader_worker(bad_files):
    "A VideoError raised in a DataLoader worker reaches the main process with the file name"
    good, bad = clip('v_YoYo_g01_c01.avi'), bad_files/'trunc_v_YoYo_g01_c01.avi'
    dl = torch.utils.data.DataLoader(_Clips([good, good]), batch_size=1, num_workers=2)
    assert [tuple(b.shape) for b in dl] == [(1, 2, 240, 320, 3)]*2
    dl = torch.utils.data.DataLoader(_Clips([good, bad, good]), batch_size=1, num_workers=2)
    with pytest.raises(VideoError) as e: list(dl)
    assert str(bad) in str(e.value) and 'truncated' in str(e.value)

# ---------------------------------------------------------------------------------------------------------------------
# Files and frames

def test_get_video_files(tmp_path):
    for f in ['b/2.mp4', 'b/10.AVI', 'a/x.mkv', 'a/sub/y.webm', 'a/notes.txt', 'a/img.jpg', 'c.mov', '.hidden/z.mp4']:
        (tmp_path/f).parent.mkdir(parents=True, exist_ok=True); (tmp_path/f).write_bytes(b'')
    rel = lambda fs: [f.relative_to(tmp_path).as_posix() for f in fs]
    assert rel(get_video_files(tmp_path)) == ['a/sub/y.webm', 'a/x.mkv', 'b/10.AVI', 'b/2.mp4', 'c.mov']
    assert rel(get_video_files(tmp_path, recurse=False)) == ['c.mov']
    assert rel(get_video_files(tmp_path, folders=['b'])) == ['b/10.AVI', 'b/2.mp4']
    assert {'.mp4', '.avi', '.mkv', '.mov', '.webm', '.m4v', '.mpg', '.mpeg', '.wmv', '.flv', '.3gp'} <= VIDEO_EXTS

def test_extract_frames():
    fn = clip('v_Basketball_g01_c01.avi')
    g = extract_frames(Path('/nonexistent/v.mp4'))
    assert inspect.isgenerator(g)  # lazy: nothing is opened until the first frame is asked for
    with pytest.raises(VideoError, match='no such file'): next(g)
    first3 = list(itertools.islice(extract_frames(fn), 3))
    assert all(isinstance(o, Image.Image) for o in first3)
    assert np.array_equal(np.stack([np.asarray(o) for o in first3]), read_frames(fn, [0, 1, 2]))
    for idxs in ([140, 3, 3, 70], [5, 5, 6, 100]):
        assert np.array_equal(np.stack([np.asarray(o) for o in extract_frames(fn, idxs)]), full_decode(fn)[idxs])
    assert [o.size for o in extract_frames(fn, [0, 9], size=100)] == [(100, 75)]*2

# ---------------------------------------------------------------------------------------------------------------------
# videos_to_frames

def _jpgs(d): return sorted(Path(d).glob('*.jpg'))

@pytest.fixture
def src(tmp_path):
    "The three real clips in a class-folder layout"
    for name in CLIPS:
        d = tmp_path/'src'/name.split('_')[1 if name.startswith('v_') else 0]
        d.mkdir(parents=True, exist_ok=True)
        shutil.copy(clip(name), d/name)
    return tmp_path/'src'

def test_videos_to_frames(src, tmp_path):
    dest = tmp_path/'frames'
    outs = videos_to_frames(src, dest, n_workers=2)  # with its progress bar
    assert sorted(o.relative_to(dest).as_posix() for o in outs) == [
        'Basketball/v_Basketball_g01_c01', 'YoYo/v_YoYo_g01_c01', 'abseiling/abseiling_k400']
    for o in outs:
        v = next(src.glob(f'*/{o.name}.*'))
        fs = _jpgs(o)
        assert len(fs) == CLIPS[v.name] == len(full_decode(clip(v.name)))
        assert fs[0].name == '00001.jpg' and fs[-1].name == f'{CLIPS[v.name]:05d}.jpg'
        ref = full_decode(clip(v.name))
        for i in (0, len(fs)//2, len(fs)-1):
            assert np.abs(np.asarray(Image.open(fs[i])).astype(float) - ref[i]).mean() < 3
    assert not list(dest.rglob('*.tmp-*'))
    # resume after a kill: one video's folder never got renamed (half-written temp), the others are done
    done = dest/'YoYo'/'v_YoYo_g01_c01'
    mtimes = {f: f.stat().st_mtime_ns for f in [done, *_jpgs(done)]}
    half = dest/'Basketball'/'v_Basketball_g01_c01'
    tmp = half.parent/f'.{half.name}.tmp-dead'
    half.rename(tmp)
    for f in _jpgs(tmp)[20:]: f.unlink()
    outs2 = videos_to_frames(src, dest, n_workers=0, progress=False)
    assert sorted(outs2) == sorted(outs)
    assert len(_jpgs(half)) == 141 and not tmp.exists() and not list(dest.rglob('*.tmp-*'))
    assert {f: f.stat().st_mtime_ns for f in [done, *_jpgs(done)]} == mtimes  # finished videos are not redone

def test_videos_to_frames_bad_video(src, tmp_path, bad_files):
    shutil.copy(bad_files/'trunc_v_YoYo_g01_c01.avi', src/'YoYo'/'v_YoYo_g02_c01.avi')
    (src/'YoYo'/'v_YoYo_g03_c01.avi').write_text('not a video')
    videos = get_video_files(src, folders=['YoYo', 'Basketball'])
    dest = tmp_path/'frames'
    with pytest.warns(UserWarning, match='2 of 4 videos could not be converted') as w:
        outs = videos_to_frames(videos, dest, n_workers=2, progress=False, size=160)
    msg = next(str(o.message) for o in w if 'could not be converted' in str(o.message))  # 3.12+ adds fork's DeprecationWarning
    assert 'v_YoYo_g02_c01.avi' in msg and 'truncated' in msg and 'v_YoYo_g03_c01.avi' in msg
    assert [o.name for o in outs] == ['v_Basketball_g01_c01', 'v_YoYo_g01_c01']
    assert [len(_jpgs(o)) for o in outs] == [141, 187]
    assert Image.open(_jpgs(outs[0])[0]).size == (160, 120)
    assert not (dest/'YoYo'/'v_YoYo_g02_c01').exists() and not list(dest.rglob('*.tmp-*'))
    with pytest.raises(VideoError, match='2 of 4 videos') as e:  # 'raise': still after the good ones are done
        videos_to_frames(videos, tmp_path/'frames2', n_workers=0, progress=False, on_error='raise')
    assert 'v_YoYo_g03_c01.avi' in str(e.value)
    assert len(_jpgs(tmp_path/'frames2'/'Basketball'/'v_Basketball_g01_c01')) == 141

@pytest.mark.slow
def test_videos_to_frames_survives_sigkill(tmp_path):
    "Kill a conversion for real mid-way (SIGKILL), re-run: complete folders, nothing partial left. ~10 s"
    src = tmp_path/'src'/'cls'
    src.mkdir(parents=True)
    for i in range(4): write_video(src/f'v_{i}.mp4', n=120, w=160, h=120, opts={'g': '10'})
    dest = tmp_path/'frames'
    code = f"from fastai_seq.files import videos_to_frames; videos_to_frames({str(src.parent)!r}, {str(dest)!r}, n_workers=0, progress=False, ext='.png')"
    p = subprocess.Popen([sys.executable, '-c', code], start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        t0 = time.time()
        while time.time()-t0 < 120:  # wait until one video is done and the next is half written
            ds = list((dest/'cls').iterdir()) if (dest/'cls').exists() else []
            tmps = [d for d in ds if d.name.startswith('.')]
            if len(ds) > len(tmps) and tmps and len(list(tmps[0].glob('*.png'))) >= 20: break
            time.sleep(0.02)
        else: pytest.fail('the conversion never got half-way')
    finally:
        os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert list((dest/'cls').glob('.*.tmp-*'))  # it was killed with a half-written video
    done_before = {d.name: d.stat().st_mtime_ns for d in (dest/'cls').iterdir() if not d.name.startswith('.')}
    outs = videos_to_frames(src.parent, dest, n_workers=2, progress=False, ext='.png')
    assert sorted(o.name for o in outs) == [f'v_{i}' for i in range(4)]
    assert all(len(list(o.glob('*.png'))) == 120 for o in outs)
    assert not list((dest/'cls').glob('.*'))
    assert all((dest/'cls'/n).stat().st_mtime_ns == t for n, t in done_before.items())
    o = dest/'cls'/'v_3'
    assert np.array_equal(np.asarray(Image.open(o/'00120.png')), full_decode(src/'v_3.mp4')[119])

# ---------------------------------------------------------------------------------------------------------------------
# unrar

def test_safe_member_path(tmp_path):
    dest, outside = tmp_path/'dest', tmp_path/'outside'
    dest.mkdir(); outside.mkdir()
    assert _safe_member_path(dest, 'UCF-101/a/b.avi') == (dest/'UCF-101'/'a'/'b.avi').resolve()
    assert _safe_member_path(dest, 'a/../b.txt') == (dest/'b.txt').resolve()
    for bad in ['../evil.txt', 'a/../../evil.txt', '/etc/passwd', str(outside/'x.txt'), '..\\evil.txt', 'C:\\evil.txt', '']:
        with pytest.raises(ValueError, match='Refusing'): _safe_member_path(dest, bad)
    (dest/'link').symlink_to(outside, target_is_directory=True)  # a symlink already in dest, pointing out
    with pytest.raises(ValueError, match='outside'): _safe_member_path(dest, 'link/evil.txt')
    assert list(outside.iterdir()) == [] and sorted(p.name for p in dest.iterdir()) == ['link']

def _rar4(fn, members):
    "Write a RAR 4 archive of stored (uncompressed) `members`: (name, bytes | None for a folder | ('link', target))"
    def block(kind, flags, body):
        head = struct.pack('<BHH', kind, flags, 7+len(body)) + body
        return struct.pack('<H', zlib.crc32(head) & 0xffff) + head
    out = bytearray(b'Rar!\x1a\x07\x00') + block(0x73, 0, bytes(6))
    for name, data in members:
        mode, flags = 0o100644, 0x8000
        if data is None: data, mode, flags = b'', 0o040755, 0x80e0
        elif isinstance(data, tuple): data, mode = data[1].encode(), 0o120777
        nb = name.encode()
        body = struct.pack('<IIBIIBBHI', len(data), len(data), 3, zlib.crc32(data), (40 << 25) | (1 << 21) | (1 << 16),
                           20, 0x30, len(nb), mode) + nb
        out += block(0x74, flags, body) + data
    Path(fn).write_bytes(bytes(out + block(0x7b, 0x4000, b'')))
    return Path(fn)

def test_unrar(tmp_path):
    pytest.importorskip('rarfile', reason='unrar needs the optional rarfile package')
    arc = _rar4(tmp_path/'UCF.rar', [('UCF-101', None), ('UCF-101/a.txt', b'hello'), ('UCF-101/b/c.txt', b'x'*1000),
                                     ('UCF-101/ln', ('link', 'a.txt'))])
    dest = unrar(arc)  # one top folder (UCF-101/): `dest` is that folder, as `untar_data` returns the data folder
    assert dest == tmp_path/'UCF'
    assert (dest/'a.txt').read_bytes() == b'hello' and (dest/'b'/'c.txt').read_bytes() == b'x'*1000
    assert (dest/'ln').is_symlink() and (dest/'ln').read_bytes() == b'hello'
    t = (dest/'a.txt').stat().st_mtime_ns
    assert unrar(arc) == dest and (dest/'a.txt').stat().st_mtime_ns == t  # already extracted: skipped
    assert unrar(arc, tmp_path/'other') == tmp_path/'other' and (tmp_path/'other'/'a.txt').exists()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
    cases = {'dotdot': [('ok.txt', b'1'), ('../evil.txt', b'2')], 'abs': [('ok.txt', b'1'), ('/tmp/evil.txt', b'2')],
             'link': [('ok', None), ('ok/up', ('link', '../../evil_dir'))],
             'abslink': [('up', ('link', '/etc'))]}
    for k, members in cases.items():
        a = _rar4(tmp_path/f'{k}.rar', members)
        with pytest.raises(ValueError, match='Refusing'): unrar(a, tmp_path/f'out_{k}')
        assert not (tmp_path/f'out_{k}').exists()
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob('*'))
    assert [p for p in after if p not in before] == sorted(Path(f'{k}.rar') for k in cases)  # nothing else written
    assert not Path('/tmp/evil.txt').exists()

def test_unrar_needs_rarfile(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, 'rarfile', None)
    with pytest.raises(ImportError, match='pip install rarfile'): unrar(tmp_path/'x.rar')

# ---------------------------------------------------------------------------------------------------------------------
# UCF101 splits

def _ucf_tree(root, classes=('ApplyEyeMakeup', 'HandstandPushups'), groups=10, clips=3):
    "Empty files named like UCF101 (with its real case mismatch in HandStandPushups) + fold-1 lists: test = groups 1-3"
    vids = []
    for ci, c in enumerate(classes):
        fname_cls = 'HandStandPushups' if c == 'HandstandPushups' else c
        for g in range(1, groups+1):
            for k in range(1, clips+1):
                f = root/'UCF-101'/c/f'v_{fname_cls}_g{g:02d}_c{k:02d}.avi'
                f.parent.mkdir(parents=True, exist_ok=True); f.write_bytes(b'')
                vids.append((f, ci, g))
    lists = root/'ucfTrainTestlist'
    lists.mkdir()
    rel = lambda f: f'{f.parent.name}/{f.name}'
    (lists/'trainlist01.txt').write_text(''.join(f'{rel(f)} {ci+1}\n' for f, ci, g in vids if g > 3))
    (lists/'testlist01.txt').write_text(''.join(f'{rel(f)}\n' for f, ci, g in vids if g <= 3))
    return [f for f, _, _ in vids]

def test_ucf101_splits(tmp_path):
    vids = _ucf_tree(tmp_path)
    items = get_video_files(tmp_path/'UCF-101')
    tr, va = ucf101_splits(tmp_path)(items)
    assert (len(tr), len(va)) == (2*7*3, 2*3*3) and sorted(tr + va) == list(range(len(items)))
    gtr, gva = {ucf101_group(items[i]) for i in tr}, {ucf101_group(items[i]) for i in va}
    assert not gtr & gva and gva == {f'{c}_g{g:02d}' for c in ('ApplyEyeMakeup', 'HandStandPushups') for g in (1, 2, 3)}
    # frame folders named after the videos split the same way; the lists are also found in `path/ucfTrainTestlist`
    folders = [tmp_path/'frames'/f.parent.name/f.stem for f in items]
    assert ucf101_splits(tmp_path/'ucfTrainTestlist')(folders) == (tr, va)
    with pytest.raises(ValueError, match='2 of 62 items are in neither'):
        ucf101_splits(tmp_path)(items + [Path('x/v_Foo_g01_c01.avi'), Path('x/y.avi')])
    with pytest.raises(FileNotFoundError, match='trainlist02.txt'): ucf101_splits(tmp_path, fold=2)
    with pytest.raises(ValueError, match='UCF101 has folds 1, 2 and 3, not 4'): ucf101_splits(tmp_path, fold=4)  # not an assert

def test_moved_names_still_import_from_video():
    "The file-system tools (now `files.py`) and UCF101 splits (now `annotations.py`) are still reached at their old place"
    import fastai_seq.video as V, fastai_seq.files as F, fastai_seq.annotations as A, fastai_seq.core as C
    for mod, names in ((F, ['get_video_files', 'extract_frames', 'videos_to_frames', 'unrar']),
                       (A, ['ucf101_splits', 'ucf101_group', 'ucf101_named', 'GroupSplitter'])):
        for n in names: assert getattr(V, n) is getattr(mod, n), n
    assert V.VIDEO_EXTS is C.VIDEO_EXTS and {'.mp4', '.3gp', '.ogv', '.asf'} <= C.VIDEO_EXTS  # one list, in core
    assert not set(V.__all__) & set(V._MOVED)  # `from fastai_seq.video import *` gives the decoding names only
    with pytest.raises(AttributeError, match='no attribute'): V.no_such_name

def test_videos_to_frames_on_error_checked(tmp_path):
    "A wrong `on_error` is a ValueError (not an assert, stripped by `python -O`) before anything is read"
    with pytest.raises(ValueError, match="on_error must be 'skip' or 'raise', not 'ignore'"):
        videos_to_frames(tmp_path/'none', tmp_path/'out', on_error='ignore')

def test_ucf101_group_and_group_splitter(tmp_path):
    assert ucf101_group('UCF-101/ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi') == 'ApplyEyeMakeup_g08'
    assert ucf101_group(Path('frames/YoYo/v_YoYo_g25_c04')) == 'YoYo_g25'
    with pytest.raises(ValueError, match='UCF101-style'): ucf101_group('clip_001.mp4')
    items = _ucf_tree(tmp_path, groups=25)
    tr, va = GroupSplitter(valid_pct=0.2, seed=42)(items)
    assert sorted(tr + va) == list(range(len(items)))
    gtr, gva = {ucf101_group(items[i]) for i in tr}, {ucf101_group(items[i]) for i in va}
    assert not gtr & gva and len(gva) == 10 and len(gtr) == 40  # 20% of the 50 groups
    assert GroupSplitter(valid_pct=0.2, seed=42)(items) == (tr, va)
    assert GroupSplitter(valid_pct=0.2, seed=1)(items) != (tr, va)
    by_folder = GroupSplitter(0.5, seed=0, group_func=lambda o: Path(o).parent.name)(items)
    assert sorted(len(x) for x in by_folder) == [75, 75]

def test_max_pixels_checks_the_header_cached_or_not(tmp_path):
    fn = write_video(tmp_path/'v.mp4', w=64, h=48)
    _CACHE.clear()
    for cached in (False, True):  # a fresh probe, then the cached index
        if cached: video_info(fn)
        assert (_cache_key(fn) in _CACHE) == cached
        for f in (video_info, read_frames):
            with pytest.raises(VideoError, match=r'64x48 = 3,072 pixels per frame, above max_pixels=3,071') as e:
                f(fn, max_pixels=3071)
            assert str(fn) in str(e.value) and 'remove' in str(e.value)
        assert video_info(fn, max_pixels=3072).n_frames == 30 and read_frames(fn, [0], max_pixels=None).shape == (1, 48, 64, 3)
