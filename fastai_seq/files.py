"The file system: finding video files (`get_video_files`), frames to images (`extract_frames`, `videos_to_frames`), `.rar` archives (`unrar`)"
from __future__ import annotations
import os, re, shutil, sys, threading, time, uuid, warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from PIL import Image
from fastcore.foundation import L
from fastai.data.transforms import get_files
from fastai.torch_core import defaults
from fastprogress.fastprogress import progress_bar
from .core import VIDEO_EXTS
from .video import VideoError, video_info, iter_frames, before_fork, LIBRARY_ERRORS

__all__ = ['get_video_files', 'extract_frames', 'videos_to_frames', 'unrar']

# ---------------------------------------------------------------------------------------------------------------------
# Finding video files, and frame folders from them

def get_video_files(path,         # Folder to search
                    recurse=True, # Search subfolders too
                    folders=None, # Only these subfolders (names)
                   )->L:
    "Video files (any of `VIDEO_EXTS`) in `path`, sorted; a folder reached twice through symlinks (a loop) is walked once"
    path, folders = Path(path), L(folders)
    if not recurse: return L(sorted(get_files(path, extensions=VIDEO_EXTS, recurse=False, folders=folders)))
    res, seen = [], set()
    for i,(p,d,f) in enumerate(os.walk(path, followlinks=True)):  # fastai's `get_files` would follow a loop until the OS refuses
        rp = os.path.realpath(p)
        if rp in seen: d[:] = []; continue
        seen.add(rp)
        if i==0 and len(folders): d[:] = [o for o in d if o in folders]
        else: d[:] = [o for o in d if not o.startswith('.')]
        if len(folders) and i==0 and '.' not in folders: continue
        res += [Path(p)/n for n in f if not n.startswith('.') and os.path.splitext(n)[1].lower() in VIDEO_EXTS]
    return L(sorted(res))

def _shrink(img, size):
    "PIL `img` resized so that its longer side is at most `size`"
    if size is None or max(img.size) <= size: return img
    r = size / max(img.size)
    return img.resize((max(1, round(img.width*r)), max(1, round(img.height*r))), Image.Resampling.BILINEAR)

def extract_frames(video,        # A video file
                   idxs=None,    # Frame indices (any order, repeats allowed); None for all frames
                   size=None,    # Resize so the longer side is at most `size` pixels
                   threads=None, # Decoder threads (see `read_frames`)
                  ):
    "Generator of the frames of `video` (all, or `idxs` in the order asked) as PIL images, decoded lazily"
    for a in iter_frames(video, idxs, threads=threads): yield _shrink(Image.fromarray(a), size)

def _out_dir(v, dest, root):
    "Frame folder of video `v`: `dest/<path relative to root without extension>` or `dest/<parent>/<stem>`"
    rel = Path(v).relative_to(root) if root is not None else Path(Path(v).parent.name)/Path(v).name
    return Path(dest)/rel.parent/rel.stem

def _tmp_glob(o): return f'.{o.name}.tmp-*'

def _convert_one(v, o, size=None, quality=90, ext='.jpg', threads=None):
    "Write the frames of video `v` to folder `o` atomically (temp folder, then rename); None or the error message"
    tmp = o.parent/f'.{o.name}.tmp-{uuid.uuid4().hex[:8]}'
    try:
        n_frames = video_info(v).n_frames
        nd = max(5, len(str(n_frames)))
        tmp.mkdir(parents=True)
        n = 0
        for n, img in enumerate(extract_frames(v, size=size, threads=threads), 1):
            img.save(tmp/f'{n:0{nd}d}{ext}', **({'quality': quality} if ext.lower() in ('.jpg', '.jpeg') else {}))
        if n != n_frames: raise VideoError(f"{v}: wrote {n} frames but the video has {n_frames}. Check it with `verify_videos`; "
                                           "re-encode it with ffmpeg, or remove it from the dataset", v)
        os.rename(tmp, o)
        return None
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if not isinstance(e, Exception) or isinstance(e, LIBRARY_ERRORS): raise  # ours, not the video's: it fails them all
        return f'{type(e).__name__}: {e}'

