"""Every mistake a user makes gets one clear error (exit 2, no traceback, the file / field / row and
the fix), and no stage silently reuses or mixes results made with other settings (issue cases 1-7)."""

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsss.cli import main
from wsss.data.palette import write_mask
from wsss.pseudo.storage import save_cams
from wsss.stages.records import read_stages

FAST = ["--classifier.backbone", "resnet10t", "--classifier.pretrained", "false", "--classifier.max_steps", "2",
        "--classifier.batch_size", "4", "--classifier.crop_size", "32", "--cams.scales", "[1.0]",
        "--pseudo.workers", "1", "--pseudo.crf", "false", "--trainer.accelerator", "cpu", "--trainer.loggers", "[]",
        "--progress", "false"]


def make_folder(root: Path, n: int = 10) -> Path:
    """A custom-folder dataset: squares and circles on background, masks, labels.csv, classes.txt."""
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    rng = np.random.default_rng(0)
    rows = ["image,labels"]
    for i in range(n):
        mask = np.zeros((40, 48), np.uint8)
        names = []
        if i % 2 == 0:
            mask[5:20, 5:20] = 1
            names.append("square")
        yy, xx = np.mgrid[:40, :48]
        if i % 3 != 1:
            mask[(yy - 28) ** 2 + (xx - 34) ** 2 < 64] = 2
            names.append("circle")
        image = (rng.random((40, 48, 3)) * 40 + np.array([0, 120, 220])[mask][..., None]).astype(np.uint8)
        Image.fromarray(image).save(root / "images" / f"im{i:02d}.jpg", quality=95)
        write_mask(root / "masks" / f"im{i:02d}.png", mask)
        rows.append(f"im{i:02d},{' '.join(names)}")
    (root / "classes.txt").write_text("background\nsquare\ncircle\n")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    return root


@pytest.fixture
def folder(tmp_path):
    return make_folder(tmp_path / "data")


def run(capsys, command, out, root, *extra):
    code = main([command, "--out", str(out), "--data.name", "folder", "--data.root", str(root), *FAST, *extra])
    captured = capsys.readouterr()
    return code, captured.err


def assert_clean_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


def test_1_changed_backbone_is_not_silently_skipped(folder, tmp_path, capsys):
    out = tmp_path / "out"
    assert run(capsys, "train-cls", out, folder)[0] == 0
    code, err = run(capsys, "train-cls", out, folder, "--classifier.backbone", "no_such_net")
    assert_clean_error(code, err, 'classifier.backbone: "resnet10t" -> "no_such_net"', "--overwrite train-cls")
    assert read_stages(out)["train_cls"]["made_from"]["fields"]["classifier.backbone"] == "resnet10t"


