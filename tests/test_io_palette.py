import numpy as np
import pytest
from PIL import Image

from wsss.data.palette import IGNORE_INDEX, PALETTE, read_mask, write_mask
from wsss.errors import DataError
from wsss.io import atomic_path, atomic_save_npz, clean_stale_temps


def test_atomic_path_publishes_only_on_success(tmp_path):
    target = tmp_path / "out" / "a.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list((tmp_path / "out").iterdir()) == []
    with atomic_path(target) as tmp:
        tmp.write_text("whole")
    assert target.read_text() == "whole"


def test_a_file_being_written_is_invisible_to_a_scan_for_the_final_suffix(tmp_path):
    with atomic_path(tmp_path / "a.png") as tmp:
        tmp.write_bytes(b"partial")
        assert tmp.parent == tmp_path and tmp.name.startswith(".tmp-")
        assert list(tmp_path.glob("*.png")) == []
    assert [p.name for p in tmp_path.glob("*.png")] == ["a.png"]


def test_clean_stale_temps_removes_only_temporaries(tmp_path):
    (tmp_path / ".tmp-x.png.123.tmp").write_bytes(b"partial")
    (tmp_path / "x.png").write_bytes(b"done")
    assert clean_stale_temps(tmp_path) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["x.png"]


def test_npz_round_trip(tmp_path):
    a = np.random.default_rng(0).random((2, 5, 7)).astype(np.float16)
    atomic_save_npz(tmp_path / "c.npz", cams=a, class_ids=np.array([3, 9], dtype=np.int16))
    with np.load(tmp_path / "c.npz", allow_pickle=False) as data:
        np.testing.assert_array_equal(data["cams"], a)
        assert data["class_ids"].tolist() == [3, 9]


def test_voc_palette_known_colours():
    assert PALETTE[0].tolist() == [0, 0, 0]
    assert PALETTE[1].tolist() == [128, 0, 0]
    assert PALETTE[15].tolist() == [192, 128, 128]  # person
    assert PALETTE[IGNORE_INDEX].tolist() == [255, 255, 255]


def test_mask_round_trip_is_palette_png(tmp_path):
    mask = np.array([[0, 1, 2], [20, 255, 3]], dtype=np.uint8)
    write_mask(tmp_path / "m.png", mask)
    with Image.open(tmp_path / "m.png") as img:
        assert img.mode == "P"
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", num_classes=21), mask)


def test_read_mask_rejects_values_outside_the_classes(tmp_path):
    write_mask(tmp_path / "bad.png", np.array([[0, 7]], dtype=np.uint8))
    with pytest.raises(DataError, match=r"bad\.png.*value 7"):
        read_mask(tmp_path / "bad.png", num_classes=5)


def test_read_mask_rejects_rgb_masks(tmp_path):
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(DataError, match="rgb.png"):
        read_mask(tmp_path / "rgb.png")


def test_atomic_files_get_the_usual_permissions(tmp_path):
    import os

    from wsss.io import atomic_write_text

    atomic_write_text(tmp_path / "a.txt", "x")
    plain = tmp_path / "b.txt"
    plain.write_text("x")
    assert os.stat(tmp_path / "a.txt").st_mode & 0o777 == os.stat(plain).st_mode & 0o777
