"""Progress bars: shown on a terminal, silent when output goes to a file or a CI log."""

from functools import partial

from tqdm import tqdm

progress = partial(tqdm, disable=None, dynamic_ncols=True)
