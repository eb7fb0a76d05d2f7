"Robust I/O: a user's own `Path.ls_sorted` patch, frame folders of mixed sizes, truncated/foreign rar archives, `videos_to_frames` workers outliving their parent"
import os, re, signal, subprocess, sys, textwrap, time, warnings
from pathlib import Path
import numpy as np, pytest
from PIL import Image
from fastcore.basics import patch
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, GrandparentSplitter, Resize
from fastai_seq.core import ImageSeq, SeqError, ls_sorted
from fastai_seq.data import SeqBlock, SkippedItemWarning
from fastai_seq.files import unrar, videos_to_frames
import fastai_seq.fastai_patches  # noqa: F401 (what `fastai_seq.all` applies: `Path.ls_sorted`, `learn.predict` with paths, ...)
from conftest import make_frames, frame_index, write_video, REPO

# ---- the UCF101 tutorial's own `Path.ls_sorted` ----
@pytest.fixture
def tutorial_ls_sorted():
    "The UCF101 tutorial's `@patch def ls_sorted(self)` cell, applied as a user keeps it; the library's method restored after"
    orig = Path.__dict__['ls_sorted']
    try:
        @patch
        def ls_sorted(self:Path):
            "ls but sorts files by name numerically"
            return self.ls().sorted(key=lambda f: int(f.with_suffix('').name))
        assert Path.ls_sorted is not orig
        yield
    finally: Path.ls_sorted = orig

def _frame_block(**kw):
    return DataBlock(blocks=(SeqBlock(**kw), CategoryBlock), get_items=lambda p: sorted(o for o in p.glob('*/*/*') if o.is_dir()),
                     get_y=parent_label, splitter=GrandparentSplitter())

def test_user_ls_sorted_patch_does_not_break_the_library(frame_folder, tutorial_ls_sorted):
    d = frame_folder/'train'/'a'/'a_0'
    with pytest.raises(TypeError): d.ls_sorted(extensions=['.png'])  # the user's patch is in force
    dls = _frame_block(n_frames=4).dataloaders(frame_folder, bs=2, num_workers=0)
    x, y = dls.valid.one_batch()
    assert x.shape == (2, 4, 3, 32, 48) and [frame_index(f) for f in x[0]] == [0, 3, 6, 9]  # natural order: 1.png ... 10.png
    assert [frame_index(f) for f in ImageSeq.create(d)] == list(range(10))
    assert [p.name for p in ls_sorted(d, extensions='.png')][:3] == ['1.png', '2.png', '3.png']

def test_ls_sorted_function_and_method_agree(tmp_path):
    for n in ('10.jpg', '2.jpg', 'img_1.jpg', 'notes.txt', '.hidden.jpg'): (tmp_path/n).touch()
    assert [p.name for p in ls_sorted(tmp_path)] == [p.name for p in tmp_path.ls_sorted()] == ['2.jpg', '10.jpg', 'img_1.jpg', 'notes.txt']
    assert [p.name for p in ls_sorted(str(tmp_path), extensions=['.JPG'], hidden=True)] == ['2.jpg', '10.jpg', '.hidden.jpg', 'img_1.jpg']
    with pytest.raises(SeqError, match='not a folder'): ls_sorted(tmp_path/'2.jpg')

# ---- unrar: a cut or foreign archive never yields `dest`; one top folder is the data folder ----
@pytest.fixture
def rarfile(): return pytest.importorskip('rarfile', reason='unrar needs the optional rarfile package')

def _rar4(*a):
    from test_video import _rar4  # the hand-built RAR 4 writer (stored members: rarfile reads them without an unrar program)
    return _rar4(*a)

UCF_MEMBERS = [('UCF-101', None), ('UCF-101/Archery', None), ('UCF-101/Archery/v_Archery_g01_c01.avi', b'a'*40),
               ('UCF-101/Biking', None), ('UCF-101/Biking/v_Biking_g01_c01.avi', b'b'*30)]

def _tree(d:Path) -> list: return sorted(str(p.relative_to(d)) for p in d.rglob('*'))

def test_unrar_truncated_archive_never_yields_dest(tmp_path, rarfile):
    good = _rar4(tmp_path/'UCF101.rar', UCF_MEMBERS).read_bytes()
    cut, dest = tmp_path/'cut.rar', tmp_path/'data'/'UCF101'
    kinds = set()
    for n in range(len(good)):  # every cut: in the signature, a member header, member data, the end-of-archive block
        cut.write_bytes(good[:n])
        with pytest.raises(rarfile.Error) as e: unrar(cut, dest)
        msg = str(e.value); kinds.add(type(e.value))
        assert msg.startswith(f'{cut}: ') and 'nothing was extracted' in msg and 'download it again' in msg.lower(), (n, msg)
        assert not dest.exists() and not list(dest.parent.glob('.*'))  # no `dest` for a later call to return, no temp folder
    assert kinds == {rarfile.NotRarFile, rarfile.BadRarFile}
    cut.write_bytes(good)  # the download completed: the same call now extracts
    assert unrar(cut, dest) == dest and _tree(dest) == ['Archery', 'Archery/v_Archery_g01_c01.avi', 'Biking', 'Biking/v_Biking_g01_c01.avi']

