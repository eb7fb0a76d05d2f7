"Helpers shared by two or more files of fastai_seq (the only home of such helpers: no underscore name crosses a file)"
from __future__ import annotations

__all__ = []  # nothing here is for users: `fastai_seq.all` exports none of it

# ------------------------------------------------------------------------------------------- fastai's own functions
def fastai_original(f):
    "fastai's own function behind `f`, if `f` is one of our replacements (see `fastai_patches.replace`), else `f`"
    return getattr(f, '_fastai_seq_orig', f)

# ------------------------------------------------------------------------------------------- frames and videos
def too_many_pixels(w, h, max_pixels) -> str|None:
    "What is wrong, and what to do, when `w`x`h` frames (of a video or a frame image) are above `max_pixels` (None or 0: no limit)"
    if max_pixels and w and h and w*h > max_pixels:
        return (f"declares {w}x{h} = {w*h:,} pixels per frame, above max_pixels={max_pixels:,}: refusing to decode it. "
                "If it is genuine, pass a larger `max_pixels` (None for no limit); otherwise remove the file")