def _convert_star(args): return _convert_one(*args)

_PR_SET_PDEATHSIG = 1  # Linux `prctl` option: a signal the kernel sends this process when its parent dies (None: not used)

def _parent_gone(parent:int, ppid:int) -> bool:
    "True once the process `parent` that started this worker (whose parent pid was `ppid` at start) has died"
    if os.getppid() != ppid: return True  # re-parented: the parent died, even if it is a zombie not yet reaped
    if os.name == 'posix':  # (on Windows, `os.kill` would terminate the process)
        try: os.kill(parent, 0)
        except ProcessLookupError: return True
        except OSError: pass
    return False

def _exit_with_parent(parent:int):
    "`videos_to_frames` worker initializer: exit at once when `parent` dies (SIGKILL, OOM killer), not minutes later"
    ppid = os.getppid()
    if _PR_SET_PDEATHSIG and sys.platform.startswith('linux') and ppid == parent:
        try:
            import ctypes, signal
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        except Exception: pass  # the watching thread below still ends the worker
    if _parent_gone(parent, ppid): os._exit(1)  # it died before the signal was armed
    import multiprocessing as mp
    def _watch():  # portable: wakes when the parent's pipe closes (it died), and polls the parent pid twice a second
        from multiprocessing.connection import wait
        sentinel = getattr(mp.parent_process(), 'sentinel', None)
        while not _parent_gone(parent, ppid):
            try:
                if sentinel is not None and wait([sentinel], timeout=0.5): sentinel = None  # closed: the loop checks why
            except Exception: sentinel = None
            if sentinel is None: time.sleep(0.5)
        os._exit(1)
    threading.Thread(target=_watch, name='fastai_seq-exit-with-parent', daemon=True).start()

def videos_to_frames(videos,          # A folder (searched with `get_video_files`), a video file, or a list of video files
                     dest,            # Output root: one folder of numbered frames per video
                     root=None,       # Keep video paths relative to `root` (default: the folder given, else `<parent>/<stem>`)
                     n_workers=None,  # Processes (None: `defaults.cpus`; 0 runs in this process)
                     size=None,       # Resize frames so the longer side is at most `size` pixels
                     quality=90,      # JPEG quality
                     ext='.jpg',      # Frame file type, '.jpg' or '.png'
                     on_error='skip', # Bad videos: 'skip' (warn, keep the good ones) or 'raise' (after the good ones finish)
                     progress=True,   # Show a progress bar
                    )->L:             # The frame folders of the videos that were converted (now or before)
    "Decode `videos` to folders `dest/<class>/<stem>/00001.jpg...`, in parallel; resumable: finished videos are skipped"
    if on_error not in ('skip', 'raise'): raise ValueError(f"videos_to_frames: on_error must be 'skip' or 'raise', not {on_error!r}")
    if isinstance(videos, (str, Path)) and Path(videos).is_dir():
        root = Path(videos) if root is None else root
        videos = get_video_files(videos)
    elif isinstance(videos, (str, Path)): videos = [videos]
    videos, dest = L(videos).map(Path), Path(dest)
    outs = L(_out_dir(v, dest, root) for v in videos)
    dup = [o for o, n in Counter(outs).items() if n > 1]
    if dup: raise ValueError(f"{len(dup)} frame folders would be shared by several videos (same name, other extension?), "
                             f"e.g. {dup[0]}: rename those videos or pass `root`")
    for o in outs:  # temp folders left by an interrupted run
        if o.parent.exists():
            for t in o.parent.glob(_tmp_glob(o)): shutil.rmtree(t, ignore_errors=True)
    todo = [(v, o) for v, o in zip(videos, outs) if not (o.is_dir() and any(o.iterdir()))]
    for _, o in todo:
        if o.exists(): shutil.rmtree(o) if o.is_dir() else o.unlink()
    n_workers = defaults.cpus if n_workers is None else n_workers
    errs = {}
    if n_workers <= 1 or len(todo) <= 1:
        it = progress_bar(todo, leave=False) if progress and todo else todo
        for v, o in it:
            e = _convert_one(v, o, size, quality, ext)
            if e: errs[v] = e
    else:
        # workers exit when this process dies: a killed notebook kernel leaves no decoder processes behind
        before_fork()
        with ProcessPoolExecutor(min(n_workers, len(todo)), initializer=_exit_with_parent, initargs=(os.getpid(),)) as ex:
            futs = {ex.submit(_convert_star, (v, o, size, quality, ext, 1)): v for v, o in todo}
            it = as_completed(futs)
            if progress: it = progress_bar(it, total=len(futs), leave=False)
            for f in it:
                try: e = f.result()
                except LIBRARY_ERRORS: raise
                except Exception as x: e = f'the worker process died ({type(x).__name__}: {x}); re-run to retry'
                if e: errs[futs[f]] = e
    if errs:
        msg = (f"{len(errs)} of {len(videos)} videos could not be converted to frames (the others were):\n" +
               '\n'.join(f'  {v}: {e}' for v, e in errs.items()))
        if on_error == 'raise': raise VideoError(msg, next(iter(errs)))
        warnings.warn(msg)
    return L(o for v, o in zip(videos, outs) if v not in errs and o.is_dir())

