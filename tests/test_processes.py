"""Children that end with their parent: the fork-to-prctl race of PR_SET_PDEATHSIG."""

import os
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")

CHILD = "import sys; from wsss.processes import die_with_parent; die_with_parent(int(sys.argv[1])); print('alive')"


def test_a_child_whose_parent_is_already_gone_exits_at_once():
    # A pid that is not this child's parent stands for a parent killed between the fork and the prctl.
    gone = subprocess.run([sys.executable, "-c", CHILD, "1"], capture_output=True, text=True, timeout=60)
    assert gone.returncode == 1 and "alive" not in gone.stdout


def test_a_child_of_a_live_parent_carries_on():
    live = subprocess.run([sys.executable, "-c", CHILD, str(os.getpid())], capture_output=True, text=True, timeout=60)
    assert live.returncode == 0 and live.stdout.strip() == "alive"


def test_the_cam_export_decodes_in_its_own_process_on_the_cpu_unless_told(monkeypatch):
    import torch

    from wsss.processes import export_loader_workers, loader_workers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert export_loader_workers(None, "auto") == 0 and export_loader_workers(None, "gpu") == 0
    assert export_loader_workers(3, "cpu") == 3
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert export_loader_workers(None, "cpu") == 0
    assert export_loader_workers(None, "auto") == loader_workers(None)
    assert export_loader_workers(0, "gpu") == 0