def test_unrar_corrupt_and_foreign_archives_name_the_file(tmp_path, rarfile):
    b = bytearray(_rar4(tmp_path/'x.rar', UCF_MEMBERS).read_bytes())
    b[b.index(b'a'*40)+5] ^= 1  # one flipped bit in a member's data: its CRC fails
    bad = tmp_path/'crc.rar'; bad.write_bytes(bytes(b))
    with pytest.raises(rarfile.BadRarFile, match=rf'^{re.escape(str(bad))}: the archive is truncated or corrupt .*Download it again'): unrar(bad)
    assert not (tmp_path/'crc').exists()
    page = tmp_path/'UCF101.rar'; page.write_text('<html><body>404 Not Found</body></html>')  # a saved error page
    with pytest.raises(rarfile.NotRarFile, match=rf'^{re.escape(str(page))}: not a RAR archive.*download it again'): unrar(page)
    assert not (tmp_path/'UCF101').exists()
    (tmp_path/'file').write_text('x')
    with pytest.raises(FileExistsError, match='not a folder'): unrar(tmp_path/'x.rar', tmp_path/'file')

def test_unrar_returns_the_folder_of_classes(tmp_path, rarfile):
    arc = _rar4(tmp_path/'UCF101.rar', UCF_MEMBERS)
    (tmp_path/'pre').mkdir()  # an empty folder made beforehand is not a finished extraction
    for dest in (None, tmp_path/'pre'):
        path = unrar(arc, dest)
        assert path == (dest or tmp_path/'UCF101') and sorted(p.name for p in path.ls()) == ['Archery', 'Biking']
    # several top entries, or a link out of the top folder: the archive's layout is kept
    two = _rar4(tmp_path/'two.rar', [('a', None), ('a/x.txt', b'1'), ('b.txt', b'2')])
    assert _tree(unrar(two)) == ['a', 'a/x.txt', 'b.txt']
    up = _rar4(tmp_path/'up.rar', [('top', None), ('top/x.txt', b'1'), ('top/up', ('link', '..'))])
    assert _tree(unrar(up)) == ['top', 'top/up', 'top/x.txt'] and (tmp_path/'up'/'top'/'up').resolve() == (tmp_path/'up').resolve()

# ---- videos_to_frames: workers do not outlive their parent ----
_PARENT = textwrap.dedent('''
    import sys, time
    import fastai_seq.files as fsf
    if sys.argv[3] == 'watch': fsf._PR_SET_PDEATHSIG = None  # only the portable watching thread
    _extract = fsf.extract_frames
    def slow(*a, **k):  # workers (forked) decode slowly: they are busy when the parent is killed
        for img in _extract(*a, **k): time.sleep(0.5); yield img
    fsf.extract_frames = slow
    fsf.videos_to_frames(sys.argv[1], sys.argv[2], n_workers=2, progress=False)
''')

def _children(pid:int) -> list:
    "Pids of the live processes whose parent is `pid` (from /proc)"
    res = []
    for d in Path('/proc').iterdir():
        if not d.name.isdigit(): continue
        try: st = (d/'stat').read_text()
        except OSError: continue
        state, ppid = st[st.rindex(')')+2:].split()[:2]
        if int(ppid) == pid and state != 'Z': res.append(int(d.name))
    return res

def _alive(pid:int) -> bool:
    "The process exists and has not exited (a zombie, exited but not yet reaped, counts as gone)"
    try: st = Path(f'/proc/{pid}/stat').read_text()
    except OSError: return False
    return st[st.rindex(')')+2] != 'Z'

@pytest.fixture(scope='module')
def few_videos(tmp_path_factory):
    d = tmp_path_factory.mktemp('v2f_kill')
    for i in range(4): write_video(d/'cls'/f'v_{i}.mp4', make_frames(20, 16, 16, seed=i))
    return d

@pytest.mark.skipif(not Path('/proc/self/stat').exists(), reason='reads worker processes from /proc (Linux)')
@pytest.mark.parametrize('how', ['prctl', 'watch'])
def test_videos_to_frames_workers_exit_with_their_parent(few_videos, tmp_path, how):
    dest = tmp_path/'frames'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(REPO), os.environ.get('PYTHONPATH', '')])}
    p = subprocess.Popen([sys.executable, '-c', _PARENT, str(few_videos), str(dest), how], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers = []
    try:
        t0 = time.monotonic()
        while time.monotonic()-t0 < 90:  # until both workers are decoding (their temp frame folders exist)
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            workers = _children(p.pid)
            if len(workers) == 2 and len(list((dest/'cls').glob('.*.tmp-*'))) >= 2: break
            time.sleep(0.2)
        else: pytest.fail(f'the workers did not start: {workers}')
        p.send_signal(signal.SIGKILL); p.wait(10)
        t0 = time.monotonic()
        while any(map(_alive, workers)) and time.monotonic()-t0 < 5: time.sleep(0.1)
        assert not [w for w in workers if _alive(w)], f'workers {workers} outlived their parent by 5 s ({how})'
        assert not list(dest.glob('cls/v_*'))  # nothing half-written under a final name
    finally:
        if p.poll() is None: p.kill(); p.wait()
        for w in workers:
            if _alive(w):
                try: os.kill(w, signal.SIGKILL)
                except OSError: pass
        p.stderr.close()
