"The frame index at Kinetics scale: cold indexing rate, warm start-up of `dataloaders()` from the saved index, bytes a file"
# Usage: python benchmarks/index_scale.py [--n 100000] [--dir /path/to/scratch] [--cold 3000] [--workers 2]
# Makes (once, then reuses) a synthetic dataset of `--n` tiny H.264/MPEG-4/VP8 clips: 48 distinct clips (8-40 frames,
# 32x24 to 64x48, GOP 4-250, with and without B-frames, MP4/MKV/AVI/WebM) copied round-robin into 400 class folders
# (`<dir>/clips/c000/00000.mp4`...), each copy a file of its own (own path, size and time: its own index entry).
# Then, each in a fresh process (nothing cached, no page cache trick: the files were just written or read):
#  1. cold: `index_videos` of the first `--cold` files in one process, no saved index (FASTAI_SEQ_INDEX_DIR=off): files/s a core
#  2. cold, all files: `dataloaders(num_workers=--workers)` with no saved index yet: the pass that indexes and saves it
#  3. warm: a new process, same call: the saved index is mapped, no file is indexed (counted), start-up time
#  4. bytes a file: the saved index's size / files; the in-memory cost of what a worker holds
import argparse, json, os, shutil, subprocess, sys, tempfile, time
from pathlib import Path

HERE = Path(__file__).resolve().parent

def make_templates(d:Path) -> list:
    "48 distinct tiny clips"
    import av, numpy as np
    out, rng = [], np.random.default_rng(0)
    kinds = [('libx264', '.mp4', 2), ('libx264', '.mkv', 2), ('libx264', '.mp4', 0), ('mpeg4', '.avi', 0), ('libvpx', '.webm', 0),
             ('mpeg4', '.mp4', 0)]
    for j in range(48):
        codec, ext, bf = kinds[j % len(kinds)]
        n, (w, h), gop = 8 + (j*7) % 33, [(32, 24), (48, 32), (64, 48)][j % 3], [4, 12, 250][j % 3]
        fn = d/f't{j:02d}{ext}'
        with av.open(str(fn), 'w') as c:
            s = c.add_stream(codec, rate=25)
            s.width, s.height, s.pix_fmt = w, h, 'yuv420p'
            s.codec_context.gop_size = gop
            s.codec_context.max_b_frames = bf
            for i in range(n):
                a = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
                for p in s.encode(av.VideoFrame.from_ndarray(a, format='rgb24')): c.mux(p)
            for p in s.encode(): c.mux(p)
        out.append(fn)
    return out

def make_dataset(root:Path, n:int, budget_s:float=600) -> int:
    "`n` clips under `root/clips` (made once: reused when there); stops at `budget_s` seconds. The number of clips there"
    clips, done = root/'clips', root/'clips.done'
    if done.exists() and int(done.read_text()) >= n: return int(done.read_text())
    tpl = make_templates(Path(tempfile.mkdtemp()))
    data, t0, i = [p.read_bytes() for p in tpl], time.time(), 0
    for i in range(n):
        fn = clips/f'c{i % 400:03d}'/f'{i:06d}{tpl[i % len(tpl)].suffix}'
        if i < 400: fn.parent.mkdir(parents=True, exist_ok=True)
        if not fn.exists(): fn.write_bytes(data[i % len(data)])
        if time.time() - t0 > budget_s: break
    else: i = n
    done.write_text(str(i))
    return i