def test_2_skip_bad_images_reaches_training_and_catches_truncated_jpegs(folder, tmp_path, capsys, caplog):
    from wsss.data import build_dataset

    train_ids = build_dataset("folder", str(folder), "train").ids
    bad = [i for i in train_ids if i != train_ids[0]][:2]
    (folder / "images" / f"{bad[0]}.jpg").write_bytes(b"\x00garbage")
    data = (folder / "images" / f"{bad[1]}.jpg").read_bytes()
    (folder / "images" / f"{bad[1]}.jpg").write_bytes(data[: len(data) // 2])  # truncated: PIL's verify() passes it
    code, err = run(capsys, "train-cls", tmp_path / "a", folder)
    assert_clean_error(code, err, "cannot read image", "data.skip_bad_images=true")
    out = tmp_path / "b"
    for command in ("train-cls", "cams", "pseudo"):
        code, err = run(capsys, command, out, folder, "--data.skip_bad_images", "true")
        assert code == 0, err
    for image_id in bad:
        assert f"skipping unreadable image {folder / 'images' / image_id}.jpg" in caplog.text
    assert read_stages(out)["cams"]["unreadable_images"] == sorted(bad)
    assert sorted(p.stem for p in (out / "cams").glob("*.npz")) == sorted(set(train_ids) - set(bad))


def test_2_an_unreadable_image_met_in_a_loader_worker_is_one_clean_line(folder, tmp_path, capsys):
    from wsss.data import build_dataset

    victim = build_dataset("folder", str(folder), "train").ids[1]
    (folder / "images" / f"{victim}.jpg").write_bytes(b"\x00garbage")
    code, err = run(capsys, "train-cls", tmp_path / "out", folder, "--data.num_workers", "1")
    assert_clean_error(code, err, f"{folder / 'images' / victim}.jpg: cannot read image")
    assert "Original Traceback" not in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("case,expected", [
    ("dup_class", "classes.txt, line 3: class 'square' already named on line 2"),
    ("comma", "row 2: more than two columns"),
    ("dup_row", "row 3: image 'im00' already has row 2"),
    ("bom", None),
])
def test_3_label_mistakes_are_named(folder, tmp_path, capsys, case, expected):
    labels = folder / "labels.csv"
    if case == "dup_class":
        (folder / "classes.txt").write_text("background\nsquare\nsquare\ncircle\n")
    elif case == "comma":
        labels.write_text(labels.read_text().replace("im00,square circle", "im00,square,circle"))
    elif case == "dup_row":
        lines = labels.read_text().splitlines()
        labels.write_text("\n".join([lines[0], lines[1], lines[1].replace("square circle", "square"), *lines[2:]]) + "\n")
    elif case == "bom":
        labels.write_bytes(b"\xef\xbb\xbf" + labels.read_bytes())
    code, err = run(capsys, "train-cls", tmp_path / "out", folder)
    if expected is None:
        assert code == 0, err
    else:
        assert_clean_error(code, err, expected)


def test_3_an_image_without_a_row_is_reported(folder, tmp_path, caplog):
    Image.new("RGB", (48, 40)).save(folder / "images" / "extra.jpg")
    from wsss.data import build_dataset

    ds = build_dataset("folder", str(folder), "train")
    assert "extra" not in ds.ids
    assert "1 images have no row in" in caplog.text and "extra" in caplog.text


def test_4_files_that_are_not_what_they_claim(folder, tmp_path, capsys):
    junk = tmp_path / "junk.ckpt"
    junk.write_bytes(os.urandom(512))
    code, err = run(capsys, "cams", tmp_path / "o1", folder, "--ckpt", str(junk))
    assert_clean_error(code, err, f"{junk}: not a readable classifier checkpoint", "never pickled code")
    text = tmp_path / "weights.pth"
    text.write_text("these are not weights")
    code, err = run(capsys, "train-cls", tmp_path / "o2", folder, "--classifier.pretrained", str(text))
    assert_clean_error(code, err, f"pretrained weight file {text}: not a weight file wsss can read")
    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    code, err = run(capsys, "train-cls", a_file, folder)
    assert_clean_error(code, err, f"--out {a_file} is a file")
    out = tmp_path / "o3"
    out.mkdir()
    (out / "cams").write_text("x")
    assert run(capsys, "train-cls", out, folder)[0] == 0
    code, err = run(capsys, "cams", out, folder)
    assert_clean_error(code, err, f"{out / 'cams'} is a file where stage cams writes a folder")
    code, err = run(capsys, "train-cls", tmp_path / "o4", folder, "--classifier.batch_size", "0")
    assert_clean_error(code, err, "classifier.batch_size must be an integer >= 1; got 0")
    code, err = run(capsys, "pseudo", tmp_path / "o4", folder, "--affinity.rw_background", "psa")
    assert_clean_error(code, err, "affinity.rw_background must be one of threshold, walk; got 'psa'")


def test_4_a_cam_file_of_another_dataset_is_named(folder, tmp_path, capsys):
    out = tmp_path / "out"
    for command in ("train-cls", "cams"):
        assert run(capsys, command, out, folder)[0] == 0
    bad = out / "cams" / "im00.npz"
    save_cams(bad, np.zeros((1, 40, 48), np.float32), np.array([7]))
    code, err = run(capsys, "pseudo", out, folder)
    assert_clean_error(code, err, f"{bad}: class ids [7] outside this dataset's foreground classes 1..2")


def test_5_a_corrupt_cam_file_is_remade_by_wsss_cams(folder, tmp_path, capsys):
    out = tmp_path / "out"
    for command in ("train-cls", "cams"):
        assert run(capsys, command, out, folder)[0] == 0
    good = (out / "cams" / "im01.npz").read_bytes()
    (out / "cams" / "im01.npz").write_bytes(good[: len(good) // 2])
    save_cams(out / "cams" / "im02.npz", np.zeros((1, 40, 48), np.float32), np.array([1]))
    nan = np.load(out / "cams" / "im02.npz")
    np.savez_compressed(out / "cams" / "im02.npz", cams=np.full_like(nan["cams"], np.nan), class_ids=nan["class_ids"])
    code, err = run(capsys, "pseudo", out, folder)
    assert_clean_error(code, err, "im0", "regenerate")
    assert run(capsys, "cams", out, folder)[0] == 0
    assert (out / "cams" / "im01.npz").read_bytes() == good
    assert run(capsys, "pseudo", out, folder)[0] == 0
    stages = read_stages(out)
    assert stages["cams"]["complete"] and stages["pseudo"]["complete"]
    assert len(list((out / "pseudo").glob("*.png"))) == 8  # the train split: every mask the record speaks of


def test_5_cams_skipped_as_unreadable_are_explained(folder, tmp_path, capsys):
    from wsss.data import build_dataset

    victim = build_dataset("folder", str(folder), "train").ids[-1]
    (folder / "images" / f"{victim}.jpg").write_bytes(b"broken")
    out = tmp_path / "out"
    for command in ("train-cls", "cams"):
        assert run(capsys, command, out, folder, "--data.skip_bad_images", "true")[0] == 0
    code, err = run(capsys, "pseudo", out, folder)
    assert_clean_error(code, err, f"['{victim}']", "skipped as unreadable", "data.skip_bad_images=true")


@pytest.mark.parametrize("steps", ["0", "-1"])
def test_6_max_steps_must_be_positive(folder, tmp_path, capsys, steps):
    code, err = run(capsys, "train-cls", tmp_path / "out", folder, "--classifier.max_steps", steps)
    assert_clean_error(code, err, f"classifier.max_steps must be an integer >= 1; got {steps}")
    assert not (tmp_path / "out" / "classifier").exists()


def test_7_eval_of_pseudo_masks_uses_the_cam_split_and_shows_progress(folder, tmp_path, capsys):
    out = tmp_path / "out"
    for command in ("train-cls", "cams", "pseudo"):
        assert run(capsys, command, out, folder)[0] == 0
    code = main(["eval", "--out", str(out), "--data.name", "folder", "--data.root", str(folder),
                 "--pred_dir", str(out / "pseudo"), "--progress", "true"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "vs ground truth of train" in captured.out and "evaluate pseudo" in captured.err


def test_7_wsss_pseudo_help_lists_what_the_stage_reads():
    proc = subprocess.run([sys.executable, "-m", "wsss.cli", "pseudo", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0
    assert "--pseudo.bg_threshold" in proc.stdout and "--overwrite" in proc.stdout
    assert "--classifier." not in proc.stdout and "--segmenter." not in proc.stdout
    assert "--affinity.beta" in proc.stdout and "--affinity.lr" not in proc.stdout
    assert len(proc.stdout.splitlines()) < 100  # every section (`wsss pipeline --help`) is about 300


def test_7_a_stage_prints_no_third_party_noise_and_loads_checkpoints_weights_only(folder, tmp_path):
    base = [sys.executable, "-m", "wsss.cli", "train-cls", "--out", str(tmp_path / "out"), "--data.name", "folder",
            "--data.root", str(folder), *FAST]
    proc = subprocess.run(base, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    for noise in ("litlogger", "litmodels", "LeafSpec", "weights_only` was not set"):
        assert noise not in proc.stderr, noise


def test_7_killing_wsss_pseudo_leaves_no_worker_behind(folder, tmp_path, capsys):
    out = tmp_path / "out"
    for command in ("train-cls", "cams"):
        assert run(capsys, command, out, folder)[0] == 0
    # CRF iterations for minutes per image: a worker that outlived its parent must still be busy at the
    # check (one that finished its image would exit on the closed pipe and hide the orphan)
    cmd = [sys.executable, "-m", "wsss.cli", "pseudo", "--out", str(out), "--data.name", "folder", "--data.root",
           str(folder), *FAST, "--pseudo.workers", "2", "--pseudo.crf", "true", "--pseudo.crf_n_iter", "10000000"]
    log = tmp_path / "pseudo.log"
    with log.open("w") as stderr:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=stderr)
    # the seed sweep and the plain masks run short pools first; only the CRF pool is sure to be there
    # at the kill (a check between two pools saw one process on a loaded machine)
    def crf_pool_running() -> bool:
        return (out / "pseudo_crf").is_dir() and len(_processes_with(str(out))) >= 3

    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None and not crf_pool_running():
            time.sleep(0.1)
        assert proc.poll() is None, f"wsss pseudo ended (exit {proc.returncode}) before the kill:\n{log.read_text()}"
        assert crf_pool_running(), f"the CRF pool never started:\n{log.read_text()}"
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        deadline = time.time() + 30
        while time.time() < deadline and _processes_with(str(out)):
            time.sleep(0.1)
        assert _processes_with(str(out)) == {}
    finally:  # minutes of CRF per image: nothing of a failed run may go on burning the suite's cores
        proc.kill()
        proc.wait()
        for pid in _processes_with(str(out)):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _processes_with(text: str) -> dict[int, str]:
    """Live (not zombie) processes whose command line contains ``text``: pid -> state, parent and
    command line (what an assertion message needs)."""
    found = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                stat = (entry / "stat").read_text().split()
            except OSError:
                continue
            if text in cmdline and stat[2] != "Z":
                found[int(entry.name)] = f"state {stat[2]}, parent {stat[3]}: {cmdline}"
    return found
