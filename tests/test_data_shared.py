"The shared CIFAR-10 tars (../shared/data/cifar10 from the repo root) open through the folder loader."
from pathlib import Path

import pytest

from qvit_nb.data import load_dataset
from qvit_nb.loaders import build_loaders

DATA = Path(__file__).resolve().parents[1].parent / 'shared' / 'data' / 'cifar10'
pytestmark = pytest.mark.skipif(not (DATA / 'test.tar').exists(), reason=f'{DATA}/test.tar not present')

CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']


def test_test_tar_has_10_classes_and_10000_images():
    ds = load_dataset('folder', DATA / 'test.tar')
    assert ds.classes == CLASSES
    assert len(ds) == 10_000
    img, label = ds[len(ds) - 1]
    assert img.size == (32, 32) and label == 9


def test_split_layout_and_loader_batch():
    assert len(load_dataset('folder', DATA, 'test')) == 10_000
    train, evals, info = build_loaders('folder', DATA, batch_size=16, workers=0, max_images=64, pipeline='torch')
    assert (info['num_classes'], info['classes'], info['num_train'], info['num_eval']) == (10, CLASSES, 64, 64)
    x, y = next(iter(train))
    assert tuple(x.shape) == (16, 3, 32, 32) and y.max() < 10


def test_to_memory_with_workers_reads_the_tar_correctly():
    "Workers forked after the parent opened the tar must not share its file offset (reset_tar_handles)."
    import numpy as np
    from torch.utils.data import Subset
    from qvit_nb.data import to_memory
    ds = load_dataset('folder', DATA / 'test.tar')
    first = np.asarray(ds[0][0])                       # the parent opens (and caches) the tar
    mem = to_memory(Subset(ds, list(range(2000))), workers=2)
    assert mem.images.shape == (2000, 32, 32, 3)
    assert (mem.images[0] == first).all() and (mem.images[1999] == np.asarray(ds[1999][0])).all()
    assert mem.targets.tolist() == [ds.reader.targets[i] for i in range(2000)]