# ---------------------------------------------------------------------------------------------------------------------
# Archives

def _safe_member_path(dest, name, is_dir=False):
    "Where archive member `name` lands in `dest`; `ValueError` if that is outside `dest` (absolute, `..`, symlinks out)"
    n = str(name).replace('\\', '/')
    if not n.strip('/') and not is_dir: raise ValueError(f"Refusing archive member {name!r}: empty name")
    if n.startswith('/') or re.match(r'^[A-Za-z]:', n) or '\x00' in n:
        raise ValueError(f"Refusing archive member {name!r}: absolute path (it would be written outside {dest})")
    root = Path(dest).resolve()
    p = (root/n).resolve()  # resolves '..' and symlinks already on disk
    if p != root and root not in p.parents:
        raise ValueError(f"Refusing archive member {name!r}: it would be written outside {dest} (to {p})")
    if p == root and not is_dir: raise ValueError(f"Refusing archive member {name!r}: it would replace {dest}")
    return p

def _link_target(rf, info):
    "Target of symlink member `info` of RarFile `rf`"
    if getattr(info, 'file_redir', None): return info.file_redir[2]
    return rf.read(info).decode('utf8', 'replace')

_RAR_TOOLS = ("Compressed archives also need an `unrar`, `unar`, `7z` or `bsdtar` program "
              "(e.g. `apt install unrar` or `apt install libarchive-tools`)")

def _rar_error(fname, dest, e):
    "Archive `fname`'s rarfile error `e` as the same error type, its message naming the archive and saying what to do"
    import rarfile
    nothing = f"nothing was extracted to {dest}"
    if isinstance(e, rarfile.NotRarFile):
        msg = (f"{fname}: not a RAR archive ({e}); {nothing}. Check that the download finished and is the .rar itself "
               "(a saved HTML error page, or a .zip/.tar renamed, ends here): download it again, or extract it with the "
               "tool its real format needs")
    elif isinstance(e, rarfile.RarCannotExec):
        msg = f"{fname}: no program can decompress its members ({e}); {nothing}. {_RAR_TOOLS}, then call unrar again"
    elif isinstance(e, (rarfile.NeedFirstVolume,)):
        msg = (f"{fname}: this is not the first volume of a multi-volume archive ({e}); {nothing}. "
               "Pass the first volume (`.part1.rar` or `.rar`) with all the others beside it")
    elif isinstance(e, rarfile.PasswordRequired):
        msg = f"{fname}: the archive is encrypted ({e}); {nothing}. Extract it with `unrar x` and its password"
    else:
        msg = (f"{fname}: the archive is truncated or corrupt ({type(e).__name__}: {e}); {nothing}. Download it again "
               "(an interrupted download is the usual cause: compare its size with the one the site gives), then call "
               "unrar again")
    try: err = type(e)(msg)
    except Exception: err = rarfile.BadRarFile(msg)
    return err

