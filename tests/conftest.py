import os
os.environ.setdefault('MPLBACKEND', 'Agg')
from pathlib import Path
import pytest
import matplotlib
matplotlib.use('Agg')

REPO = Path(__file__).resolve().parents[1]

def shared_data() -> Path|None:
    "The shared test data folder: `FASTAI_SEQ_TEST_DATA`, else `../shared/data` beside the repo"
    p = Path(os.environ.get('FASTAI_SEQ_TEST_DATA', REPO.parent/'shared'/'data'))
    return p if p.is_dir() else None

@pytest.fixture(scope='session')
def data_dir() -> Path:
    p = shared_data()
    if p is None: pytest.skip("shared test data not found: set FASTAI_SEQ_TEST_DATA or put it at ../shared/data")
    return p

@pytest.fixture(scope='session')
def video_dir(data_dir) -> Path:
    p = data_dir/'videos'
    if not p.is_dir(): pytest.skip(f"{p} not found")
    return p

@pytest.fixture(autouse=True)
def _close_figures():
    yield
    import matplotlib.pyplot as plt
    plt.close('all')
