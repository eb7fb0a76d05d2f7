"""Moving MNIST generation: the vectorised `MovingMNIST.generate` against a plain per-frame Python loop with the same semantics.

Run: `python benchmarks/moving_mnist.py [--n 128 2048] [--repeats 7]`. Prints a markdown table of sequences per second
and the speed-up over the loop, measured in this run (20 frames, 2 digits, 64x64, the embedded digits). Large calls pay
for fresh pages of output memory (the same for both, but a larger share of the vectorised time).
"""
import argparse, math, time
import numpy as np
from fastai_seq.datasets import MovingMNIST

def loop_generate(mm:MovingMNIST, n:int, rng=None, params:dict=None) -> np.ndarray:
    "The per-sequence, per-frame loop a direct port of the original generator would be: same draws, bounces and max-combining"
    rng = np.random.default_rng(rng)
    S,T,(h,w) = mm.size, mm.n_frames, mm.digits.shape[1:]
    ly,lx = S-h, S-w
    out = np.zeros((n, T, S, S), np.uint8)
    for i in range(n):
        if params is None:   # draw this sequence's digits, start and direction
            cnt = int(rng.choice(mm.n_digits)) if len(mm.n_digits)>1 else mm.n_digits[0]
            digs = [mm.digits[rng.integers(len(mm.digits))] for _ in range(cnt)]
            starts = [(rng.random()*ly, rng.random()*lx) for _ in range(cnt)]
            vels = []
            for _ in range(cnt):
                th = rng.random()*2*np.pi
                vels.append((mm.speed*np.sin(th), mm.speed*np.cos(th)))
        else:
            ks = [k for k in range(params['idx'].shape[1]) if params['idx'][i,k]>=0]
            digs = [mm.digits[params['idx'][i,k]] for k in ks]
            starts = [tuple(params['pos'][i,k]) for k in ks]
            vels = [tuple(params['vel'][i,k]) for k in ks]
        for t in range(T):
            frame = out[i, t]
            for d,(y0,x0),(vy,vx) in zip(digs, starts, vels):
                y,x = y0+vy*t, x0+vx*t
                # bounce: fold into [0, 2L) then reflect the second half
                y,x = y%(2*ly), x%(2*lx)
                if y>ly: y = 2*ly-y
                if x>lx: x = 2*lx-x
                r,c = math.floor(y+0.5), math.floor(x+0.5)   # nearest pixel
                np.maximum(frame[r:r+h, c:c+w], d, out=frame[r:r+h, c:c+w])
    return out

def best_rates(fs:dict, repeats:int) -> dict:
    "Sequences per second of each `f(n)` in `fs` (name -> (f, n)), best of `repeats` rounds taken in turn (fair under a changing load)"
    for f,n in fs.values(): f(min(n, 64))   # warm up
    best = {k: float('inf') for k in fs}
    for _ in range(repeats):
        for k,(f,n) in fs.items():
            t0 = time.perf_counter(); f(n); best[k] = min(best[k], (time.perf_counter()-t0)/n)
    return {k: 1/v for k,v in best.items()}

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--n', type=int, nargs='+', default=[128, 2048],
                    help='sequences per call: 128 is the chunk the DataLoaders generate at a time')
    ap.add_argument('--repeats', type=int, default=7)
    a = ap.parse_args()
    mm = MovingMNIST(n_in=10, n_out=10, n_digits=2, size=64)
    # same semantics: given the same drawn parameters both produce the same bytes
    p = mm.sample(200, 0)
    assert np.array_equal(mm.render(p), loop_generate(mm, 200, params=p)), "vectorised and loop generators disagree"
    print(f"Moving MNIST generation, {mm.n_frames} frames, 2 digits, {mm.size}x{mm.size}, best of {a.repeats} interleaved runs "
          "(both generators produce identical bytes from the same draws)\n")
    print("| sequences per call | per-frame Python loop (seq/s) | `MovingMNIST.generate` (seq/s) | speed-up |")
    print("|---:|---:|---:|---:|")
    for n in a.n:
        r = best_rates({'fast': (lambda k: mm.generate(k, 1), n), 'loop': (lambda k: loop_generate(mm, k, 1), n)}, a.repeats)
        print(f"| {n} | {r['loop']:,.0f} | {r['fast']:,.0f} | {r['fast']/r['loop']:.1f}x |")

if __name__=='__main__': main()