def _single_top(tmp:Path) -> Path|None:
    "The one folder that holds everything extracted into `tmp` (UCF101's `UCF-101/`), if it is alone and no link leaves it"
    top = list(tmp.iterdir())
    if len(top)!=1 or top[0].is_symlink() or not top[0].is_dir(): return None
    top = top[0].resolve()
    for p,ds,fs in os.walk(top):
        for n in ds+fs:
            q = Path(p)/n
            if q.is_symlink():
                t = Path(os.path.realpath(q))
                if t != top and top not in t.parents: return None  # it points beside the folder: keep the archive's layout
    return top

def unrar(fname,       # A .rar archive
          dest=None,   # Folder to extract into (default: beside the archive, named after it)
          force=False, # Extract again even if `dest` exists
         )->Path:      # `dest`, holding the archive's contents (the contents of its single top folder, if it has one)
    "Extract `fname` into `dest` like `untar_data`: atomically, skipped if done, refusing members that escape `dest`"
    try: import rarfile
    except ImportError as e:
        raise ImportError("`unrar` needs the `rarfile` package: `pip install rarfile` (or `pip install fastai_seq[rar]`). "
                          f"{_RAR_TOOLS}") from e
    fname = Path(fname)
    if not fname.exists(): raise FileNotFoundError(f"{fname}: no such archive")
    dest = Path(dest) if dest is not None else fname.parent/fname.stem
    if dest.exists() and not dest.is_dir() and not force:
        raise FileExistsError(f"{dest}: exists and is not a folder, so {fname} cannot be extracted there: pass another "
                              "`dest`, or remove it")
    if dest.is_dir() and any(dest.iterdir()) and not force: return dest  # only a finished extraction is renamed to `dest`
    for t in dest.parent.glob(f'.{dest.name}.tmp-*'): shutil.rmtree(t, ignore_errors=True)  # left by an interrupted run
    ends = []
    def _seen(h):
        if h.type == rarfile.RAR_BLOCK_ENDARC: ends.append(h)
    try:
        with rarfile.RarFile(fname, info_callback=_seen, errors='strict') as rf:
            # An archive cut short ends without its end-of-archive block: rarfile lists the members before the cut
            # and no error, so refuse it before anything is written
            if not ends: raise rarfile.BadRarFile("it ends before its end-of-archive block")
            infos = rf.infolist()
            for info in infos:  # check everything before writing anything
                _safe_member_path(dest, info.filename, is_dir=info.is_dir())
                if info.is_symlink():
                    t = _link_target(rf, info).replace('\\', '/')
                    if t.startswith('/') or re.match(r'^[A-Za-z]:', t):
                        raise ValueError(f"Refusing archive member {info.filename!r}: symlink to the absolute path {t!r}")
                    _safe_member_path(dest, str(Path(info.filename.replace('\\', '/')).parent/t), is_dir=True)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.parent/f'.{dest.name}.tmp-{uuid.uuid4().hex[:8]}'
            try:
                tmp.mkdir()
                rf.extractall(tmp)
                src = _single_top(tmp) or tmp  # like `untar_data`: `dest` is the data folder, not a folder around it
                if dest.exists(): shutil.rmtree(dest) if dest.is_dir() and not dest.is_symlink() else dest.unlink()
                os.rename(src, dest)
            finally: shutil.rmtree(tmp, ignore_errors=True)
    except rarfile.Error as e: raise _rar_error(fname, dest, e) from e
    return dest
