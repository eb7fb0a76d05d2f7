"""Clips per second through the full fastai pipeline (`VideoBlock`, `Resize`, batch augmentation) against a plain
`torch.utils.data.DataLoader` calling the same decoder and resize, and against reading the same clips from frame folders.
`VideoBlock` lets the decoder do a leading `Resize` (`leading_resize`); a row with `decoder_resize=False` has fastai do
it (the same work as the plain loader), one with `VideoBlock(size=...)` and no `Resize`; and the probes (file indexings) counted in
a first and a second pass with 2 workers: the second must do none.
Run: python benchmarks/pipeline.py [--copies 4] [--reps 3]"""
import os, shutil, sys, tempfile, time
from functools import partial
import fastai_seq.video as V
from pathlib import Path
import numpy as np, torch
from PIL import Image
from fastcore.script import call_parse
from fastai.vision.all import (DataBlock, CategoryBlock, parent_label, RandomSplitter, Resize, aug_transforms, IntToFloatTensor)
from fastai_seq.all import *

REPO = Path(__file__).resolve().parents[1]
N_FRAMES, SIZE, BS = 8, 128, 4

def _data_dir():
    p = Path(os.environ.get('FASTAI_SEQ_TEST_DATA', REPO.parent/'shared'/'data'))/'videos'
    if not p.is_dir(): sys.exit(f"{p} not found: set FASTAI_SEQ_TEST_DATA")
    return p

class PlainClips(torch.utils.data.Dataset):
    "The hand-written baseline: decode 8 uniformly spaced frames, resize each with PIL, stack"
    def __init__(self, files): self.files = files
    def __len__(self): return len(self.files)
    def __getitem__(self, i):
        fn = self.files[i]
        idxs = np.linspace(0, video_info(fn).n_frames-1, N_FRAMES).round().astype(int).tolist()
        frames = [Image.fromarray(a).resize((SIZE, SIZE), Image.BILINEAR) for a in read_frames(fn, idxs)]
        return torch.from_numpy(np.stack([np.asarray(f) for f in frames])).permute(0,3,1,2), 0

def _rates(its:dict, reps:int) -> dict:
    "Median clips/s of each iterable factory in `its` over `reps` full passes, interleaved so that load drifts hit all alike"
    rates = {k:[] for k in its}
    for _ in range(reps):
        for k,(it_fn,n_items) in its.items():
            t = time.perf_counter(); n = 0
            for b in it_fn(): n += len(b[0])
            rates[k].append(n/(time.perf_counter()-t))
            assert n==n_items, (k, n, n_items)
    return {k:float(np.median(v)) for k,v in rates.items()}

def _probes_per_pass(path, nw, passes=2) -> list:
    "Probes in each of `passes` passes of a fresh `VideoBlock` pipeline with `nw` workers (forked workers log them to a file)"
    log, orig = Path(tempfile.mkdtemp())/'probes', V._build_index
    def probe(fn, *args, **kwargs):
        with open(log, 'a') as f: f.write(f'{fn}\n')
        return orig(fn, *args, **kwargs)
    V._build_index, counts = probe, []
    try:
        V._CACHE.clear()
        dls = DataBlock(blocks=(VideoBlock(n_frames=N_FRAMES), CategoryBlock), get_items=get_video_files, get_y=parent_label,
                        splitter=RandomSplitter(0.), item_tfms=Resize(SIZE)).dataloaders(path, bs=BS, num_workers=nw)
        n0 = len(log.read_text().split()) if log.exists() else 0
        for _ in range(passes):
            for b in dls.train: pass
            n1 = len(log.read_text().split()) if log.exists() else 0
            counts.append(n1 - n0); n0 = n1
    finally: V._build_index = orig
    return counts


@call_parse
def main(copies:int=4, # Copies of each real clip in the benchmark set
         reps:int=5, # Passes per measurement (median), the pipelines taking turns
         workers:str='0,2', # num_workers values to measure
):
    torch.set_num_threads(1)
    src = _data_dir()
    tmp = Path(tempfile.mkdtemp())
    try:
        for i,f in enumerate(sorted(src.iterdir())):
            d = tmp/'videos'/f'class{i%2}'
            d.mkdir(parents=True, exist_ok=True)
            for c in range(copies): shutil.copy(f, d/f'{f.stem}_{c}{f.suffix}')
        files = list(get_video_files(tmp/'videos'))
        videos_to_frames(tmp/'videos', tmp/'frames', n_workers=1)
        folders = sorted(d for d in (tmp/'frames').glob('*/*') if d.is_dir())
        print(f"{len(files)} clips ({copies} copies of each clip in {src}), {N_FRAMES} frames at {SIZE}px, bs={BS}\n")
        print("| pipeline | num_workers | clips/s | time vs plain DataLoader |")
        print("|---|---|---|---|")
        for nw in [int(w) for w in workers.split(',')]:
            plain = torch.utils.data.DataLoader(PlainClips(files), batch_size=BS, num_workers=nw)
            def plain_it():
                for x,y in plain: yield (x.float().div_(255), y)
            def dl(block, items, path, batch_tfms, resize=True):
                dblock = DataBlock(blocks=(block(n_frames=N_FRAMES), CategoryBlock), get_items=items, get_y=parent_label,
                                   splitter=RandomSplitter(0.), item_tfms=Resize(SIZE) if resize else None,
                                   batch_tfms=batch_tfms)
                return dblock.dataloaders(path, bs=BS, num_workers=nw).train.new(shuffle=False, drop_last=False)
            vdl = dl(VideoBlock, get_video_files, tmp/'videos', aug_transforms())
            vdl_noaug = dl(VideoBlock, get_video_files, tmp/'videos', None)
            vdl_dec = dl(partial(VideoBlock, size=SIZE), get_video_files, tmp/'videos', None, resize=False)
            vdl_fastai = dl(partial(VideoBlock, decoder_resize=False), get_video_files, tmp/'videos', None)
            fdl = dl(SeqBlock, lambda p: folders, tmp/'frames', aug_transforms())
            r = _rates({'plain':(plain_it, len(files)), 'noaug':(lambda: vdl_noaug, len(files)), 'aug':(lambda: vdl, len(files)),
                        'dec':(lambda: vdl_dec, len(files)), 'fastai':(lambda: vdl_fastai, len(files)),
                        'frames':(lambda: fdl, len(folders))}, reps)
            for k,what in (('plain', "plain torch DataLoader (decode + PIL resize)"),
                           ('noaug', "fastai_seq VideoBlock + Resize (the decoder does the Resize: the default)"),
                           ('fastai', "fastai_seq VideoBlock(decoder_resize=False) + Resize (fastai resizes: the plain one's work)"),
                           ('dec', "fastai_seq VideoBlock(size=...), no Resize"),
                           ('aug', "fastai_seq VideoBlock + Resize + aug_transforms (decoder resize)"),
                           ('frames', "fastai_seq SeqBlock on frame folders + Resize + aug_transforms")):
                print(f"| {what} | {nw} | {r[k]:.1f} | {r['plain']/r[k]:.2f}x |")
        print(f"\nProbes (file indexings, counted in every process) with 2 workers, from an empty index: "
              f"{', '.join(f'pass {i+1}: {n}' for i,n in enumerate(_probes_per_pass(tmp/'videos', 2)))} ({len(files)} files)")
    finally: shutil.rmtree(tmp, ignore_errors=True)
