"""The CIFAR-10 / CIFAR-100 python-batches reader (issue 15), on small files the test writes in
that exact format (the pickled dicts of the official archive, bytes keys, protocol 2)."""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from nnmark import load_data, new_model
from nnmark.errors import NNMarkError
from nnmark.testing.cifar import write_batch, write_cifar10


def test_cifar10_batches_read_as_images_labels_and_splits(tmp_path: Path) -> None:
    arrays = write_cifar10(tmp_path / "cifar-10-batches-py")
    data = load_data(f"cifar10:{tmp_path / 'cifar-10-batches-py'}")
    assert data.num_classes == 10 and tuple(data.x.shape) == (70, 3, 32, 32)
    # pixel (channel, row, col) of the first image: the row-major 1024-value planes, / 255
    first = torch.from_numpy(arrays[0][0].reshape(3, 32, 32).astype(np.float32) / 255)
    assert torch.equal(data.x[0], first)
    assert len(data.splits["test"]) == 10 and int(data.splits["test"][0]) == 60
    train_side = torch.cat([data.splits[s] for s in ("train", "val", "thief")])
    assert sorted(train_side.tolist()) == list(range(60))  # disjoint, all 60 training images
    model = new_model("resnet20", data, seed=0)
    assert model(data.x[:2]).shape == (2, 10)


def test_cifar100_reads_the_fine_labels(tmp_path: Path) -> None:
    root = tmp_path / "cifar-100-python"
    root.mkdir()
    write_batch(root / "train", 20, 1, b"fine_labels", 100)
    write_batch(root / "test", 5, 2, b"fine_labels", 100)
    data = load_data(f"cifar100:{root}")
    assert data.num_classes == 100 and len(data.x) == 25 and int(data.y.max()) < 100


class _Evil:
    def __reduce__(self):  # type: ignore[no-untyped-def]
        return (os.system, ("touch pwned",))


def test_a_batch_that_would_run_code_is_refused_and_bad_folders_say_why(tmp_path: Path) -> None:
    root = tmp_path / "c"
    write_cifar10(root)
    (root / "data_batch_3").write_bytes(pickle.dumps({b"data": _Evil()}, protocol=2))
    with pytest.raises(NNMarkError, match="refused to construct"):
        load_data(f"cifar10:{root}")
    assert not Path("pwned").exists()
    write_cifar10(root)
    (root / "test_batch").unlink()
    with pytest.raises(NNMarkError, match="test_batch: missing"):
        load_data(f"cifar10:{root}")
    with pytest.raises(NNMarkError, match="needs a folder"):
        load_data("cifar10")
    with pytest.raises(NNMarkError, match="folder not found"):
        load_data(f"cifar10:{tmp_path / 'nothing'}")


def test_batches_are_counted_as_they_come_and_a_batch_linked_twice_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Review, session 36: one 100 MB batch and five links to it made 2.3 GiB of floats (up
    to 24 GiB from six 1 GiB batches, then as much again dividing by 255), MAX_DATA_VALUES
    never applied here. The batches' values are counted as each is read, and a batch that is
    another one's file is refused."""
    root = tmp_path / "c"
    write_cifar10(root)
    (root / "data_batch_2").unlink()
    (root / "data_batch_2").symlink_to(root / "data_batch_1")
    with pytest.raises(NNMarkError, match="data_batch_2: the same file as another batch"):
        load_data(f"cifar10:{root}")
    (root / "data_batch_2").unlink()
    write_cifar10(root)
    assert len(load_data(f"cifar10:{root}").x) == 70
    monkeypatch.setattr("nnmark.data.cifar.MAX_DATA_VALUES", 69 * 3072)
    with pytest.raises(NNMarkError, match="hold more than 211,968 values"):
        load_data(f"cifar10:{root}")


class _Unfilled:
    """Pickles as numpy's `_reconstruct` of an array of `shape` that no data ever fills."""

    def __init__(self, shape: tuple[int, ...], dtype: str) -> None:
        self.shape, self.dtype = shape, dtype

    def __reduce__(self):  # type: ignore[no-untyped-def]
        from numpy.core.multiarray import _reconstruct

        return _reconstruct, (np.ndarray, self.shape, self.dtype)


def test_a_tiny_batch_that_declares_a_huge_array_is_refused_before_allocating(
    tmp_path: Path,
) -> None:
    """188 bytes asking for 300,000 images took 7.4 GB before the labels were found wrong (red
    team, session 31): an array larger than its file is refused while unpickling."""
    root = tmp_path / "c"
    write_cifar10(root)
    bomb = {b"data": _Unfilled((300_000, 3072), "u1"), b"labels": _Unfilled((300_000,), "i8")}
    (root / "data_batch_1").write_bytes(pickle.dumps(bomb, protocol=2))
    assert (root / "data_batch_1").stat().st_size < 300
    with pytest.raises(
        NNMarkError, match=r"data_batch_1: not a CIFAR batch .* larger than the file"
    ):
        load_data(f"cifar10:{root}")


def test_a_batch_whose_codec_calls_grow_their_input_is_refused(tmp_path: Path) -> None:
    """Review (session 34): `_codecs.encode` was allowed with any codec, and 20 chained `hex`
    encodings made a 1,291-byte batch take 1.8 GB (24 would take 16 GiB); `punycode` takes
    quadratic time. Only latin1, numpy's own, is taken now, and refused before it runs."""
    import struct

    root = tmp_path / "c"
    write_cifar10(root)
    hexes = bytearray(b"\x80\x02c_codecs\nencode\nq\x000" + b"h\x00" * 20 + b"B")
    hexes += struct.pack("<I", 1024) + b"\0" * 1024
    for _ in range(20):
        hexes += b"X" + struct.pack("<I", 3) + b"hex\x86R"
    text = "".join(chr(0x100 + (i * 7919) % 50000) for i in range(2000)).encode(
        "utf-8", "surrogatepass"
    )
    puny = b"\x80\x02c_codecs\nencode\nX" + struct.pack("<I", len(text)) + text
    puny += b"X\x08\x00\x00\x00punycode\x86R."
    for bomb in (bytes(hexes + b"."), puny):
        (root / "data_batch_1").write_bytes(bomb)
        with pytest.raises(NNMarkError, match=r"data_batch_1: not a CIFAR batch \(refused codec"):
            load_data(f"cifar10:{root}")


@pytest.mark.parametrize(
    "labels",
    [
        [2**70] * 12,  # past int64: numpy's OverflowError before
        ["1"] * 12,
        [float("nan")] * 12,
        [True] * 12,
        [10] * 12,  # one past the classes
        [-1] * 12,
        np.full(12, 1.0),
        np.full(12, 11, dtype=np.uint8),
    ],
)
def test_labels_that_are_not_class_numbers_are_refused_naming_the_batch(
    tmp_path: Path, labels: object
) -> None:
    """Review: labels went to numpy unchecked, and a huge int, a string or a NaN ended in its
    own error text. Each batch's labels are whole numbers in the class range, else one line
    naming the batch."""
    root = tmp_path / "c"
    write_cifar10(root)
    doc = pickle.loads((root / "data_batch_2").read_bytes())
    doc[b"labels"] = labels
    (root / "data_batch_2").write_bytes(pickle.dumps(doc, protocol=2))
    with pytest.raises(NNMarkError, match=r"data_batch_2: labels must be whole numbers in 0\.\.9"):
        load_data(f"cifar10:{root}")