_CHILD = r'''
import json, os, sys, time, resource
t0 = time.perf_counter()
import fastai_seq.video as V
from fastai.vision.all import DataBlock, CategoryBlock, parent_label, RandomSplitter, Resize
from fastai_seq.data import VideoBlock
from fastai_seq.files import get_video_files
mode, root, n, nw = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
out = {'import_s': time.perf_counter() - t0}
t = time.perf_counter(); files = get_video_files(root)[:n]; out['get_files_s'] = time.perf_counter() - t
if mode == 'cold1':
    cpu = time.process_time(); t = time.perf_counter()
    V.index_videos(files, n_workers=0, progress=False)
    out.update(files=len(files), wall_s=time.perf_counter() - t, cpu_s=time.process_time() - cpu, indexed=V._STATS['indexed'],
               entries=V._STATS['entries'])
else:
    t = time.perf_counter()
    dls = DataBlock(blocks=(VideoBlock(n_frames=4), CategoryBlock), get_items=lambda p: files, get_y=parent_label,
                    splitter=RandomSplitter(0.01, seed=0), item_tfms=Resize(32)).dataloaders(root, bs=16, num_workers=nw)
    out['dataloaders_s'] = time.perf_counter() - t
    t = time.perf_counter(); it = iter(dls.train); b = next(it); out['first_batch_s'] = time.perf_counter() - t
    out['start_s'] = out['dataloaders_s'] + out['first_batch_s']
    del it
    out.update(files=len(files), indexed_here=V._STATS['indexed'], stores=[(s, os.path.getsize(s), len(V._STORES[s])) for s in V._STORES],
               more=len(V._MORE))
out['maxrss_mib'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print('RESULT ' + json.dumps(out))
'''

def child(mode, root, n, nw, env):
    r = subprocess.run([sys.executable, '-c', _CHILD, mode, str(root), str(n), str(nw)], capture_output=True, text=True, env=env)
    if r.returncode: raise RuntimeError(r.stderr[-3000:])
    return json.loads(next(l for l in r.stdout.splitlines() if l.startswith('RESULT '))[7:])

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--n', type=int, default=100_000)
    ap.add_argument('--dir', default='/work/scratch/decoder/index_scale')
    ap.add_argument('--cold', type=int, default=3000)
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--budget', type=float, default=600, help='seconds to spend making clips at most')
    a = ap.parse_args()
    root = Path(a.dir); root.mkdir(parents=True, exist_ok=True)
    t = time.time(); n = make_dataset(root, a.n, a.budget)
    print(f"dataset: {n:,} clips in {root/'clips'} ({'made' if time.time()-t > 5 else 'reused'} in {time.time()-t:.0f} s)")
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(HERE.parent), os.environ.get('PYTHONPATH', '')])}
    idx = root/'index'
    shutil.rmtree(idx, ignore_errors=True)
    r1 = child('cold1', root/'clips', a.cold, 0, {**env, 'FASTAI_SEQ_INDEX_DIR': 'off'})
    print(f"cold index, one process: {r1['files']:,} files in {r1['wall_s']:.1f} s wall, {r1['cpu_s']:.1f} s CPU: "
          f"{r1['files']/r1['cpu_s']:.0f} files/s per core ({r1['entries']} from the container's own index)")
    env2 = {**env, 'FASTAI_SEQ_INDEX_DIR': str(idx)}
    r2 = child('dls', root/'clips', n, a.workers, env2)
    print(f"cold dataloaders() + first batch, {a.workers} workers, {n:,} files: {r2['start_s']:.1f} s "
          f"(dataloaders {r2['dataloaders_s']:.1f} s, first batch {r2['first_batch_s']:.1f} s; listing {r2['get_files_s']:.1f} s)")
    r3 = child('dls', root/'clips', n, a.workers, env2)
    size, n_saved = sum(s for _, s, _ in r3['stores']), sum(n for _, _, n in r3['stores'])
    print(f"warm (saved index) dataloaders() + first batch: {r3['start_s']:.2f} s (dataloaders {r3['dataloaders_s']:.2f} s, "
          f"first batch {r3['first_batch_s']:.2f} s; listing {r3['get_files_s']:.1f} s); files indexed: {r3['indexed_here']}")
    print(f"saved index: {size:,} bytes for {n_saved:,} files (the training split) = {size/n_saved:.0f} bytes a file; main process peak RSS "
          f"{r2['maxrss_mib']:.0f} MiB cold, {r3['maxrss_mib']:.0f} MiB warm")
    print(json.dumps({'n': n, 'cold1': r1, 'cold': r2, 'warm': r3}))

if __name__ == '__main__': main()
